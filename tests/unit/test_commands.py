"""The commands each object generates, through the recording backend (no root needed)."""

import ipaddress
import json

import pytest

from pynetns import Bridge, CommandError, Host, Namespace, NotOwned, Plan, Route, RouteEntry, Step, Veth, backends
from pynetns.backends.base import NetnsRef
from pynetns.backends.recording import RecordingRunner
from pynetns.errors import InvalidAddress, InvalidName, InvalidValue
from pynetns.namespace import kill_processes_in
from pynetns.runner import CompletedCommand


def shell(host):
    return [str(call) for call in host.history]


def test_namespace_lifecycle(dry_host):
    with Namespace("web", host=dry_host) as web:
        web.run(["curl", "-s", "http://10.0.0.2/"])
        web.sysctl("net.ipv4.ip_forward", 1)
    assert shell(dry_host) == [
        "ip netns add web",
        "ip -n web link set lo alias pynetns:dry-run up",
        "ip netns exec web curl -s http://10.0.0.2/",
        "ip netns exec web sysctl -n net.ipv4.ip_forward",
        "ip netns exec web sysctl -w net.ipv4.ip_forward=1",
        "ip netns pids web",
        "ip netns delete web",
    ]


def test_foreign_namespaces_are_entered_with_nsenter_and_never_deleted(dry_host):
    container = Namespace.from_pid(4242, host=dry_host)
    container.run(["ip", "addr"])
    container.interfaces()
    Namespace.from_path("/var/run/docker/netns/abc123", host=dry_host).run(["true"])
    Namespace.host(dry_host).run(["true"])
    assert shell(dry_host) == [
        "nsenter -t 4242 -n -- ip addr",
        "nsenter -t 4242 -n -- ip -d -j addr show",
        "nsenter --net=/var/run/docker/netns/abc123 -- true",
        "true",
    ]
    for namespace in (container, Namespace.host(dry_host)):
        with pytest.raises(NotOwned):
            namespace.delete()


def test_veth_between_two_namespaces_with_options(dry_host):
    a, b = Namespace("a", host=dry_host), Namespace("b", host=dry_host)
    Veth(
        "ab",
        "ba",
        namespace=a,
        peer_namespace=b,
        mtu=9000,
        mac="02:00:00:00:00:01",
        peer_mac="02:00:00:00:00:02",
        address="10.9.0.1/30",
        peer_address="10.9.0.2/30",
        tag="pynetns:lab1",
    ).create()
    assert shell(dry_host) == [
        "ip -n a -batch - <<'EOF'\n"
        "link add ab mtu 9000 address 02:00:00:00:00:01 up type veth peer name ba netns b mtu 9000"
        " address 02:00:00:00:00:02\n"
        "link set ab alias pynetns:lab1\n"
        "addr add 10.9.0.1/30 dev ab\n"
        "EOF",
        "ip -n b -batch - <<'EOF'\nlink set ba alias pynetns:lab1 up\naddr add 10.9.0.2/30 dev ba\nEOF",
    ]


def test_veth_peer_into_a_process_namespace(dry_host):
    Veth("veth7", "eth0", peer_namespace=Namespace.from_pid(77, host=dry_host), host=dry_host).create()
    assert shell(dry_host)[0].startswith("ip -batch - <<'EOF'\nlink add veth7 up type veth peer name eth0 netns 77\n")
    assert shell(dry_host)[1] == "nsenter -t 77 -n -- ip link set eth0 alias pynetns:dry-run up"


def test_bridge_and_route(dry_host):
    bridge = Bridge("br0", address="10.0.0.1/24", mtu=1400, namespace="hostlike", host=dry_host)
    bridge.create()
    bridge.ports()
    bridge.delete()
    Route("10.1.0.0/16", via="10.0.0.254", device="br0", metric=10, host=dry_host).create()
    assert shell(dry_host) == [
        "ip -n hostlike -batch - <<'EOF'\nlink add br0 mtu 1400 type bridge\nlink set br0 alias pynetns:dry-run up\n"
        "addr add 10.0.0.1/24 dev br0\nEOF",
        "ip -n hostlike -d -j addr show master br0",
        "ip -n hostlike link delete br0",
        "ip route add 10.1.0.0/16 via 10.0.0.254 dev br0 metric 10",
    ]


def test_objects_take_their_host_from_their_namespace(dry_host):
    veth = Veth("v0", "eth0", peer_namespace=Namespace("c", host=dry_host))
    assert veth.host is dry_host


def test_a_failed_batch_line_rolls_back_what_was_applied():
    runner = RecordingRunner()
    runner.respond(
        ["ip", "-n", "c1", "-batch", "-"], stderr="RTNETLINK answers: File exists\nCommand failed -:2", returncode=2
    )
    host = Host(runner=runner)
    with pytest.raises(CommandError) as caught:
        Veth("veth1", "eth0", peer_namespace="c1", peer_address="10.0.0.2/24", host=host).create()
    assert caught.value.line == "addr add 10.0.0.2/24 dev eth0"
    # host batch applied; peer batch failed at line 2 after line 1 applied: undo in reverse
    assert [str(call) for call in runner.history][-1] == "ip link delete veth1"


def test_plan_groups_consecutive_batchable_steps():
    batch = ("ip", "-batch", "-")
    plan = Plan(
        [
            Step(["ip", "netns", "add", "x"]),
            Step(["ip", "link", "set", "a", "up"], batch=batch, line="link set a up"),
            Step(["ip", "link", "set", "b", "up"], batch=batch, line="link set b up"),
            Step(
                ["ip", "-n", "x", "link", "set", "lo", "up"],
                batch=("ip", "-n", "x", "-batch", "-"),
                line="link set lo up",
            ),
        ]
    )
    assert [str(call) for call in plan.calls()] == [
        "ip netns add x",
        "ip -batch - <<'EOF'\nlink set a up\nlink set b up\nEOF",
        "ip -n x link set lo up",
    ]


def test_rollback_carries_on_past_failures():
    class Failing(RecordingRunner):
        def _execute(self, argv, input, timeout):
            if argv[-1] == "second":
                return CompletedCommand(argv, 1, "", "boom")
            return CompletedCommand(argv, 0)

    runner = Failing()
    plan = Plan(
        [
            Step(["mk", "first"], undo=Step(["rm", "first"])),
            Step(["mk", "ok"], undo=Step(["rm", "ok"])),
            Step(["mk", "second"], undo=Step(["rm", "second"])),
        ]
    )
    with pytest.raises(CommandError):
        plan.apply(runner)
    assert [call.argv for call in runner.history] == [
        ("mk", "first"),
        ("mk", "ok"),
        ("mk", "second"),
        ("rm", "ok"),
        ("rm", "first"),
    ]


def test_history_only_in_dry_run():
    with pytest.raises(Exception, match="dry_run"):
        _ = Host().history


def test_registry():
    assert backends.get_backend("nsenter").__name__ == "Nsenter"
    with pytest.raises(LookupError, match="no backend named"):
        backends.get_backend("nope")
    with pytest.raises(ValueError, match="clobber"):
        backends.register("iproute2", "somewhere:Else")
    assert "iproute2" in backends.available()


def test_a_backend_missing_methods_fails_at_construction():
    from pynetns.backends.base import LinkBackend

    class Half(LinkBackend):
        name = "half"
        program = "ip"

    with pytest.raises(TypeError):
        Half()


def test_netns_methods_return_ip_arguments_and_the_host_makes_the_command(dry_host):
    links, root = dry_host.links, NetnsRef.root()
    assert links.netns_add("web") == ("netns", "add", "web")
    assert links.netns_delete("web") == ("netns", "delete", "web")
    assert links.netns_list() == ("-j", "netns", "list")
    assert links.netns_pids("web") == ("netns", "pids", "web")
    assert dry_host.ip_argv(root, links.netns_add("web")) == ("ip", "netns", "add", "web")
    assert dry_host.ip_argv(root, links.netns_list()) == ("ip", "-j", "netns", "list")


def test_processes_in_many_namespaces_are_listed_in_one_batch(dry_host):
    dry_host.runner.respond(("ip", "-force", "-batch", "-"), "41\n42\n")
    kill_processes_in(dry_host, ["a", "b"])
    assert [(call.argv, call.input) for call in dry_host.history] == [
        (("ip", "-force", "-batch", "-"), "netns pids a\nnetns pids b\n"),
        (("kill", "-KILL", "41", "42"), None),
    ]


def test_namespace_all_lists_the_named_namespaces(dry_host):
    dry_host.runner.respond(("ip", "-j", "netns", "list"), '[{"name": "web", "id": 3}, {"name": "db"}]')
    found = Namespace.all(dry_host)
    assert [namespace.name for namespace in found] == ["web", "db"]
    assert all(namespace.host is dry_host and namespace.owned for namespace in found)
    assert Namespace("web", host=dry_host).exists() and not Namespace("cache", host=dry_host).exists()
    assert Namespace("web", host=dry_host).netnsid() == 3
    assert not hasattr(Namespace, "list")


def test_routes_are_reports_and_a_route_can_be_made_from_one(dry_host):
    dry_host.runner.respond(
        ("ip", "-n", "web", "-j", "-4", "route", "show"),
        json.dumps(
            [
                {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0", "protocol": "static", "flags": []},
                {"dst": "10.0.0.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "10.0.0.2"},
                {"dst": "10.9.0.0/16", "metric": 20, "nexthops": [{"gateway": "10.0.0.7", "dev": "eth0"}]},
                {"type": "blackhole", "dst": "10.66.0.0/16", "flags": []},
            ]
        ),
    )
    dry_host.runner.respond(
        ("ip", "-n", "web", "-j", "-6", "route", "show"),
        json.dumps([{"dst": "fd00::/64", "dev": "eth0", "metric": 256}]),
    )
    web = Namespace("web", host=dry_host)
    routes = web.routes()
    assert all(isinstance(route, RouteEntry) for route in routes)
    assert [str(route) for route in routes] == [
        "default via 10.0.0.1 dev eth0",
        "10.0.0.0/24 dev eth0",
        "10.9.0.0/16 via 10.0.0.7 dev eth0",
        "blackhole 10.66.0.0/16",
    ]
    default, subnet, multipath, blackhole = routes
    assert default.via == ipaddress.ip_address("10.0.0.1") and default.family == 4 and default.protocol == "static"
    assert subnet.source == ipaddress.ip_address("10.0.0.2") and subnet.scope == "link" and subnet.via is None
    assert multipath.metric == 20 and blackhole.type == "blackhole" and blackhole.device is None
    [six] = web.routes(6)
    assert (six.destination, six.family, six.metric) == ("fd00::/64", 6, 256)
    with pytest.raises(InvalidValue):
        web.routes(5)
    route = Route.from_entry(default, web)
    assert (route.namespace, route.host, route.via, route.device) == (web, dry_host, default.via, "eth0")
    dry_host.runner.clear()
    route.create()
    assert shell(dry_host) == ["ip -n web route add default via 10.0.0.1 dev eth0"]
    assert route.exists()
    with pytest.raises(InvalidValue, match="only unicast"):
        Route.from_entry(blackhole, web).create()


def test_a_route_entry_refuses_what_pynetns_could_not_hand_back():
    with pytest.raises(InvalidName):
        RouteEntry.from_ip_json({"dst": "default", "dev": "eth0;reboot"})
    with pytest.raises(InvalidAddress):
        RouteEntry.from_ip_json({"dst": "default", "gateway": "10.0.0.256"})
