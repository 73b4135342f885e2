"""Published ports and masquerade end to end, against every firewall backend.

Each test builds, inside namespaces it owns::

    outside (192.168.50.2) ── out-veth ── host (192.168.50.1, 10.60.0.1 on the bridge) ── bridge ── c1 (10.60.0.2)

The "host" is the ``hostns`` fixture, so the machine's own ruleset is never touched.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator

import attrs
import pytest

from pynetns import Bridge, Host, Masquerade, Namespace, NotFound, PortInUse, PortMap, Route, Veth, wait_until
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.servers import http_server_argv, udp_echo_argv

pytestmark = pytest.mark.root

HOST_OUT, OUTSIDE = "192.168.50.1", "192.168.50.2"
GATEWAY, C1 = "10.60.0.1", "10.60.0.2"
SUBNET = "10.60.0.0/24"

BACKENDS = {
    "nftables": Nftables,
    "iptables-nft": lambda: Iptables("nft"),
    "iptables-legacy": lambda: Iptables("legacy"),
}

UDP_CLIENT = """
import socket, sys
address, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport:
        sock.bind(("0.0.0.0", sport))
    sock.settimeout(0.5)
    sock.sendto(b"ping", (address, port))
    try:
        print(sock.recv(1000).decode())
    except OSError:
        pass
"""


@attrs.define
class Lab:
    host: Host
    hostns: Namespace
    c1: Namespace
    outside: Namespace
    bridge: Bridge

    def portmap(self, *args: object, **kwargs: object) -> PortMap:
        return PortMap(*args, namespace=self.hostns, host=self.host, **kwargs)  # type: ignore[arg-type, misc]

    def masquerade(self) -> Masquerade:
        return Masquerade(SUBNET, self.bridge, namespace=self.hostns, host=self.host)

    def serve(self, port: int = 8000, body: str = "c1") -> None:
        self.c1.popen(http_server_argv(C1, port, body=body))
        wait_until(lambda: self.fetch(self.c1, C1, port), what="the HTTP server in c1")

    def fetch(self, where: Namespace, address: str, port: int) -> str:
        argv = ["curl", "-sS", "--max-time", "1", f"http://{address}:{port}/"]
        return where.run(argv, check=False).stdout

    def reaches(self, where: Namespace, address: str, port: int, body: str = "c1") -> str | None:
        """The client address c1's server saw, if ``where`` reached it at ``address:port``."""
        text = self.fetch(where, address, port)
        lines = text.splitlines()
        if len(lines) == 2 and lines[0] == body:
            return lines[1].removeprefix("client ")
        return None

    def udp(self, where: Namespace, address: str, port: int, sport: int = 0) -> str:
        argv = [sys.executable, "-c", UDP_CLIENT, address, str(port), str(sport)]
        return where.run(argv, check=False).stdout.strip()

    def ruleset(self) -> str:
        """Everything every firewall tool shows in the host namespace, counters aside."""
        parts = [self.hostns.run(["nft", "list", "ruleset"]).stdout]
        for tool in ("iptables-nft-save", "iptables-legacy-save"):
            text = self.hostns.run([tool], check=False).stdout
            parts.append("\n".join(line for line in text.splitlines() if not line.startswith("#")))
        text = "\n".join(parts)
        return re.sub(r"\[\d+:\d+\]|packets \d+ bytes \d+", "", text)


@pytest.fixture(params=sorted(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lab(names: Callable[[str], str], host: Host, hostns: Namespace, backend_name: str) -> Iterator[Lab]:
    fw_host = Host(tag=host.tag, firewall=BACKENDS[backend_name]())
    bridge = Bridge(names("br"), address=f"{GATEWAY}/24", namespace=hostns, host=host)
    bridge.create()
    with Namespace(names("c1"), host=host) as c1, Namespace(names("out"), host=host) as outside:
        Veth(
            names("veth"),
            "eth0",
            namespace=hostns,
            peer_namespace=c1,
            master=bridge,
            peer_address=f"{C1}/24",
            host=host,
        ).create()
        Route("default", via=GATEWAY, namespace=c1, host=host).create()
        Veth(
            names("vout"),
            "eth0",
            namespace=hostns,
            peer_namespace=outside,
            address=f"{HOST_OUT}/24",
            peer_address=f"{OUTSIDE}/24",
            host=host,
        ).create()
        yield Lab(fw_host, hostns, c1, outside, bridge)


def test_published_port_is_reachable_from_everywhere(lab: Lab) -> None:
    lab.serve()
    mapping = lab.portmap(8080, C1, 8000)
    mapping.create()
    assert mapping.exists()
    # another namespace, through the host's address: the client address is kept, as with Docker
    assert wait_until(lambda: lab.reaches(lab.outside, HOST_OUT, 8080), what="outside → host:8080") == OUTSIDE
    # the host itself, at its own addresses (OUTPUT)
    assert lab.reaches(lab.hostns, HOST_OUT, 8080) is not None
    assert lab.reaches(lab.hostns, GATEWAY, 8080) is not None
    # the host at 127.0.0.1 (route_localnet + masquerade of loopback sources)
    assert lab.reaches(lab.hostns, "127.0.0.1", 8080) == GATEWAY
    assert lab.hostns.sysctl(f"net.ipv4.conf.{lab.bridge.name}.route_localnet") == "1"
    # hairpin: the container through the host's address
    assert lab.reaches(lab.c1, HOST_OUT, 8080) == GATEWAY
    assert lab.reaches(lab.c1, GATEWAY, 8080) == GATEWAY
    counters = mapping.counters()
    assert counters.packets >= 6 and counters.bytes > 0
    lab.reaches(lab.outside, HOST_OUT, 8080)
    assert mapping.counters().packets > counters.packets
    mapping.delete()
    assert not mapping.exists()
    assert lab.reaches(lab.outside, HOST_OUT, 8080) is None
    assert lab.hostns.sysctl(f"net.ipv4.conf.{lab.bridge.name}.route_localnet") == "0"


def test_masquerade_leaves_with_the_host_address_and_restores_ip_forward(lab: Lab) -> None:
    lab.outside.popen(http_server_argv(OUTSIDE, 8000, body="outside"))
    fetch = ["curl", "-sS", "--max-time", "1", f"http://{OUTSIDE}:8000/"]
    wait_until(lambda: lab.outside.run(fetch, check=False).stdout, what="the outside server")
    assert lab.hostns.sysctl("net.ipv4.ip_forward") == "0"
    with lab.masquerade() as masquerade:
        assert masquerade.exists()
        assert lab.hostns.sysctl("net.ipv4.ip_forward") == "1"
        text = wait_until(lambda: lab.c1.run(fetch, check=False).stdout, what="c1 → outside")
        assert text.splitlines()[1] == f"client {HOST_OUT}"
    assert lab.hostns.sysctl("net.ipv4.ip_forward") == "0"
    assert lab.c1.run(fetch, check=False).stdout == ""


def test_ip_forward_is_restored_only_when_the_last_user_is_gone(lab: Lab) -> None:
    masquerade, mapping = lab.masquerade(), lab.portmap(8080, C1, 8000)
    masquerade.create()
    mapping.create()
    masquerade.delete()
    assert lab.hostns.sysctl("net.ipv4.ip_forward") == "1"
    mapping.delete()
    assert lab.hostns.sysctl("net.ipv4.ip_forward") == "0"


@pytest.mark.parametrize("tool", ["iptables-nft", "iptables-legacy"])
def test_forwarding_works_under_a_drop_policy(lab: Lab, tool: str) -> None:
    lab.hostns.run([tool, "-P", "FORWARD", "DROP"])
    lab.serve()
    lab.outside.popen(http_server_argv(OUTSIDE, 8000, body="outside"))
    fetch = ["curl", "-sS", "--max-time", "1", f"http://{OUTSIDE}:8000/"]
    wait_until(lambda: lab.outside.run(fetch, check=False).stdout, what="the outside server")
    with lab.masquerade(), lab.portmap(8080, C1, 8000):
        assert wait_until(lambda: lab.reaches(lab.outside, HOST_OUT, 8080), what="published port") == OUTSIDE
        assert "client" in wait_until(lambda: lab.c1.run(fetch, check=False).stdout, what="c1 → outside")
    assert lab.hostns.run([tool, "-S", "FORWARD"]).stdout.splitlines() == ["-P FORWARD DROP"]


def test_host_ip_binds_the_mapping(lab: Lab) -> None:
    lab.serve()
    with lab.portmap(8080, C1, 8000, host_ip="127.0.0.1"):
        assert lab.reaches(lab.hostns, "127.0.0.1", 8080) == GATEWAY
        assert lab.reaches(lab.outside, HOST_OUT, 8080) is None
        assert lab.reaches(lab.hostns, HOST_OUT, 8080) is None
    with lab.portmap(8080, C1, 8000, host_ip=HOST_OUT):
        assert wait_until(lambda: lab.reaches(lab.outside, HOST_OUT, 8080), what="bound mapping") == OUTSIDE
        assert lab.reaches(lab.hostns, GATEWAY, 8080) is None
        assert lab.reaches(lab.hostns, "127.0.0.1", 8080) is None


def test_a_port_range_is_one_rule(lab: Lab) -> None:
    for number in range(3):
        lab.c1.popen(http_server_argv(C1, 7000 + number, body=f"c1-{number}"))
    wait_until(lambda: all(lab.fetch(lab.c1, C1, 7000 + n) for n in range(3)), what="three servers")
    with lab.portmap(8000, C1, 7000, host_port_end=8002) as mapping:
        for number in range(3):
            got = wait_until(lambda n=number: lab.reaches(lab.outside, HOST_OUT, 8000 + n, f"c1-{n}"), what="range")
            assert got == OUTSIDE
        state = mapping._site().state(lab.host.firewall, 4, "nat")
        assert len([rule for rule in mapping._mine(state) if rule.chain == "dnat"]) == 1


def test_udp_mapping_applies_at_once_on_create_and_after_a_remap(lab: Lab) -> None:
    first = lab.c1.popen(udp_echo_argv(C1, 9000))
    lab.c1.popen(udp_echo_argv(C1, 9001))
    wait_until(lambda: lab.udp(lab.c1, C1, 9000) and lab.udp(lab.c1, C1, 9001), what="udp echo servers")
    # a datagram before any mapping leaves a conntrack entry that would bypass a new DNAT rule
    assert lab.udp(lab.outside, HOST_OUT, 9090, sport=40000) == ""
    mapping = lab.portmap(9090, C1, 9000, protocol="udp")
    mapping.create()
    assert lab.udp(lab.outside, HOST_OUT, 9090, sport=40000) == f"{OUTSIDE} ping"
    mapping.delete()
    first.stop()
    with lab.portmap(9090, C1, 9001, protocol="udp"):
        assert lab.udp(lab.outside, HOST_OUT, 9090, sport=40000) == f"{OUTSIDE} ping"


def test_conflicts_raise_port_in_use_and_keep_the_first_mapping(lab: Lab) -> None:
    lab.serve()
    with lab.portmap(8080, C1, 8000):
        for clash in (
            lab.portmap(8080, "10.60.0.9", 80),
            lab.portmap(8070, "10.60.0.9", 80, host_port_end=8090),
            lab.portmap(8080, "10.60.0.9", 80, host_ip=HOST_OUT),
        ):
            with pytest.raises(PortInUse) as caught:
                clash.create()
            assert lab.host.tag in str(caught.value) and caught.value.holder
        assert wait_until(lambda: lab.reaches(lab.outside, HOST_OUT, 8080), what="the first mapping") == OUTSIDE
        with lab.portmap(8080, C1, 8000, protocol="udp"):
            pass
    lab.hostns.popen(http_server_argv("0.0.0.0", 8181, body="host"))
    wait_until(lambda: lab.fetch(lab.hostns, "127.0.0.1", 8181), what="a listener on the host")
    with pytest.raises(PortInUse) as caught:
        lab.portmap(8181, C1, 8000).create()
    assert "python" in str(caught.value)


def test_delete_returns_the_ruleset_to_exactly_what_it_was(lab: Lab) -> None:
    # someone else's rules, which pynetns must leave alone
    lab.hostns.run(["nft", "add", "table", "ip", "other"])
    lab.hostns.run(["nft", "add", "chain", "ip", "other", "c", "{ type filter hook forward priority 0; }"])
    lab.hostns.run(["nft", "add", "rule", "ip", "other", "c", "counter"])
    lab.hostns.run(["iptables-nft", "-t", "nat", "-A", "POSTROUTING", "-s", "10.99.0.0/16", "-j", "MASQUERADE"])
    lab.hostns.run(["iptables-legacy", "-A", "FORWARD", "-s", "10.98.0.0/16", "-j", "ACCEPT"])
    # (an xtables nat table, once instantiated, stays even when empty: a host using iptables has one)
    lab.hostns.run(["iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-s", "10.97.0.0/16", "-j", "MASQUERADE"])
    # (so does a raw table, where a port map's loopback guard goes: iptables-legacy cannot remove a table,
    # iptables-nft-restore cannot remove an empty one it made)
    for tool in ("iptables-nft", "iptables-legacy"):
        lab.hostns.run([tool, "-t", "raw", "-A", "PREROUTING", "-s", "10.96.0.0/16", "-j", "ACCEPT"])
    before = lab.ruleset()
    masquerade, mapping = lab.masquerade(), lab.portmap(8080, C1, 8000)
    masquerade.create()
    mapping.create()
    other = lab.portmap(8081, C1, 8000, protocol="udp")
    other.create()
    during = lab.ruleset()
    assert during != before
    other.delete()
    mapping.delete()
    masquerade.delete()
    assert lab.ruleset().splitlines() == before.splitlines()


def test_a_missing_mapping_cannot_be_deleted(lab: Lab) -> None:
    with pytest.raises(LookupError):
        lab.portmap(8080, C1, 8000).delete()


def test_a_mapping_to_an_address_the_host_cannot_reach_says_so(lab: Lab) -> None:
    """A container not made yet (the README's PortMap example once): NotFound saying what to do; nothing written."""
    before = lab.ruleset()
    with pytest.raises(NotFound, match=r"^the host has no route to 10\.99\.0\.2: create the network") as raised:
        lab.portmap(8080, "10.99.0.2", 80).create()
    assert "unreachable" in raised.value.evidence
    assert lab.ruleset() == before


def test_an_ipv6_port_map_from_outside_the_host_and_by_hairpin(
    names: Callable[[str], str], host: Host, hostns: Namespace, backend_name: str
) -> None:
    fw_host = Host(tag=host.tag, firewall=BACKENDS[backend_name]())
    with Namespace(names("c6"), host=host) as c1, Namespace(names("o6"), host=host) as outside:
        for namespace in (hostns, c1, outside):  # addresses usable at once, without duplicate detection
            namespace.sysctl("net.ipv6.conf.all.accept_dad", "0")
            namespace.sysctl("net.ipv6.conf.default.accept_dad", "0")
        bridge = Bridge(names("br6"), address="fd00:60::1/64", namespace=hostns, host=host)
        bridge.create()
        Veth(
            names("v6"),
            "eth0",
            namespace=hostns,
            peer_namespace=c1,
            master=bridge,
            peer_address="fd00:60::2/64",
            host=host,
        ).create()
        Route("default", via="fd00:60::1", namespace=c1, host=host).create()
        Veth(
            names("w6"),
            "eth0",
            namespace=hostns,
            peer_namespace=outside,
            address="fd00:61::1/64",
            peer_address="fd00:61::2/64",
            host=host,
        ).create()
        c1.popen(http_server_argv("::", 8000, body="v6"))

        def fetch(namespace: Namespace, url: str) -> str | None:
            result = namespace.run(["curl", "-s", "-m", "2", "-g", url], check=False)
            return result.stdout.splitlines()[-1] if result.returncode == 0 else None

        wait_until(lambda: fetch(c1, "http://[::1]:8000/"), what="the IPv6 server")
        mapping = PortMap(8080, "fd00:60::2", 8000, namespace=hostns, host=fw_host)
        mapping.create()
        try:
            assert fetch(outside, "http://[fd00:61::1]:8080/") == "client fd00:61::2"
            assert fetch(hostns, "http://[fd00:61::1]:8080/") == "client fd00:61::1"
            assert fetch(c1, "http://[fd00:60::1]:8080/") == "client fd00:60::1"  # hairpin, masqueraded
            assert mapping.counters().packets >= 3
            assert hostns.sysctl("net.ipv6.conf.all.forwarding").strip() == "1"
        finally:
            mapping.delete()
        assert fetch(outside, "http://[fd00:61::1]:8080/") is None
        assert hostns.sysctl("net.ipv6.conf.all.forwarding").strip() == "0"
