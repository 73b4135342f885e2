"""Delay and drop a link's packets in userspace, through NFQUEUE, where the kernel has no netem.

pynetns impairs links (``endpoint.impair(delay="100ms", loss="10%")``) with
``tc qdisc … netem`` where it can. Some kernels — minimal VM and CI images —
are built without ``sch_netem`` but with ``CONFIG_NETFILTER_NETLINK_QUEUE`` and
the xtables ``NFQUEUE`` target. There, two iptables rules send one
interface's packets to netfilter queues, and a small engine process in the
same namespace holds each packet's verdict for ``delay`` ± ``jitter`` and
drops a fraction ``loss`` of them. The engine speaks nfnetlink_queue over a
netlink socket with the standard library only; it copies packet metadata,
never payloads.

Everything here builds argv lists; the caller runs them inside the namespace::

    engine = ns.popen(engine_argv([100, 101], delay=0.05, jitter=0.005, loss=0.01))
    wait_ready(engine)
    ns.run(egress_rule("eth0", 100))
    ns.run(ingress_rule("eth0", 101))
    ...                                   # eth0 now adds ~50 ms each way
    ns.run(egress_rule("eth0", 100, delete=True))
    ns.run(ingress_rule("eth0", 101, delete=True))
    engine.stop()

>>> egress_rule("eth0", 100)  # doctest: +NORMALIZE_WHITESPACE
['iptables', '-w', '-t', 'mangle', '-A', 'POSTROUTING', '-o', 'eth0', '-m', 'comment',
 '--comment', 'pynetns impair eth0', '-j', 'NFQUEUE', '--queue-num', '100', '--queue-bypass']
>>> engine_argv([100, 101], delay=0.1, jitter=0.01, loss=0.1)[1:]  # doctest: +NORMALIZE_WHITESPACE
['-m', 'pynetns.impair.nfqueue', '--queue', '100', '--queue', '101', '--delay', '0.1', '--jitter', '0.01',
 '--loss', '0.1']

Semantics, chosen to match netem where it matters:

- Loss is decided per packet on arrival, independently, with probability
  ``loss``; a lost packet gets an immediate NF_DROP verdict.
- Each other packet is accepted at arrival + ``delay`` + a jitter sample,
  uniform in [-jitter, +jitter] (netem's default) or normal with standard
  deviation ``jitter``; the total is never negative.
- Like netem, jittered packets may overtake each other. ``in_order=True``
  (``--in-order``) keeps each queue first-in first-out instead: a packet is
  never released before the one queued ahead of it.
- The kernel queue holds at most ``queue_maxlen`` packets (default 10000);
  beyond that the kernel drops, like netem's ``limit`` — or accepts
  undelayed with ``fail_open``.
- Stopping (SIGTERM, SIGINT, :meth:`Engine.stop`) lets new packets through
  undelayed, accepts the ones still held at once, and unbinds the queues; the
  rules' ``--queue-bypass`` then passes traffic until they are deleted.
- Only IP packets pass through iptables: ARP and other non-IP frames are not
  delayed (netem delays them too).

Limits, compared with netem:

- A delay on ingress is applied after the kernel stamped the packet's
  arrival time, so tools that read that stamp (``ping`` without ``-U``) do
  not see it; what applications receive is delayed all the same.
- A delay on egress holds packets that still belong to the sending socket
  (netem orphans them, a userspace queue cannot), so TCP Small Queues let a
  local TCP sender keep only about two packets in the queue: with 25 ms of
  egress delay such a sender manages about 200 KB/s. Traffic that arrives
  (ingress) or is forwarded is not limited this way.
- One Python process handles every packet: about 20 000 to 30 000 packets per
  second on a typical VM; beyond that the queue fills and the kernel drops.
"""

from __future__ import annotations

import argparse
import contextlib
import errno as errnos
import heapq
import logging
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ...errors import InvalidValue, PynetnsError, WaitTimeout
from ...validation import interface_name

if TYPE_CHECKING:
    from ...runner import Process

__all__ = [
    "NF_ACCEPT",
    "NF_DROP",
    "Engine",
    "EngineStats",
    "NetlinkMessage",
    "NfqueueError",
    "Packet",
    "Scheduler",
    "egress_rule",
    "bridge_port_rule",
    "engine_argv",
    "ingress_rule",
    "main",
    "pack_config",
    "pack_verdict",
    "parse_messages",
    "parse_packet",
    "queue_number",
    "wait_ready",
]

log = logging.getLogger(__name__)

# -- protocol constants (linux/netlink.h, linux/netfilter/nfnetlink*.h) ---------

NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQNL_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
NFQNL_VERDICT = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
NFQNL_CONFIG = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG

NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_NONE, NFQNL_COPY_META, NFQNL_COPY_PACKET = 0, 1, 2

NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_GSO = 1 << 2

NF_DROP, NF_ACCEPT = 0, 1

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid (host byte order)
_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")  # len, type (host byte order)
_PACKET_HDR = struct.Struct("!IHB")  # packet_id, hw_protocol, hook — packed, 7 bytes
_VERDICT_HDR = struct.Struct("!II")  # verdict, id
_CFG_CMD = struct.Struct("!BxH")  # command, pad, pf
_CFG_PARAMS = struct.Struct("!IB")  # copy_range, copy_mode — packed, 5 bytes
_BE32 = struct.Struct("!I")
_ERRNO = struct.Struct("=i")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

#: verdicts sent in one ``send()`` (each is 32 bytes; the kernel caps a send at the socket's sndbuf)
_VERDICTS_PER_SEND = 2048
#: datagrams read in a row before the loop looks at its wake-up pipe again
_RECEIVES_PER_ROUND = 256
#: verdicts gathered before they are sent while packets keep arriving
_FLUSH_AT = 64
#: a held packet due this close to now is released now, rather than after one more tiny sleep
_SLACK = 0.0002


def _align(length: int) -> int:
    return (length + 3) & ~3


class NfqueueError(PynetnsError, OSError):
    """The kernel refused a queue request (``errno`` set), or the engine could not start."""


# -- wire format -------------------------------------------------------------


@dataclass(frozen=True)
class NetlinkMessage:
    """One netlink message: its header fields and what follows the header."""

    type: int
    flags: int
    seq: int
    portid: int
    payload: bytes

    @property
    def error(self) -> int | None:
        """For an NLMSG_ERROR: the errno (0 for an acknowledgement); else None."""
        if self.type != NLMSG_ERROR or len(self.payload) < _ERRNO.size:
            return None
        return -int(_ERRNO.unpack_from(self.payload)[0])

    @property
    def acked_seq(self) -> int | None:
        """For an NLMSG_ERROR: the sequence number of the request it answers."""
        if self.type != NLMSG_ERROR or len(self.payload) < _ERRNO.size + _NLMSGHDR.size:
            return None
        return int(_NLMSGHDR.unpack_from(self.payload, _ERRNO.size)[3])


@dataclass(frozen=True)
class Packet:
    """What the engine needs of one queued packet (``NFQNL_MSG_PACKET``)."""

    queue: int
    packet_id: int
    hw_protocol: int
    hook: int


def _attribute(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def _nfnl_message(kind: int, flags: int, seq: int, queue: int, attributes: bytes, family: int = 0) -> bytes:
    body = _NFGENMSG.pack(family, 0, queue) + attributes
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


def pack_verdict(queue: int, packet_id: int, verdict: int = NF_ACCEPT, seq: int = 0) -> bytes:
    """An ``NFQNL_MSG_VERDICT`` for packet ``packet_id`` of ``queue`` (no acknowledgement asked)."""
    hdr = _attribute(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, packet_id))
    return _nfnl_message(NFQNL_VERDICT, NLM_F_REQUEST, seq, queue, hdr)


def pack_config(
    queue: int,
    seq: int,
    *,
    command: int | None = None,
    copy_mode: int | None = None,
    copy_range: int = 0,
    maxlen: int | None = None,
    flags: int | None = None,
    mask: int | None = None,
) -> bytes:
    """An ``NFQNL_MSG_CONFIG`` for ``queue`` that asks for an acknowledgement.

    ``command`` is ``NFQNL_CFG_CMD_BIND``/``UNBIND``; ``copy_mode`` with
    ``copy_range`` sets what is copied to userspace; ``maxlen`` the queue
    length; ``flags`` with ``mask`` (default: ``flags``) the ``NFQA_CFG_F_*`` flags.
    """
    attributes = b""
    if command is not None:
        attributes += _attribute(NFQA_CFG_CMD, _CFG_CMD.pack(command, 0))
    if copy_mode is not None:
        attributes += _attribute(NFQA_CFG_PARAMS, _CFG_PARAMS.pack(copy_range, copy_mode))
    if maxlen is not None:
        attributes += _attribute(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(maxlen))
    if flags is not None:
        attributes += _attribute(NFQA_CFG_MASK, _BE32.pack(flags if mask is None else mask))
        attributes += _attribute(NFQA_CFG_FLAGS, _BE32.pack(flags))
    return _nfnl_message(NFQNL_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, queue, attributes)


def parse_messages(data: bytes | memoryview) -> Iterator[NetlinkMessage]:
    """The netlink messages in one datagram; a truncated tail is ignored."""
    offset, end = 0, len(data)
    while offset + _NLMSGHDR.size <= end:
        length, kind, flags, seq, portid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            log.debug("ignoring a truncated netlink message (%d bytes announced, %d left)", length, end - offset)
            return
        yield NetlinkMessage(kind, flags, seq, portid, bytes(data[offset + _NLMSGHDR.size : offset + length]))
        offset += _align(length)


def _attributes(data: bytes, offset: int) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each attribute from ``offset`` on."""
    end = len(data)
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            return
        yield kind & _NLA_TYPE_MASK, offset + _NLATTR.size, offset + length
        offset += _align(length)


def parse_packet(message: NetlinkMessage) -> Packet:
    """The packet a ``NFQNL_MSG_PACKET`` announces; ``ValueError`` if it is not one."""
    if message.type != NFQNL_PACKET:
        raise ValueError(f"netlink message type {message.type:#x} is not an NFQNL_MSG_PACKET")
    data = message.payload
    if len(data) < _NFGENMSG.size:
        raise ValueError("NFQNL_MSG_PACKET without its nfgenmsg header")
    queue = _NFGENMSG.unpack_from(data)[2]
    for kind, start, end in _attributes(data, _NFGENMSG.size):
        if kind == NFQA_PACKET_HDR and end - start >= _PACKET_HDR.size:
            packet_id, hw_protocol, hook = _PACKET_HDR.unpack_from(data, start)
            return Packet(queue, packet_id, hw_protocol, hook)
    raise ValueError("NFQNL_MSG_PACKET without NFQA_PACKET_HDR")


# -- validation ----------------------------------------------------------------


def queue_number(field: str, value: object) -> int:
    """An NFQUEUE number, 0 to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise InvalidValue(field, value, "must be an integer queue number from 0 to 65535")
    return value


def _seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidValue(field, value, "must be a finite number of seconds, 0 or more")
    return float(value)


def _fraction(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidValue(field, value, "must be a fraction from 0 to 1 (0.1 is 10%)")
    return float(value)


def _queues(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Sequence):
        raise InvalidValue("queues", value, "must be a sequence of queue numbers")
    queues = tuple(queue_number("queues", item) for item in value)
    if not queues or len(set(queues)) != len(queues):
        raise InvalidValue("queues", value, "must name at least one queue, each once")
    return queues


def _seed(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidValue("seed", value, "must be an integer or None")
    return value


def _distribution(value: object) -> Literal["uniform", "normal"]:
    if value == "uniform":
        return "uniform"
    if value == "normal":
        return "normal"
    raise InvalidValue("distribution", value, "must be 'uniform' or 'normal'")


def _positive(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise InvalidValue(field, value, "must be a positive integer")
    return value


# -- scheduling (pure: no I/O, testable with a fake clock) -----------------------


class Scheduler:
    """Decides each packet's fate: dropped now, or accepted at a due time.

    >>> scheduler = Scheduler(delay=0.1, seed=1)
    >>> scheduler.admit(100, 7, now=5.0)
    True
    >>> scheduler.due(5.05), scheduler.due(5.1)
    ([], [(100, 7)])
    """

    def __init__(
        self,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        seed: int | None = None,
        *,
        distribution: Literal["uniform", "normal"] = "uniform",
        in_order: bool = False,
    ) -> None:
        self.delay = _seconds("delay", delay)
        self.jitter = _seconds("jitter", jitter)
        self.loss = _fraction("loss", loss)
        self.distribution = _distribution(distribution)
        self.in_order = bool(in_order)
        self._random = random.Random(_seed(seed))
        self._held: list[tuple[float, int, int, int]] = []  # (due, arrival order, queue, packet id)
        self._count = 0
        self._last_due: dict[int, float] = {}

    def __len__(self) -> int:
        """Packets held."""
        return len(self._held)

    def _sample(self) -> float:
        if not self.jitter:
            return self.delay
        if self.distribution == "normal":
            offset = self._random.gauss(0.0, self.jitter)
        else:
            offset = self._random.uniform(-self.jitter, self.jitter)
        return max(0.0, self.delay + offset)

    def admit(self, queue: int, packet_id: int, now: float) -> bool:
        """False: drop the packet now. True: it is held until :meth:`due` returns it."""
        if self.loss and self._random.random() < self.loss:
            return False
        due = now + self._sample()
        if self.in_order:
            due = max(due, self._last_due.get(queue, due))
            self._last_due[queue] = due
        self._count += 1
        heapq.heappush(self._held, (due, self._count, queue, packet_id))
        return True

    def next_due(self) -> float | None:
        """When the earliest held packet is due, if any is held."""
        return self._held[0][0] if self._held else None

    def due(self, now: float) -> list[tuple[int, int]]:
        """(queue, packet id) of every held packet due by ``now``, earliest first; they are no longer held."""
        released = []
        while self._held and self._held[0][0] <= now:
            _, _, queue, packet_id = heapq.heappop(self._held)
            released.append((queue, packet_id))
        return released

    def drain(self) -> list[tuple[int, int]]:
        """Every held packet, earliest first; none is held afterwards."""
        return self.due(math.inf)


# -- the engine ------------------------------------------------------------------


@dataclass
class EngineStats:
    """What the engine did since it was opened."""

    received: int = 0
    accepted: int = 0
    dropped: int = 0
    overruns: int = 0
    verdict_errors: int = 0
    max_held: int = 0
    started: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"received={self.received} accepted={self.accepted} dropped={self.dropped} overruns={self.overruns} "
            f"verdict_errors={self.verdict_errors} max_held={self.max_held} seconds={seconds:.3f} "
            f"rate={self.received / seconds:.0f}/s"
        )


class _Throttled:
    """Log a recurring warning at most once per ``every`` seconds, with how often it happened."""

    def __init__(self, message: str, every: float = 1.0) -> None:
        self.message = message
        self.every = every
        self._count = 0
        self._last = -math.inf

    def __call__(self) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning("%s (%d time(s) since the last report)", self.message, self._count)
            self._count, self._last = 0, now


class Engine:
    """Binds netfilter queues in this process's network namespace and delays/drops their packets.

    One netlink socket serves every queue. ``open()`` (or ``with``) binds the
    queues, ``run()`` works until :meth:`stop` (safe from a signal handler or
    another thread), ``close()`` lets everything held go and unbinds::

        engine = Engine([100, 101], delay=0.05, jitter=0.005, loss=0.01, seed=1)
        with engine:
            signal.signal(signal.SIGTERM, lambda *_: engine.stop())
            engine.run()
    """

    def __init__(
        self,
        queues: Sequence[int],
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        seed: int | None = None,
        *,
        distribution: Literal["uniform", "normal"] = "uniform",
        in_order: bool = False,
        queue_maxlen: int = 10000,
        fail_open: bool = False,
        gso: bool = False,
        rcvbuf: int = 8 * 1024 * 1024,
    ) -> None:
        self.queues = _queues(queues)
        self.scheduler = Scheduler(delay, jitter, loss, seed, distribution=distribution, in_order=in_order)
        self.queue_maxlen = _positive("queue_maxlen", queue_maxlen)
        self.fail_open = bool(fail_open)
        self.gso = bool(gso)
        self.rcvbuf = _positive("rcvbuf", rcvbuf)
        self.stats = EngineStats()
        self._sock: socket.socket | None = None
        self._wake: tuple[int, int] | None = None
        self._bound: list[int] = []
        self._outbox: list[bytes] = []
        self._seq = 0
        self._stopping = False
        self._closing = False
        self._buffer = bytearray(65536)
        self._view = memoryview(self._buffer)
        self._overrun_warning = _Throttled("netlink socket overrun (ENOBUFS): the kernel dropped queued packets")
        self._verdict_warning = _Throttled("the kernel refused a verdict")

    def __repr__(self) -> str:
        s = self.scheduler
        return (
            f"Engine(queues={list(self.queues)}, delay={s.delay}, jitter={s.jitter}, loss={s.loss}, "
            f"{'open' if self._sock else 'closed'})"
        )

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Open the netlink socket and bind every queue; :class:`NfqueueError` if the kernel refuses."""
        if self._sock is not None:
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except OSError as error:
            raise NfqueueError(
                error.errno,
                f"cannot open a netfilter netlink socket ({error.strerror}); does the kernel have "
                "CONFIG_NETFILTER_NETLINK?",
            ) from None
        self._sock = sock
        try:
            sock.bind((0, 0))
            self._grow_receive_buffer()
            sock.setblocking(False)
            self._wake = os.pipe()
            os.set_blocking(self._wake[0], False)
            os.set_blocking(self._wake[1], False)
            self.stats = EngineStats()
            for queue in self.queues:
                self._bind(queue)
        except BaseException:
            self._closing = True
            self._unbind_all()
            self._close_fds()
            raise
        log.info("bound queues %s: %r", list(self.queues), self)

    def _grow_receive_buffer(self) -> None:
        assert self._sock is not None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.rcvbuf)
        except OSError:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        log.debug("receive buffer: %d bytes", self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def _bind(self, queue: int) -> None:
        try:
            self._request(pack_config(queue, self._next_seq(), command=NFQNL_CFG_CMD_BIND))
        except NfqueueError as error:
            if error.errno in (errnos.EPERM, errnos.EBUSY):
                raise NfqueueError(
                    error.errno,
                    f"cannot bind queue {queue}: another process in this network namespace has it bound, "
                    "or this process lacks CAP_NET_ADMIN",
                ) from None
            raise NfqueueError(
                error.errno,
                f"cannot bind queue {queue} ({os.strerror(error.errno or 0)}); does the kernel have "
                "CONFIG_NETFILTER_NETLINK_QUEUE?",
            ) from None
        self._bound.append(queue)
        flags = (NFQA_CFG_F_FAIL_OPEN if self.fail_open else 0) | (NFQA_CFG_F_GSO if self.gso else 0)
        self._request(
            pack_config(queue, self._next_seq(), copy_mode=NFQNL_COPY_META, maxlen=self.queue_maxlen,
                        flags=flags, mask=NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO)
        )  # fmt: skip

    def stop(self) -> None:
        """Make :meth:`run` return soon; safe to call from a signal handler or another thread."""
        self._stopping = True
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")

    def close(self) -> None:
        """Let held packets go and unbind the queues.

        New packets first bypass the queues (fail-open with a zero length),
        then everything held or still unread is accepted at once, then the
        queues are unbound — unbinding alone would drop what is held.
        """
        if self._sock is None:
            return
        self._closing = True
        try:
            for queue in self._bound:
                self._quietly(pack_config(queue, self._next_seq(), maxlen=0, flags=NFQA_CFG_F_FAIL_OPEN))
            self._receive(limit=_RECEIVES_PER_ROUND * 16)
            self._release(math.inf)
            self._unbind_all()
        finally:
            self._close_fds()
            log.info("closed: %s", self.stats)

    def _unbind_all(self) -> None:
        if self._sock is None:
            return
        for queue in self._bound:
            self._quietly(pack_config(queue, self._next_seq(), command=NFQNL_CFG_CMD_UNBIND))
        self._bound.clear()

    def _quietly(self, message: bytes) -> None:
        try:
            self._request(message)
        except (NfqueueError, OSError) as error:
            log.warning("queue request failed while closing: %s", error)

    def _close_fds(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    def __enter__(self) -> Engine:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop -----------------------------------------------------------

    def run(self) -> None:
        """Receive packets and hand out verdicts until :meth:`stop`."""
        if self._sock is None or self._wake is None:
            raise NfqueueError("the engine is not open; call open() or use 'with engine:'")
        sock, wake = self._sock.fileno(), self._wake[0]
        while not self._stopping:
            due = self.scheduler.next_due()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            if self._outbox:
                timeout = 0.001  # a failed send is retried soon
            readable, _, _ = select.select([sock, wake], [], [], timeout)
            if wake in readable:
                self._drain_wake()
            if sock in readable:
                self._receive(limit=_RECEIVES_PER_ROUND)
            self._release(time.monotonic() + _SLACK)

    def _drain_wake(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake[0], 512):
                pass

    def _recv(self) -> int | None:
        """One datagram into the buffer: its size; 0 after an overrun (counted; carry on); None if none is there."""
        assert self._sock is not None
        try:
            return self._sock.recv_into(self._buffer)
        except BlockingIOError:
            return None
        except OSError as error:
            if error.errno != errnos.ENOBUFS:
                raise
            self.stats.overruns += 1
            self._overrun_warning()
            return 0

    def _receive(self, limit: int) -> None:
        """Read queued datagrams (at most ``limit``) without blocking, and act on each message."""
        assert self._sock is not None
        count = 0
        while count < limit:
            size = self._recv()
            if size is None:
                return
            if not size:
                continue
            count += 1
            now = time.monotonic()
            self._handle(self._view[:size], now)
            due = self.scheduler.next_due()
            if due is not None and due <= now + _SLACK:
                self._release(now + _SLACK, flush=False)
            if len(self._outbox) >= _FLUSH_AT:
                self._flush()

    def _handle(self, data: memoryview, now: float) -> None:
        for message in parse_messages(data):
            self._handle_message(message, now)

    def _handle_message(self, message: NetlinkMessage, now: float) -> None:
        if message.type == NFQNL_PACKET:
            try:
                packet = parse_packet(message)
            except ValueError as error:
                log.warning("ignoring a packet message: %s", error)
                return
            self._on_packet(packet, now)
        elif message.type == NLMSG_ERROR:
            if message.error:
                self.stats.verdict_errors += 1
                self._verdict_warning()
                log.debug("verdict refused: %s", os.strerror(message.error))
        elif message.type == NLMSG_OVERRUN:
            self.stats.overruns += 1
            self._overrun_warning()

    def _on_packet(self, packet: Packet, now: float) -> None:
        self.stats.received += 1
        if self._closing:
            self._verdict(packet.queue, packet.packet_id, NF_ACCEPT)
        elif not self.scheduler.admit(packet.queue, packet.packet_id, now):
            self._verdict(packet.queue, packet.packet_id, NF_DROP)
        elif len(self.scheduler) > self.stats.max_held:
            self.stats.max_held = len(self.scheduler)

    def _verdict(self, queue: int, packet_id: int, verdict: int) -> None:
        if verdict == NF_ACCEPT:
            self.stats.accepted += 1
        else:
            self.stats.dropped += 1
        self._outbox.append(pack_verdict(queue, packet_id, verdict))

    def _release(self, now: float, flush: bool = True) -> None:
        for queue, packet_id in self.scheduler.due(now):
            self._verdict(queue, packet_id, NF_ACCEPT)
        if flush:
            self._flush()

    def _flush(self) -> None:
        assert self._sock is not None
        while self._outbox:
            chunk = self._outbox[:_VERDICTS_PER_SEND]
            try:
                self._sock.send(b"".join(chunk))
            except OSError as error:
                if error.errno in (errnos.ENOBUFS, errnos.EAGAIN, errnos.ENOMEM, errnos.EINTR):
                    log.debug("verdict send failed (%s); retrying", error.strerror)
                    return
                raise
            del self._outbox[: len(chunk)]

    # -- requests with acknowledgement ------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _request(self, message: bytes, timeout: float = 5.0) -> None:
        """Send one config message and wait for its acknowledgement; act on packets that arrive meanwhile."""
        assert self._sock is not None
        seq = _NLMSGHDR.unpack_from(message)[3]
        self._flush()
        self._sock.send(message)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NfqueueError(errnos.ETIMEDOUT, f"no answer from the kernel to queue request {seq}")
            readable, _, _ = select.select([self._sock], [], [], left)
            if not readable:
                continue
            size = self._recv()
            if not size:
                continue
            now, answer = time.monotonic(), None
            for item in parse_messages(self._view[:size]):
                if item.type == NLMSG_ERROR and item.acked_seq == seq:
                    answer = item.error
                else:
                    self._handle_message(item, now)
            self._flush()
            if answer is not None:
                if answer:
                    raise NfqueueError(answer, f"queue request refused: {os.strerror(answer)}")
                return


# -- argv builders ------------------------------------------------------------------

Direction = Literal["egress", "ingress"]


def _rule(
    interface: str, queue: int, direction: Direction | Literal["port"], delete: bool, family: int
) -> list[str]:
    interface_name("interface", interface)
    queue_number("queue", queue)
    if family not in (4, 6):
        raise InvalidValue("family", family, "must be 4 or 6")
    chain, match = {
        "egress": ("POSTROUTING", ["-o", interface]),
        "ingress": ("PREROUTING", ["-i", interface]),
        "port": ("PREROUTING", ["-m", "physdev", "--physdev-in", interface]),
    }[direction]
    return [
        "iptables" if family == 4 else "ip6tables", "-w", "-t", "mangle", "-D" if delete else "-A", chain,
        *match, "-m", "comment", "--comment", f"pynetns impair {interface}",
        "-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass",
    ]  # fmt: skip


def bridge_port_rule(port: str, queue: int, *, delete: bool = False, family: int = 4) -> list[str]:
    """argv of the rule sending what arrives on bridge port ``port`` to ``queue``, run in the bridge's namespace.

    It needs ``br_netfilter`` (``net.bridge.bridge-nf-call-iptables = 1`` there) to see bridged packets.
    Packets held here have left the sender's namespace, so they no longer count against its socket
    (TCP Small Queues): a delay on what a namespace *sends* does not throttle bulk transfers, as
    :func:`egress_rule` inside the namespace does.
    """
    return _rule(port, queue, "port", delete, family)


def egress_rule(interface: str, queue: int, *, delete: bool = False, family: int = 4) -> list[str]:
    """argv of the rule sending what leaves ``interface`` to ``queue`` (``delete``: the argv removing it).

    Run it in the interface's namespace. ``--queue-bypass`` lets traffic
    through, undelayed, while no engine has the queue bound.
    """
    return _rule(interface, queue, "egress", delete, family)


def ingress_rule(interface: str, queue: int, *, delete: bool = False, family: int = 4) -> list[str]:
    """argv of the rule sending what arrives on ``interface`` to ``queue`` (``delete``: the argv removing it)."""
    return _rule(interface, queue, "ingress", delete, family)


def engine_argv(
    queues: Sequence[int],
    *,
    delay: float = 0.0,
    jitter: float = 0.0,
    loss: float = 0.0,
    seed: int | None = None,
    distribution: Literal["uniform", "normal"] = "uniform",
    in_order: bool = False,
    queue_maxlen: int | None = None,
    fail_open: bool = False,
    gso: bool = False,
    rcvbuf: int | None = None,
    python: str | None = None,
) -> list[str]:
    """argv starting the engine (``python -m pynetns.impair.nfqueue …``); it prints ``ready`` once bound."""
    argv = [python or sys.executable, "-m", "pynetns.impair.nfqueue"]
    for queue in _queues(queues):
        argv += ["--queue", str(queue)]
    for name, value in (("delay", _seconds("delay", delay)), ("jitter", _seconds("jitter", jitter)),
                        ("loss", _fraction("loss", loss))):  # fmt: skip
        if value:
            argv += [f"--{name}", repr(value)]
    if _seed(seed) is not None:
        argv += ["--seed", str(seed)]
    if _distribution(distribution) != "uniform":
        argv += ["--distribution", distribution]
    if in_order:
        argv.append("--in-order")
    if queue_maxlen is not None:
        argv += ["--queue-maxlen", str(_positive("queue_maxlen", queue_maxlen))]
    if fail_open:
        argv.append("--fail-open")
    if gso:
        argv.append("--gso")
    if rcvbuf is not None:
        argv += ["--rcvbuf", str(_positive("rcvbuf", rcvbuf))]
    return argv


def wait_ready(process: Process, timeout: float = 10.0) -> None:
    """Wait for an engine started from :func:`engine_argv` to print ``ready``.

    :class:`NfqueueError` with its error output if it exits first;
    :class:`~pynetns.errors.WaitTimeout` if it says nothing for ``timeout`` seconds.
    """
    stdout = process.stdout
    if stdout is None:
        raise NfqueueError("the engine's stdout is not a pipe; start it with stdout=subprocess.PIPE")
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise WaitTimeout(f"the nfqueue engine did not report ready within {timeout} s")
    line = stdout.readline().decode(errors="replace").strip()
    if line == "ready":
        return
    detail = ""
    if process.stderr is not None:
        try:
            process.wait(timeout=min(timeout, 5.0))
        except subprocess.TimeoutExpired:  # still running: say what we have
            pass
        else:
            detail = process.stderr.read().decode(errors="replace").strip()
    raise NfqueueError(f"the nfqueue engine did not start: {detail or line or 'it exited without a word'}")


# -- command line ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pynetns.impair.nfqueue",
        description="Delay and drop the packets iptables sends to NFQUEUE queues (a userspace netem). "
        "Prints 'ready' once the queues are bound; stops on SIGTERM or SIGINT.",
    )
    parser.add_argument("--queue", type=int, action="append", required=True, help="queue number (repeatable)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added to every packet")
    parser.add_argument("--jitter", type=float, default=0.0, help="seconds of random variation around --delay")
    parser.add_argument("--loss", type=float, default=0.0, help="fraction of packets dropped (0.1 is 10%%)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random generator")
    parser.add_argument("--distribution", choices=["uniform", "normal"], default="uniform", help="of the jitter")
    parser.add_argument("--in-order", action="store_true", help="never let a jittered packet overtake another")
    parser.add_argument("--queue-maxlen", type=int, default=10000, help="packets the kernel holds per queue")
    parser.add_argument("--fail-open", action="store_true", help="accept, undelayed, what a full queue cannot hold")
    parser.add_argument("--gso", action="store_true", help="queue GSO super-packets whole instead of segmenting")
    parser.add_argument("--rcvbuf", type=int, default=8 * 1024 * 1024, help="netlink socket receive buffer, bytes")
    parser.add_argument("--verbose", "-v", action="count", default=0, help="log more to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: bind, print ``ready``, work until SIGTERM/SIGINT, print stats to stderr; the exit status."""
    args = _parser().parse_args(argv)
    try:
        engine = Engine(
            args.queue, args.delay, args.jitter, args.loss, args.seed, distribution=args.distribution,
            in_order=args.in_order, queue_maxlen=args.queue_maxlen, fail_open=args.fail_open,
            gso=args.gso, rcvbuf=args.rcvbuf,
        )  # fmt: skip
    except InvalidValue as error:
        print(f"pynetns.impair.nfqueue: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="pynetns.impair.nfqueue: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: engine.stop())
    try:
        with engine:
            with contextlib.suppress(BrokenPipeError):
                print("ready", flush=True)
            engine.run()
    except NfqueueError as error:
        print(f"pynetns.impair.nfqueue: error: {error}", file=sys.stderr)
        return 1
    print(f"pynetns.impair.nfqueue: stats {engine.stats}", file=sys.stderr)
    return 0

