"""The Docker walkthrough (``pynetns demo``): for real as root, through the CLI, interrupted, and dry."""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pynetns import Host, wait_until
from pynetns.backends.recording import RecordingRunner
from pynetns.cli.demo import Walkthrough, check_prefix, format_calls, walkthrough
from pynetns.errors import InvalidName
from pynetns.lab.ipam import pick_subnet, taken_networks
from pynetns.runner import Call
from tests.support.marked import mark, marked
from tests.support.nobody import nobody as as_nobody

root = pytest.mark.root

CLI = [sys.executable, "-m", "pynetns.cli"]


def remaining(prefix: str) -> list[str]:
    """Namespaces and root-namespace interfaces named ``prefix-*``, asked of ip directly."""
    netns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [item["name"] for item in json.loads(netns.strip() or "[]") if item["name"].startswith(f"{prefix}-")] + [
        item["ifname"] for item in json.loads(links.strip() or "[]") if item["ifname"].startswith(f"{prefix}-")
    ]


def ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- for real ------------------------------------------------------------------


@root
def test_walkthrough_shows_every_step_and_leaves_nothing(host, token):
    prefix = f"pn{token}"
    forward = ip_forward()
    lines: list[str] = []

    assert walkthrough(host=host, out=lines.append, prefix=prefix) == 0

    text = "\n".join(lines)
    for number in range(1, 12):
        assert f"# == {number}/11 " in text
    # --network none: only lo
    assert f"ip netns add {prefix}-none" in lines
    # the bridge, made in one batch, shown as a here-document
    assert f"link add {prefix}-br type bridge" in lines
    assert "ip -batch - <<'EOF'" in lines
    # ping c1 -> c2, all replies back
    assert re.search(r"^#   3 packets transmitted, 3 received, 0% packet loss", text, re.M)
    # the HTTP body fetched from the host, which reached c2 from the gateway address
    assert f"#   hello from {prefix}-c2" in lines
    assert re.search(r"^#   client \d+\.\d+\.\d+\.1$", text, re.M)
    # -p 8080:80: the DNAT rule with the iptables backend in a namespace playing the host, counted
    # before and after curl http://localhost:8080 from that namespace
    assert f"ip netns add {prefix}-host" in lines
    assert any(f"ip netns exec {prefix}-host iptables" in line and "-nvL PYNETNS-DNAT" in line for line in lines)
    dnat = [line for line in lines if line.startswith("#   ") and "DNAT" in line and "dpt:8080" in line]
    assert len(dnat) == 2 and re.search(r"to:\d+\.\d+\.\d+\.\d+:80$", dnat[0]), dnat
    assert [line.split()[1] for line in dnat] == ["0", "1"]  # the packet counters before and after
    assert (
        f"ip netns exec {prefix}-host curl --silent --show-error --noproxy '*' --max-time 2 http://localhost:8080/"
        in lines
    )
    assert "#   packets DNATed: 0 before curl, 1 after" in text
    # into c2 by the PID of a process running in it
    assert re.search(r"^nsenter -t \d+ -n -- ip -d -j addr show$", text, re.M)
    # the veth's peer, followed across namespaces
    assert re.search(rf"eth0@if\d+ in {prefix}-c1  <->  {prefix}-v1@if\d+ on the host", text)
    # deleting c1 took its host-side veth with it
    assert f"#   {prefix}-v1 vanished" in text
    # and nothing is left
    assert "#   nothing the demo made is left" in text
    assert remaining(prefix) == []
    assert ip_forward() == forward


@root
def test_cli_demo_succeeds_without_commands(token):
    prefix = f"pn{token}"
    result = cli("demo", "--prefix", prefix, "--no-commands")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert f"#   hello from {prefix}-c2" in result.stdout
    assert all(line.startswith("#") or not line for line in result.stdout.splitlines())
    assert remaining(prefix) == []


@root
def test_cli_failure_is_one_line_and_spares_what_it_did_not_create(token):
    prefix = f"pn{token}"
    squatter = f"{prefix}-none"  # the demo's first namespace already exists: not ours to delete
    subprocess.run(["ip", "netns", "add", squatter], check=True)
    try:
        result = cli("demo", "--prefix", prefix)
        assert result.returncode == 1
        assert "Traceback" not in result.stdout + result.stderr
        failed = [line for line in result.stdout.splitlines() if line.startswith("# FAILED")]
        assert len(failed) == 1 and squatter in failed[0]
        assert remaining(prefix) == [squatter]
    finally:
        subprocess.run(["ip", "netns", "delete", squatter], check=True)


@root
@pytest.mark.parametrize(
    ("after", "signum", "status"),
    [(3, signal.SIGINT, 130), (3, signal.SIGTERM, 143), (10, signal.SIGINT, 130)],
    ids=["ctrl-c", "sigterm", "ctrl-c-before-cleanup"],
)
def test_interrupted_demo_cleans_up(token, after, signum, status):
    prefix = f"pn{token}"
    demo = subprocess.Popen(
        [*CLI, "demo", "--prefix", prefix, "--step"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert demo.stdin is not None and demo.stdout is not None
    seen: list[str] = []
    try:
        # Press Enter until step `after` is done, then interrupt the demo while it waits for the next.
        for line in demo.stdout:
            seen.append(line)
            if "press Enter" in line:
                if any(f"# == {after}/11 " in earlier for earlier in seen):
                    break
                demo.stdin.write("\n")
                demo.stdin.flush()
        assert remaining(prefix), "the demo should have created its bridge by now"
        demo.send_signal(signum)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == status, "".join(seen) + out + err
    assert "# == 11/11  clean up" in out
    assert "#   nothing the demo made is left" in out
    assert "Traceback" not in err
    assert remaining(prefix) == []


# -- the command line ------------------------------------------------------------


def test_help():
    result = cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
    result = cli("demo", "--help")
    assert result.returncode == 0
    assert "--prefix" in result.stdout and "--step" in result.stdout


@pytest.mark.parametrize(
    "args",
    [(), ("no-such-command",), ("demo", "--no-such-switch"), ("demo", "extra"), ("demo", "--prefix", "a;b"),
     ("demo", "--prefix", "much-too-long-prefix")],
)  # fmt: skip
def test_usage_errors_exit_2(args):
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "pynetns"
    if not script.exists():
        pytest.skip("the pynetns console script is not installed next to this Python")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "0.1.0" in result.stdout


# -- without root: subnet choice, printing, one step recorded ------------------------------


ROUTES = [
    {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
    {"dst": "192.0.2.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": "192.0.2.2"},
    {"dst": "172.17.0.0/16", "dev": "docker0", "protocol": "kernel", "scope": "link", "prefsrc": "172.17.0.1"},
    {"type": "blackhole", "dst": "172.20.0.0/16", "flags": []},
    {"dst": "172.21.0.0/16", "nexthops": [{"gateway": "192.0.2.7", "dev": "eth0", "weight": 1, "flags": []}]},
]
LINKS = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536, "operstate": "UNKNOWN",
     "link_type": "loopback", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifindex": 2, "ifname": "eth0", "flags": ["UP"], "mtu": 1500, "operstate": "UP", "link_type": "ether",
     "addr_info": [{"family": "inet", "local": "172.18.3.4", "prefixlen": 24},
                   {"family": "inet6", "local": "fd00::2", "prefixlen": 64}]},
]  # fmt: skip


@pytest.fixture
def busy_host() -> Host:
    """A dry-run host where 172.17.0.0/16 is routed (docker0) and 172.18.3.0/24 is an address."""
    runner = RecordingRunner()
    runner.respond(["ip", "-j", "-4", "route", "show"], stdout=json.dumps(ROUTES))
    runner.respond(["ip", "-d", "-j", "addr", "show"], stdout=json.dumps(LINKS))
    return Host(runner=runner)


def test_subnet_skips_routes_and_addresses_in_use(busy_host):
    taken = taken_networks(busy_host)
    assert ipaddress.ip_network("172.17.0.0/16") in taken
    assert ipaddress.ip_network("172.18.3.0/24") in taken
    assert ipaddress.ip_network("172.20.0.0/16") in taken  # a blackhole route: no gateway, no device
    assert ipaddress.ip_network("172.21.0.0/16") in taken  # a multipath route
    assert not any(str(network) == "0.0.0.0/0" for network in taken)  # the default route overlaps everything
    assert str(pick_subnet(taken)) == "172.19.0.0/16"


def test_bridge_step_recorded(busy_host):
    bridge_json = [{"ifindex": 9, "ifname": "pn-test-br", "operstate": "UNKNOWN", "mtu": 1500,
                    "linkinfo": {"info_kind": "bridge"},
                    "addr_info": [{"family": "inet", "local": "172.19.0.1", "prefixlen": 16}]}]  # fmt: skip
    busy_host.runner.respond(["ip", "-d", "-j", "addr", "show", "dev", "pn-test-br"], stdout=json.dumps(bridge_json))
    lines: list[str] = []
    demo = Walkthrough(busy_host, out=lines.append, prefix="pn-test")

    bridge = demo.default_bridge()

    assert str(bridge.address) == "172.19.0.1/16"
    start = lines.index("ip -batch - <<'EOF'")
    assert lines[start : start + 5] == [
        "ip -batch - <<'EOF'",
        "link add pn-test-br type bridge",
        "link set pn-test-br alias pynetns:dry-run up",
        "addr add 172.19.0.1/16 dev pn-test-br",
        "EOF",
    ]
    assert "#   172.17.0.0/16 overlaps a route or address here, so, like Docker, using 172.19.0.0/16" in lines
    assert demo.created == [bridge]

    lines.clear()
    assert demo.teardown() is True
    assert "ip link delete pn-test-br" in lines
    assert demo.created == []


def test_format_calls():
    server = ("ip", "netns", "exec", "c2", "python3", "-m", "pynetns.servers", "http")
    poll = Call(("curl", "-sS", "http://10.0.0.3:8000/"))
    batch = Call(("ip", "-batch", "-"), "link add br0 type bridge\n")
    assert format_calls([Call(server), poll, poll, poll, batch], background={server}) == [
        "ip netns exec c2 python3 -m pynetns.servers http &",
        "curl -sS http://10.0.0.3:8000/  # polled: 3 times",
        "ip -batch - <<'EOF'",
        "link add br0 type bridge",
        "EOF",
    ]


class Thing:
    """Stands in for a namespace or link; its first ``interrupts`` deletions are cut short by Ctrl-C."""

    def __init__(self, name: str, deleted: list[str], interrupts: int = 0) -> None:
        self.name, self.deleted, self.interrupts = name, deleted, interrupts

    def create(self) -> None:
        pass

    def delete(self) -> None:
        if self.interrupts:
            self.interrupts -= 1
            raise KeyboardInterrupt
        self.deleted.append(self.name)


@pytest.mark.parametrize(("interrupts", "deleted"), [(1, ["c", "b", "a"]), (2, ["c"])])
def test_cleanup_finishes_despite_one_interrupt(interrupts, deleted):
    done: list[str] = []
    demo = Walkthrough(Host(dry_run=True), out=lambda line: None, prefix="pn-test")
    for thing in (Thing("a", done), Thing("b", done, interrupts), Thing("c", done)):
        demo.create(thing)
    with pytest.raises(KeyboardInterrupt):
        demo.teardown()
    assert done == deleted


@pytest.mark.parametrize("prefix", ["", "a b", "-x", "x" * 13])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(InvalidName):
        check_prefix(prefix)
    with pytest.raises(InvalidName):
        walkthrough(host=Host(dry_run=True), out=lambda line: None, prefix=prefix)


def test_command_errors_are_one_line(capsys):
    from pynetns.cli.app import Demo

    def broken() -> int:
        raise OSError("no space left on device")

    assert Demo("pynetns demo").guard(broken) == 1
    assert capsys.readouterr().err == "pynetns demo: error: OSError: no space left on device\n"


# -- without root ------------------------------------------------------------------


@root
def test_demo_runs_as_an_unprivileged_user():
    """``pynetns demo`` as uid 65534: a rootless sandbox plays the host, and ends with the demo."""
    with as_nobody() as (python, env, _):
        token = mark(env)
        result = subprocess.run(
            [*python, "-m", "pynetns.cli", "demo", "-q"],
            env=env, capture_output=True, text=True, timeout=120, cwd="/", stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "a rootless sandbox" in result.stdout and "# == 11/11 " in result.stdout
    assert "#   packets DNATed: 0 before curl, 1 after" in result.stdout
    assert "#   nsenter -t " in result.stdout
    assert "nothing the demo made is left" in result.stdout
    assert "ip netns add" not in result.stdout  # -q: no commands
    wait_until(lambda: not marked(token), timeout=10, what="every process of the demo's sandbox to end")
