"""Link impairment: unit parsing, tc commands, reading tc's JSON back, and the real kernel.

The kernel tests build two namespaces joined by a veth pair (10.77.0.1 ↔ 10.77.0.2)
and send traffic only between them. Rate tests use tbf and run wherever tc does;
delay and loss need the kernel's netem qdisc and are skipped on kernels built
without it (``PYNETNS_REQUIRE_NETEM=1`` turns that skip into a failure).

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_impairment.py.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import pytest

from pynetns import Host, Namespace, Veth
from pynetns.backends.tc import Tc
from pynetns.impairment import (
    Impairment,
    plan_impairment,
)

A_IP, B_IP = "10.77.0.1", "10.77.0.2"


class Pair(NamedTuple):
    """Two namespaces joined by a veth pair: ``a_dev`` (10.77.0.1) in ``a``, ``b_dev`` (10.77.0.2) in ``b``."""

    a: Namespace
    b: Namespace
    a_dev: str
    b_dev: str


@pytest.fixture
def tc() -> Tc:
    """``Tc()``, after checking the ``tc`` program is installed (fails, naming the package, if not)."""
    if shutil.which("tc") is None:
        pytest.fail("the 'tc' program is missing: install the Debian package 'iproute2' (apt-get install iproute2)")
    return Tc()


@pytest.fixture
def pair(names: Callable[[str], str], host: Host) -> Iterator[Pair]:
    """Two fresh namespaces and a veth pair between them, deleted after the test."""
    with Namespace(names("a"), host=host) as a, Namespace(names("b"), host=host) as b:
        veth = Veth(names("va"), names("vb"), namespace=a, peer_namespace=b,
                    address=f"{A_IP}/24", peer_address=f"{B_IP}/24", host=host)  # fmt: skip
        veth.create()
        yield Pair(a, b, veth.name, veth.peer)


@pytest.fixture
def netem(tc: Tc, pair: Pair, host: Host) -> None:
    """Skips the test if the kernel has no netem qdisc (fails instead with ``PYNETNS_REQUIRE_NETEM=1``)."""
    probe = host.run(tc.command(("qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"), netns=pair.a.name),
                     check=False)  # fmt: skip
    if probe.ok:
        host.run(tc.qdisc_delete("lo", netns=pair.a.name))
        return
    if "qdisc kind is unknown" in probe.stderr and not os.environ.get("PYNETNS_REQUIRE_NETEM"):
        pytest.skip("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM / module sch_netem)")
    pytest.fail(f"cannot add a netem qdisc: {probe.stderr.strip()}")


def shown(host: Host, tc: Tc, namespace: Namespace, device: str) -> list[dict[str, Any]]:
    return list(host.run(tc.qdisc_show(device, netns=namespace.name)).json())


PORT = "5001"


SERVER = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen(1)
print("ready", flush=True)
connection, _ = server.accept()
received = 0
while chunk := connection.recv(65536):
    received += len(chunk)
connection.sendall(str(received).encode())
connection.close()
"""


CLIENT = r"""
import socket, sys, time
started = time.monotonic()
connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
connection.sendall(b"x" * int(sys.argv[3]))
connection.shutdown(socket.SHUT_WR)
reply = connection.recv(64)
print(reply.decode(), time.monotonic() - started)
"""


def apply(host: Host, commands: Sequence[Sequence[str]]) -> None:
    for argv in commands:
        host.run(argv)


def impair(host: Host, tc: Tc, pair: Pair, impairment: Impairment, direction: str = "both") -> None:
    """Impair ``pair.a`` as an endpoint whose other veth end is in ``pair.b``."""
    targets = plan_impairment(direction, inside=(pair.a, pair.a_dev), outside=(pair.b, pair.b_dev))
    for namespace, device in targets:
        apply(host, tc.impair(device, impairment, netns=namespace.name))


def clear(host: Host, tc: Tc, pair: Pair) -> None:
    for namespace, device in ((pair.a, pair.a_dev), (pair.b, pair.b_dev)):
        apply(host, tc.clear(device, netns=namespace.name))


def rtt(namespace: Namespace, address: str, count: int = 4) -> tuple[float, float]:
    """(min, avg) round-trip time in milliseconds of ``count`` pings."""
    output = namespace.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", address], timeout=30).stdout
    found = re.search(r"= ([\d.]+)/([\d.]+)/", output)
    assert found, output
    return float(found.group(1)), float(found.group(2))


def transfer(sender: Namespace, receiver: Namespace, address: str, size: int) -> float:
    """Seconds to send ``size`` bytes over TCP from ``sender`` to a server at ``address`` in ``receiver``."""
    server = receiver.popen([sys.executable, "-c", SERVER, address, PORT])
    assert server.stdout is not None and server.stdout.readline() == b"ready\n"
    words = sender.run([sys.executable, "-c", CLIENT, address, PORT, str(size)], timeout=30).stdout.split()
    assert server.wait(10) == 0 and int(words[0]) == size
    return float(words[1])


@pytest.mark.root
def test_tc_accepts_every_command_we_build(tc: Tc, pair: Pair, host: Host) -> None:
    """Each argv parses in the real tc; netem ones may then be refused by a kernel without netem."""
    cases = [
        Impairment(delay="50ms", jitter="5ms", loss="10%", duplicate="1%", corrupt="0.5%"),
        Impairment(delay="1.5s", loss="0.0001%"),
        Impairment(delay="200us", rate="1gbit"),
        Impairment(delay="200ms", jitter="10ms", rate="1gbit"),
        Impairment(rate="500kbps"),
        Impairment(rate="100gbit"),
        Impairment(rate=8),
    ]
    for impairment in cases:
        for argv in tc.impair(pair.a_dev, impairment, netns=pair.a.name):
            result = host.run(argv, check=False)
            if not result.ok:
                assert "netem" in argv and "Specified qdisc kind is unknown" in result.stderr, (argv, result.stderr)
                break
        apply(host, tc.clear(pair.a_dev, netns=pair.a.name))
        assert shown(host, tc, pair.a, pair.a_dev)[0]["kind"] == "noqueue"


@pytest.mark.root
def test_rate_limits_a_transfer_and_clear_lifts_it(tc: Tc, pair: Pair, host: Host) -> None:
    assert transfer(pair.a, pair.b, B_IP, 250_000) < 1.0
    impairment = Impairment(rate="1mbit")
    impair(host, tc, pair, impairment)
    for namespace, device in ((pair.a, pair.a_dev), (pair.b, pair.b_dev)):
        assert Impairment.from_tc_json(shown(host, tc, namespace, device)) == impairment
    seconds = transfer(pair.a, pair.b, B_IP, 250_000)
    print(f"250 kB at 1mbit: {seconds:.2f} s")
    assert 1.5 <= seconds < 6
    clear(host, tc, pair)
    for namespace, device in ((pair.a, pair.a_dev), (pair.b, pair.b_dev)):
        assert shown(host, tc, namespace, device)[0]["kind"] == "noqueue"
        assert not Impairment.from_tc_json(shown(host, tc, namespace, device))
    seconds = transfer(pair.a, pair.b, B_IP, 250_000)
    print(f"250 kB after clear: {seconds:.3f} s")
    assert seconds < 1.0


@pytest.mark.root
def test_direction_picks_the_veth_end(tc: Tc, pair: Pair, host: Host) -> None:
    size = 125_000  # about 0.9 s at 1mbit, beyond tbf's 16 KiB bucket

    impair(host, tc, pair, Impairment(rate="1mbit"), direction="egress")
    out, back = transfer(pair.a, pair.b, B_IP, size), transfer(pair.b, pair.a, A_IP, size)
    print(f"egress: a->b {out:.2f} s, b->a {back:.3f} s")
    assert out >= 0.6 and back < 0.4
    assert not Impairment.from_tc_json(shown(host, tc, pair.b, pair.b_dev))

    clear(host, tc, pair)
    impair(host, tc, pair, Impairment(rate="1mbit"), direction="ingress")
    out, back = transfer(pair.a, pair.b, B_IP, size), transfer(pair.b, pair.a, A_IP, size)
    print(f"ingress: a->b {out:.3f} s, b->a {back:.2f} s")
    assert back >= 0.6 and out < 0.4
    assert not Impairment.from_tc_json(shown(host, tc, pair.a, pair.a_dev))


@pytest.mark.root
def test_impairing_again_rebuilds_the_tree(tc: Tc, pair: Pair, host: Host) -> None:
    """Run through ``Namespace.run`` (``ip netns exec … tc``), as an Endpoint may."""
    for impairment in (Impairment(rate="1mbit"), Impairment(rate="2mbit"), Impairment(rate="1.5mbit")):
        for argv in tc.impair(pair.a_dev, impairment):
            pair.a.run(argv)
        qdiscs = pair.a.run(tc.qdisc_show(pair.a_dev)).json()
        assert [item["kind"] for item in qdiscs] == ["tbf"]
        assert Impairment.from_tc_json(qdiscs) == impairment
    for _ in range(2):  # clearing is idempotent
        for argv in tc.clear(pair.a_dev):
            pair.a.run(argv)
        assert pair.a.run(tc.qdisc_show(pair.a_dev)).json()[0]["kind"] == "noqueue"


@pytest.mark.root
@pytest.mark.usefixtures("netem")
def test_delay_both_ways_then_clear(tc: Tc, pair: Pair, host: Host) -> None:
    rtt(pair.a, B_IP, count=1)  # resolve the neighbour first
    impair(host, tc, pair, Impairment(delay="50ms"))
    low, average = rtt(pair.a, B_IP)
    print(f"delay 50ms each way: rtt min {low} ms, avg {average} ms")
    assert low >= 95 and average < 400
    clear(host, tc, pair)
    low, average = rtt(pair.a, B_IP)
    print(f"cleared: rtt avg {average} ms")
    assert average < 20


@pytest.mark.root
@pytest.mark.usefixtures("netem")
def test_total_loss_stops_pings(tc: Tc, pair: Pair, host: Host) -> None:
    impair(host, tc, pair, Impairment(loss=1), direction="egress")
    assert not pair.a.run(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", B_IP], check=False).ok
    clear(host, tc, pair)
    assert pair.a.run(["ping", "-n", "-q", "-c", "1", "-W", "2", B_IP]).ok


@pytest.mark.root
@pytest.mark.usefixtures("netem")
@pytest.mark.parametrize(
    "impairment",
    [
        Impairment(delay="50ms", jitter="5ms", loss="10%", duplicate="1%", corrupt="0.5%"),
        Impairment(delay="1.5s", loss="0.0001%", rate="1.5mbit"),
        Impairment(corrupt="100%"),
    ],
    ids=str,
)
def test_netem_reads_back(tc: Tc, pair: Pair, host: Host, impairment: Impairment) -> None:
    impair(host, tc, pair, impairment, direction="egress")
    qdiscs = shown(host, tc, pair.a, pair.a_dev)
    assert Impairment.from_tc_json(qdiscs) == impairment, qdiscs
    clear(host, tc, pair)


@pytest.mark.root
def test_a_plan_that_fails_half_way_leaves_the_device_as_it_was(pair: Pair, host: Host) -> None:
    """On a kernel without netem the netem line of the batch fails; the placeholder before it is undone."""
    from pynetns import CommandError
    from pynetns.impair import ImpairedLink, netem_available

    link = ImpairedLink(host, pair.a, pair.a_dev, pair.b, pair.b_dev)
    if netem_available(host, pair.a):
        link.apply(Impairment(delay="10ms"), "egress", netem=True)
        assert shown(host, Tc(), pair.a, pair.a_dev)[0]["kind"] == "netem"
        link.clear()
    else:
        with pytest.raises(CommandError, match="batch line 2"):
            link.apply(Impairment(delay="10ms"), "egress", netem=True)
    assert shown(host, Tc(), pair.a, pair.a_dev)[0]["kind"] == "noqueue" and link.impairment is None
