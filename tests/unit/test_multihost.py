"""Labs that span Hosts, on dry-run Hosts: the commands each Host gets, and bad input refused before any command."""

from __future__ import annotations

import pytest

from pynetns import Host, Lab
from pynetns.errors import InvalidValue, PynetnsError


def two(underlay: tuple[str, str] | None = ("192.0.2.1", "192.0.2.2")) -> tuple[Lab, Host, Host]:
    a, b = Host(dry_run=True), Host(dry_run=True)
    lab = Lab("span", host=a)
    if underlay is not None:
        lab.machine(a, underlay=underlay[0], name="a")
        lab.machine(b, underlay=underlay[1], name="b")
    return lab, a, b


def lines(host: Host) -> list[str]:
    """Every command line a dry-run Host ran, batch lines included."""
    found = []
    for call in host.history:
        found += call.input.splitlines() if call.input else [" ".join(call.argv)]
    return found


def test_each_host_gets_its_bridge_vxlan_forwarding_entries_and_gateway():
    lab, a, b = two()
    front = lab.network("front", subnet="10.40.0.0/24", vni=4242)
    lab.namespace("web", [front])
    db = lab.namespace("db", [front], host=b)
    assert lab.hosts == [a, b] and db.host is b
    lab.apply()
    bridge, vxlan = front.bridge, f"{front.bridge}x"
    on_a, on_b = lines(a), lines(b)
    assert f"link add {bridge} mtu 1450 type bridge" in on_a and f"link add {bridge} mtu 1450 type bridge" in on_b
    assert f"link add {vxlan} mtu 1450 type vxlan id 4242 local 192.0.2.1 dstport 4789 nolearning" in on_a
    assert f"link add {vxlan} mtu 1450 type vxlan id 4242 local 192.0.2.2 dstport 4789 nolearning" in on_b
    assert f"link set {vxlan} master {bridge} alias {lab.tag} up" in on_a
    # broadcasts to the other machine, and each member's frames to its machine (its MAC from its address)
    assert f"fdb append 00:00:00:00:00:00 dev {vxlan} dst 192.0.2.2" in on_a
    assert f"fdb append 02:42:0a:28:00:03 dev {vxlan} dst 192.0.2.2" in on_a
    assert f"fdb append 00:00:00:00:00:00 dev {vxlan} dst 192.0.2.1" in on_b
    assert f"fdb append 02:42:0a:28:00:02 dev {vxlan} dst 192.0.2.1" in on_b
    assert any("address 02:42:0a:28:00:03" in line and "mtu 1450" in line for line in on_b)
    # one subnet, addresses unique lab-wide; each machine has a gateway of its own, its members' default route
    assert str(lab.ip("web")) == "10.40.0.2" and str(lab.ip("db")) == "10.40.0.3"
    assert str(lab.gateway(front)) == "10.40.0.1" and str(lab.gateway(front, b)) == "10.40.0.4"
    assert f"addr add 10.40.0.1/24 dev {bridge}" in on_a and f"addr add 10.40.0.4/24 dev {bridge}" in on_b
    assert "route add default via 10.40.0.4" in on_b and "route add default via 10.40.0.1" in on_a
    # nothing of one machine's part runs on the other
    assert not any("pn" + lab.id + "-db" in line for line in on_a)
    assert not any("pn" + lab.id + "-web" in line for line in on_b)
    # NAT on each machine, for its own members
    assert any("masquerade" in line for line in on_a) and any("masquerade" in line for line in on_b)
    a.history.clear()
    b.history.clear()
    lab.destroy()
    assert f"link delete {vxlan}" in lines(a) and f"link delete {vxlan}" in lines(b)
    assert f"netns delete pn{lab.id}-db" in lines(b) and f"netns delete pn{lab.id}-db" not in lines(a)


def test_a_port_published_on_each_machine_is_written_on_that_machine_only():
    lab, a, b = two()
    c = Host(dry_run=True)
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    lab.publish("db", 8080, 80)
    lab.publish("web", 8080, 80, host=b)  # the same host port, on another machine: no overlap
    with pytest.raises(InvalidValue, match="overlaps"):
        lab.publish("db", 8080, 81, host=b)
    with pytest.raises(InvalidValue, match="no part on that Host"):
        lab.publish("db", 8081, 80, host=c)
    lab.apply()
    assert any("dnat to 10.40.0.3:80" in line for line in lines(a))
    assert not any("dnat to 10.40.0.2:80" in line for line in lines(a))
    assert any("dnat to 10.40.0.2:80" in line for line in lines(b))
    assert not any("dnat to 10.40.0.3:80" in line for line in lines(b))
    # the member's own Host sets hairpin on its port; the other publishes through the VXLAN device, without
    assert not any("hairpin" in line and line.split()[4].endswith("x") for line in lines(a) + lines(b))


def test_explain_shows_the_commands_under_a_header_per_host():
    lab, a, b = two()
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    text = lab.explain()
    first, second = text.index("# on machine a (192.0.2.1)"), text.index("# on machine b (192.0.2.2)")
    assert first == 0 < second
    assert f"netns add pn{lab.id}-web" in text[:second] and f"netns add pn{lab.id}-db" in text[second:]
    assert a.history == [] and b.history == []  # explain runs nothing


def test_a_lab_on_one_host_is_unchanged():
    lab, _, _ = two(underlay=None)
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    assert "vxlan" not in lab.explain() and "# on" not in lab.explain() and "mtu" not in lab.explain()


def test_an_ipv6_underlay_leaves_70_bytes_and_a_jumbo_one_more():
    lab, a, b = two(("2001:db8::1", "2001:db8::2"))
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    assert "mtu 1430 type vxlan" in lab.explain() and "local 2001:db8::2" in lab.explain()
    lab, a, b = two()
    lab.machine(a, underlay="192.0.2.1", mtu=9000)
    lab.machine(b, underlay="192.0.2.2", mtu=9000)
    front = lab.network("front", subnet="10.40.0.0/24", mtu=8000)
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    assert "mtu 8000 type vxlan" in lab.explain()


def test_a_third_machine_joining_later_gets_its_part_and_the_others_learn_of_it():
    lab, a, b = two()
    c = Host(dry_run=True)
    lab.machine(c, underlay="192.0.2.3", name="c")
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    lab.apply()
    for host in (a, b):
        host.history.clear()
    lab.namespace("cache", [front], host=c)
    lab.apply()
    vxlan = f"{front.bridge}x"
    assert [line for line in lines(a) if not line.startswith(("#", "::1", "127.0.0.1", "10.40."))] == [
        f"fdb append 00:00:00:00:00:00 dev {vxlan} dst 192.0.2.3",
        f"fdb append 02:42:0a:28:00:05 dev {vxlan} dst 192.0.2.3",
    ]
    assert "10.40.0.5\tcache" in lines(a) and "10.40.0.5\tcache" in lines(b)  # their members' hosts files learn it
    assert f"fdb append 00:00:00:00:00:00 dev {vxlan} dst 192.0.2.3" in lines(b)
    on_c = lines(c)
    assert f"link add {vxlan} mtu 1450 type vxlan id {lab.vni(front)} local 192.0.2.3 dstport 4789 nolearning" in on_c
    for peer, member in (("192.0.2.1", "02:42:0a:28:00:02"), ("192.0.2.2", "02:42:0a:28:00:03")):
        assert f"fdb append {member} dev {vxlan} dst {peer}" in on_c
    assert "route add default via 10.40.0.6" in on_c  # c's own gateway, after its first member's address


def refused(lab: Lab, *hosts: Host, match: str) -> None:
    with pytest.raises(InvalidValue, match=match):
        lab.apply()
    with pytest.raises(InvalidValue, match=match):
        lab.explain()
    for host in hosts:
        assert host.history == []


def test_bad_input_is_refused_before_any_command():
    lab, a, b = two(underlay=None)
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    refused(lab, a, b, match="no underlay address")
    lab.machine(a, underlay="192.0.2.1")
    refused(lab, a, b, match="no underlay address")
    lab.machine(b, underlay="2001:db8::2")
    refused(lab, a, b, match="IPv4 and IPv6 underlays")
    lab.machine(b, underlay="192.0.2.2")
    lab.apply()

    lab, a, b = two()
    front = lab.network("front", subnet="10.40.0.0/24", mtu=1500)
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    refused(lab, a, b, match="room for 1450 bytes")

    lab, a, b = two()
    lab.network("front", vni=7)
    with pytest.raises(InvalidValue, match="already network front's"):
        lab.network("back", vni=7)
    for vni in (0, 2**24, "7", True):
        with pytest.raises(InvalidValue, match="VXLAN network identifier"):
            lab.network("back", vni=vni)
    assert list(lab.networks) == ["front"]
    for underlay in ("127.0.0.1", "224.0.0.1", "0.0.0.0", "fe80::1", "not-an-address"):
        with pytest.raises(PynetnsError):
            lab.machine(b, underlay=underlay)
    with pytest.raises(InvalidValue, match="already machine a's"):
        lab.machine(b, underlay="192.0.2.1")
    with pytest.raises(InvalidValue, match="room for a 1280-byte packet"):
        lab.machine(b, underlay="192.0.2.2", mtu=1300)
    with pytest.raises(InvalidValue, match=r"must be a pynetns\.Host"):
        lab.namespace("x", host="b")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue, match="isolated lab"):
        Lab("iso", host=a, isolated=True).namespace("x", host=b)

    real = Host()  # never used: the mix is refused before any command
    lab = Lab("mixed", host=a)
    lab.machine(a, underlay="192.0.2.1")
    lab.machine(real, underlay="192.0.2.2")
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=real)
    refused(lab, a, match="dry runs or none")


def test_a_network_applied_on_one_host_cannot_span_later():
    lab, a, b = two()
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", [front])
    lab.apply()
    a.history.clear()
    lab.namespace("db", [front], host=b)
    refused(lab, a, b, match="spans Hosts from its first apply")
