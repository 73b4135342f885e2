"""Labs' firewall: isolation between networks, outbound NAT, internal networks and published ports.

Every lab here is isolated, or built on ``playhost`` (a Host whose "root namespace" is a throwaway
one), so no rule or sysctl of the machine itself is ever touched.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_lab_firewall.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pynetns import CommandError, Host, InvalidValue, Namespace, Veth
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.lab import Lab, cleanup, labs
from tests.support.lab import FailOn, assert_gone, ping
from tests.support.web import fetch, serve

BACKENDS = {
    "nftables": Nftables,
    "iptables-nft": lambda: Iptables("nft"),
    "iptables-legacy": lambda: Iptables("legacy"),
}


root = pytest.mark.root


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_isolation_and_published_ports(backend):
    with Lab("fw", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        front = lab.network("front", subnet="10.42.0.0/24")
        back = lab.network("back", subnet="10.43.0.0/24")
        web = lab.namespace("web", networks=[front])
        peer = lab.namespace("peer", networks=[front])
        db = lab.namespace("db", networks=[back])
        portmap = lab.publish("web", 8080, 80)
        lab.apply()
        assert lab.plan() == []  # applied: nothing left to do, the firewall included
        hostns = lab.host_namespace
        assert hostns is not None
        serve(web, "0.0.0.0", 80, "web")
        assert ping(web, "10.42.0.3")  # within a network
        assert not ping(web, "10.43.0.2") and not ping(db, "10.42.0.2")  # across: isolated
        assert fetch(db, "http://10.42.0.2/") is None
        # the published port, from every direction
        assert fetch(hostns, "http://10.42.0.1:8080/") == "web"  # the host
        assert fetch(hostns, "http://127.0.0.1:8080/") == "web"  # the host's loopback
        assert fetch(peer, "http://10.42.0.1:8080/") == "web"  # a neighbour, through the host
        assert fetch(web, "http://10.42.0.1:8080/") == "web"  # itself (hairpin)
        assert fetch(db, "http://10.43.0.1:8080/") == "web"  # another network, through the host
        assert portmap.exists() and portmap.counters().packets >= 5
        later = lab.publish(peer, 8081, 80)  # incremental: only the new port map is written
        script = "".join(call.input or "" for call in lab.plan())
        assert "10.42.0.3" in script and "10.42.0.2" not in script and "netns add" not in script
        lab.apply()
        serve(peer, "0.0.0.0", 80, "peer")
        assert fetch(hostns, "http://10.42.0.1:8081/") == "peer" and later.exists() and portmap.exists()
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_outbound_nat_and_an_internal_network(names, host):
    """A namespace plays the outside world behind the lab's host: NAT reaches it, an internal network doesn't."""
    with Lab("nat", isolated=True) as lab:
        public = lab.network("public", subnet="10.44.0.0/24")
        private = lab.network("private", subnet="10.45.0.0/24", internal=True)
        web = lab.namespace("web", networks=[public])
        vault = lab.namespace("vault", networks=[private])
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        with Namespace(names("world"), host=host) as world:
            Veth(
                names("wan"),
                "eth0",
                namespace=hostns,
                peer_namespace=world,
                address="192.0.2.1/30",
                peer_address="192.0.2.2/30",
                host=host,
            ).create()
            serve(world, "0.0.0.0", 80, "world")
            # the world only knows the host's address, so an answer means the source was masqueraded
            result = web.run(["curl", "-s", "-m", "2", "http://192.0.2.2/"], check=False).stdout
            assert result.splitlines() == ["world", "client 192.0.2.1"]
            assert fetch(vault, "http://192.0.2.2/") is None
            assert not ping(vault, "10.44.0.2")
            assert ping(vault, str(private.gateway.ip))  # its own gateway still answers
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_a_failed_firewall_transaction_rolls_back_the_whole_apply():
    lab = Lab(host=Host(runner=FailOn("dnat to"), firewall="nftables"), isolated=True)
    net = lab.network("net", subnet="10.46.0.0/24")
    lab.namespace("a", networks=[net])
    lab.publish("a", 8080, 80)
    with pytest.raises(CommandError):
        lab.apply()
    assert_gone(lab.id)
    lab.destroy()


def _ruleset(host: Host) -> str:
    return Namespace.host(host).run(["nft", "list", "ruleset"]).stdout


def _forwarding(host: Host) -> str:
    return Namespace.host(host).sysctl("net.ipv4.ip_forward").strip()


@root
def test_a_host_lab_leaves_the_firewall_as_it_found_it(playhost):
    before = _ruleset(playhost), _forwarding(playhost)
    with Lab("onhost", host=playhost) as lab:
        front = lab.network("front", subnet="10.47.0.0/24")
        back = lab.network("back", subnet="10.48.0.0/24")
        web = lab.namespace("web", networks=[front])
        lab.namespace("db", networks=[back])
        lab.publish(web, 8080, 80)
        lab.apply()
        assert "dnat to 10.47.0.2:80" in _ruleset(playhost) and _forwarding(playhost) == "1"
        assert not ping(web, "10.48.0.2")
        serve(web, "0.0.0.0", 80, "web")
        assert fetch(Namespace.host(playhost), "http://127.0.0.1:8080/") == "web"
    assert (_ruleset(playhost), _forwarding(playhost)) == before


CHILD = textwrap.dedent("""
    import sys
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import LocalRunner
    host = Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + sys.argv[1])))
    lab = Lab("crashy", host=host)
    front = lab.network("front", subnet="10.49.0.0/24")
    lab.network("back", subnet="10.50.0.0/24")
    lab.namespace("server", networks=[front])
    lab.publish("server", 8080, 80)
    lab.apply()
    print(lab.id, flush=True)
    sys.stdin.read()
""")


@root
def test_cleanup_after_sigkill_removes_a_host_labs_rules(playhost):
    playns = playhost.runner.wrap[-1].rsplit("/", 1)[1]
    links = lambda: Namespace.host(playhost).run(["ip", "-o", "link"]).stdout  # noqa: E731
    before = _ruleset(playhost), _forwarding(playhost), links()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, playns],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    lab_id = child.stdout.readline().strip()
    assert lab_id and "dnat to 10.49.0.2:80" in _ruleset(playhost)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    assert not next(record for record in labs() if record.id == lab_id).alive
    removed = cleanup(playhost)
    assert any("firewall rules" in item for item in removed), removed
    assert_gone(lab_id)
    assert (_ruleset(playhost), _forwarding(playhost), links()) == before
    assert labs() == []


@root
@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_partition_and_heal_within_and_across_networks(firewall):
    with Lab("split", host=Host(firewall=firewall), isolated=True) as lab:
        front = lab.network("front", subnet="10.52.0.0/24")
        back = lab.network("back", subnet="10.53.0.0/24")
        a = lab.namespace("a", networks=[front])
        b = lab.namespace("b", networks=[front])
        c = lab.namespace("c", networks=[front])
        d = lab.namespace("d", networks=[back])
        lab.publish(d, 8080, 80)
        lab.apply()
        serve(d, "0.0.0.0", 80, "d")
        assert ping(a, "10.52.0.3") and fetch(a, "http://10.52.0.1:8080/") == "d"
        with pytest.raises(InvalidValue, match="both sides"):
            lab.partition([a, b], [b])
        lab.partition([a, c], ["b", d])
        assert not ping(a, "10.52.0.3") and not ping(b, "10.52.0.2")  # within a network, both ways
        assert fetch(a, "http://10.52.0.1:8080/") is None  # across networks, through a published port
        assert ping(a, "10.52.0.4") and ping(b, str(front.gateway.ip))  # each side still works
        lab.heal()
        assert ping(a, "10.52.0.3") and ping(b, "10.52.0.2") and fetch(a, "http://10.52.0.1:8080/") == "d"
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_the_shop_topology_file_end_to_end():
    """tests/data/topologies/shop.toml: two networks (one internal), a published port on 127.0.0.1."""
    from pathlib import Path

    with Lab.from_file(Path(__file__).parent.parent / "data" / "topologies" / "shop.toml") as lab:
        assert lab.isolated and set(lab.networks) == {"front", "back"}
        lab.apply()
        web, db, cache = (lab.namespaces[name] for name in ("web", "db", "cache"))
        hostns = lab.host_namespace
        assert hostns is not None
        serve(web, "0.0.0.0", 80, "web")
        assert ping(db, "10.31.0.20") and ping(cache, "10.31.0.2")  # within back, and web's second leg
        assert not ping(db, "10.30.0.2")  # back is internal: nothing beyond its bridge
        assert fetch(hostns, "http://127.0.0.1:8080/") == "web"  # published on the host's loopback only
        assert fetch(hostns, "http://10.30.0.1:8080/") is None
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_networks_of_two_host_labs_are_isolated_from_each_other(playhost):
    """As Docker isolates every network from every other, not only within one compose project."""
    with Lab("one", host=playhost) as one, Lab("two", host=playhost) as two:
        first = one.network("net", subnet="10.54.0.0/24")
        a = one.namespace("a", networks=[first])
        one.apply()
        second = two.network("net", subnet="10.55.0.0/24")
        b = two.namespace("b", networks=[second])
        two.apply()
        assert not ping(a, "10.55.0.2") and not ping(b, "10.54.0.2")
        assert ping(a, str(first.gateway.ip)) and ping(b, str(second.gateway.ip))
        two.publish(b, 8080, 80)
        two.apply()
        serve(b, "0.0.0.0", 80, "b")
        assert fetch(a, "http://10.54.0.1:8080/") == "b"  # a published port is for everyone
