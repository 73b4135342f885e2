"""End-to-end on the real kernel: create, inspect and delete each object."""

import ipaddress
import os
import sys

import pytest

from pynetns import (
    AlreadyExists,
    BackendUnavailable,
    Bridge,
    CommandError,
    Host,
    InvalidName,
    LocalRunner,
    Namespace,
    NotFound,
    NotOwned,
    Route,
    Veth,
    WaitTimeout,
    wait_until,
)
from pynetns.servers import http_server_argv

pytestmark = pytest.mark.root


def netns_names():
    return {namespace.name for namespace in Namespace.all()}


def test_namespace_lifecycle(names, host):
    web = Namespace(names("web"), host=host)
    assert not web.exists()
    with web:
        assert web.exists()
        lo = web.interface("lo")
        assert lo.up and lo.alias == host.tag and ipaddress.ip_interface("127.0.0.1/8") in lo.addresses
        assert [item.name for item in web.interfaces()] == ["lo"]
        with pytest.raises(AlreadyExists):
            web.create()
        assert web.run(["ping", "-c1", "-W1", "127.0.0.1"]).ok
    assert not web.exists()
    with pytest.raises(NotFound):
        web.delete()


def test_sysctl_inside_a_namespace(names, host):
    with Namespace(names("sys"), host=host) as namespace:
        assert namespace.sysctl("net.ipv4.ip_forward", 1) == "0"
        assert namespace.sysctl("net.ipv4.ip_forward") == "1"


def test_bridge_veth_route_and_inspection(names, host, hostns):
    bridge = Bridge(names("br"), address="10.61.0.1/24", mtu=1400, namespace=hostns, host=host)
    bridge.create()
    seen = bridge.interface()
    assert (seen.kind, seen.mtu, seen.alias, seen.up) == ("bridge", 1400, host.tag, True)
    assert seen.addresses[0] == ipaddress.ip_interface("10.61.0.1/24")

    with Namespace(names("c1"), host=host) as c1:
        veth = Veth(
            names("veth"),
            "eth0",
            namespace=hostns,
            peer_namespace=c1,
            master=bridge,
            mtu=1400,
            peer_mac="02:42:0a:3d:00:02",
            peer_address="10.61.0.2/24",
            host=host,
        )
        veth.create()
        Route("default", via="10.61.0.1", namespace=c1, host=host).create()

        eth0 = c1.interface("eth0")
        assert (eth0.kind, eth0.mac, eth0.mtu, eth0.alias) == ("veth", "02:42:0a:3d:00:02", 1400, host.tag)
        assert ipaddress.ip_interface("10.61.0.2/24") in c1.addresses()
        host_end = veth.interface()
        assert host_end.master == bridge.name and eth0.peer_index == host_end.index
        assert host_end.peer_index == eth0.index
        assert [port.name for port in bridge.ports()] == [veth.name]
        assert veth.peer_interface().name == "eth0"

        routes = {str(route) for route in c1.routes()}
        assert {"default via 10.61.0.1 dev eth0", "10.61.0.0/24 dev eth0"} <= routes
        assert Route("default", via="10.61.0.1", namespace=c1, host=host).exists()

        hostns.run(["ping", "-c1", "-W2", "10.61.0.2"])

        # deleting the namespace takes the veth pair with it (asynchronously in the kernel)
        c1.delete()
        wait_until(lambda: not veth.exists(), what="the host end of the veth to vanish")
        assert bridge.ports() == []
        c1.create()  # so the with-block can delete it


def test_deleting_either_end_removes_both(names, host, hostns):
    with Namespace(names("c"), host=host) as c:
        veth = Veth(names("veth"), "eth0", namespace=hostns, peer_namespace=c, host=host)
        veth.create()
        c.run(["ip", "link", "delete", "eth0"])  # the end inside the container
        assert not veth.exists()
        veth.create()
        veth.delete()
        assert "eth0" not in {item.name for item in c.interfaces()}


def test_popen_http_server_and_fetch(names, host, hostns):
    bridge = Bridge(names("br"), address="10.62.0.1/24", namespace=hostns, host=host)
    bridge.create()
    with Namespace(names("srv"), host=host) as server:
        Veth(
            names("veth"),
            "eth0",
            namespace=hostns,
            peer_namespace=server,
            master=bridge,
            peer_address="10.62.0.2/24",
            host=host,
        ).create()
        process = server.popen(http_server_argv("10.62.0.2", 8080, body="served"))
        fetch = ["curl", "-sS", "--max-time", "2", "http://10.62.0.2:8080/"]
        body = wait_until(lambda: hostns.run(fetch, check=False).stdout, what="the HTTP server")
        assert body == "served\nclient 10.62.0.1\n"
        assert process.alive() and server.processes == [process]
    assert not process.alive()  # ended before the namespace was deleted


def test_processes_not_started_by_popen_are_ended_on_delete(names, host):
    namespace = Namespace(names("bg"), host=host)
    namespace.create()
    namespace.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
    pids = namespace.host.run(["ip", "netns", "pids", namespace.name]).stdout.split()
    assert pids
    namespace.delete()
    wait_until(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), what="the background sleep to end")


def test_from_pid_enters_a_process_namespace(names, host):
    process = host.popen(["unshare", "--net", "sleep", "60"])
    try:
        mine = os.readlink("/proc/self/ns/net")
        wait_until(lambda: os.readlink(f"/proc/{process.pid}/ns/net") != mine, what="unshare")
        container = Namespace.from_pid(process.pid, host=host)
        assert container.exists()
        assert [item.name for item in container.interfaces()] == ["lo"]
        assert container.run(["cat", "/proc/net/dev"]).ok
        by_path = Namespace.from_path(f"/proc/{process.pid}/ns/net", host=host)
        assert [item.name for item in by_path.interfaces()] == ["lo"]
        with pytest.raises(NotOwned):
            container.delete()
        # a veth into the process's namespace, as Docker wires a container
        veth = Veth(names("veth"), "eth0", peer_namespace=container, peer_address="10.63.0.2/24", host=host)
        veth.create()
        assert container.interface("eth0").addresses[0] == ipaddress.ip_interface("10.63.0.2/24")
        veth.delete()
    finally:
        process.stop()


def test_host_namespace_is_read_not_owned(host):
    root = Namespace.host(host)
    assert "lo" in {item.name for item in root.interfaces()}
    with pytest.raises(NotOwned):
        root.delete()


@pytest.mark.parametrize("evil", ["a;b", "$(id)", "-h", "x\ny", "`reboot`", "--help"])
def test_injection_attempts_create_nothing(evil, host):
    # refused before any command runs (a machine-wide before/after comparison would race with other workers)
    with host.capture() as calls:
        for build in (
            lambda: Namespace(evil, host=host),
            lambda: Bridge(evil, host=host),
            lambda: Veth("ok0", evil, host=host),
        ):
            with pytest.raises(InvalidName):
                build().create()
    assert calls == []


def test_missing_tool_is_backend_unavailable(names):
    host = Host(runner=LocalRunner(path=["/nonexistent"]))
    name = names("miss")
    with pytest.raises(BackendUnavailable, match="iproute2"):
        Namespace(name, host=host).create()
    assert name not in netns_names()


def test_failure_half_way_leaves_nothing(names, host, hostns):
    """The peer's address fails in the kernel (IPv6 disabled there): the pair is removed again."""
    with Namespace(names("c"), host=host) as c:
        c.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        c.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        veth = Veth(names("veth"), "eth0", namespace=hostns, peer_namespace=c, peer_address="fd00:99::2/64", host=host)
        with pytest.raises(CommandError) as caught:
            veth.create()
        assert caught.value.line == "addr add fd00:99::2/64 dev eth0"
        assert not veth.exists()
        assert {item.name for item in c.interfaces()} == {"lo"}


UDP_SERVER = "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 5353)); "
UDP_SERVER += "print('bound', flush=True); s.recv(10)"


def test_wait_for_port_and_the_output_of_a_stopped_server(names, host):
    with Namespace(names("srv"), host=host) as server:
        with pytest.raises(WaitTimeout, match="tcp port 8080 to listen"):
            server.wait_for_port(8080, timeout=0.2)
        web = server.popen(http_server_argv("127.0.0.1", 8080, body="served"))
        server.wait_for_port(8080, timeout=10)
        assert server.run(["curl", "-sS", "--max-time", "2", "http://127.0.0.1:8080/"]).stdout.startswith("served")
        udp = server.popen([sys.executable, "-c", UDP_SERVER])
        server.wait_for_port(5353, protocol="udp", timeout=10)
        web.stop()
        udp.stop()
        assert web.stdout_text == "" and udp.stdout_text == "bound\n"  # kept after stop()
