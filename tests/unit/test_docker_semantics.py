"""Docker's meanings: host_ip 0.0.0.0 and :: are every address, internal networks lead nowhere
(no default route, nothing published), and IPv6 addresses work as soon as apply() returns.

Kernel tests use isolated labs: their host is a private namespace, so no rule or sysctl of the
machine is touched.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_docker_semantics.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host, InvalidValue, Lab, Namespace, PortMap, Topology, TopologyError


def _dry_lab(name: str = "docker") -> Lab:
    return Lab(name, host=Host(dry_run=True, firewall="nftables"), isolated=True)


def _batch(lab: Lab, namespace: Namespace) -> str:
    """What apply() sends to ``namespace``'s ``ip -batch``."""
    return "".join(call.input or "" for call in lab.plan() if call.argv[:3] == ("ip", "-n", namespace.name))


@pytest.mark.parametrize(("address", "wildcard", "family"), [("10.0.0.2", "0.0.0.0", 4), ("fd00::2", "::", 6)])
def test_a_wildcard_host_ip_means_every_address_of_its_family(address: str, wildcard: str, family: int) -> None:
    host = Host(dry_run=True, firewall="nftables")
    portmap = PortMap(8080, address, 80, host_ip=wildcard, host=host)
    assert portmap.host_ip is None and portmap.family == family
    assert str(portmap) == f"8080->{address}:80/tcp" and portmap.object_id == "portmap/tcp/any/8080-8080"
    (dnat,) = [rule for rule in portmap.rules() if rule.action == "dnat"]
    assert dnat.daddr is None  # not "daddr 0.0.0.0", which no packet ever has
    assert host.history == []


@pytest.mark.parametrize(("address", "wildcard"), [("10.0.0.2", "::"), ("fd00::2", "0.0.0.0")])
def test_a_wildcard_of_the_other_family_is_refused(address: str, wildcard: str) -> None:
    other = "0.0.0.0" if wildcard == "::" else "::"
    with pytest.raises(InvalidValue, match=f"every address: {other}"):
        PortMap(8080, address, 80, host_ip=wildcard, host=Host(dry_run=True))


def test_a_lab_sees_a_wildcard_port_and_an_unbound_one_as_the_same_port() -> None:
    lab = _dry_lab()
    web = lab.namespace("web", networks=[lab.network("front", subnet="10.60.0.0/24")])
    assert lab.publish(web, 8080, 80, host_ip="0.0.0.0").host_ip is None
    with pytest.raises(InvalidValue, match="already published"):
        lab.publish(web, 8080, 81)
    with pytest.raises(InvalidValue, match="already published"):
        lab.publish(web, 8080, 82, host_ip="10.60.0.1")


def test_a_topology_sees_wildcards_per_family() -> None:
    def topology(*host_ips: str) -> Topology:
        return Topology.from_dict(
            {
                "networks": {"front": {"subnet": "10.61.0.0/24"}},
                "namespaces": {"web": {"networks": ["front"]}},
                "publish": [{"namespace": "web", "host_port": 8080, "port": 80, "host_ip": ip} for ip in host_ips],
            },
            source="ports.toml",
        )

    with pytest.raises(TopologyError, match=r"publish\[1\]\.host_port: .*overlaps"):
        topology("0.0.0.0", "10.61.0.1")
    topology("::", "10.61.0.1")  # another family: both may be published


@pytest.mark.parametrize("host_ip", ["224.0.0.1", "255.255.255.255", "240.0.0.1"])
def test_a_host_ip_no_packet_is_sent_to_is_refused(host_ip: str) -> None:
    with pytest.raises(InvalidValue, match="unicast address of the host"):
        PortMap(8080, "10.0.0.2", 80, host_ip=host_ip, host=Host(dry_run=True))
    with pytest.raises(InvalidValue, match="unicast address of the host"):
        PortMap(8080, "fd00::2", 80, host_ip="ff02::1", host=Host(dry_run=True))


def test_no_default_route_through_an_internal_network_whatever_the_order() -> None:
    lab = _dry_lab()
    back = lab.network("back", subnet="10.62.0.0/24", internal=True)
    front = lab.network("front", subnet="10.63.0.0/24")
    web = lab.namespace("web", networks=[back, front])  # the internal one first
    api = lab.namespace("api", networks=[front, back])
    vault = lab.namespace("vault", networks=[back])
    for namespace in (web, api):
        routes = [line for line in _batch(lab, namespace).splitlines() if "default" in line]
        assert routes == ["route add default via 10.63.0.1"], namespace
    assert "default" not in _batch(lab, vault)
    lab.apply()
    later = lab.network("later", subnet="10.64.0.0/24")
    lab.connect(later, vault)  # vault's first network that is not internal: its default route now
    assert [line for line in _batch(lab, vault).splitlines() if "default" in line] == [
        "route add default via 10.64.0.1"
    ]
    lab.connect(later, web)  # web has its default route already
    assert "default" not in _batch(lab, web)


def test_publishing_on_an_internal_network_is_refused_before_anything_runs() -> None:
    lab = _dry_lab()
    back = lab.network("back", subnet="10.65.0.0/24", internal=True)
    front = lab.network("front", subnet="10.66.0.0/24")
    vault = lab.namespace("vault", networks=[back])
    web = lab.namespace("web", networks=[back, front])
    with pytest.raises(InvalidValue, match="internal network back") as caught:
        lab.publish(vault, 8080, 80)
    assert caught.value.field == "target" and "not internal" in caught.value.rule  # says what to do
    with pytest.raises(InvalidValue, match="internal network back"):
        lab.publish(lab.endpoints[1], 8080, 80)  # web's leg on back, named
    assert lab.published == [] and lab.host.history == []
    # a namespace named as the target is published on its first network that is not internal
    assert str(lab.publish(web, 8080, 80).address) == "10.66.0.2"
    assert str(lab.published[0].address) == "10.66.0.2"
    assert front.endpoints[0].namespace is web


def test_a_topology_publishing_on_an_internal_network_names_the_field() -> None:
    data = {
        "networks": {"back": {"subnet": "10.67.0.0/24", "internal": True}, "front": {"subnet": "10.68.0.0/24"}},
        "namespaces": {"vault": {"networks": ["back"]}, "web": {"networks": ["back", "front"]}},
    }
    for publish, field in (
        ({"namespace": "vault"}, r"publish\[0\]\.namespace"),
        ({"namespace": "web", "network": "back"}, r"publish\[0\]\.network"),
    ):
        with pytest.raises(TopologyError, match=rf"shop.toml: {field}: .*internal"):
            Topology.from_dict({**data, "publish": [{**publish, "host_port": 8080, "port": 80}]}, source="shop.toml")
    Topology.from_dict({**data, "publish": [{"namespace": "web", "host_port": 8080, "port": 80}]})


def test_ipv6_addresses_skip_duplicate_address_detection_inside_the_lab_only() -> None:
    lab = _dry_lab()
    six = lab.network("six", subnet="fd00:70::/64")
    four = lab.network("four", subnet="10.70.0.0/24")
    a = lab.namespace("a", networks=[four, six])
    b = lab.namespace("b", networks=[four])
    calls = [str(call) for call in lab.plan()]
    keys = "net/ipv6/conf/all/accept_dad=0 net/ipv6/conf/eth1/accept_dad=0"
    assert f"ip netns exec {a.name} sysctl -q -w {keys}" in calls  # before its addresses, in its own batch
    assert not any("accept_dad" in call and b.name in call for call in calls)  # IPv4 only: left alone
    host = lab.host_namespace
    assert host is not None
    keys = "net/ipv6/conf/all/accept_dad=0 net/ipv6/conf/default/accept_dad=0"  # before its bridges are made
    assert f"ip netns exec {host.name} sysctl -q -w {keys}" in calls
    lab.apply()  # a dry run waits for no bridge
    assert not any("addr show" in str(call) for call in lab.host.history)
    # a lab on the machine itself: no sysctl of the machine; its IPv6 gateway is added "nodad"
    plain = Lab("plain", host=Host(dry_run=True))
    v6, v4 = plain.network("six", subnet="fd00:71::/64"), plain.network("four", subnet="10.71.0.0/24")
    plain.namespace("c", networks=[v6, v4])
    script = "".join(call.input or "" for call in plain.plan()).splitlines()
    assert f"addr add fd00:71::1/64 dev {v6.bridge} nodad" in script
    assert f"addr add 10.71.0.1/24 dev {v4.bridge}" in script
    assert not any(call.argv[0] == "sysctl" for call in plain.plan())
