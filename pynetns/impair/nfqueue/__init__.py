"""Delay and drop a link's packets in userspace, through NFQUEUE, where the kernel has no netem.

pynetns impairs links (``endpoint.impair(delay="100ms", loss="10%")``) with
``tc qdisc … netem`` where it can. Some kernels — minimal VM and CI images —
are built without ``sch_netem`` but with ``CONFIG_NETFILTER_NETLINK_QUEUE`` and
the xtables ``NFQUEUE`` target. There, two NFQUEUE rules send one
interface's packets to netfilter queues, and a small engine process in the
same namespace holds each packet's verdict for ``delay`` ± ``jitter`` and
drops a fraction ``loss`` of them. The engine speaks nfnetlink_queue over a
netlink socket with the standard library only; it copies packet metadata,
never payloads.

The engine side — :mod:`.wire` (netlink messages), :mod:`.options`,
:mod:`.schedule` (each packet's fate), :mod:`.engine` (the loop) and
:mod:`.cli` — imports only the standard library and :mod:`pynetns.errors`.
Starting it and waiting for ``ready`` is :mod:`pynetns.impair.engine_client`;
the rules that feed the queues are made by the Host's firewall backend
(:meth:`~pynetns.backends.base.FirewallBackend.queue_rule`).

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

from ...errors import NfqueueError
from .cli import main
from .engine import Engine, EngineStats
from .options import queue_number
from .schedule import Scheduler
from .wire import (
    NF_ACCEPT,
    NF_DROP,
    NFQNL_CFG_CMD_BIND,
    NFQNL_CFG_CMD_UNBIND,
    NFQNL_COPY_META,
    NFQNL_PACKET,
    NetlinkMessage,
    Packet,
    pack_config,
    pack_verdict,
    parse_messages,
    parse_packet,
)

__all__ = [
    "NFQNL_CFG_CMD_BIND",
    "NFQNL_CFG_CMD_UNBIND",
    "NFQNL_COPY_META",
    "NFQNL_PACKET",
    "NF_ACCEPT",
    "NF_DROP",
    "Engine",
    "EngineStats",
    "NetlinkMessage",
    "NfqueueError",
    "Packet",
    "Scheduler",
    "main",
    "pack_config",
    "pack_verdict",
    "parse_messages",
    "parse_packet",
    "queue_number",
]
