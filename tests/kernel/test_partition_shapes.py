"""Jepsen's partition shapes and one-way cuts on a real lab, checked pair by pair with ping."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from pynetns import Host
from pynetns.lab import Lab
from pynetns.polling import wait_until
from tests.support.lab import assert_gone, ping

root = pytest.mark.root

NODES = ["n1", "n2", "n3", "n4", "n5"]


def reachability(lab, names):
    """{(source, destination): whether a ping from source to destination is answered}, pinged all at once."""
    pairs = [(a, b) for a in names for b in names if a != b]
    address = addresses(lab)
    with ThreadPoolExecutor(len(pairs)) as pool:
        answers = pool.map(lambda pair: ping(lab.namespaces[pair[0]], address[pair[1]]), pairs)
        return dict(zip(pairs, answers, strict=True))


def addresses(lab):
    """Each namespace's (first) address, by its name in the lab."""
    found = {}
    for endpoint in lab.endpoints:
        name = next(name for name, namespace in lab.namespaces.items() if namespace is endpoint.namespace)
        found.setdefault(name, str(endpoint.ip.ip))
    return found


def counter(namespace, protocol, name):
    """One of ``namespace``'s own protocol counters (its /proc/net/snmp)."""
    lines = [line.split() for line in namespace.run(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    header, values = [line for line in lines if line[0] == f"{protocol}:"][:2]
    return int(values[header.index(name)])


def udp_received(namespace):
    """The UDP datagrams ``namespace`` has taken in, to an open port or not."""
    return counter(namespace, "Udp", "InDatagrams") + counter(namespace, "Udp", "NoPorts")


def send_udp(namespace, address, port):
    script = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ({address!r}, {port}))"
    namespace.run([sys.executable, "-c", script])


@root
def test_bridge_and_majorities_ring_pair_by_pair_then_heal():
    with Lab("jepsen", host=Host(firewall="nftables"), isolated=True) as lab:
        net = lab.network("net", subnet="10.54.0.0/24")
        for name in NODES:
            lab.namespace(name, networks=[net])
        lab.apply()
        assert all(reachability(lab, NODES).values())
        for shape in ("bridge", "majorities-ring"):
            made = lab.partition(shape=shape)
            seen = reachability(lab, NODES)  # a ping needs both directions open
            expected = {(a, b): made.reaches(a, b) and made.reaches(b, a) for a, b in seen}
            assert seen == expected, shape
            assert sum(seen.values()) == (12 if shape == "bridge" else 10)  # n3 bridges; each ring node sees 2
            lab.heal()
        assert all(reachability(lab, NODES).values())
        lab_id = lab.id
    assert_gone(lab_id)


@root
@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_one_way_cut_bridged_and_routed(firewall):
    """a → b and a → d dropped, b → a and d → a open: b on a's bridge, d on another network, through a
    published port (routed by the lab's host, whose forward drops must keep d → a open)."""
    with Lab("oneway", host=Host(firewall=firewall), isolated=True) as lab:
        front = lab.network("front", subnet="10.55.0.0/24")
        back = lab.network("back", subnet="10.56.0.0/24")
        a = lab.namespace("a", networks=[front])
        b = lab.namespace("b", networks=[front])
        c = lab.namespace("c", networks=[front])
        d = lab.namespace("d", networks=[back])
        lab.publish(a, 9000, 9000, "udp")
        lab.publish(d, 9001, 9001, "udp")
        lab.apply()
        made = lab.partition(a, [b, d], one_way=True)
        assert made.shape == "one-way" and made.cut == [("a", "b"), ("a", "d")]
        address = addresses(lab)
        assert not ping(a, address["b"])
        echoes, datagrams = counter(a, "Icmp", "InEchos"), udp_received(a)
        assert not ping(b, address["a"])  # the request arrives; a's reply does not come back
        assert counter(a, "Icmp", "InEchos") == echoes + 1
        send_udp(d, str(back.gateway.ip), 9000)  # routed d → a: arrives
        send_udp(b, address["a"], 9000)  # bridged b → a: arrives
        assert wait_until(lambda: udp_received(a) == datagrams + 2, timeout=5)
        before = udp_received(d)
        send_udp(a, str(front.gateway.ip), 9001)  # routed a → d: dropped
        assert ping(c, address["a"]) and ping(c, address["b"]) and udp_received(d) == before
        lab.heal()
        assert ping(a, address["b"]) and ping(b, address["a"])
        send_udp(a, str(front.gateway.ip), 9001)
        assert wait_until(lambda: udp_received(d) == before + 1, timeout=5)
        lab_id = lab.id
    assert_gone(lab_id)


@root
@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_halves_on_an_ipv6_network_pair_by_pair(firewall):
    """The namespaces' own drops cover IPv6 on every backend (iptables writes ip6tables too)."""
    names = NODES[:4]
    with Lab("halves6", host=Host(firewall=firewall), isolated=True) as lab:
        net = lab.network("net6", subnet="fd00:57::/64")
        for name in names:
            lab.namespace(name, networks=[net])
        lab.apply()
        assert all(reachability(lab, names).values())
        made = lab.partition(shape="halves")
        seen = reachability(lab, names)
        assert seen == {(a, b): made.reaches(a, b) for a, b in seen}
        assert sum(seen.values()) == 4  # two pairs, both ways
        lab.heal()
        assert all(reachability(lab, names).values())
        lab_id = lab.id
    assert_gone(lab_id)
