"""Dual-stack networks on the real kernel: both addresses and default routes, one publish() answering on both
families (the host's IPv4 and IPv6 addresses, 127.0.0.1 and [::1], a neighbour), masquerade of both families
to a namespace playing the outside world, isolation of both, and the family-aware port overlap.

Every lab is isolated (its host is a throwaway namespace) or on ``playhost``: the machine's own firewall and
sysctls are never touched. The tests without root are in tests/unit/test_dualstack.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pynetns import Host, Namespace, PortInUse, Veth, wait_until
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.lab import Lab, cleanup, labs, remove
from tests.support.lab import assert_gone, ping
from tests.support.web import fetch, serve

root = pytest.mark.root
WORKTREE = str(Path(__file__).resolve().parents[2])

BACKENDS = {
    "nftables": Nftables,
    "iptables-nft": lambda: Iptables("nft"),
    "iptables-legacy": lambda: Iptables("legacy"),
}


@pytest.fixture(autouse=True)
def _own_runtime(tmp_path, monkeypatch):
    """Runtime files in a folder of this test's own: ``ipv6=True`` leaves the host's unique local /48 there for
    good (as Docker keeps its own), and other tests check that the session's folder empties with its labs."""
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path / "run"))


def ping6(namespace: Namespace, address: object) -> bool:
    return namespace.run(["ping", "-6", "-c1", "-W1", str(address)], check=False).returncode == 0


def default_routes(namespace: Namespace) -> list[str]:
    return [f"{route.via}" for family in (4, 6) for route in namespace.routes(family) if route.destination == "default"]


def plug_world(names, host: Host, hostns: Namespace) -> Namespace:
    """A namespace playing the outside world behind the lab's host: 192.0.2.2 and 2001:db8:77::2, with no
    route back to the lab's subnets (an answer means the source was masqueraded)."""
    world = Namespace(names("world"), host=host)
    world.create()
    world.sysctl("net.ipv6.conf.all.accept_dad", "0")
    world.sysctl("net.ipv6.conf.default.accept_dad", "0")
    wan = names("wan")
    Veth(wan, "eth0", namespace=hostns, peer_namespace=world, address="192.0.2.1/30", peer_address="192.0.2.2/30",
         host=host).create()  # fmt: skip
    hostns.run(["ip", "addr", "add", "2001:db8:77::1/64", "dev", wan, "nodad"])
    world.run(["ip", "addr", "add", "2001:db8:77::2/64", "dev", "eth0", "nodad"])
    return world


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_dual_stack_publish_nat_and_isolation(names, host, backend):
    with Lab("dual", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        front = lab.network("front", subnet="10.30.0.0/24", subnet6="fd00:30::/64")
        back = lab.network("back", subnet="10.31.0.0/24", ipv6=True)  # a /64 of the host's unique local /48
        web = lab.namespace("web", networks=[front])
        nbr = lab.namespace("nbr", networks=[front])
        other = lab.namespace("other", networks=[back])
        portmap = lab.publish(web, 8080, 80)
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None and portmap.twin is not None
        web6, other6 = lab.ip(web, version=6), lab.ip(other, version=6)
        assert str(web6) == "fd00:30::2" and str(lab.ip(web)) == "10.30.0.2"
        assert back.subnet6 is not None and back.subnet6.prefixlen == 64 and other6 in back.subnet6
        assert sorted(default_routes(web)) == ["10.30.0.1", "fd00:30::1"]
        serve(web, "::", 80, "web")  # a dual-stack socket: both families
        # the host: its address on each family, 127.0.0.1 and [::1]
        for url in ("http://10.30.0.1:8080/", "http://[fd00:30::1]:8080/", "http://127.0.0.1:8080/",
                    "http://[::1]:8080/", "http://10.31.0.1:8080/", f"http://[{back.gateway6.ip}]:8080/"):  # fmt: skip
            assert fetch(hostns, url) == "web", url
        # a neighbour (hairpin through the host) and the other network (a published port stays reachable)
        for client in (nbr, other):
            assert (
                fetch(client, "http://10.30.0.1:8080/") == "web" and fetch(client, "http://[fd00:30::1]:8080/") == "web"
            )
        assert portmap.counters().packets > 0 and portmap.twin.counters().packets > 0
        # isolation on both families: the other network is out of reach, the neighbour is not
        assert ping(nbr, lab.ip(web)) and ping6(nbr, web6)
        assert not ping(other, lab.ip(web)) and not ping6(other, web6) and not ping6(web, other6)
        assert hostns.sysctl("net.ipv6.conf.all.forwarding") == "1"
        # outbound masquerade, each family, to a namespace playing the outside world
        world = plug_world(names, host, hostns)
        try:
            serve(world, "::", 80, "world")
            for client, url, source in ((web, "http://192.0.2.2/", "192.0.2.1"),
                                        (web, "http://[2001:db8:77::2]/", "2001:db8:77::1"),
                                        (other, "http://[2001:db8:77::2]/", "2001:db8:77::1")):  # fmt: skip
                result = client.run(["curl", "-g", "-s", "-m", "2", url], check=False).stdout
                lines = result.splitlines()
                assert lines[:1] == ["world"] and lines[1].removeprefix("client ::ffff:") in (
                    source,
                    f"client {source}",
                )
        finally:
            world.delete()
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_internal_dual_stack_network_reaches_nothing_outside(names, host):
    with Lab("int6", isolated=True) as lab:
        vault = lab.namespace("vault", networks=[lab.network("vault", subnet="10.32.0.0/24", ipv6=True, internal=True)])
        lab.apply()
        hostns = lab.host_namespace
        assert default_routes(vault) == []  # no default route via an internal network, either family
        world = plug_world(names, host, hostns)
        try:
            assert not ping6(vault, "2001:db8:77::2") and not ping(vault, "192.0.2.2")
            assert ping6(vault, lab.networks["vault"].gateway6.ip)  # its own gateway answers
        finally:
            world.delete()


@root
def test_port_overlap_is_per_family_and_cleanup_leaves_nothing(playhost):
    """0.0.0.0:8080 and [::]:8080 are two sockets (two lab networks may each take one); the same family twice is
    refused, in a lab and across labs on one host; the [::1] proxy goes with unpublish and destroy; the
    ruleset and both forwarding sysctls are as they were."""
    here = Namespace.host(playhost)
    keys = ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")

    def firewall() -> tuple[str, ...]:
        return (here.run(["nft", "list", "ruleset"]).stdout, *(here.sysctl(key) for key in keys))

    before = firewall()
    with Lab("ovl", host=playhost) as lab:
        four = lab.network("four", subnet="10.33.0.0/24")
        dual = lab.network("dual", subnet="10.34.0.0/24", subnet6="fd00:34::/64")
        a = lab.namespace("a", networks=[four])
        b = lab.namespace("b", networks=[dual])
        lab.publish(a, 8080, 80, host_ip="0.0.0.0")
        six = lab.publish(b, 8080, 80, host_ip="::")  # IPv6 only: not an overlap
        assert six.family == 6 and six.twin is None
        with pytest.raises(Exception, match="overlaps"):
            lab.publish(b, 8080, 80)  # both families: the IPv4 side overlaps
        lab.apply()
        serve(a, "0.0.0.0", 80, "a")
        serve(b, "::", 80, "b")
        assert fetch(here, "http://127.0.0.1:8080/") == "a" and fetch(here, "http://[::1]:8080/") == "b"
        assert fetch(here, "http://[fd00:34::1]:8080/") == "b"
        proxies = list(lab._state.proxies.values())
        assert len(proxies) == 1 and proxies[0].alive()
        with Lab("ovl2", host=playhost) as second:  # another lab on the same host: same family refused
            c = second.namespace("c", networks=[second.network("net", subnet="10.35.0.0/24", subnet6="fd00:35::/64")])
            second.publish(c, 8080, 80, host_ip="::")
            with pytest.raises(PortInUse):
                second.apply()
        lab.unpublish(six)
        assert not proxies[0].alive() and fetch(here, "http://[::1]:8080/") is None
        assert fetch(here, "http://127.0.0.1:8080/") == "a"
        assert here.sysctl("net.ipv6.conf.all.forwarding") == "1"
        lab_id = lab.id
    assert_gone(lab_id)
    assert firewall() == before


@root
def test_a_default_slash_64_taken_meanwhile_moves_to_the_next_free_one(playhost):
    """Two labs declare ipv6=True networks before either applies (both pick the same /64 and IPv4 subnet); the
    second to apply moves to the next free ones, under the host lock, addresses and published ports with it."""
    with Lab("first", host=playhost) as first, Lab("second", host=playhost) as second:
        one = first.network("net", ipv6=True)
        two = second.network("net", ipv6=True)
        first.namespace("a", networks=[one])
        second.namespace("b", networks=[two])
        portmap = second.publish("b", 8080, 80)
        assert (one.subnet, one.subnet6) == (two.subnet, two.subnet6)  # tentative: nothing journaled yet
        first.apply()
        second.apply()
        assert two.subnet6 is not None and one.subnet6 is not None and not two.subnet6.overlaps(one.subnet6)
        assert not two.subnet.overlaps(one.subnet) and two.subnet6.subnet_of(first._state.ula())
        assert portmap.twin is not None and portmap.twin.address == second.ip("b", version=6)
        assert second.ip("b", version=6) in two.subnet6 and portmap.address == second.ip("b")
        serve(second["b"], "::", 80, "b")
        here = Namespace.host(playhost)
        assert fetch(here, f"http://[{two.gateway6.ip}]:8080/") == "b" and fetch(here, "http://[::1]:8080/") == "b"
        assert ping6(first["a"], one.gateway6.ip)


OWNER = textwrap.dedent("""
    import os, signal
    from pynetns.lab import Lab, cleanup, labs, remove
    lab = Lab("dies", isolated=True)
    lab.namespace("web", networks=[lab.network("front", subnet="10.38.0.0/24", subnet6="fd00:38::/64")])
    lab.publish("web", 8080, 80)
    lab.apply()
    (proxy,) = lab._state.proxies.values()
    print(lab.id, proxy.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@root
def test_the_loopback_proxy_ends_with_its_owner_and_cleanup_removes_the_rest():
    child = subprocess.run(
        [sys.executable, "-c", OWNER],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": WORKTREE},
    )
    assert child.returncode == -9, child.stderr
    lab_id, pid = child.stdout.split()
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the [::1] proxy to end with its owner")
    assert [record.id for record in labs()] == [lab_id]
    cleanup()
    assert labs() == []
    assert_gone(lab_id)


@root
@pytest.mark.parametrize("backend", ["nftables", "iptables-legacy"])
def test_a_partition_cuts_both_families(backend):
    with Lab("cut6", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        front = lab.network("front", subnet="10.39.0.0/24", subnet6="fd00:39::/64")
        a = lab.namespace("a", networks=[front])
        b = lab.namespace("b", networks=[front])
        lab.apply()
        assert ping(a, lab.ip(b)) and ping6(a, lab.ip(b, version=6))
        lab.partition(a, b)
        assert not ping(a, lab.ip(b)) and not ping6(a, lab.ip(b, version=6)) and not ping6(b, lab.ip(a, version=6))
        lab.heal()
        assert ping(a, lab.ip(b)) and ping6(a, lab.ip(b, version=6))


DETACHED = textwrap.dedent("""
    import sys
    from pynetns import Host
    from pynetns.lab import Lab
    from pynetns.runner import LocalRunner
    from pynetns.servers import http_server_argv
    host = Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + sys.argv[1])))  # playhost's namespace
    lab = Lab("kept", host=host)
    web = lab.namespace("web", networks=[lab.network("front", subnet="10.41.0.0/24", subnet6="fd00:41::/64")])
    lab.publish(web, 8080, 80)
    lab.apply()
    web.popen(http_server_argv("::", 80, body="kept"))
    web.wait_for_port(80)
    (proxy,) = lab._state.proxies.values()
    lab.detach()
    print(lab.id, proxy.pid, flush=True)
""")


@root
def test_a_detached_labs_proxy_outlives_its_owner_and_goes_with_the_lab(playhost):
    """A host lab detached (as ``pynetns up`` does): its [::1] proxy outlives the owner process, and ends once
    ``remove`` (``pynetns down``) took the lab's journal."""
    playns = playhost.runner.wrap[-1].rsplit("/", 1)[1]
    child = subprocess.run(
        [sys.executable, "-c", DETACHED, playns],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": WORKTREE},
    )
    assert child.returncode == 0, child.stderr
    lab_id, pid = child.stdout.split()
    try:
        here = Namespace.host(playhost)
        assert fetch(here, "http://[::1]:8080/") == "kept" and Path(f"/proc/{pid}").exists()
    finally:
        remove(lab_id, playhost)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="the proxy to go with the lab's journal")
    assert_gone(lab_id)
