"""The userspace impairment engine (pynetns.impair.nfqueue): wire format, scheduling, argv, the queue rules
the firewall backends make, the engine's import isolation, and the real kernel.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_nfqueue.py.
"""

from __future__ import annotations

import math
import struct
import subprocess
import sys

import pytest

from pynetns import InvalidName, InvalidValue
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.impair.engine_client import engine_argv
from pynetns.impair.nfqueue import (
    NF_DROP,
    NFQNL_CFG_CMD_BIND,
    NFQNL_CFG_CMD_UNBIND,
    NFQNL_COPY_META,
    NFQNL_PACKET,
    Engine,
    NetlinkMessage,
    NfqueueError,
    Packet,
    Scheduler,
    main,
    pack_config,
    pack_verdict,
    parse_messages,
    parse_packet,
    queue_number,
)

little_endian = pytest.mark.skipif(sys.byteorder != "little", reason="hand-computed bytes are little-endian")


@little_endian
def test_verdict_bytes_match_the_kernel_layout():
    expected = bytes.fromhex(
        "20000000"  # nlmsg_len 32
        "0103"  # type (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        "0100"  # flags NLM_F_REQUEST
        "00000000"  # seq
        "00000000"  # portid
        "00"  # nfgen_family AF_UNSPEC
        "00"  # version
        "0064"  # res_id: queue 100, big-endian
        "0c000200"  # nla_len 12, NFQA_VERDICT_HDR
        "00000001"  # verdict NF_ACCEPT, big-endian
        "00000007"  # packet id 7, big-endian
    )
    assert pack_verdict(100, 7) == expected
    assert pack_verdict(100, 7, NF_DROP)[-8:] == bytes.fromhex("00000000 00000007")
    assert pack_verdict(65535, 0xFFFFFFFF, seq=9)[8:12] == b"\x09\0\0\0"


@little_endian
def test_config_bytes_match_the_kernel_layout():
    bind = pack_config(100, 1, command=NFQNL_CFG_CMD_BIND)
    assert bind == bytes.fromhex("1c000000 0203 0500 01000000 00000000 00000064 08000100 01000000")
    params = pack_config(3, 2, copy_mode=NFQNL_COPY_META, maxlen=10000, flags=1)
    assert params == bytes.fromhex(
        "38000000 0203 0500 02000000 00000000 00000003"
        "09000200 00000000 01 000000"  # NFQA_CFG_PARAMS: copy_range 0, copy_mode META, packed 5 bytes + pad
        "08000300 00002710"  # NFQA_CFG_QUEUE_MAXLEN 10000
        "08000400 00000001"  # NFQA_CFG_MASK
        "08000500 00000001"  # NFQA_CFG_FLAGS
    )
    assert pack_config(3, 4, command=NFQNL_CFG_CMD_UNBIND)[-4:] == b"\x02\0\0\0"
    # the mask may differ from the flags: clear FAIL_OPEN
    assert pack_config(3, 5, flags=0, mask=1)[-16:] == bytes.fromhex("08000400 00000001 08000500 00000000")


def _nlmsg(kind: int, body: bytes, seq: int = 0, flags: int = 0) -> bytes:
    header = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0)
    pad = b"\0" * (-len(body) % 4)
    return header + body + pad


def _nla(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _fake_packet(queue: int, packet_id: int, hook: int = 4) -> bytes:
    body = struct.pack("!BBH", 2, 0, queue)  # AF_INET, version 0, queue
    body += _nla(3, struct.pack("!I", 0x42))  # NFQA_MARK first: the parser must walk past it
    body += _nla(1, struct.pack("!IHB", packet_id, 0x0800, hook))  # NFQA_PACKET_HDR, 7 packed bytes
    body += _nla(6 | 0x8000, struct.pack("!I", 2))  # NFQA_IFINDEX_OUTDEV with a flag bit set
    return _nlmsg(NFQNL_PACKET, body)


def test_a_packet_message_is_parsed():
    datagram = _fake_packet(101, 0x01020304) + _fake_packet(7, 9, hook=0)
    messages = list(parse_messages(datagram))
    assert [message.type for message in messages] == [NFQNL_PACKET, NFQNL_PACKET]
    assert parse_packet(messages[0]) == Packet(queue=101, packet_id=0x01020304, hw_protocol=0x0800, hook=4)
    assert parse_packet(messages[1]) == Packet(queue=7, packet_id=9, hw_protocol=0x0800, hook=0)


def test_parsing_refuses_or_skips_what_is_not_a_packet():
    with pytest.raises(ValueError, match="not an NFQNL_MSG_PACKET"):
        parse_packet(NetlinkMessage(2, 0, 0, 0, b"\0" * 20))
    without_header = _nlmsg(NFQNL_PACKET, struct.pack("!BBH", 2, 0, 1) + _nla(3, b"\0\0\0\1"))
    with pytest.raises(ValueError, match="without NFQA_PACKET_HDR"):
        parse_packet(next(parse_messages(without_header)))
    # a truncated tail (announced length beyond the data) is ignored, what came before is kept
    datagram = _fake_packet(1, 1) + _fake_packet(1, 2)[:20]
    assert [parse_packet(message).packet_id for message in parse_messages(datagram)] == [1]
    assert list(parse_messages(b"")) == []


def test_acknowledgements_and_errors_are_read():
    request = pack_config(5, 77, command=NFQNL_CFG_CMD_BIND)
    ack = _nlmsg(2, struct.pack("=i", 0) + request[:16])
    refused = _nlmsg(2, struct.pack("=i", -1) + request[:16])  # -EPERM
    first, second = parse_messages(ack + refused)
    assert (first.error, first.acked_seq) == (0, 77)
    assert (second.error, second.acked_seq) == (1, 77)
    assert NetlinkMessage(NFQNL_PACKET, 0, 0, 0, b"").error is None


def test_scheduler_delays_every_packet_by_delay():
    scheduler = Scheduler(delay=0.1)
    for packet_id in range(5):
        assert scheduler.admit(1, packet_id, now=10.0 + packet_id / 100)
    assert scheduler.next_due() == pytest.approx(10.1)
    assert scheduler.due(10.099) == []
    assert scheduler.due(10.125) == [(1, 0), (1, 1), (1, 2)]
    assert len(scheduler) == 2
    assert scheduler.drain() == [(1, 3), (1, 4)]
    assert scheduler.next_due() is None


def test_scheduler_loss_is_a_fraction_and_repeatable():
    def dropped(seed: int) -> list[int]:
        scheduler = Scheduler(loss=0.3, seed=seed)
        return [i for i in range(10000) if not scheduler.admit(0, i, now=0.0)]

    assert 2700 < len(dropped(1)) < 3300
    assert dropped(1) == dropped(1) != dropped(2)
    assert all(Scheduler(loss=1.0).admit(0, i, 0.0) is False for i in range(100))
    assert all(Scheduler(loss=0.0).admit(0, i, 0.0) for i in range(100))


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_scheduler_jitter_stays_around_delay_and_never_below_arrival(distribution):
    scheduler = Scheduler(delay=0.05, jitter=0.01, seed=3, distribution=distribution)
    for packet_id in range(2000):
        scheduler.admit(0, packet_id, now=0.0)
    delays = []
    while (due := scheduler.next_due()) is not None:
        delays.append(due)
        scheduler.due(due)
    assert sum(delays) / len(delays) == pytest.approx(0.05, abs=0.002)
    if distribution == "uniform":
        assert 0.04 <= min(delays) < 0.0405 and 0.0595 < max(delays) <= 0.06
    else:
        assert min(delays) < 0.035 and max(delays) > 0.065  # tails beyond one standard deviation
    wide = Scheduler(delay=0.001, jitter=0.05, seed=1, distribution=distribution)
    for packet_id in range(500):
        wide.admit(0, packet_id, now=1.0)
    assert wide.next_due() == 1.0  # clamped: never before arrival


def test_jitter_reorders_like_netem_unless_in_order():
    def order(in_order: bool) -> list[int]:
        scheduler = Scheduler(delay=0.05, jitter=0.02, seed=5, in_order=in_order)
        for packet_id in range(200):
            scheduler.admit(9, packet_id, now=packet_id * 0.001)
        return [packet_id for _, packet_id in scheduler.drain()]

    assert order(False) != list(range(200))  # jittered packets overtake each other
    assert order(True) == list(range(200))
    # in order is per queue: another queue is not held behind this one
    scheduler = Scheduler(delay=0.0, jitter=0.0, in_order=True)
    scheduler.admit(1, 1, now=0.0)
    scheduler.admit(2, 1, now=0.0)
    assert scheduler.due(0.0) == [(1, 1), (2, 1)]


@pytest.mark.parametrize("value", [-1, 65536, True, "1", 1.0, None])
def test_queue_numbers_are_checked(value):
    with pytest.raises(InvalidValue, match="queue number"):
        queue_number("queue", value)
    with pytest.raises(InvalidValue):
        Iptables().queue_rule(4, "egress", "eth0", value, "pynetns:t impair eth0")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"queues": []}, "at least one"),
        ({"queues": [1, 1]}, "each once"),
        ({"queues": 5}, "sequence"),
        ({"queues": [1], "delay": -0.1}, "seconds"),
        ({"queues": [1], "delay": math.nan}, "seconds"),
        ({"queues": [1], "jitter": math.inf}, "seconds"),
        ({"queues": [1], "loss": 1.5}, "fraction"),
        ({"queues": [1], "loss": "10%"}, "fraction"),
        ({"queues": [1], "seed": 1.5}, "seed"),
        ({"queues": [1], "distribution": "pareto"}, "uniform"),
        ({"queues": [1], "queue_maxlen": 0}, "positive"),
        ({"queues": [1], "rcvbuf": -1}, "positive"),
    ],
)
def test_engine_values_are_checked_before_anything_opens(kwargs, match):
    with pytest.raises(InvalidValue, match=match):
        Engine(**kwargs)
    options = dict(kwargs)
    queues = options.pop("queues")
    with pytest.raises(InvalidValue, match=match):
        engine_argv(queues, **options)


@pytest.mark.parametrize(
    ("backend", "program"),
    [(Iptables("nft"), "iptables-nft"), (Iptables("legacy"), "iptables-legacy"), (Iptables(), "iptables"),
     (Nftables(), "iptables-nft")],
)  # fmt: skip
def test_queue_rules_honour_the_variant_and_carry_the_owner_tag(backend, program):
    assert backend.queue_rule(4, "egress", "eth0", 100, "pynetns:t1 impair eth0") == (
        program, "-w", "-t", "mangle", "-A", "POSTROUTING", "-o", "eth0",
        "-m", "comment", "--comment", "pynetns:t1 impair eth0",
        "-j", "NFQUEUE", "--queue-num", "100", "--queue-bypass",
    )  # fmt: skip
    assert backend.queue_rule(4, "ingress", "veth-1.a", 0, "pynetns:t1 impair veth-1.a")[5:8] == (
        "PREROUTING", "-i", "veth-1.a",
    )  # fmt: skip
    assert backend.queue_rule(4, "port", "vh1", 7, "pynetns:t1 impair vh1")[5:10] == (
        "PREROUTING", "-m", "physdev", "--physdev-in", "vh1",
    )  # fmt: skip
    removal = backend.queue_rule(4, "egress", "eth0", 100, "pynetns:t1 impair eth0", delete=True)
    added = backend.queue_rule(4, "egress", "eth0", 100, "pynetns:t1 impair eth0")
    assert removal[4] == "-D" and removal[:4] + removal[5:] == added[:4] + added[5:]
    six = backend.queue_rule(6, "ingress", "eth0", 65535, "pynetns:t1 impair eth0", delete=True)
    assert six[0] == program.replace("iptables", "ip6tables") and six[4:6] == ("-D", "PREROUTING")


def test_a_firewall_backend_without_queue_rules_says_so():
    from pynetns import BackendUnavailable
    from pynetns.backends.base import FirewallBackend

    class Bare(FirewallBackend):
        name = "bare"
        list_commands = parse = batch_command = script = lambda *args, **kwargs: None  # type: ignore[assignment]
        partition_block = partition_unblock = lambda *args, **kwargs: None  # type: ignore[assignment]

    with pytest.raises(BackendUnavailable, match="NFQUEUE"):
        Bare().queue_rule(4, "egress", "eth0", 1, "pynetns:t impair eth0")


def test_queue_rules_refuse_a_comment_without_the_prefix_or_with_quotes():
    for comment in ("impair eth0", 'pynetns:x "a"', "pynetns:x\nflush"):
        with pytest.raises(InvalidValue):
            Iptables().queue_rule(4, "egress", "eth0", 1, comment)


@pytest.mark.parametrize("interface", ["a;b", "eth0 -j ACCEPT", "", "x" * 16, "-o", "eth\n0"])
def test_rules_refuse_bad_interface_names(interface):
    with pytest.raises(InvalidName):
        Iptables().queue_rule(4, "egress", interface, 1, "pynetns:t impair x")
    with pytest.raises(InvalidName):
        Nftables().queue_rule(4, "ingress", interface, 1, "pynetns:t impair x", delete=True)


def test_rules_refuse_unknown_families():
    with pytest.raises(InvalidValue, match="4 or 6"):
        Iptables().queue_rule(5, "egress", "eth0", 1, "pynetns:t impair eth0")  # type: ignore[arg-type]


def test_engine_argv_names_every_option():
    argv = engine_argv(
        [100, 101], delay=0.1, jitter=0.01, loss=0.1, seed=1, distribution="normal", in_order=True,
        queue_maxlen=500, fail_open=True, gso=True, rcvbuf=65536, python="/usr/bin/python3",
    )  # fmt: skip
    assert argv == [
        "/usr/bin/python3", "-m", "pynetns.impair.nfqueue", "--queue", "100", "--queue", "101",
        "--delay", "0.1", "--jitter", "0.01", "--loss", "0.1", "--seed", "1", "--distribution", "normal",
        "--in-order", "--queue-maxlen", "500", "--fail-open", "--gso", "--rcvbuf", "65536",
    ]  # fmt: skip
    assert engine_argv([7]) == [sys.executable, "-m", "pynetns.impair.nfqueue", "--queue", "7"]


def test_cli_refuses_bad_values(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--delay", "0.1"])  # no --queue
    assert exit_info.value.code == 2
    assert main(["--queue", "1", "--loss", "2"]) == 2
    assert "fraction" in capsys.readouterr().err
    assert main(["--queue", "70000"]) == 2


def test_run_needs_an_open_engine():
    with pytest.raises(NfqueueError, match="not open"):
        Engine([1]).run()


def test_nfqueue_error_is_an_os_error_with_errno():
    error = NfqueueError(1, "cannot bind queue 3")
    assert isinstance(error, OSError) and error.errno == 1


_ENGINE_MODULES = {
    "pynetns.errors",
    "pynetns.impair.nfqueue",
    "pynetns.impair.nfqueue.__main__",
    "pynetns.impair.nfqueue.cli",
    "pynetns.impair.nfqueue.engine",
    "pynetns.impair.nfqueue.options",
    "pynetns.impair.nfqueue.schedule",
    "pynetns.impair.nfqueue.wire",
}


_IMPORTS = """
import json, os, runpy, sys, types
import pynetns.impair as probe  # only to find the folders; then forgotten
impair = os.path.dirname(probe.__file__)
folders = {"pynetns": os.path.dirname(impair), "pynetns.impair": impair}
for name in [name for name in sys.modules if name == "pynetns" or name.startswith("pynetns.")]:
    del sys.modules[name]
for name, folder in folders.items():  # empty parents: only what the engine itself imports gets loaded
    stub = types.ModuleType(name)
    stub.__path__ = [folder]
    sys.modules[name] = stub
sys.argv = ["nfqueue", "--help"]
try:
    runpy.run_module("pynetns.impair.nfqueue", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
loaded = sorted(name for name in sys.modules if name.startswith("pynetns.") and name not in folders)
print(json.dumps(loaded), file=sys.stderr)
"""


def test_the_engine_imports_only_the_standard_library_and_errors():
    """``python -m pynetns.impair.nfqueue``, its parent packages left empty: what the engine pulls in itself."""
    result = subprocess.run([sys.executable, "-c", _IMPORTS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--queue" in result.stdout  # the help really ran
    loaded = set(__import__("json").loads(result.stderr.strip().splitlines()[-1]))
    assert loaded <= _ENGINE_MODULES, loaded - _ENGINE_MODULES
    assert "pynetns.impair.nfqueue.engine" in loaded
