"""Labs on the real kernel: networks, IPAM, incremental apply, rollback, crash cleanup.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_lab.py.
"""

import ipaddress

import pytest

from pynetns import Host, InvalidAddress, InvalidValue, Namespace, SubnetOverlap
from pynetns.backends.recording import RecordingRunner
from pynetns.errors import LabDestroyed, NotFound
from pynetns.lab import Lab

pytestmark = []


def test_ipam_and_explain_without_root():
    lab = Lab("plan", host=Host(dry_run=True))
    net = lab.network("front", subnet="10.20.0.0/24")
    web = lab.namespace("web", networks=[net])
    db = lab.namespace("db")
    fixed = net.connect(db, ip="10.20.0.50")
    assert [str(endpoint.ip) for endpoint in lab.endpoints] == ["10.20.0.2/24", "10.20.0.50/24"]
    assert str(net.gateway) == "10.20.0.1/24" and fixed.interface == "eth0" and fixed.namespace is db
    text = lab.explain()
    assert f"netns add {web.name}" in text and f"ip -n {web.name} -batch - <<'EOF'" in text
    assert "route add default via 10.20.0.1" in text
    with pytest.raises(InvalidAddress, match="already taken"):
        net.connect(lab.namespace("x"), ip="10.20.0.50")
    with pytest.raises(InvalidAddress, match="not a host address"):
        net.connect(lab.namespace("y"), ip="10.21.0.5")
    with pytest.raises(SubnetOverlap):
        lab.network("back", subnet="10.20.0.128/25")
    with pytest.raises(InvalidValue):
        net.connect(web)  # already connected


def test_a_destroyed_lab_says_so_and_names_its_namespaces():
    lab = Lab("gone", host=Host(dry_run=True))
    web = lab.namespace("web", networks=[lab.network("front", subnet="10.20.0.0/24")])
    assert lab.name_of(web) == "web" and lab.name_of(Namespace("other")) == "other"
    lab.apply()
    lab.destroy()
    assert lab.destroyed
    with pytest.raises(LabDestroyed, match="lab gone was destroyed"):
        lab.apply()
    with pytest.raises(LabDestroyed):
        lab.detach()


def test_default_subnets_come_from_the_pools():
    lab = Lab(host=Host(dry_run=True))
    first, second = lab.network("a"), lab.network("b")
    assert (str(first.subnet), str(second.subnet)) == ("172.17.0.0/16", "172.18.0.0/16")


def test_recording_runner_sees_one_batch_per_namespace():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner), isolated=True) as lab:
        net = lab.network("net", subnet="10.75.0.0/24", nat=False)
        for index in range(5):
            lab.namespace(f"n{index}", networks=[net])
        lab.apply()
        # netns adds, host wiring, one batch per namespace, bridge up; and the names files in a fixed handful:
        # /etc/netns and its marker, the host's nsswitch.conf read, the folders, every resolv.conf, every hosts
        # file (one text: one network), the links from /etc/netns
        assert len(runner.history) == 1 + 1 + 5 + 1 + 7


def test_the_firewall_is_one_transaction_whatever_the_number_of_ports():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner, firewall="nftables"), isolated=True) as lab:
        front = lab.network("front", subnet="10.76.0.0/24")
        lab.network("back", subnet="10.77.0.0/24")
        for index in range(20):
            lab.publish(lab.namespace(f"n{index}", networks=[front]), 8000 + index, 80)
        lab.apply()
        scripts = [call for call in runner.history if call.argv[-3:] == ("nft", "-f", "-")]
        # one per IP version: the IPv6 one holds the isolation (networks are isolated for both)
        assert len(scripts) == 2 and scripts[0].input.count("dnat to") == 20
        assert "table ip6 pynetns" in scripts[1].input and "dnat to" not in scripts[1].input
        # the batches plus a fixed handful (seven of them the names files), not a process per port
        assert len(runner.history) < 20 + 16 + 7


def test_lookups_by_declared_name():
    lab = Lab("look", host=Host(dry_run=True))
    front = lab.network("front", subnet="10.20.0.0/24")
    back = lab.network("back", subnet="10.21.0.0/24")
    web = lab.namespace("web", networks=[front, back])
    lonely = lab.namespace("lonely")
    assert lab["web"] is web and "web" in lab and "nope" not in lab
    assert lab.ip("web") == ipaddress.ip_address("10.20.0.2")  # the first network by default
    assert lab.ip("web", "back") == ipaddress.ip_address("10.21.0.2") == lab.ip(web, back)
    assert lab.endpoint("web", "back").interface == "eth1" and lab.endpoint("web") is lab.endpoints[0]
    with pytest.raises(NotFound, match=r"no namespace 'db' \(it has: web, lonely\)"):
        lab["db"]
    with pytest.raises(NotFound, match=r"no network 'side' \(it has: front, back\)"):
        lab.ip("web", "side")
    with pytest.raises(NotFound, match="lonely in lab look is connected to no network"):
        lab.ip("lonely")
    with pytest.raises(NotFound, match=r"not connected to network front \(its networks: none\)"):
        lab.endpoint(lonely, "front")
    with pytest.raises(InvalidValue):
        lab[3]  # type: ignore[index]
    with pytest.raises(InvalidValue, match="not a namespace of lab look"):
        lab.ip(Namespace("stranger"))
    other = Lab("other", host=Host(dry_run=True)).network("front", subnet="10.30.0.0/24")
    with pytest.raises(InvalidValue, match="not a network of lab look"):
        lab.endpoint("web", other)


def test_lab_impair_picks_the_endpoint_and_refuses_unknown_names():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner), isolated=True) as lab:
        front = lab.network("front", subnet="10.63.0.0/24", nat=False)
        back = lab.network("back", subnet="10.64.0.0/24", nat=False)
        lab.namespace("web", networks=[front, back])
        lab.apply()
        impairment = lab.impair("web", delay="50ms")
        assert lab.endpoint("web", "front").impairment == impairment and lab.endpoint("web", "back").impairment is None
        lab.impair("web", loss="1%", network="back")
        assert lab.endpoint("web", "back").impairment is not None
        before = len(runner.history)
        with pytest.raises(NotFound):
            lab.impair("db", delay="1ms")
        with pytest.raises(NotFound):
            lab.impair("web", delay="1ms", network="side")
        assert len(runner.history) == before
