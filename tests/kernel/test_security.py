"""What runs in a lab namespace is untrusted: it must not reach the host's loopback, other networks
(IPv4 and IPv6 alike), nor the machine's own namespace.

Every test works from the attacker's side, in namespaces it creates: isolated labs (the host is a
throwaway namespace) or ``playhost``, so no rule or sysctl of the machine itself is touched.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_security.py.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from pynetns import Bridge, Host, Namespace, PortMap, Route, Veth, wait_until
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.lab import Endpoint, Lab
from tests.support.web import fetch, serve

BACKENDS = {
    "nftables": Nftables,
    "iptables-nft": lambda: Iptables("nft"),
    "iptables-legacy": lambda: Iptables("legacy"),
}


# Hand-made TCP SYNs in Ethernet frames, sent on a device to a given MAC: the destination address
# can be 127.0.0.1 or ::1 and the frame still goes to the gateway (a socket would loop it back through
# the attacker's own lo). IPv4 or IPv6 as the source address is. For each "address:port" target
# ("[::1]:8080" for IPv6), prints what came back to its SYN's source port: "synack", "rst" or "none"
# (nothing within a second, three SYNs each).
RAW_SYN = r"""
import os, socket, struct, sys, time
device, src_mac, dst_mac, src, *targets = sys.argv[1:]
six = ":" in src
ethertype = 0x86DD if six else 0x0800

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def syn(sport, dst, dport):
    family = socket.AF_INET6 if six else socket.AF_INET
    saddr, daddr = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    if six:
        pseudo = saddr + daddr + struct.pack("!I3xB", len(tcp), 6)
    else:
        pseudo = saddr + daddr + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    if six:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, saddr, daddr)
    else:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, saddr, daddr)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    ether = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", ""))
    return ether + struct.pack("!H", ethertype) + ip + tcp

def tcp_header(packet):
    # where the TCP header of an IP packet starts (None: not TCP)
    if six:
        return 40 if len(packet) >= 60 and packet[6] == 6 else None
    return (packet[0] & 0x0F) * 4 if len(packet) >= 40 and packet[9] == 6 else None

base = 40000 + os.getpid() % 20000
frames = {}
for index, target in enumerate(targets):
    address, _, port = target.rpartition(":")
    frames[base + index] = syn(base + index, address.strip("[]"), int(port))
answers = dict.fromkeys(frames, "none")
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype)) as sock:
    sock.bind((device, ethertype))
    sock.settimeout(0.05)
    start = time.monotonic()
    sent = 0
    while time.monotonic() < start + 1.0 and "none" in answers.values():
        if sent < 3 and time.monotonic() >= start + 0.3 * sent:
            for sport, frame in frames.items():
                if answers[sport] == "none":
                    sock.send(frame)
            sent += 1
        try:
            packet = sock.recv(2048)[14:]
        except TimeoutError:
            continue
        header = tcp_header(packet)
        if header is None:
            continue
        to_port = struct.unpack("!H", packet[header + 2 : header + 4])[0]
        flags = packet[header + 13]
        if to_port in answers and answers[to_port] == "none":
            answers[to_port] = "synack" if flags & 0x12 == 0x12 else "rst" if flags & 0x04 else "none"
for sport in frames:
    print(answers[sport])
"""


root = pytest.mark.root


def mac_of(namespace: Namespace, device: str) -> str:
    mac = namespace.interface(device).mac
    assert mac is not None
    return mac


def endpoint(lab: Lab, namespace: Namespace) -> Endpoint:
    return next(item for item in lab.endpoints if item.namespace is namespace)


def raw_syns(lab: Lab, attacker: Namespace, *targets: str, six: bool = False) -> list[str]:
    """Send SYNs from ``attacker`` through its gateway to each ``address:port``; what came back to each
    (``six``: IPv6, from the attacker's IPv6 address)."""
    mine = endpoint(lab, attacker)
    source = mine.ip6 if six else mine.ip
    assert source is not None
    hostns = lab.host_namespace
    assert hostns is not None
    argv = [
        sys.executable,
        "-c",
        RAW_SYN,
        mine.interface,
        mac_of(attacker, mine.interface),
        mac_of(hostns, mine.network.bridge),
        str(source.ip),
        *targets,
    ]
    return attacker.run(argv).stdout.split()


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_hosts_loopback_is_out_of_reach_of_lab_namespaces(backend: str) -> None:
    """CVE-2020-8558: a SYN to 127.0.0.1 through the gateway gets no answer, is never DNATed; the host's own
    access to 127.0.0.1 still works."""
    with Lab("loop", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        front = lab.network("front", subnet="10.48.0.0/24")
        back = lab.network("back", subnet="10.49.0.0/24")
        web = lab.namespace("web", networks=[front])
        neighbour = lab.namespace("nbr", networks=[front])  # on the published port's network (route_localnet)
        stranger = lab.namespace("str", networks=[back])  # on another network
        loopback = lab.publish("web", 8080, 80, host_ip="127.0.0.1")
        everywhere = lab.publish("web", 8081, 80)
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        serve(web, "0.0.0.0", 80, "web")
        serve(hostns, "127.0.0.1", 9090, "secret")  # a host service bound to loopback only
        assert hostns.sysctl(f"net.ipv4.conf.{front.bridge}.route_localnet") == "1"
        before = loopback.counters().packets
        for attacker, net in ((neighbour, front), (stranger, back)):
            answers = raw_syns(
                lab,
                attacker,
                f"{net.gateway.ip}:8081",  # the frames do leave the attacker
                "127.0.0.1:8080",  # published on 127.0.0.1
                "127.0.0.1:8081",  # published everywhere, but not there
                "127.0.0.1:9090",
            )  # the host's loopback listener
            assert answers == ["synack", "none", "none", "none"], attacker.name
        assert loopback.counters().packets == before
        # the host itself, at 127.0.0.1: still there (OUTPUT DNAT, masquerade, and the replies)
        assert fetch(hostns, "http://127.0.0.1:8080/") == "web"
        assert fetch(hostns, "http://127.0.0.1:8081/") == "web"
        assert fetch(hostns, "http://127.0.0.1:9090/") == "secret"
        assert loopback.counters().packets > before
        assert everywhere.exists()


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_hosts_ipv6_loopback_is_out_of_reach_of_lab_namespaces(backend: str) -> None:
    """A dual-stack published port answers on the host's [::1] through a proxy listening there: a SYN to [::1]
    through the gateway gets no answer (neither the proxy's nor a host service's on ::1), while a SYN to the
    gateway's IPv6 address in the same run is answered and the host's own [::1] works."""
    with Lab("loop6", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        front = lab.network("front", subnet="10.36.0.0/24", subnet6="fd00:36::/64")
        back = lab.network("back", subnet="10.37.0.0/24", subnet6="fd00:37::/64")
        web = lab.namespace("web", networks=[front])
        neighbour = lab.namespace("nbr", networks=[front])
        stranger = lab.namespace("str", networks=[back])
        lab.publish("web", 8081, 80)
        loopback = lab.publish("web", 8082, 80, host_ip="::1")
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        serve(web, "::", 80, "web")
        serve(hostns, "::1", 9090, "secret")  # a host service bound to ::1 only
        for attacker, net in ((neighbour, front), (stranger, back)):
            assert net.gateway6 is not None
            answers = raw_syns(
                lab,
                attacker,
                f"[{net.gateway6.ip}]:8081",  # the frames do leave the attacker
                "[::1]:8081",  # published everywhere: the proxy listens on [::1]
                "[::1]:8082",  # published on ::1 only
                "[::1]:9090",  # the host's own ::1 listener
                six=True,
            )
            assert answers == ["synack", "none", "none", "none"], attacker.name
        assert fetch(hostns, "http://[::1]:8081/") == "web" and fetch(hostns, "http://[::1]:8082/") == "web"
        assert fetch(hostns, "http://[::1]:9090/") == "secret" and loopback.family == 6


@root
@pytest.mark.parametrize("backend", ["nftables", "iptables-legacy"])
def test_a_port_map_on_loopback_outside_a_lab_is_guarded_too(
    names: Callable[[str], str], host: Host, hostns: Namespace, backend: str
) -> None:
    fw_host = Host(tag=host.tag, firewall=BACKENDS[backend]())
    bridge = Bridge(names("br"), address="10.62.0.1/24", namespace=hostns, host=host)
    bridge.create()
    with Namespace(names("c1"), host=host) as c1, Namespace(names("att"), host=host) as attacker:
        for namespace, address in ((c1, "10.62.0.2/24"), (attacker, "10.62.0.3/24")):
            Veth(
                names("v"),
                "eth0",
                namespace=hostns,
                peer_namespace=namespace,
                master=bridge,
                peer_address=address,
                host=host,
            ).create()
            Route("default", via="10.62.0.1", namespace=namespace, host=host).create()
        serve(c1, "0.0.0.0", 8000, "c1")
        mapping = PortMap(8080, "10.62.0.2", 8000, host_ip="127.0.0.1", namespace=hostns, host=fw_host)
        with mapping:
            argv = [
                sys.executable,
                "-c",
                RAW_SYN,
                "eth0",
                mac_of(attacker, "eth0"),
                mac_of(hostns, bridge.name),
                "10.62.0.3",
                "10.62.0.1:8080",
                "127.0.0.1:8080",
            ]
            # published on loopback only: the host's address refuses (so the frames arrive), 127.0.0.1 is silent
            assert attacker.run(argv).stdout.split() == ["rst", "none"]
            assert mapping.counters().packets == 0
            assert fetch(hostns, "http://127.0.0.1:8080/") == "c1"
            assert mapping.counters().packets > 0


def ping(namespace: Namespace, address: str) -> bool:
    """One echo request; a lab's links answer in well under the 0.5 s given (so a miss is a drop)."""
    return namespace.run(["ping", "-c1", "-W0.5", address], check=False).returncode == 0


def connects(namespace: Namespace, address: str, port: int) -> bool:
    host = f"[{address}]" if ":" in address else address
    argv = ["curl", "-s", "-g", "--connect-timeout", "0.5", "-m", "2", f"http://{host}:{port}/"]
    return namespace.run(argv, check=False).returncode == 0


@root
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_isolation_and_internal_networks_hold_for_ipv6_as_for_ipv4(
    names: Callable[[str], str], host: Host, backend: str
) -> None:
    with Lab("six", host=Host(firewall=BACKENDS[backend]()), isolated=True) as lab:
        nets = {
            4: (
                lab.network("a4", subnet="10.50.0.0/24"),
                lab.network("b4", subnet="10.51.0.0/24"),
                lab.network("i4", subnet="10.52.0.0/24", internal=True),
            ),
            6: (
                lab.network("a6", subnet="fd00:50::/64"),
                lab.network("b6", subnet="fd00:51::/64"),
                lab.network("i6", subnet="fd00:52::/64", internal=True),
            ),
        }
        spaces = {
            family: tuple(
                lab.namespace(f"{kind}{family}", networks=[net]) for kind, net in zip("abi", nets[family], strict=True)
            )
            for family in (4, 6)
        }
        published = {family: lab.publish(f"b{family}", 8080 + family, 80) for family in (4, 6)}
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        with Namespace(names("world"), host=host) as world:  # the outside world, behind the lab's host
            wan = names("wan")
            Veth(
                wan,
                "eth0",
                namespace=hostns,
                peer_namespace=world,
                address="192.0.2.1/24",
                peer_address="192.0.2.2/24",
                host=host,
            ).create()
            world.run(["ip", "addr", "add", "fd00:99::2/64", "dev", "eth0", "nodad"])
            hostns.run(["ip", "addr", "add", "fd00:99::1/64", "dev", wan, "nodad"])
            # the world routes the lab's subnets back through the host, so only the host's drops can stop a reply
            for subnet, via in (("10.48.0.0/13", "192.0.2.1"), ("fd00:50::/44", "fd00:99::1")):
                Route(subnet, via=via, namespace=world, host=host).create()
            serve(world, "::", 80, "world")
            for family, (net_a, _, net_i) in nets.items():
                a, b, inner = spaces[family]
                target = endpoint(lab, b).ip.ip
                world_ip = "192.0.2.2" if family == 4 else "fd00:99::2"
                serve(b, "::" if family == 6 else "0.0.0.0", 80, f"b{family}")
                # within reach: the published port from another network, the outside from a NAT network
                gateway = str(net_a.gateway.ip)
                assert wait_until(
                    functools.partial(connects, a, gateway, 8080 + family),
                    timeout=10,
                    what=f"IPv{family}: a published port from another network",
                )
                assert connects(a, world_ip, 80), f"IPv{family}: the outside from a NAT network"
                own = str(net_i.gateway.ip)  # (polled: a new IPv6 address is usable once duplicate detection ends)
                assert wait_until(functools.partial(ping, inner, own), what=f"IPv{family}: an internal gateway")
                # out of reach: another network, directly; the outside from an internal network
                assert not ping(a, str(target)), f"IPv{family}: another network answers ping"
                assert not connects(a, str(target), 80), f"IPv{family}: another network accepts TCP"
                assert not ping(inner, world_ip), f"IPv{family}: an internal network reaches the outside"
                assert not connects(inner, world_ip, 80), f"IPv{family}: an internal network connects outside"
                assert published[family].exists()
                # a partition cuts the way round through the published port too (host-side drops per version)
                lab.partition(a, b)
                assert not connects(a, gateway, 8080 + family), f"IPv{family}: a partition lets a port through"
                lab.heal()
                assert connects(a, gateway, 8080 + family), f"IPv{family}: heal"


@root
def test_the_root_namespace_is_the_hosts_not_pid_1s(names: Callable[[str], str], playhost: Host) -> None:
    """A veth whose peer goes "to the root namespace" lands in the namespace the Host plays, never in the
    machine's (/proc/1/ns/net): from a named namespace (``ip -n``) and from one given by path (``nsenter``)."""
    with Namespace(names("c"), host=playhost) as inner:
        by_path = Namespace.from_path(f"/run/netns/{inner.name}", host=playhost)
        for index, where in enumerate((inner, by_path)):
            veth = Veth(
                names("v"),
                names("up"),
                namespace=where,
                peer_namespace=None,
                address=f"10.63.{index}.2/24",
                peer_address=f"10.63.{index}.1/24",
                host=playhost,
            )
            veth.create()
            assert veth.interface().name == veth.name  # in its namespace,
            hosts = {item["ifname"] for item in playhost.run(["ip", "-j", "link", "show"]).json()}
            assert veth.peer in hosts  # the peer in the Host's,
            mine = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
            assert veth.peer not in {item["ifname"] for item in json.loads(mine)}  # not in the machine's
            assert ping(inner, f"10.63.{index}.1")  # and linked: the Host's end answers
            veth.delete()


UNSHARED = """
import json, subprocess, sys
from pynetns import Host, Namespace, Veth
host, (inner, name, peer) = Host(tag=sys.argv[1]), sys.argv[2:5]
with Namespace(inner, host=host) as namespace:
    Veth(name, peer, namespace=namespace, peer_namespace=None, host=host).create()
    here = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    print(peer in {item["ifname"] for item in here})
"""


@root
def test_the_root_namespace_inside_unshare_is_the_callers(names: Callable[[str], str], host: Host) -> None:
    """Locally, "the root namespace" is the caller's: inside ``unshare -n`` the peer lands there."""
    peer = names("up")
    argv = ["unshare", "-n", sys.executable, "-c", UNSHARED, host.tag, names("c"), names("v"), peer]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
    mine = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert peer not in {item["ifname"] for item in json.loads(mine)}
