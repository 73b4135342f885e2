"""Impairing one veth pair: ``tc netem`` where the kernel has it, a userspace fallback where it has not.

:class:`ImpairedLink` puts an :class:`~pynetns.impairment.Impairment` on the
ends of a veth pair that carry the chosen direction (``"egress"``: what
leaves the namespace, ``"ingress"``: what enters it, ``"both"``):

- with ``sch_netem`` (most distribution kernels): netem, with a ``tbf`` child
  for ``rate``, on the namespace's end and/or the host's end;
- without it (minimal VM kernels): ``rate`` still through ``tbf``, and delay,
  jitter and loss through :mod:`pynetns.impair.nfqueue` — ``NFQUEUE`` rules (made
  by the Host's firewall backend, tagged with its owner tag) send the packets to
  a small engine that holds their verdicts. What the
  namespace receives is held inside it; what it sends is held on the host's
  end of the veth when the host sees bridged packets (``br_netfilter``), since
  held inside the sender they would throttle its TCP (TCP Small Queues).
  ``duplicate`` and ``corrupt`` need netem and are refused.

The qdiscs and the queue rules are one :class:`~pynetns.Plan` (the Host's
``shaping`` backend makes the qdisc commands, one ``tc -batch -`` per
namespace), applied through the Host with rollback; :meth:`ImpairedLink.plan`
shows it without running it. Lab endpoints use it through
:meth:`pynetns.Endpoint.impair`.

>>> from pynetns import Host, Impairment, Namespace
>>> host = Host(dry_run=True)
>>> link = ImpairedLink(host, Namespace("c1", host=host), "eth0", None, "veth-c1")
>>> for call in link.plan(Impairment(delay="50ms"), "both", netem=True).calls():
...     print(call)
tc -n c1 -batch - <<'EOF'
qdisc replace dev eth0 root handle 7fff: pfifo
qdisc replace dev eth0 root handle 1: netem delay 50ms
EOF
tc -batch - <<'EOF'
qdisc replace dev veth-c1 root handle 7fff: pfifo
qdisc replace dev veth-c1 root handle 1: netem delay 50ms
EOF
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import zlib
from typing import Any, Literal

import attrs

from ..backends.base import QueueHook
from ..errors import BackendUnavailable, CommandError
from ..host import Host
from ..impairment import Direction, Impairment, parse_direction, plan_impairment
from ..namespace import Namespace
from ..plan import Plan, Step
from ..runner import Process
from ..sandbox import identity
from ..validation import interface_name, owner_tag
from .engine_client import engine_argv, wait_ready

__all__ = ["ImpairedLink", "netem_available"]

log = logging.getLogger(__name__)

_NO_NETEM = ("qdisc kind is unknown", 'unknown qdisc "netem"', "unknown qdisc")


def netem_available(host: Host, namespace: Namespace) -> bool:
    """Whether the kernel has ``sch_netem``: tried on ``lo`` of ``namespace`` (one of ours), then removed."""
    try_args, undo_args = host.shaping.probe_args("lo")
    try:
        host.run(_shaping_argv(host, namespace, try_args))
    except CommandError as error:
        if any(text in error.stderr.lower() for text in _NO_NETEM):
            log.info("the kernel has no sch_netem: delay, jitter and loss go through the nfqueue engine")
            return False
        raise
    host.run(_shaping_argv(host, namespace, undo_args), check=False)
    return True


def _shaping_argv(host: Host, where: Namespace | None, args: tuple[str, ...]) -> tuple[str, ...]:
    """The shaping tool with ``args`` in ``where`` (``None``: the Host's namespace)."""
    if where is None or where.ref.kind in ("root", "named"):
        return host.shaping.command(args, netns=None if where is None else where.ref.name)
    return host.exec_argv(where.ref, host.shaping.command(args))


def _shaping_steps(host: Host, where: Namespace | None, device: str, impairment: Impairment) -> list[Step]:
    """The steps putting ``impairment`` on ``device``, one batch in ``where``; the first one's undo
    (``qdisc del root``) takes whatever of the tree was made."""
    shaping = host.shaping
    batch = None
    if where is None or where.ref.kind in ("root", "named"):
        batch = shaping.batch_command(netns=None if where is None else where.ref.name)
    steps = []
    undo_args = shaping.clear_args(device)[-1]
    for number, args in enumerate(shaping.impair_args(device, impairment)):
        undo = Step(_shaping_argv(host, where, undo_args), batch=batch, line=" ".join(undo_args))
        steps.append(Step(_shaping_argv(host, where, args), undo=undo if number == 0 else None,
                          batch=batch, line=" ".join(args)))  # fmt: skip
    return steps


class ImpairedLink:
    """The impairment of one veth pair: ``inside`` (a namespace and its interface) and ``outside`` (the host's end).

    ``outside_namespace`` is ``None`` for the root namespace. ``queue`` is the first of the two NFQUEUE
    numbers the fallback may use in ``inside`` (queues are per namespace). ``tag``: the owner tag its
    queue rules carry (default: the Host's; a Lab passes its own).
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
        tag: str | None = None,
    ) -> None:
        self.host = host
        self.tag = host.tag if tag is None else owner_tag("tag", tag)
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
        self._engines: list[Process | _Adopted] = []
        #: what :meth:`apply` applied: its undo is :meth:`clear`
        self._applied = Plan()
        self._netem = False

    def __repr__(self) -> str:
        now = "none" if self.impairment is None else f"{self.impairment} {self.direction} via {self.mode}"
        return f"<ImpairedLink {self.inside.name}:{self.interface} {now}>"

    def plan(self, impairment: Impairment, direction: Direction | str = "both", *, netem: bool) -> Plan:
        """The plan :meth:`apply` applies for ``impairment`` (runs nothing; the engines it needs are
        started by :meth:`apply`, before the plan). Bad input is refused here."""
        chosen = parse_direction("direction", direction)
        if not netem and (impairment.duplicate or impairment.corrupt):
            raise BackendUnavailable(
                "sch_netem",
                detail="this kernel lacks CONFIG_NET_SCH_NETEM, which duplicate and corrupt need; "
                "delay, jitter, loss and rate work without it",
            )
        plan = Plan()
        if not impairment:
            return plan
        sides = plan_impairment(chosen, inside=(self.inside, self.interface),
                                outside=(self.outside_namespace, self.outside_interface))  # fmt: skip
        shaped = impairment if netem else Impairment(rate=impairment.rate)  # without netem: rate alone, by tbf
        for where, device in sides if shaped else ():
            plan.extend(_shaping_steps(self.host, where, device, shaped))
        if not netem and (impairment.delay or impairment.loss):
            plan.extend(self._queue_steps(chosen))
        return plan

    def apply(self, impairment: Impairment, direction: Direction | str = "both", *, netem: bool) -> None:
        """Replace whatever impairment the link had with ``impairment`` (an empty one clears it)."""
        plan = self.plan(impairment, direction, netem=netem)
        chosen = parse_direction("direction", direction)
        self.clear()
        if not impairment:
            return
        try:
            if not netem and (impairment.delay or impairment.loss):
                self._start_engines(impairment, chosen)
            self.host.apply(plan)
        except BaseException:
            self.stop_engines()
            raise
        self._applied = plan
        self.impairment, self.direction, self._netem = impairment, chosen, netem
        self.mode = "netem" if netem else "nfqueue" if self._engines else "tbf"

    def record(self) -> dict[str, Any]:
        """What :meth:`adopt` needs to take this impairment over in another process (a lab's journal keeps it):
        the impairment, its direction, whether netem made it, and the engines (pid and identity)."""
        impairment = {} if self.impairment is None else attrs.asdict(self.impairment)
        return {
            "impairment": {key: value for key, value in impairment.items() if value is not None},
            "direction": self.direction,
            "netem": self._netem,
            "mode": self.mode,
            "engines": [{"pid": engine.pid, "identity": _identity_of(engine)} for engine in self._engines],
        }

    def adopt(self, record: dict[str, Any]) -> None:
        """Take over the impairment another process applied and :meth:`record` described, so that :meth:`clear`
        (or a new :meth:`apply`) removes it: its rules and qdiscs, and its engines, if they are still the
        processes it started (a pid now another process's is left alone)."""
        impairment = Impairment(**record.get("impairment", {}))
        if not impairment:
            return
        direction = parse_direction("direction", record.get("direction") or "both")
        netem = bool(record.get("netem"))
        self._applied = self.plan(impairment, direction, netem=netem)
        self.impairment, self.direction, self._netem = impairment, direction, netem
        self.mode = record.get("mode") or ("netem" if netem else "tbf")
        self._engines = [_Adopted(int(engine["pid"]), engine.get("identity")) for engine in record.get("engines", ())]

    def _feeds(self, direction: Direction) -> list[tuple[Namespace, QueueHook, str, int]]:
        """Where the engines' queues are fed: (namespace, hook, interface, queue).

        What the namespace receives is held inside it (``PREROUTING -i``). What it sends is held on the
        host's end when the host sees bridged packets (br_netfilter): held inside, the packets would
        still count against the sender's socket and throttle a bulk transfer (TCP Small Queues).
        """
        feeds: list[tuple[Namespace, QueueHook, str, int]] = []
        if direction in ("both", "egress"):
            outside = self.outside_namespace or Namespace.host(self.host)
            if self.bridge_port and self._sees_bridged(outside):
                feeds.append((outside, "port", self.outside_interface, self.outside_queue))
            else:
                feeds.append((self.inside, "egress", self.interface, self.queue))
        if direction in ("both", "ingress"):
            feeds.append((self.inside, "ingress", self.interface, self.queue + 1))
        return feeds

    def _queue_steps(self, direction: Direction) -> list[Step]:
        """The NFQUEUE rules, made by the Host's firewall backend (its variant), tagged with the owner tag."""
        firewall = self.host.firewall
        steps = []
        for namespace, hook, device, queue in self._feeds(direction):
            comment = f"{self.tag} impair {device}"
            add = firewall.queue_rule(4, hook, device, queue, comment)
            delete = firewall.queue_rule(4, hook, device, queue, comment, delete=True)
            undo = Step(self.host.exec_argv(namespace.ref, delete))
            steps.append(Step(self.host.exec_argv(namespace.ref, add), undo=undo))
        return steps

    def _start_engines(self, impairment: Impairment, direction: Direction) -> None:
        """One engine per namespace holding queues, each bound before the rules feeding it exist."""
        queues: dict[str, tuple[Namespace, list[int]]] = {}
        for namespace, _, _, queue in self._feeds(direction):
            queues.setdefault(namespace.name, (namespace, []))[1].append(queue)
        for namespace, numbers in queues.values():
            argv = engine_argv(numbers, delay=impairment.delay or 0.0, jitter=impairment.jitter or 0.0,
                               loss=impairment.loss or 0.0)  # fmt: skip
            engine = namespace.popen(argv)
            self._engines.append(engine)
            wait_ready(engine)

    @property
    def outside_queue(self) -> int:
        """The queue on the host's end: from the (lab-unique) interface name, as many links share that side."""
        return 1024 + zlib.crc32(self.outside_interface.encode()) % 60000

    def _sees_bridged(self, namespace: Namespace) -> bool:
        try:
            return namespace.sysctl("net.bridge.bridge-nf-call-iptables").strip() == "1"
        except CommandError:  # no br_netfilter in this kernel, or not loaded
            return False

    @property
    def engines(self) -> list[int]:
        """The pids of the userspace engines holding this link's packets (none with netem)."""
        return [engine.pid for engine in self._engines]

    def stop_engines(self) -> None:
        """Stop the userspace engines (their namespaces are about to go, with the rules and qdiscs)."""
        while self._engines:
            self._engines.pop().stop()

    def clear(self) -> None:
        """Remove the impairment (nothing happens if there is none); the link is as it was made.

        The applied plan's undo, carrying on past failures: a device or namespace may be gone already.
        """
        for failure in self._applied.undo_plan().rollback(self.host.runner):
            log.debug("while clearing %r: %s", self, failure)
        self._applied = Plan()
        self.stop_engines()
        self.impairment = self.direction = self.mode = None


def _identity_of(engine: Process | _Adopted) -> str | None:
    return engine.identity if isinstance(engine, _Adopted) else identity(engine.pid)


class _Adopted:
    """An engine another process started (:meth:`ImpairedLink.adopt`): ended by its pid, only while that pid is
    still the process that was started (its identity: start time and user namespace)."""

    def __init__(self, pid: int, identity: str | None) -> None:
        self.pid, self.identity = pid, identity

    def stop(self, grace: float = 3.0) -> None:
        """SIGKILL, as a Process is ended after its grace: the rules feeding it are gone by then. The pid is
        this machine's, as the identity read from its ``/proc`` (a Process started here)."""
        if self.identity is None or identity(self.pid) != self.identity:
            log.debug("engine %d is gone (or its pid is another process's): nothing to stop", self.pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
