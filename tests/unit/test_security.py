"""What runs in a lab namespace is untrusted: it must not reach the host's loopback, other networks
(IPv4 and IPv6 alike), nor the machine's own namespace.

Every test works from the attacker's side, in namespaces it creates: isolated labs (the host is a
throwaway namespace) or ``playhost``, so no rule or sysctl of the machine itself is touched.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_security.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host, Namespace, PortMap, Veth
from pynetns.backends.base import NetnsRef
from pynetns.backends.iptables import Iptables
from pynetns.errors import InvalidValue
from pynetns.firewall import ForwardDrops, Isolation
from pynetns.lab import Lab


def scripts(host: Host) -> str:
    return "".join(call.input or "" for call in host.history)


def test_a_port_map_on_loopback_brings_a_guard_before_nat_in_every_backend():
    nft = Host(dry_run=True, firewall="nftables")
    PortMap(8080, "10.0.0.2", 80, host_ip="127.0.0.1", namespace=Namespace("gw", host=nft)).create()
    text = scripts(nft)
    assert "add chain ip pynetns guard { type filter hook prerouting priority -300; policy accept; }" in text
    guard = 'add rule ip pynetns guard iifname != "lo" ip daddr 127.0.0.0/8 counter drop'
    assert guard in text and text.index(guard) < text.index("dnat to")

    xt = Host(dry_run=True, firewall=Iptables("legacy"))
    PortMap(8080, "10.0.0.2", 80, host_ip="127.0.0.1", namespace=Namespace("gw", host=xt)).create()
    raw = next(call for call in xt.history if call.input and call.input.startswith("*raw"))
    assert raw.argv[-3:] == ("iptables-legacy-restore", "--noflush", "-w")
    assert raw.input is not None
    assert '-I PREROUTING -m comment --comment "pynetns jump" -j PYNETNS-GUARD' in raw.input
    assert "-A PYNETNS-GUARD -d 127.0.0.0/8 ! -i lo -m comment" in raw.input and raw.input.endswith("-j DROP\nCOMMIT\n")
    assert scripts(xt).index("*raw") < scripts(xt).index("*nat")  # the guard is in first


@pytest.mark.parametrize("kwargs", [dict(address="fd00::2"), dict(address="10.0.0.2", host_ip="10.9.9.9")])
def test_no_guard_where_loopback_is_not_involved(kwargs):
    host = Host(dry_run=True, firewall="nftables")
    PortMap(8080, port=80, namespace=Namespace("gw", host=host), **kwargs).create()
    assert "guard iifname" not in scripts(host)


def test_iptables_reads_the_raw_table_without_making_it():
    backend = Iptables("legacy")
    assert backend.list_commands(4, "raw") == [("iptables-legacy-save", "-c")]  # "-t raw" would make it
    saved = "\n".join(
        [
            "*filter",
            ":FORWARD ACCEPT [0:0]",
            "-A FORWARD -j ACCEPT",
            "COMMIT",
            "*raw",
            ":PREROUTING ACCEPT [0:0]",
            ":PYNETNS-GUARD - [0:0]",
            '[3:180] -A PREROUTING -m comment --comment "pynetns jump" -j PYNETNS-GUARD',
            '[2:120] -A PYNETNS-GUARD -d 127.0.0.0/8 ! -i lo -m comment --comment "pynetns:t portmap/x" -j DROP',
            "COMMIT",
        ]
    )
    state = backend.parse(4, "raw", [saved])
    assert state.chains == {"PYNETNS-GUARD"} and not state.busy  # the filter table's rule is not the raw table's
    assert [(rule.chain, rule.packets) for rule in state.rules] == [("jump", 3), ("guard", 2)]


def test_isolation_and_partition_drops_exist_per_ip_version():
    host = Host(dry_run=True, firewall="nftables")
    v4, v6 = Isolation.both("br-a", ["br-b"], internal=True, host=host)
    assert (v4.family, v4.object_id, v6.family, v6.object_id) == (4, "isolate/br-a", 6, "isolate6/br-a")
    Isolation("br-a", ["br-b"], family=6, host=host).create()
    assert 'add rule ip6 pynetns isolation iifname "br-a" oifname "br-b" ct status & dnat == 0 drop' in scripts(host)
    with pytest.raises(InvalidValue, match="4 or 6"):
        Isolation("br-a", family=5)
    drops = ForwardDrops("p", [("fd00::2", "fd00:1::2")], host=host)
    assert (drops.family, drops.object_id) == (6, "drop6/p")
    with pytest.raises(InvalidValue, match="all IPv4 or all IPv6"):
        ForwardDrops("p", [("10.0.0.2", "10.0.1.2"), ("fd00::2", "fd00:1::2")], host=host)


def test_a_lab_isolates_ipv6_as_ipv4_whatever_its_subnets():
    lab = Lab("plan", host=Host(dry_run=True, firewall="nftables"), isolated=True)
    a, b = lab.network("a", subnet="10.40.0.0/24"), lab.network("b", subnet="fd00:40::/64", internal=True)
    lab.namespace("x", networks=[a])
    lab.namespace("y", networks=[b])
    text = lab.explain()
    for family in ("ip", "ip6"):
        assert f'add rule {family} pynetns isolation iifname "{b.bridge}" oifname "{a.bridge}" ct status' in text
        assert f'add rule {family} pynetns isolation iifname "{b.bridge}" oifname != "{b.bridge}" drop' in text


def test_a_lab_enables_route_localnet_only_with_the_guard():
    lab = Lab("plan", host=Host(dry_run=True, firewall="nftables"), isolated=True)
    front, back = lab.network("front", subnet="10.40.0.0/24"), lab.network("back", subnet="10.41.0.0/24")
    lab.namespace("x", networks=[front])
    lab.namespace("y", networks=[back])
    lab.publish("y", 8080, 80, host_ip="10.41.0.1")  # a real address: no loopback, so no route_localnet
    text = lab.explain()
    assert "route_localnet" not in text and "127.0.0.0/8" not in text
    lab.publish("x", 8081, 80, host_ip="127.0.0.1")
    text = lab.explain()
    assert f"net.ipv4.conf.{front.bridge}.route_localnet=1" in text and f"{back.bridge}.route_localnet" not in text
    assert text.index('guard iifname != "lo" ip daddr 127.0.0.0/8') < text.index("route_localnet")


def test_the_root_namespace_is_named_only_from_itself():
    with pytest.raises(InvalidValue, match="root namespace"):
        _ = NetnsRef.root().netns_arg
    assert NetnsRef.named("web").netns_arg == "web" and NetnsRef.path("/run/x").netns_arg == "/run/x"
    host = Host(dry_run=True)
    Veth(
        "v1",
        "up0",
        namespace=Namespace("c1", host=host),
        peer_namespace=None,
        master="br0",
        address="10.0.0.2/24",
        peer_address="10.0.0.1/24",
        host=host,
    ).create()
    assert [str(call) for call in host.history] == [
        "ip -batch - <<'EOF'\nlink add up0 up type veth peer name v1 netns c1\n"
        "link set up0 alias pynetns:dry-run up\naddr add 10.0.0.1/24 dev up0\nEOF",
        "ip -n c1 -batch - <<'EOF'\nlink set v1 master br0 alias pynetns:dry-run up\naddr add 10.0.0.2/24 dev v1\nEOF",
    ]
    assert "/proc/1" not in "".join(str(call) for call in host.history)
