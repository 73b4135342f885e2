"""nfnetlink_queue on the wire: the netlink messages the engine sends and reads (standard library only).

>>> [message.type for message in parse_messages(pack_verdict(100, 7))]
[769]
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "NF_ACCEPT",
    "NF_DROP",
    "NetlinkMessage",
    "Packet",
    "pack_config",
    "pack_verdict",
    "parse_messages",
    "parse_packet",
]

log = logging.getLogger(__name__)

# -- protocol constants (linux/netlink.h, linux/netfilter/nfnetlink*.h) ---------

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

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, portid (host byte order)
_NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (big endian)
_NLATTR = struct.Struct("=HH")  # len, type (host byte order)
_PACKET_HDR = struct.Struct("!IHB")  # packet_id, hw_protocol, hook — packed, 7 bytes
_VERDICT_HDR = struct.Struct("!II")  # verdict, id
_CFG_CMD = struct.Struct("!BxH")  # command, pad, pf
_CFG_PARAMS = struct.Struct("!IB")  # copy_range, copy_mode — packed, 5 bytes
_BE32 = struct.Struct("!I")
_ERRNO = struct.Struct("=i")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


def _align(length: int) -> int:
    return (length + 3) & ~3


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
        if self.type != NLMSG_ERROR or len(self.payload) < _ERRNO.size + NLMSGHDR.size:
            return None
        return int(NLMSGHDR.unpack_from(self.payload, _ERRNO.size)[3])


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
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


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
    while offset + NLMSGHDR.size <= end:
        length, kind, flags, seq, portid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > end:
            log.debug("ignoring a truncated netlink message (%d bytes announced, %d left)", length, end - offset)
            return
        yield NetlinkMessage(kind, flags, seq, portid, bytes(data[offset + NLMSGHDR.size : offset + length]))
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
