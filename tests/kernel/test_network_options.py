"""Network options as Docker and netavark users know them: isolate on/off/strict, mtu, unpublish and republish.

Every lab here is isolated (its bridges and rules in a throwaway namespace playing the host): nothing of the
machine's own firewall is touched. The tests without root are in tests/unit/test_lab_firewall.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.lab import Lab
from tests.support.lab import assert_gone, ping
from tests.support.web import fetch, serve

root = pytest.mark.root

BACKENDS = {
    "nftables": Nftables,
    "iptables-nft": lambda: Iptables("nft"),
    "iptables-legacy": lambda: Iptables("legacy"),
}


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_isolate_on_off_and_strict(backend):
    with Lab("iso", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        docker = lab.namespace("docker", networks=[lab.network("docker", subnet="10.50.0.0/24")])
        other = lab.namespace("other", networks=[lab.network("other", subnet="10.51.0.0/24")])
        open1 = lab.namespace("open1", networks=[lab.network("open1", subnet="10.52.0.0/24", isolate=False)])
        open2 = lab.namespace("open2", networks=[lab.network("open2", subnet="10.53.0.0/24", isolate=False)])
        strict = lab.namespace("strict", networks=[lab.network("strict", subnet="10.54.0.0/24", isolate="strict")])
        lab.publish(docker, 8080, 80)
        lab.apply()
        serve(docker, "0.0.0.0", 80, "docker")
        assert ping(open1, "10.53.0.2") and ping(open2, "10.52.0.2")  # off on both: they reach each other
        assert ping(open1, "10.50.0.2")  # off on one of the two: not kept apart (netavark's pairs)
        assert not ping(other, "10.50.0.2")  # both on (Docker): apart ...
        assert fetch(other, "http://10.51.0.1:8080/") == "docker"  # ... but a published port is reachable
        assert not ping(strict, "10.52.0.2") and not ping(open1, "10.54.0.2")  # strict: apart even from open ones
        assert fetch(strict, "http://10.54.0.1:8080/") is None  # and the published port of another network too
        assert fetch(lab.host_namespace, "http://127.0.0.1:8080/") == "docker"  # the host still reaches it
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_unpublish_removes_the_rules_and_the_host_port_can_be_published_again():
    with Lab("unpub", isolated=True) as lab:
        front = lab.network("front", subnet="10.55.0.0/24")
        web = lab.namespace("web", networks=[front])
        api = lab.namespace("api", networks=[front])
        first = lab.publish(web, 8080, 80)
        lab.apply()
        serve(web, "0.0.0.0", 80, "web")
        serve(api, "0.0.0.0", 80, "api")
        hostns = lab.host_namespace
        assert fetch(hostns, "http://127.0.0.1:8080/") == "web"
        lab.unpublish(first)
        assert not first.exists() and "10.55.0.2" not in hostns.run(["nft", "list", "ruleset"]).stdout
        assert fetch(hostns, "http://127.0.0.1:8080/") is None and lab.plan() == []
        second = lab.publish(api, 8080, 80)  # the same host port, to another namespace
        lab.apply()
        assert second.exists() and fetch(hostns, "http://127.0.0.1:8080/") == "api"
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_mtu_reaches_the_bridge_and_both_ends_of_each_veth():
    with Lab("mtu", isolated=True) as lab:
        front = lab.network("front", subnet="10.56.0.0/24", mtu=1400)
        web = lab.namespace("web", networks=[front])
        lab.apply()
        endpoint = lab.endpoint(web)

        def mtu(namespace, device):
            return namespace.run(["ip", "-j", "link", "show", "dev", device]).json()[0]["mtu"]

        hostns = lab.host_namespace
        assert mtu(hostns, front.bridge) == mtu(hostns, endpoint.host_interface) == mtu(web, "eth0") == 1400
        assert web.run(["ping", "-c1", "-W1", "-M", "do", "-s", "1372", "10.56.0.1"], check=False).returncode == 0
        assert web.run(["ping", "-c1", "-W1", "-M", "do", "-s", "1373", "10.56.0.1"], check=False).returncode != 0


@root
def test_isolate_modes_hold_between_two_labs_on_one_host(playhost):
    """The later lab reads the earlier one's modes from its journal: off with off connects, strict cuts off."""
    with Lab("one", host=playhost) as one, Lab("two", host=playhost) as two:
        a = one.namespace("a", networks=[one.network("open", subnet="10.57.0.0/24", isolate=False)])
        s = one.namespace("s", networks=[one.network("strict", subnet="10.58.0.0/24", isolate="strict")])
        one.apply()
        b = two.namespace("b", networks=[two.network("open", subnet="10.59.0.0/24", isolate=False)])
        two.publish(b, 8080, 80)
        two.apply()
        serve(b, "0.0.0.0", 80, "b")
        assert ping(a, "10.59.0.2") and ping(b, "10.57.0.2")
        assert not ping(s, "10.59.0.2") and not ping(b, "10.58.0.2")
        assert fetch(a, "http://10.57.0.1:8080/") == "b" and fetch(s, "http://10.58.0.1:8080/") is None
