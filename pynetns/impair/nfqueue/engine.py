"""The engine loop: one netlink socket bound to the queues, verdicts held by a :class:`~.schedule.Scheduler`."""

from __future__ import annotations

import contextlib
import errno as errnos
import logging
import math
import os
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ...errors import NfqueueError
from .options import positive, queue_list
from .schedule import Scheduler
from .wire import (
    NETLINK_NETFILTER,
    NF_ACCEPT,
    NF_DROP,
    NFQA_CFG_F_FAIL_OPEN,
    NFQA_CFG_F_GSO,
    NFQNL_CFG_CMD_BIND,
    NFQNL_CFG_CMD_UNBIND,
    NFQNL_COPY_META,
    NFQNL_PACKET,
    NLMSG_ERROR,
    NLMSG_OVERRUN,
    NLMSGHDR,
    SO_RCVBUFFORCE,
    NetlinkMessage,
    Packet,
    pack_config,
    pack_verdict,
    parse_messages,
    parse_packet,
)

__all__ = ["Engine", "EngineStats"]

log = logging.getLogger(__name__)

#: verdicts sent in one ``send()`` (each is 32 bytes; the kernel caps a send at the socket's sndbuf)
_VERDICTS_PER_SEND = 2048
#: datagrams read in a row before the loop looks at its wake-up pipe again
_RECEIVES_PER_ROUND = 256
#: verdicts gathered before they are sent while packets keep arriving
_FLUSH_AT = 64
#: a held packet due this close to now is released now, rather than after one more tiny sleep
_SLACK = 0.0002


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
        self.queues = queue_list(queues)
        self.scheduler = Scheduler(delay, jitter, loss, seed, distribution=distribution, in_order=in_order)
        self.queue_maxlen = positive("queue_maxlen", queue_maxlen)
        self.fail_open = bool(fail_open)
        self.gso = bool(gso)
        self.rcvbuf = positive("rcvbuf", rcvbuf)
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
        seq = NLMSGHDR.unpack_from(message)[3]
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
