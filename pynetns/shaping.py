"""Impairing one veth pair: ``tc netem`` where the kernel has it, a userspace fallback where it has not.

:class:`ImpairedLink` puts an :class:`~pynetns.impairment.Impairment` on the
ends of a veth pair that carry the chosen direction (``"egress"``: what
leaves the namespace, ``"ingress"``: what enters it, ``"both"``):

- with ``sch_netem`` (most distribution kernels): netem, with a ``tbf`` child
  for ``rate``, on the namespace's end and/or the host's end;
- without it (minimal VM kernels): ``rate`` still through ``tbf``, and delay,
  jitter and loss through :mod:`pynetns.nfqueue` — iptables rules in the
  namespace send the interface's packets to a small engine that holds their
  verdicts. ``duplicate`` and ``corrupt`` need netem and are refused.

Lab endpoints use it through :meth:`pynetns.Endpoint.impair`.
"""

from __future__ import annotations

import logging
from typing import Literal

from .backends.tc import Tc
from .errors import BackendUnavailable, CommandError
from .host import Host
from .impairment import Direction, Impairment, parse_direction, plan_impairment
from .namespace import Namespace
from .nfqueue import egress_rule, engine_argv, ingress_rule, wait_ready
from .runner import Process
from .validation import interface_name

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
    ) -> None:
        self.host = host
        self.inside = inside
        self.interface = interface_name("interface", interface)
        self.outside_namespace = outside_namespace
        self.outside_interface = interface_name("outside_interface", outside_interface)
        self.queue = queue
        self.impairment: Impairment | None = None
        self.direction: Direction | None = None
        #: how it is done: "netem", "tbf" (rate alone, without netem) or "nfqueue" (the userspace engine)
        self.mode: Literal["netem", "tbf", "nfqueue"] | None = None
        self._engine: Process | None = None
        self._rules: list[list[str]] = []
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
                    self._start_engine(impairment, chosen)
        except BaseException:
            self.clear()
            raise
        self.impairment, self.direction = impairment, chosen
        self.mode = "netem" if netem else "nfqueue" if self._engine is not None else "tbf"

    def _shape(self, sides: tuple[tuple[str | None, str], ...], impairment: Impairment) -> None:
        tc = Tc()
        for where, device in sides:
            self._shaped.append((where, device))
            for argv in tc.impair(device, impairment, netns=where):
                self.host.run(argv)

    def _start_engine(self, impairment: Impairment, direction: Direction) -> None:
        queues = []
        if direction in ("both", "egress"):
            queues.append((self.queue, egress_rule))
        if direction in ("both", "ingress"):
            queues.append((self.queue + 1, ingress_rule))
        argv = engine_argv([queue for queue, _ in queues], delay=impairment.delay or 0.0,
                           jitter=impairment.jitter or 0.0, loss=impairment.loss or 0.0)
        self._engine = self.inside.popen(argv)
        wait_ready(self._engine)
        for queue, rule in queues:
            self.inside.run(rule(self.interface, queue))
            self._rules.append(rule(self.interface, queue, delete=True))

    def clear(self) -> None:
        """Remove the impairment (nothing happens if there is none); the link is as it was made."""
        for rule in self._rules:
            self.inside.run(rule, check=False)
        self._rules.clear()
        if self._engine is not None:
            self._engine.stop()
            self._engine = None
        tc = Tc()
        for where, device in self._shaped:
            for argv in tc.clear(device, netns=where):
                self.host.run(argv, check=False)  # the device may be gone with its namespace
        self._shaped.clear()
        self.impairment = self.direction = self.mode = None
