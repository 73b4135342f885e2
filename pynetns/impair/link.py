"""Impairing one veth pair: ``tc netem`` where the kernel has it, a userspace fallback where it has not.

:class:`ImpairedLink` puts an :class:`~pynetns.impairment.Impairment` on the
ends of a veth pair that carry the chosen direction (``"egress"``: what
leaves the namespace, ``"ingress"``: what enters it, ``"both"``):

- with ``sch_netem`` (most distribution kernels): netem, with a ``tbf`` child
  for ``rate``, on the namespace's end and/or the host's end;
- without it (minimal VM kernels): ``rate`` still through ``tbf``, and delay,
  jitter and loss through :mod:`pynetns.impair.nfqueue` — iptables ``NFQUEUE`` rules
  send the packets to a small engine that holds their verdicts. What the
  namespace receives is held inside it; what it sends is held on the host's
  end of the veth when the host sees bridged packets (``br_netfilter``), since
  held inside the sender they would throttle its TCP (TCP Small Queues).
  ``duplicate`` and ``corrupt`` need netem and are refused.

Lab endpoints use it through :meth:`pynetns.Endpoint.impair`.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import Literal

from ..backends.tc import Tc
from ..errors import BackendUnavailable, CommandError
from ..host import Host
from ..impairment import Direction, Impairment, parse_direction, plan_impairment
from ..namespace import Namespace
from ..runner import Process
from ..validation import interface_name
from .nfqueue import bridge_port_rule, egress_rule, engine_argv, ingress_rule, wait_ready

__all__ = ["ImpairedLink", "netem_available"]

log = logging.getLogger(__name__)

_NO_NETEM = ("qdisc kind is unknown", 'unknown qdisc "netem"', "unknown qdisc")


def netem_available(host: Host, namespace: Namespace) -> bool:
    """Whether the kernel has ``sch_netem``: tried on ``lo`` of ``namespace`` (one of ours), then removed."""
    tc = Tc()
    probe = tc.command(("qdisc", "replace", "dev", "lo", "root", "handle", "7ffe:", "netem"), netns=namespace.name)
    try:
        host.run(probe)
    except CommandError as error:
        if any(text in error.stderr.lower() for text in _NO_NETEM):
            log.info("the kernel has no sch_netem: delay, jitter and loss go through the nfqueue engine")
            return False
        raise
    host.run(tc.qdisc_delete("lo", netns=namespace.name), check=False)
    return True


class ImpairedLink:
    """The impairment of one veth pair: ``inside`` (a namespace and its interface) and ``outside`` (the host's end).

    ``outside_namespace`` is ``None`` for the root namespace. ``queue`` is the first of the two NFQUEUE
    numbers the fallback may use in ``inside`` (queues are per namespace).
    """

    def __init__(
        self,
        host: Host,
        inside: Namespace,
        interface: str,
        outside_namespace: Namespace | None,
        outside_interface: str,
        *,
        queue: int = 100,
        bridge_port: bool = False,
    ) -> None:
        self.host = host
        self.inside = inside
        self.interface = interface_name("interface", interface)
        self.outside_namespace = outside_namespace
        self.outside_interface = interface_name("outside_interface", outside_interface)
        self.queue = queue
        #: the outside end is a bridge port: with br_netfilter, what the namespace sends can be held there
        self.bridge_port = bridge_port
        self.impairment: Impairment | None = None
        self.direction: Direction | None = None
        #: how it is done: "netem", "tbf" (rate alone, without netem) or "nfqueue" (the userspace engine)
        self.mode: Literal["netem", "tbf", "nfqueue"] | None = None
        self._engines: list[Process] = []
        self._rules: list[tuple[Namespace, list[str]]] = []
        self._shaped: list[tuple[str | None, str]] = []

    def __repr__(self) -> str:
        now = "none" if self.impairment is None else f"{self.impairment} {self.direction} via {self.mode}"
        return f"<ImpairedLink {self.inside.name}:{self.interface} {now}>"

    def apply(self, impairment: Impairment, direction: Direction | str = "both", *, netem: bool) -> None:
        """Replace whatever impairment the link had with ``impairment`` (an empty one clears it)."""
        chosen = parse_direction("direction", direction)
        if not netem and (impairment.duplicate or impairment.corrupt):
            raise BackendUnavailable(
                "sch_netem", detail="this kernel lacks CONFIG_NET_SCH_NETEM, which duplicate and corrupt need; "
                "delay, jitter, loss and rate work without it",
            )
        self.clear()
        if not impairment:
            return
        outside = None if self.outside_namespace is None else self.outside_namespace.name
        sides = plan_impairment(chosen, inside=(self.inside.name, self.interface),
                                outside=(outside, self.outside_interface))
        try:
            if netem:
                self._shape(sides, impairment)
            else:
                if impairment.rate is not None:
                    self._shape(sides, Impairment(rate=impairment.rate))
                if impairment.delay or impairment.loss:
                    self._start_engines(impairment, chosen)
        except BaseException:
            self.clear()
            raise
        self.impairment, self.direction = impairment, chosen
        self.mode = "netem" if netem else "nfqueue" if self._engines else "tbf"

    def _shape(self, sides: tuple[tuple[str | None, str], ...], impairment: Impairment) -> None:
        tc = Tc()
        for where, device in sides:
            self._shaped.append((where, device))
            for argv in tc.impair(device, impairment, netns=where):
                self.host.run(argv)

    def _start_engines(self, impairment: Impairment, direction: Direction) -> None:
        """One engine per namespace holding queues, then the rules feeding them.

        What the namespace receives is held inside it (``PREROUTING -i``). What it sends is held on the
        host's end when the host sees bridged packets (br_netfilter): held inside, the packets would
        still count against the sender's socket and throttle a bulk transfer (TCP Small Queues).
        """
        outside = self.outside_namespace or Namespace.host(self.host)
        queues: dict[str, tuple[Namespace, list[tuple[int, list[str], list[str]]]]] = {}

        def feed(namespace: Namespace, queue: int, rule: Callable[..., list[str]], device: str) -> None:
            entry = queues.setdefault(namespace.name, (namespace, []))
            entry[1].append((queue, rule(device, queue), rule(device, queue, delete=True)))

        if direction in ("both", "egress"):
            if self.bridge_port and self._sees_bridged(outside):
                feed(outside, self.outside_queue, bridge_port_rule, self.outside_interface)
            else:
                feed(self.inside, self.queue, egress_rule, self.interface)
        if direction in ("both", "ingress"):
            feed(self.inside, self.queue + 1, ingress_rule, self.interface)
        for namespace, feeds in queues.values():
            argv = engine_argv([queue for queue, _, _ in feeds], delay=impairment.delay or 0.0,
                               jitter=impairment.jitter or 0.0, loss=impairment.loss or 0.0)
            engine = namespace.popen(argv)
            self._engines.append(engine)
            wait_ready(engine)
            for _, add, delete in feeds:
                namespace.run(add)
                self._rules.append((namespace, delete))

    @property
    def outside_queue(self) -> int:
        """The queue on the host's end: from the (lab-unique) interface name, as many links share that side."""
        return 1024 + zlib.crc32(self.outside_interface.encode()) % 60000

    def _sees_bridged(self, namespace: Namespace) -> bool:
        try:
            return namespace.sysctl("net.bridge.bridge-nf-call-iptables").strip() == "1"
        except CommandError:  # no br_netfilter in this kernel, or not loaded
            return False

    def stop_engines(self) -> None:
        """Stop the userspace engines (their namespaces are about to go, with the rules and qdiscs)."""
        while self._engines:
            self._engines.pop().stop()

    def clear(self) -> None:
        """Remove the impairment (nothing happens if there is none); the link is as it was made."""
        for namespace, rule in self._rules:
            namespace.run(rule, check=False)
        self._rules.clear()
        self.stop_engines()
        tc = Tc()
        for where, device in self._shaped:
            for argv in tc.clear(device, netns=where):
                self.host.run(argv, check=False)  # the device may be gone with its namespace
        self._shaped.clear()
        self.impairment = self.direction = self.mode = None
