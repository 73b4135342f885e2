"""Impairing a lab's links (delay, jitter, loss, rate) on the real kernel, with netem or without it.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_lab_impair.py.
"""

from __future__ import annotations

import re
import time

import pytest

from pynetns import BackendUnavailable, CommandError, Lab, Namespace
from pynetns.impair.link import netem_available


def rtt(namespace, address: str) -> float | None:
    """Average RTT in ms; ``-U`` times from user space, so a delay added after the kernel's receive stamp counts."""
    out = namespace.run(["ping", "-U", "-c3", "-i0.2", "-W2", address], check=False).stdout
    found = re.search(r"= [\d.]+/([\d.]+)/", out)
    return float(found.group(1)) if found else None


root = pytest.mark.root


def two_namespaces(lab: Lab, subnet: str) -> tuple[Namespace, Namespace]:
    """``a`` and ``b`` on one network (``a`` at .2, ``b`` at .3), applied."""
    net = lab.network("n", subnet=subnet, nat=False)
    pair = lab.namespace("a", networks=[net]), lab.namespace("b", networks=[net])
    lab.apply()
    return pair


@root
def test_delay_loss_direction_and_clear(caplog):
    with Lab("slow", isolated=True) as lab:
        a, b = two_namespaces(lab, "10.63.0.0/24")
        endpoint = lab.endpoints[0]
        base = rtt(a, "10.63.0.3")
        assert base is not None and base < 20
        with caplog.at_level("WARNING", logger="pynetns.lab.model"):
            endpoint.impair(delay="50ms")
        fallback = [record for record in caplog.records if "userspace engine" in record.getMessage()]
        assert len(fallback) == (endpoint.impairment_mode == "nfqueue")  # said once, where there is no netem
        if endpoint.impairment is not None and endpoint.impairment_mode == "nfqueue":  # no netem here
            program = lab.host.firewall.queue_rule(4, "ingress", "eth0", 1, "pynetns probe")[0]
            listing = a.run([program, "-w", "-t", "mangle", "-S"]).stdout
            assert f'"{lab.tag} impair eth0"' in listing and "NFQUEUE" in listing, listing
        both = rtt(a, "10.63.0.3"), rtt(b, "10.63.0.2")
        assert all(value is not None and 90 <= value < 400 for value in both), both
        endpoint.impair(delay="50ms", direction="egress")
        one_way = rtt(a, "10.63.0.3")
        assert one_way is not None and 45 <= one_way < 90, one_way
        endpoint.impair(loss="100%")
        assert rtt(a, "10.63.0.3") is None
        endpoint.clear_impairment()
        after = rtt(a, "10.63.0.3")
        assert after is not None and after < 20 and endpoint.impairment is None
        endpoint.impair(delay="20ms")  # left on: destroy takes it away with the lab
        lab_id = lab.id
    assert not [name for name in __import__("os").listdir("/run/netns") if lab_id in name]


SINK = "import socket\ns = socket.create_server(('0.0.0.0', 9000))\nc, _ = s.accept()\nwhile c.recv(65536): pass"


#: python3 -c SEND ADDRESS BYTES: send BYTES to the SINK at ADDRESS, and wait until it has them all
SEND = """
import socket, sys, time
for _ in range(50):
    try:
        c = socket.create_connection((sys.argv[1], 9000))
        break
    except OSError:
        time.sleep(0.1)
c.sendall(b"x" * int(sys.argv[2]))
c.shutdown(socket.SHUT_WR)
c.recv(1)
"""


@root
def test_rate_limits_a_transfer():
    with Lab("narrow", isolated=True) as lab:
        a, b = two_namespaces(lab, "10.64.0.0/24")
        server = b.popen(["python3", "-c", SINK])
        lab.endpoints[0].impair(rate="1mbit", direction="egress")
        started = time.monotonic()
        a.run(["python3", "-c", SEND, "10.64.0.3", "250000"], timeout=30)
        elapsed = time.monotonic() - started
        server.stop()
        assert 1.5 <= elapsed < 15, elapsed  # 250 kB at 1 Mbit/s is 2 s


@root
def test_duplicate_and_corrupt_need_netem():
    with Lab("dup", isolated=True) as lab:
        net = lab.network("n", subnet="10.65.0.0/24", nat=False)
        lab.namespace("a", networks=[net])
        lab.apply()
        if netem_available(lab.host, lab.namespaces["a"]):
            lab.endpoints[0].impair(duplicate="1%", corrupt="0.1%")
            assert lab.endpoints[0].impairment_mode == "netem"
        else:
            with pytest.raises(BackendUnavailable, match="CONFIG_NET_SCH_NETEM"):
                lab.endpoints[0].impair(duplicate="1%")


@root
def sees_bridged(namespace: Namespace) -> bool:
    """Whether bridged traffic crosses iptables there (br_netfilter loaded and on)."""
    try:
        return namespace.sysctl("net.bridge.bridge-nf-call-iptables").strip() == "1"
    except CommandError:  # no br_netfilter in this kernel, or not loaded
        return False


def test_a_delayed_sender_is_not_throttled():
    """1 MiB sent under 25 ms of delay each way: a few round trips of TCP's window growth, not seconds.

    Without netem, packets held inside the sender's namespace would still count against its socket
    (TCP Small Queues) and crawl; held on the host's end of the veth they do not.
    """
    with Lab("bulk", isolated=True) as lab:
        a, b = two_namespaces(lab, "10.67.0.0/24")
        if not netem_available(lab.host, a) and not sees_bridged(lab.host_namespace):
            pytest.skip("neither netem nor br_netfilter here: sent packets can only be held inside the sender")
        server = b.popen(["python3", "-c", SINK])
        lab.endpoints[0].impair(delay="25ms")
        started = time.monotonic()
        a.run(["python3", "-c", SEND, "10.67.0.3", "1048576"], timeout=60)
        elapsed = time.monotonic() - started
        server.stop()
        assert elapsed < 2.5, elapsed
        rtt_now = rtt(a, "10.67.0.3")
        assert rtt_now is not None and 45 <= rtt_now < 200, rtt_now
