"""Compile a lab's declaration into stages of jobs, and run a stage's jobs at once with total rollback.

:func:`stages` is what :meth:`Lab.apply <pynetns.Lab.apply>` runs: one ``ip -batch`` per namespace touched,
one firewall transaction, the bridges up last; :func:`run_stage` runs one stage concurrently; :func:`undo`
removes what the jobs made, carrying on past failures.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator, Sequence

from ..backends.base import NetnsRef
from ..errors import CommandError, PynetnsError, WaitTimeout
from ..firewall import Firewalled, Isolation, Masquerade, Site, create_all, delete_all, preview
from ..host import Host
from ..namespace import Namespace
from ..plan import Plan, Step, attach_undo_errors, undo_errors
from ..polling import wait_until
from ..runner import Call
from ..validation import IsolateMode
from . import loopback6, span
from .journal import labs
from .model import LabPortMap
from .state import LabState

__all__ = [
    "BridgesUp",
    "FirewallJob",
    "Job",
    "PlanJob",
    "describe",
    "firewall_objects",
    "new_namespaces",
    "run_stage",
    "site_ref",
    "stages",
    "undo",
    "write_journal",
]

log = logging.getLogger(__name__)

_CONCURRENCY = 4


def site_ref(state: LabState) -> NetnsRef:
    return NetnsRef.root() if state.host_namespace is None else state.host_namespace.ref


def stages(state: LabState) -> list[list[Job]]:
    """What apply() runs: stages in order, the jobs of one stage concurrently.

    1. ``ip -batch``: the new namespaces (and, for a host lab, the bridges and veths);
    2. ``ip -n HOST -batch``: an isolated lab's bridges and veths in its host namespace;
    3. one ``ip -n NS -batch`` per new namespace, alongside one firewall transaction;
    4. the new bridges come up (ports joining a bridge that is down cost the kernel no pass over
       the others, so N namespaces stay O(N)).

    A lab spanning Hosts has these stages on each Host (:mod:`~pynetns.lab.span`), run together: stage 1
    of every Host at once, then stage 2, … (the VXLAN devices with the bridges, their forwarding entries
    alongside the namespaces' insides).
    """
    span.check(state)
    per_host = [host_stages(state, host) for host in state.hosts()]
    merged = [[job for stages in per_host for job in stages[index]] for index in range(4)]
    return [stage for stage in merged if stage]


def host_stages(state: LabState, host: Host) -> list[list[Job]]:
    """The four stages of :func:`stages` on one of the lab's Hosts (each may be empty)."""
    links, tag = host.links, state.tag
    own = host is state.host
    root, where = NetnsRef.root(), site_ref(state) if own else NetnsRef.root()
    first = own and state.host_namespace is not None and state.host_namespace.name not in state.applied_namespaces
    setup = Plan()
    for namespace in new_namespaces(state, include_host=first):
        if namespace.host is host or namespace is state.host_namespace:
            setup.add(host.ip_step(root, links.netns_add(namespace.name), links.netns_delete(namespace.name)))
    wiring, finish = Plan(), Plan()
    fresh = [net for net in state.networks.values() if span.on_host(state, net, host)]
    fresh = [net for net in fresh if not span.part_applied(state, net, host)]
    if own and state.host_namespace is not None and any(net.has_ipv6 for net in fresh):
        # the lab's own host namespace: its new bridges' gateways skip duplicate address detection too
        keys = ("net/ipv6/conf/all/accept_dad=0", "net/ipv6/conf/default/accept_dad=0")
        wiring.add(Step(host.exec_argv(where, host.links.sysctl_write(keys))))
    if first and state.host_namespace is not None:
        wiring.add(host.ip_step(where, links.link_set("lo", alias=tag, up=True)))
    for net in fresh:
        bridge = links.bridge_add(net.bridge, mtu=span.mtu(state, net))
        wiring.add(host.ip_step(where, bridge, links.link_delete(net.bridge)))
        # a new bridge comes up last: ports joining a bridge that is up cost the kernel a pass
        # over all its ports each, so N veths would cost N² (see the benchmark's --scaling)
        wiring.add(host.ip_step(where, links.link_set(net.bridge, alias=tag)))
        # an IPv6 gateway skips duplicate address detection: usable as soon as apply() returns
        for gateway in net.gateways if own else [span.gateway(state, net, host)]:  # dual stack: one per family
            address = links.addr_add(net.bridge, str(gateway), nodad=gateway.version == 6)
            wiring.add(host.ip_step(where, address))
        finish.add(host.ip_step(where, links.link_set(net.bridge, up=True)))
    wiring.extend(span.vxlan_plan(state, host))
    for endpoint in state.endpoints:
        if not endpoint.applied and endpoint.namespace.host is host:
            net = endpoint.network
            add = links.veth_add(
                endpoint.host_interface,
                endpoint.interface,
                peer_netns=endpoint.namespace.name,
                mtu=span.mtu(state, net),
                mac=None,
                peer_mac=span.mac(endpoint) if span.spanning(state, net) else None,
                master=net.bridge,
            )
            wiring.add(host.ip_step(where, add, links.link_delete(endpoint.host_interface)))
            wiring.add(host.ip_step(where, links.link_set(endpoint.host_interface, alias=tag)))
    if where.kind == "root":
        setup.extend(wiring)
        wiring = Plan()
    inside: list[Job] = [
        PlanJob(host, plan)
        for namespace in state.namespaces.values()
        if namespace.host is host and len(plan := inside_plan(state, namespace))
    ]
    if len(forwarding := span.fdb_plan(state, host)):
        inside.append(PlanJob(host, forwarding))
    firewall = firewall_job(state, host)
    if firewall is not None:
        inside.append(firewall)  # independent of the namespaces' insides: run alongside them
    return [
        [PlanJob(host, setup)] if len(setup) else [],
        [PlanJob(host, wiring)] if len(wiring) else [],
        inside,
        [BridgesUp(host, finish, where, fresh_bridges6(state, host))] if len(finish) else [],
    ]


def fresh_bridges6(state: LabState, host: Host | None = None) -> list[str]:
    """The new bridges with IPv6 (on ``host``, default the lab's) that will have a port (a bridge
    without one never gets a carrier)."""
    host = state.host if host is None else host
    return [
        net.bridge
        for net in state.networks.values()
        if span.on_host(state, net, host) and not span.part_applied(state, net, host)
        if net.has_ipv6 and net.endpoints
    ]


def firewall_job(state: LabState, host: Host | None = None) -> FirewallJob | None:
    """NAT, isolation and published ports declared since the last apply on ``host`` (default: the lab's
    own): one firewall transaction."""
    objects = firewall_objects(state, host)
    return FirewallJob(state, objects, host) if objects else None


def firewall_objects(state: LabState, host: Host | None = None) -> list[Firewalled]:
    """The firewall objects to create on ``host`` (default: the lab's own): those of its networks' parts
    there, and the ports published there."""
    host = state.host if host is None else host
    objects: list[Firewalled] = []
    networks = [net for net in state.networks.values() if span.on_host(state, net, host)]
    foreign = foreign_bridges(state, host)
    for index, net in enumerate(networks):
        if span.part_applied(state, net, host):
            continue
        namespace = state.host_namespace if host is state.host else None
        where = dict(namespace=namespace, host=host, tag=state.tag)
        if net.nat:
            # a dual-stack network masquerades each family (ip6tables / the ip6 table for IPv6)
            objects += [Masquerade(subnet, net.bridge, **where) for subnet in net.subnets]  # type: ignore[arg-type]
        # each pair of networks once, by the later one: its rules see the earlier ones (and those of other labs)
        pairs = [(other.bridge, other.isolate) for other in networks[:index]] + foreign
        others = [bridge for bridge, mode in pairs if isolating(net.isolate, mode) == "ports open"]
        strict = [bridge for bridge, mode in pairs if isolating(net.isolate, mode) == "strict"]
        if others or strict or net.internal:
            # IPv6 too, whatever the subnet: a namespace can always send IPv6 to its gateway's link-local address
            objects += Isolation.both(net.bridge, others, net.internal, strict=strict, **where)
    objects += [portmap for portmap in state.published if portmap not in state.firewall and portmap.host is host]
    return objects


def isolating(one: IsolateMode, other: IsolateMode) -> str | None:
    """How two networks are kept apart: "strict" if either is, "ports open" if both isolate (Docker's), else not."""
    if "strict" in (one, other):
        return "strict"
    return "ports open" if one and other else None


def foreign_bridges(state: LabState, host: Host | None = None) -> list[tuple[str, IsolateMode]]:
    """The bridges of the other live labs on the same host namespace, with their isolation: Docker isolates every
    network from every other, not only those of one project (an isolated lab has its host to itself)."""
    host = state.host if host is None else host
    if state.isolated or host.dry_run:
        return []
    found: list[tuple[str, IsolateMode]] = []
    for record in labs(host):
        if record.id == state.id or not (record.alive or record.persistent) or record.data.get("isolated"):
            continue
        modes = {net.get("bridge"): net.get("isolate", True) for net in record.data.get("networks", ())}
        found += [(bridge, modes.get(bridge, True)) for bridge in record.data.get("links", ())]
    return found


def write_journal(state: LabState, hosts: Sequence[Host] | None = None) -> None:
    """Journal the lab on each of its Hosts (or those of ``hosts``), saying whether it has or will have
    firewall rules there. Each under its Host's lock, one after the other."""
    for host in state.hosts() if hosts is None else hosts:
        owned = [obj for obj in state.firewall + state.drops if obj.host is host]
        firewall = bool(owned or state.partitions or firewall_objects(state, host))
        state.write_journal(firewall=firewall, host=host)


def new_namespaces(state: LabState, include_host: bool) -> Iterator[Namespace]:
    if include_host and state.host_namespace is not None:
        yield state.host_namespace
    for namespace in state.namespaces.values():
        if namespace.name not in state.applied_namespaces:
            yield namespace


def inside_plan(state: LabState, namespace: Namespace) -> Plan:
    host, links, tag = state.host, state.host.links, state.tag
    plan = Plan()
    mine = [endpoint for endpoint in state.endpoints if endpoint.namespace is namespace]
    # no duplicate address detection in here: an IPv6 address is usable as soon as apply() returns
    fresh6 = [endpoint.interface for endpoint in mine if not endpoint.applied and endpoint.ip6 is not None]
    if fresh6:
        keys = [f"net/ipv6/conf/{name}/accept_dad=0" for name in ("all", *fresh6)]
        plan.add(Step(host.exec_argv(namespace.ref, host.links.sysctl_write(keys))))
    if namespace.name not in state.applied_namespaces:
        plan.add(host.ip_step(namespace.ref, links.link_set("lo", alias=tag, up=True)))
    # each family's default route goes through the first network of that family that is not internal
    # (nothing leaves an internal one): a dual-stack network gives both, as Docker's
    outward = {
        version: next((gateway for endpoint in mine if not endpoint.network.internal
                       for gateway in endpoint.network.gateways if gateway.version == version), None)
        for version in (4, 6)
    }  # fmt: skip
    for endpoint in mine:
        if endpoint.applied:
            continue
        plan.add(host.ip_step(namespace.ref, links.link_set(endpoint.interface, alias=tag, up=True)))
        for address in endpoint.addresses:
            plan.add(host.ip_step(namespace.ref, links.addr_add(endpoint.interface, str(address))))
        for gateway in endpoint.network.gateways:
            if gateway is outward[gateway.version]:
                if gateway is endpoint.network.gateway:  # of a network spanning Hosts: the one on this Host
                    gateway = span.gateway(state, endpoint.network, namespace.host)
                route = links.route_add("default", via=str(gateway.ip), device=None, metric=None)
                plan.add(host.ip_step(namespace.ref, route))
    return plan


def run_stage(stage: list[Job], done: list[Job]) -> None:
    """Run the jobs of a stage at once; add to ``done`` each one that needs undoing if the apply fails.

    When a job fails, or Ctrl-C lands, the jobs running are let finish (they are added to ``done``),
    those not started never start, and the first error is raised with the others' attached.
    """
    if len(stage) == 1:
        try:
            stage[0].run()
        except BaseException as failure:
            if stage[0].undo_after(failure):
                done.append(stage[0])
            raise
        done.append(stage[0])
        return
    errors: list[BaseException] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=_CONCURRENCY)
    futures = {pool.submit(job.run): job for job in stage}
    try:
        for future in concurrent.futures.as_completed(futures):
            if (error := future.exception()) is not None:
                errors.append(error)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for future, job in futures.items():
            if not future.cancelled() and ((failed := future.exception()) is None or job.undo_after(failed)):
                done.append(job)
    if errors:
        first = errors[0]
        for other in errors[1:]:
            attach_undo_errors(first, undo_errors(other))
            add_note = getattr(first, "add_note", None)
            if add_note is not None:
                add_note(f"another job of the stage failed too: {type(other).__name__}: {other}")
        raise first


def undo(jobs: Sequence[Job]) -> list[Exception]:
    """Undo ``jobs``, last first, carrying on past failures; return them."""
    failures: list[Exception] = []
    for job in reversed(jobs):
        failures += job.undo()
    return failures


def describe(stage: list[Job]) -> str:
    """What a stage does, in a few words: "3 processes: 120 commands, firewall (42 rules)"."""
    commands = sum(len(job.plan) for job in stage if isinstance(job, PlanJob))
    rules = sum(len(obj.rules()) for job in stage if isinstance(job, FirewallJob) for obj in job.objects)
    parts = [f"{commands} commands"] if commands else []
    parts += [f"a firewall transaction of {rules} rules"] if rules else []
    return f"{len(stage)} {'process' if len(stage) == 1 else 'processes at once'}: {', '.join(parts)}"


class Job:
    """One unit of an apply stage: run it, or undo it after a later failure.

    :meth:`undo` removes all the job may have made, tolerating what is already gone (so it may run again),
    and returns its failures instead of raising them.
    """

    #: the Host it runs on
    host: Host

    def calls(self) -> list[Call]:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def undo(self) -> list[Exception]:
        raise NotImplementedError

    def undo_after(self, error: BaseException) -> bool:
        """Whether a run that failed with ``error`` may have left what only :meth:`undo` removes."""
        return False  # a plan undoes itself


class PlanJob(Job):
    def __init__(self, host: Host, plan: Plan) -> None:
        self.host, self.plan = host, plan

    def calls(self) -> list[Call]:
        return self.plan.calls()

    def run(self) -> None:
        self.host.apply(self.plan)

    def undo(self) -> list[Exception]:
        return self.plan.undo_plan().rollback(self.host.runner)


class BridgesUp(PlanJob):
    """The last stage: the new bridges come up. IPv6 starts on a bridge only once the kernel reports its link up,
    a moment later (linkwatch); until then its gateway ignores neighbour solicitations, so the first packet
    to it waits a second. Wait for that (one ``ip`` per bridge, usually once) before apply() returns."""

    def __init__(self, host: Host, plan: Plan, where: NetnsRef, bridges6: list[str]) -> None:
        super().__init__(host, plan)
        self.where, self.bridges6 = where, bridges6

    def run(self) -> None:
        super().run()
        if not self.bridges6 or self.host.dry_run:
            return
        try:
            wait_until(self._up, timeout=5.0, what=f"the link of bridges {', '.join(self.bridges6)} to be up")
        except WaitTimeout as error:  # slow, not broken: the lab works, its IPv6 gateways answer a bit later
            log.warning("%s", error)

    def _up(self) -> bool:
        for bridge in self.bridges6:
            listing = self.host.ip(self.where, self.host.links.show_links(device=bridge)).json()
            if not listing or listing[0].get("operstate") != "UP":
                return False
        return True


class FirewallJob(Job):
    """A lab's firewall objects, created together, after the settings of the devices they use."""

    def __init__(self, state: LabState, objects: list[Firewalled], host: Host | None = None) -> None:
        self.state, self.objects = state, objects
        self.host = state.host if host is None else host
        own = self.host is state.host
        self.site = Site(state.host_namespace if own and state.host_namespace else Namespace.host(self.host))

    def _settings(self) -> Plan:
        """Hairpin on the bridge ports of published endpoints; ``route_localnet`` on their bridges."""
        ports = [portmap for portmap in self.objects if isinstance(portmap, LabPortMap)]
        plan = Plan()
        where, links = self.site.where, self.host.links
        hairpins = (portmap._path(self.site).hairpin_port for portmap in ports)
        for port in dict.fromkeys(port for port in hairpins if port is not None):
            plan.add(self.host.ip_step(where, links.bridge_port_set(port, hairpin=True)))
        # route_localnet exactly where a port map's rules carry its guard (IPv4, published on every address or loopback)
        bridges = dict.fromkeys(device for port in ports if (device := port._path(self.site).localnet) is not None)
        if bridges:
            keys = [f"net.ipv4.conf.{bridge}.route_localnet=1" for bridge in bridges]
            plan.add(Step(self.host.exec_argv(where, links.sysctl_write(keys))))
        return plan

    def calls(self) -> list[Call]:
        return preview(self.objects) + self._settings().calls() + loopback6.proxy_calls(self.state, self.objects)

    def run(self) -> None:
        # again now that the journal is written: a lab applied meanwhile is isolated from this one, or sees it
        self.objects = firewall_objects(self.state, self.host)
        # the rules first: route_localnet goes on only once the guard against 127.0.0.0/8 is in place
        create_all(self.objects)
        try:
            self.host.apply(self._settings())
            loopback6.start(self.state, self.objects)  # IPv6 ports on the host's [::1]
        except BaseException:
            loopback6.stop_all(self.state, self.objects)
            delete_all(self.objects, missing_ok=True)
            raise

    def undo_after(self, error: BaseException) -> bool:
        # create_all's own removal may have failed too; but a refusal (no command failed: a port in use,
        # a missing tool, bad input, the lock) came before anything was written
        return not isinstance(error, PynetnsError) or isinstance(error, CommandError)

    def undo(self) -> list[Exception]:
        loopback6.stop_all(self.state, self.objects)
        try:
            for retry in self.host.runner.retrying():
                with retry:
                    delete_all(self.objects, missing_ok=True)
        except Exception as error:
            log.warning("while removing the firewall rules of lab %s: %s", self.state.name, error)
            return [error]
        return []
