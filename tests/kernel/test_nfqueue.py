"""The userspace impairment engine (pynetns.impair.nfqueue): wire format, scheduling, argv, the queue rules
the firewall backends make, the engine's import isolation, and the real kernel.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_nfqueue.py.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from pynetns import Host, Namespace, Process, Veth, WaitTimeout, wait_until
from pynetns.impair.engine_client import engine_argv, wait_ready
from pynetns.impair.nfqueue import (
    NfqueueError,
)

SUBNET = "10.93.0"


A_ADDR, B_ADDR = f"{SUBNET}.1", f"{SUBNET}.2"


@contextlib.contextmanager
def _pair(names: Callable[[str], str], host: Host) -> Iterator[tuple[Namespace, Namespace, str]]:
    """Namespaces A and B joined by a veth pair; yields (A, B, A's interface)."""
    with Namespace(names("a"), host=host) as a, Namespace(names("b"), host=host) as b:
        interface = names("va")
        Veth(interface, names("vb"), namespace=a, peer_namespace=b, address=f"{A_ADDR}/24",
             peer_address=f"{B_ADDR}/24", host=host).create()  # fmt: skip
        yield a, b, interface


@contextlib.contextmanager
def _engine(namespace: Namespace, queues: list[int], **options: object) -> Iterator[tuple[Process, list[str]]]:
    """Run the engine in ``namespace`` until the block ends; the list gets its final stats line."""
    with tempfile.TemporaryFile() as errors:
        process = namespace.popen(engine_argv(queues, **options), stderr=errors)
        stats: list[str] = []
        try:
            wait_ready(process, timeout=15)
            yield process, stats
        finally:
            status = process.stop()
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            stats.extend(line for line in text.splitlines() if " stats " in line)
            assert status == 0, text


def _rule(host: Host, hook: str, interface: str, queue: int, delete: bool = False) -> tuple[str, ...]:
    """The queue rule the Host's firewall backend makes, tagged as ImpairedLink tags it."""
    comment = f"{host.tag} impair {interface}"
    return host.firewall.queue_rule(4, hook, interface, queue, comment, delete=delete)  # type: ignore[arg-type]


def _mangle(host: Host, namespace: Namespace) -> str:
    """The mangle table of ``namespace``, listed by the program that writes the queue rules."""
    program = _rule(host, "egress", "lo", 1)[0]
    return namespace.run([program, "-w", "-t", "mangle", "-S"]).stdout


def _rtt(namespace: Namespace, address: str, count: int = 5) -> float:
    """Average ping RTT in ms; ``-U`` measures user to user, so a delay on ingress counts too."""
    result = namespace.run(["ping", "-U", "-c", str(count), "-i", "0.05", "-W", "2", "-q", address])
    match = re.search(r"= [\d.]+/([\d.]+)/", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def _loss(namespace: Namespace, address: str) -> float:
    result = namespace.run(["ping", "-c100", "-i0.01", "-W1", "-q", address], check=False)
    match = re.search(r"([\d.]+)% packet loss", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.root
def test_delay_both_ways_then_bypass_then_gone(names, host):
    with _pair(names, host) as (a, b, interface):
        assert _rtt(a, B_ADDR, count=3) < 20
        with _engine(a, [100, 101], delay=0.05) as (_, stats):
            a.run(_rule(host, "egress", interface, 100))
            a.run(_rule(host, "ingress", interface, 101))
            assert 90 <= _rtt(a, B_ADDR) <= 300
            assert 90 <= _rtt(b, A_ADDR) <= 300
        assert "received=" in stats[0] and "dropped=0" in stats[0]
        # engine gone, rules still there: --queue-bypass lets traffic through undelayed
        assert f"{host.tag} impair" in _mangle(host, a)
        assert _rtt(a, B_ADDR, count=3) < 20
        a.run(_rule(host, "egress", interface, 100, delete=True))
        a.run(_rule(host, "ingress", interface, 101, delete=True))
        assert f"{host.tag} impair" not in _mangle(host, a)
        assert _rtt(a, B_ADDR, count=3) < 20


@pytest.mark.root
def test_loss_drops_about_that_fraction(names, host):
    with _pair(names, host) as (a, _, interface), _engine(a, [100], loss=0.3, seed=1) as (_, stats):
        a.run(_rule(host, "egress", interface, 100))
        assert 10 <= _loss(a, B_ADDR) <= 55
    dropped = int(re.search(r"dropped=(\d+)", stats[0]).group(1))  # type: ignore[union-attr]
    assert 10 <= dropped <= 55


_SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); print('listening', flush=True)
c, _ = s.accept(); n = 0
while data := c.recv(65536): n += len(data)
print(n, flush=True)
"""


_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5001), timeout=20)
c.sendall(b'x' * int(sys.argv[2])); c.close()
"""


def _transfer(sender: Namespace, receiver: Namespace, address: str, size: int) -> float:
    """Send ``size`` bytes over TCP from ``sender`` to ``address`` in ``receiver``; returns the seconds it took."""
    server = receiver.popen([sys.executable, "-c", _SERVER, address])
    assert server.stdout is not None
    assert server.stdout.readline().strip() == b"listening"
    started = time.monotonic()
    sender.run([sys.executable, "-c", _CLIENT, address, str(size)], timeout=30)
    assert server.wait(timeout=10) == 0
    elapsed = time.monotonic() - started
    assert int(server.stdout.readline()) == size
    server.stop()
    return elapsed


@pytest.mark.root
def test_tcp_transfer_completes_under_delay_jitter_and_loss(names, host):
    with _pair(names, host) as (a, b, interface):
        with _engine(a, [100, 101], delay=0.025, jitter=0.005, loss=0.005, seed=2) as (_, stats):
            a.run(_rule(host, "egress", interface, 100))
            a.run(_rule(host, "ingress", interface, 101))
            # data held on A's ingress: the sender's TCP never sees it queued
            inbound = _transfer(b, a, A_ADDR, 1024 * 1024)
            # data held on A's egress: TCP Small Queues keep only ~2 packets of the sender below TCP, so this is slow
            outbound = _transfer(a, b, B_ADDR, 256 * 1024)
        assert inbound + outbound < 8, stats
        received = int(re.search(r"received=(\d+)", stats[0]).group(1))  # type: ignore[union-attr]
        assert received > (1024 + 256) * 1024 // 1500  # the data segments really went through the queues


@pytest.mark.root
def test_stopping_lets_held_packets_go(names, host):
    with _pair(names, host) as (a, _, interface):
        with _engine(a, [100], delay=2.0) as (engine, _):
            a.run(_rule(host, "egress", interface, 100))
            ping = a.popen(["ping", "-c1", "-W5", B_ADDR])
            wait_until(lambda: _held(a, 100), timeout=5, what="the echo request to be held")
            started = time.monotonic()
            engine.stop()
        assert ping.wait(timeout=5) == 0  # accepted at once on stop, not dropped
        assert time.monotonic() - started < 1.5


@pytest.mark.root
def test_an_overrun_socket_is_reported_and_survived(names, host):
    blast = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(20000): s.sendto(b'x' * 64, ({A_ADDR!r}, 9))\n"
    )
    with _pair(names, host) as (a, b, interface):
        with _engine(a, [101], delay=0.01, rcvbuf=4096) as (_, stats):
            a.run(_rule(host, "ingress", interface, 101))
            b.run([sys.executable, "-c", blast])
            assert _rtt(a, B_ADDR, count=3) < 100  # still working after the overrun
        overruns = int(re.search(r"overruns=(\d+)", stats[0]).group(1))  # type: ignore[union-attr]
        assert overruns > 0, stats


def _held(namespace: Namespace, queue: int) -> bool:
    """True once the kernel holds a packet on ``queue`` (/proc/net/netfilter/nfnetlink_queue)."""
    for line in namespace.run(["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout.splitlines():
        fields = line.split()
        if fields and int(fields[0]) == queue and int(fields[2]) > 0:
            return True
    return False


@pytest.mark.root
def test_a_queue_bound_elsewhere_is_a_clear_error(names, host):
    with Namespace(names("q"), host=host) as namespace, _engine(namespace, [42]):
        second = namespace.popen(engine_argv([42]))
        with pytest.raises(NfqueueError, match="cannot bind queue 42: another process"):
            wait_ready(second, timeout=15)
        assert second.wait(timeout=5) == 1


@pytest.mark.root
def test_wait_ready_times_out_on_a_silent_process(names, host):
    with Namespace(names("s"), host=host) as namespace:
        silent = namespace.popen(["sleep", "5"], stdout=subprocess.PIPE)
        with pytest.raises(WaitTimeout):
            wait_ready(silent, timeout=0.2)
