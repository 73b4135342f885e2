"""Dual-stack networks without root: the commands a dry run shows (both addresses, gateways and default routes,
masquerade and published ports per family, the [::1] proxy), the IPv6 default pool (a /64 of the host's
unique local /48, kept once per host), the family-aware port overlap, bad input, topology files.

The kernel side is tests/kernel/test_dualstack.py.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import threading

import pytest

from pynetns import Host, InvalidValue, NotFound, SubnetOverlap
from pynetns.backends.iptables import Iptables
from pynetns.lab import Lab, Topology, proxy6
from pynetns.lab.ipam import ULA_FILE, host_ula, pick_subnet6, random_ula
from pynetns.lab.loopback6 import needs_proxy

ULA = ipaddress.IPv6Network("fd00:abcd:ef01::/48")


def dual_lab(firewall: object = "nftables", **kwargs: object) -> Lab:
    lab = Lab("dual", host=Host(dry_run=True, firewall=firewall), isolated=True)
    front = lab.network("front", subnet="10.30.0.0/24", subnet6="fd00:30::/64", **kwargs)  # type: ignore[arg-type]
    lab.namespace("web", networks=[front])
    return lab


def test_members_get_both_addresses_and_both_default_routes():
    lab = dual_lab()
    front = lab.networks["front"]
    assert [str(subnet) for subnet in front.subnets] == ["10.30.0.0/24", "fd00:30::/64"]
    assert [str(gateway) for gateway in front.gateways] == ["10.30.0.1/24", "fd00:30::1/64"]
    assert str(lab.ip("web")) == "10.30.0.2" and str(lab.ip("web", "front", version=6)) == "fd00:30::2"
    assert str(lab.endpoint("web").ip6) == "fd00:30::2/64" and str(lab.ip("web", version=4)) == "10.30.0.2"
    script = str(lab.explain())
    for line in (
        "addr add 10.30.0.1/24 dev",
        "nodad",  # the IPv6 gateway skips duplicate address detection
        "addr add 10.30.0.2/24 dev eth0",
        "addr add fd00:30::2/64 dev eth0",
        "route add default via 10.30.0.1",
        "route add default via fd00:30::1",
        "net/ipv6/conf/eth0/accept_dad=0",
    ):
        assert line in script, line
    assert "addr add fd00:30::1/64 dev" in script


def test_nat_and_published_ports_per_family_on_nftables():
    lab = dual_lab()
    portmap = lab.publish("web", 8080, 80)
    assert portmap.family == 4 and portmap.twin is not None and portmap.twin.family == 6
    assert lab.published == [portmap, portmap.twin]
    script = str(lab.explain())
    assert "ip6 saddr fd00:30::/64 masquerade comment" in script and "ip saddr 10.30.0.0/24 masquerade" in script
    # the host's [::1] is left to the proxy: IPv6 has no route_localnet
    assert "ip6 daddr != ::1 tcp dport 8080 counter dnat to [fd00:30::2]:80" in script
    assert "proxy6.py --port 8080-8080 --to fd00:30::2 --to-port 80" in script
    assert "isolate6/" not in script  # one network alone: nothing to isolate it from


@pytest.mark.parametrize("variant", ["iptables-nft", "iptables-legacy"])
def test_nat_and_published_ports_per_family_on_iptables(variant):
    lab = dual_lab(firewall=Iptables(variant.removeprefix("iptables-")))
    lab.publish("web", 8080, 80)
    calls = lab.plan()
    six = "".join(call.input or "" for call in calls if any(word.startswith("ip6tables") for word in call.argv))
    four = "".join(call.input or "" for call in calls if any(word.startswith("iptables") for word in call.argv))
    assert "-s fd00:30::/64 ! -o" in six and "MASQUERADE" in six
    assert "! -d ::1 -p tcp -m tcp --dport 8080" in six and "--to-destination [fd00:30::2]:80" in six
    assert "10.30.0.0/24" in four and "fd00:30" not in four


def test_ipv6_true_takes_a_slash_64_of_the_hosts_unique_local_48(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path))
    lab = Lab("auto", host=Host(dry_run=True), isolated=True)
    one = lab.network("one", subnet="10.40.0.0/24", ipv6=True)
    two = lab.network("two", ipv6=True)  # IPv4 from the default pools, IPv6 from the /48
    assert one.subnet6 is not None and two.subnet6 is not None and one.pooled6 and two.pooled6
    ula = lab._state.ula()
    assert one.subnet6.subnet_of(ula) and two.subnet6.subnet_of(ula) and not one.subnet6.overlaps(two.subnet6)
    assert one.subnet6.prefixlen == 64 and two.subnet.version == 4 and two.pooled
    assert not (tmp_path / ULA_FILE).exists()  # a dry run writes nothing


def test_the_unique_local_48_is_drawn_once_and_agreed_by_parallel_processes(tmp_path):
    """Four processes ask at once for the host's /48: one draws and writes it (under the host lock), all agree."""
    code = "from pynetns import Host; from pynetns.lab.ipam import host_ula; print(host_ula(Host()))"
    env = {"PYNETNS_RUNTIME_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    runs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)
    ]
    answers = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(answers) == 1
    (ula,) = answers
    network = ipaddress.IPv6Network(ula)
    assert network.prefixlen == 48 and network.subnet_of(ipaddress.IPv6Network("fd00::/8"))
    assert (tmp_path / ULA_FILE).read_text().strip() == ula
    assert str(host_ula(Host(dry_run=True, runtime=None))) != "" and list(tmp_path.glob("*.tmp")) == []


def test_pick_subnet6_skips_taken_ones_and_random_ulas_are_unique_local():
    taken = [ipaddress.ip_network("fd00:abcd:ef01::/64"), ipaddress.ip_network("10.0.0.0/8")]
    assert str(pick_subnet6(taken, ULA)) == "fd00:abcd:ef01:1::/64"
    drawn = {random_ula() for _ in range(8)}
    assert len(drawn) == 8 and all(
        ula.prefixlen == 48 and ula.subnet_of(ipaddress.IPv6Network("fd00::/8")) for ula in drawn
    )
    with pytest.raises(SubnetOverlap):
        pick_subnet6([ipaddress.ip_network("fd00:abcd:ef01::/48")], ULA)


def test_publishing_one_port_per_family_is_no_overlap():
    lab = dual_lab()
    four = lab.publish("web", 8080, 80, host_ip="0.0.0.0")
    six = lab.publish("web", 8080, 80, host_ip="::")
    assert (four.family, six.family, four.twin, six.twin) == (4, 6, None, None)
    for host_ip in ("0.0.0.0", "::", None, "10.30.0.1"):
        with pytest.raises(InvalidValue, match="overlaps"):
            lab.publish("web", 8080, 81, host_ip=host_ip)
    assert lab.publish("web", 8081, 80, host_ip="::1").family == 6  # the proxy's own address
    assert needs_proxy(six) and not needs_proxy(four)


def test_unpublish_removes_both_families():
    lab = dual_lab()
    portmap = lab.publish("web", 8080, 80)
    lab.unpublish(portmap)
    assert lab.published == [] and lab._state.ports == {}
    again = lab.publish("web", 8080, 80)  # the host port is free again, on both families
    assert again.twin is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"subnet": "10.30.0.0/24", "subnet6": "10.31.0.0/24"}, InvalidValue, "must be an IPv6 subnet"),
        ({"subnet": "fd00:1::/64", "subnet6": "fd00:2::/64"}, InvalidValue, "beside an IPv4 subnet"),
        ({"subnet": "10.30.0.0/24", "gateway6": "fd00:1::1"}, InvalidValue, "needs an IPv6 subnet"),
        ({"subnet": "10.30.0.0/24", "subnet6": "fe80::/64"}, Exception, "link-local"),
        ({"subnet": "10.30.0.0/24", "subnet6": "fd00:1::/127"}, Exception, "too small"),
        ({"subnet": "10.30.0.0/24", "ipv6": "yes"}, InvalidValue, "ipv6"),
    ],
)
def test_bad_dual_stack_input_is_refused_before_any_command(kwargs, error, match):
    host = Host(dry_run=True)
    lab = Lab("bad", host=host, isolated=True)
    with pytest.raises(error, match=match):
        lab.network("net", **kwargs)
    assert host.history == [] and lab.networks == {}


def test_subnet6_overlap_and_version_lookups():
    lab = dual_lab()
    with pytest.raises(SubnetOverlap):
        lab.network("again", subnet="10.31.0.0/24", subnet6="fd00:30::/80")
    with pytest.raises(SubnetOverlap):
        lab.network("six", subnet="fd00:30:0:0:1::/80")  # an IPv6-only network inside it
    four = lab.network("four", subnet="10.32.0.0/24")
    lab.namespace("old", networks=[four])
    with pytest.raises(NotFound, match="no IPv6 address"):
        lab.ip("old", version=6)
    with pytest.raises(InvalidValue):
        lab.ip("old", version=5)
    with pytest.raises(InvalidValue, match="no IPv6 subnet"):
        lab.connect(four, "web", ip6="fd00:30::9")
    assert lab.endpoint("old").ip6 is None and lab.endpoint("old").addresses == [lab.endpoint("old").ip]
    web2 = lab.namespace("web2")
    endpoint = lab.connect("front", web2, ip="10.30.0.50", ip6="fd00:30::50")
    assert str(endpoint.ip6) == "fd00:30::50/64"


def test_ipv6_only_networks_keep_working():
    lab = Lab("six", host=Host(dry_run=True), isolated=True)
    net = lab.network("six", subnet="fd00:60::/64", ipv6=True)  # ipv6=True on an IPv6 subnet: IPv6 only
    lab.namespace("a", networks=[net])
    assert net.subnet6 is None and net.subnets == [net.subnet] and str(lab.ip("a")) == "fd00:60::2"
    assert str(lab.ip("a", version=6)) == "fd00:60::2" and str(lab.endpoint("a").ip6) == "fd00:60::2/64"
    script = str(lab.explain())
    assert "route add default via fd00:60::1" in script and "route add default via 10." not in script


def test_topology_files_declare_dual_stack_networks(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / "lab.json"
    path.write_text(
        json.dumps(
            {
                "name": "shop",
                "isolated": True,
                "networks": {
                    "front": {"subnet": "10.30.0.0/24", "subnet6": "fd00:30::/64"},
                    "back": {"subnet": "10.31.0.0/24", "ipv6": True},
                },
                "namespaces": {"web": {"networks": ["front", "back"]}},
            }
        )
    )
    topology = Topology.from_file(path)
    assert topology.to_dict()["networks"]["back"]["ipv6"] is True
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert str(lab.networks["front"].subnet6) == "fd00:30::/64" and lab.networks["back"].subnet6 is not None
    assert str(lab.ip("web", "front", version=6)) == "fd00:30::2"
    for networks, match in (
        ({"a": {"subnet": "10.30.0.0/24", "subnet6": "10.9.0.0/24"}}, "IPv6 subnet"),
        ({"a": {"subnet6": "fd00:1::/64"}, "b": {"subnet6": "fd00:1::/80"}}, "overlaps"),
    ):
        path.write_text(json.dumps({"networks": networks}))
        with pytest.raises(Exception, match=match):
            Topology.from_file(path)


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        return int(probe.getsockname()[1])


def _echo_upper(listener: socket.socket) -> None:
    client, _ = listener.accept()
    with client:
        data = b""
        while chunk := client.recv(4096):  # until the proxy passes on the half-close
            data += chunk
        client.sendall(data.upper())


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_the_proxy_relays_with_half_close_and_ends_with_stdin_or_its_journal(tmp_path):
    """The [::1] proxy runs by its path with the standard library alone, relays a connection (a half-close
    goes through), and ends when its stdin closes; told ``persist``, it ends only once the journal is gone."""
    target = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    target.bind(("::1", 0))
    target.listen(1)
    journal = tmp_path / "lab.json"
    journal.write_text("{}")
    port = _free_port()
    argv = [sys.executable, "-I", proxy6.__file__, "--port", str(port), "--to", "::1"]
    argv += ["--to-port", str(target.getsockname()[1]), "--journal", str(journal)]
    for detached in (False, True):
        proxy = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert proxy.stdout is not None and proxy.stdout.readline() == b"ready\n"
            server = threading.Thread(target=_echo_upper, args=(target,))
            server.start()
            with socket.create_connection(("::1", port)) as client:
                client.sendall(b"hello")
                client.shutdown(socket.SHUT_WR)
                assert client.recv(4096) == b"HELLO"
            server.join()
            assert proxy.stdin is not None
            if detached:
                proxy.stdin.write(proxy6.PERSIST)
                proxy.stdin.flush()
            proxy.stdin.close()
            if detached:
                with pytest.raises(subprocess.TimeoutExpired):
                    proxy.wait(timeout=1.0)  # the journal is still there
                journal.unlink()
            assert proxy.wait(timeout=10) == 0
        finally:
            proxy.kill()
            proxy.wait()
            proxy.stdout.close()  # type: ignore[union-attr]
    target.close()
