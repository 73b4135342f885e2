"""Labs: Docker-style networks declared in code, applied in a few batched processes, removed without a trace.

>>> from pynetns import Host
>>> with Lab("demo", host=Host(dry_run=True)) as lab:
...     net = lab.network("front", subnet="10.20.0.0/24")
...     web = lab.namespace("web", networks=[net])
...     print(lab.endpoints[0].ip)
10.20.0.2/24

A lab owns what it creates: kernel names carry its short id (``pn1a2b3c-web``,
``pnb1a2b3c0``), interfaces carry its tag (``pynetns:<id>``), and a journal under
the runtime directory names its owner process, so :func:`cleanup` can remove
the leftovers of a lab whose owner died (journals: :mod:`pynetns.journal`).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import display, partition
from .backends.base import NetnsRef
from .errors import InvalidValue, PynetnsError, SubnetOverlap
from .host import Host
from .impairment import DurationLike, FractionLike, Impairment, RateLike, parse_direction
from .ipam import Allocator, pick_subnet
from .journal import (
    LabRecord,
    cleanup,
    find,
    labs,
    remove,
    remove_journal,
    runtime_dir,
    start_time,
    taken_networks,
)
from .namespace import Namespace, kill_processes_in, resolve_host
from .nat import (
    ForwardDrops,
    Isolation,
    Masquerade,
    PortMap,
    _Firewalled,
    _Path,
    _Site,
    create_all,
    delete_all,
    preview,
)
from .plan import Plan, Step
from .runner import Call
from .shaping import ImpairedLink, netem_available
from .validation import IPInterface, IPNetwork, interface_name, namespace_name, network
from .validation import mtu as valid_mtu

__all__ = ["Lab", "Network", "Endpoint", "LabRecord", "labs", "cleanup", "find", "remove", "runtime_dir",
           "taken_networks"]

log = logging.getLogger(__name__)

_CONCURRENCY = 4


@attrs.define(eq=False)
class Endpoint:
    """A namespace's attachment to a network: a veth with ``interface`` inside and ``ip`` on it."""

    network: Network
    namespace: Namespace
    interface: str
    ip: IPInterface
    host_interface: str
    applied: bool = False

    @property
    def lab(self) -> Lab:
        return self.network.lab

    def impair(
        self,
        delay: DurationLike = None,
        jitter: DurationLike = None,
        loss: FractionLike = None,
        rate: RateLike = None,
        duplicate: FractionLike = None,
        corrupt: FractionLike = None,
        direction: str = "both",
    ) -> Impairment:
        """Make this link slow or lossy, like ``tc qdisc … netem``: ``delay="50ms", jitter="10ms", loss="10%"``,
        ``rate="1mbit"``, ``duplicate=0.01``, ``corrupt="0.1%"``; plain numbers are seconds and fractions.

        ``direction``: ``"egress"`` (what the namespace sends), ``"ingress"`` (what it receives) or ``"both"``
        (each way: a round trip gets the delay twice). Replaces any impairment the link had.
        """
        impairment = Impairment(delay=delay, jitter=jitter, loss=loss, rate=rate, duplicate=duplicate,
                                corrupt=corrupt)
        self.lab._impair(self, impairment, direction)
        return impairment

    def clear_impairment(self) -> None:
        """Remove the impairment: the link is as fast as it was made."""
        self.lab._impair(self, Impairment(), "both")

    @property
    def impairment(self) -> Impairment | None:
        """What :meth:`impair` put on this link (``None``: nothing)."""
        link = self.lab._links.get(self)
        return None if link is None else link.impairment

    def _repr_html_(self) -> str:
        return display.html_endpoint(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else display.text_endpoint(self))


@attrs.define(eq=False)
class Network:
    """A bridge with a gateway address, like a ``docker network create`` network."""

    lab: Lab = attrs.field(repr=False)
    name: str
    subnet: IPNetwork
    bridge: str
    allocator: Allocator = attrs.field(repr=False)
    nat: bool = True
    internal: bool = False
    mtu: int | None = None
    applied: bool = False

    @property
    def gateway(self) -> IPInterface:
        return self.allocator.gateway

    def connect(self, namespace: Namespace | str, ip: str | None = None, ifname: str | None = None) -> Endpoint:
        """Join ``namespace`` to this network; the next free address unless ``ip`` is given."""
        return self.lab.connect(self, namespace, ip=ip, ifname=ifname)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.lab.endpoints if endpoint.network is self]

    def _repr_html_(self) -> str:
        return display.html_network(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else display.text_network(self))


class Lab:
    """Everything declared in it is created by :meth:`apply` and removed by :meth:`destroy`.

    ``isolated=True`` puts the lab's bridges inside a private namespace that
    plays the host (:attr:`host_namespace`), so the machine's own network is
    never touched and labs may reuse the same subnets side by side.
    """

    def __init__(self, name: str | None = None, host: Host | None = None, isolated: bool = False) -> None:
        self.id = secrets.token_hex(3)
        self.name = namespace_name("name", name) if name is not None else f"lab-{self.id}"
        self.host = resolve_host(host)
        self.tag = f"pynetns:{self.id}"
        self.isolated = isolated
        self.networks: dict[str, Network] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.endpoints: list[Endpoint] = []
        #: published ports (``lab.publish``), in declaration order
        self.published: list[PortMap] = []
        self._ports: dict[tuple[str, int], list[PortMap]] = {}  # (protocol, host port) → its mappings
        self._firewall: list[_Firewalled] = []
        self._partitions: list[tuple[list[Namespace], list[Namespace]]] = []
        self._blocked: set[str] = set()
        self._drops: list[ForwardDrops] = []
        self._links: dict[Endpoint, ImpairedLink] = {}
        self._netem: bool | None = None
        self._applied_namespaces: set[str] = set()
        self._counter = 0
        self._destroyed = False
        self._persistent = False
        self._detached = False
        self._lock = threading.Lock()
        self.host_namespace: Namespace | None = None
        if isolated:
            self.host_namespace = Namespace(f"pn{self.id}-host", host=self.host)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, host: Host | None = None, isolated: bool | None = None) -> Lab:
        """A lab with everything a topology file (TOML, JSON, YAML) declares; see :mod:`pynetns.topology`."""
        from .topology import Topology

        return Topology.from_file(path).lab(host=host, isolated=isolated)

    def __repr__(self) -> str:
        return f"<Lab {self.name} id={self.id} networks={list(self.networks)} namespaces={list(self.namespaces)}>"

    # -- declaring --------------------------------------------------------

    def _kernel_name(self, kind: str) -> str:
        self._counter += 1
        return interface_name("name", f"pn{self.id}{kind}{self._counter}")

    def network(
        self,
        name: str,
        subnet: str | None = None,
        gateway: str | None = None,
        nat: bool = True,
        mtu: int | None = None,
        internal: bool = False,
    ) -> Network:
        """Declare a network; without ``subnet`` a free one is taken from the default pools."""
        namespace_name("name", name)
        if name in self.networks:
            raise InvalidValue("name", name, "a network of that name is already declared in this lab")
        if mtu is not None:
            valid_mtu("mtu", mtu)
        taken = self._taken_subnets()
        chosen = pick_subnet(taken) if subnet is None else network("subnet", subnet)
        _refuse_overlap(chosen, taken, "already in use")
        net = Network(self, name, chosen, self._kernel_name("b"), Allocator(chosen, gateway), nat=nat and not internal,
                      internal=internal, mtu=mtu)
        self.networks[name] = net
        return net

    def _taken_subnets(self) -> list[IPNetwork]:
        taken: list[IPNetwork] = [net.subnet for net in self.networks.values()]
        if self.isolated or self.host.dry_run:
            return taken
        return taken + taken_networks(self.host, other_than=self.id)

    def _claim_subnets(self) -> None:
        """Re-check, then journal, the subnets this apply creates: under the lock, so no other lab or demo
        picking a subnet at the same moment can take the same one."""
        if self.isolated or self.host.dry_run:
            self._write_journal()
            return
        with self.host.lock():
            taken = taken_networks(self.host, other_than=self.id)
            for net in self.networks.values():
                if not net.applied:
                    _refuse_overlap(net.subnet, taken, "taken since it was declared")
            self._write_journal()

    def namespace(self, name: str, networks: Sequence[Network | str] = ()) -> Namespace:
        """Declare a namespace (a "container"), joined to ``networks`` as eth0, eth1, …"""
        namespace_name("name", name)
        if name in self.namespaces:
            raise InvalidValue("name", name, "a namespace of that name is already declared in this lab")
        namespace = Namespace(f"pn{self.id}-{name}", host=self.host)
        self.namespaces[name] = namespace
        for net in networks:
            self.connect(net, namespace)
        return namespace

    def connect(
        self, net: Network | str, namespace: Namespace | str, ip: str | None = None, ifname: str | None = None
    ) -> Endpoint:
        net = self.networks[net] if isinstance(net, str) else net
        namespace = self.namespaces[namespace] if isinstance(namespace, str) else namespace
        if namespace not in self.namespaces.values():
            raise InvalidValue("namespace", namespace.name, "is not a namespace of this lab")
        mine = [endpoint for endpoint in self.endpoints if endpoint.namespace is namespace]
        if any(endpoint.network is net for endpoint in mine):
            raise InvalidValue("network", net.name, f"{namespace.name} is already connected to it")
        ifname = interface_name("ifname", ifname if ifname is not None else f"eth{len(mine)}")
        if any(endpoint.interface == ifname for endpoint in mine):
            raise InvalidValue("ifname", ifname, f"is already used in {namespace.name}")
        address = net.allocator.allocate(ip)
        endpoint = Endpoint(net, namespace, ifname, address, self._kernel_name("v"))
        self.endpoints.append(endpoint)
        return endpoint

    def publish(
        self,
        target: Namespace | Endpoint | str,
        host_port: int,
        port: int,
        protocol: str = "tcp",
        host_ip: str | None = None,
        host_port_end: int | None = None,
    ) -> PortMap:
        """Publish ``host_port`` of the lab's host on ``port`` of ``target``, like ``docker run -p``.

        ``target`` is an endpoint, or a namespace (its first network's address).
        In an isolated lab "the host" is :attr:`host_namespace`.
        """
        endpoint = self._endpoint(target)
        portmap = _LabPortMap(host_port, endpoint.ip.ip, port, protocol, host_ip, host_port_end,
                              namespace=self.host_namespace, host=self.host, tag=self.tag, endpoint=endpoint)
        low, high = portmap.host_ports
        where = str(portmap.host_ip or "any")
        for number in range(low, high + 1):
            for other in self._ports.get((portmap.protocol, number), ()):
                if other._overlaps(low, high, where):
                    raise InvalidValue("host_port", host_port, f"overlaps {other}, already published in this lab")
        for number in range(low, high + 1):
            self._ports.setdefault((portmap.protocol, number), []).append(portmap)
        self.published.append(portmap)
        return portmap

    def _endpoint(self, target: Namespace | Endpoint | str) -> Endpoint:
        if isinstance(target, Endpoint):
            if target not in self.endpoints:
                raise InvalidValue("target", target.interface, "is not an endpoint of this lab")
            return target
        namespace = self.namespaces.get(target) if isinstance(target, str) else target
        if namespace is None or namespace not in self.namespaces.values():
            raise InvalidValue("target", str(target), "is not a namespace of this lab")
        first = next((endpoint for endpoint in self.endpoints if endpoint.namespace is namespace), None)
        if first is None:
            raise InvalidValue("target", str(target), "is connected to no network, so has no address to publish")
        return first

    # -- impairment ---------------------------------------------------------

    def _impair(self, endpoint: Endpoint, impairment: Impairment, direction: str) -> None:
        parse_direction("direction", direction)
        if not endpoint.applied:
            raise InvalidValue("endpoint", f"{endpoint.namespace.name}:{endpoint.interface}",
                               "is not applied yet (call lab.apply() first)")
        link = self._links.get(endpoint)
        if link is None:
            if not impairment:
                return
            mine = [other for other in self.endpoints if other.namespace is endpoint.namespace]
            link = ImpairedLink(self.host, endpoint.namespace, endpoint.interface, self.host_namespace,
                                endpoint.host_interface, queue=100 + 2 * mine.index(endpoint),
                                # on an isolated lab's own host side only: nothing of it may outlive the lab
                                bridge_port=self.isolated)
        if self._netem is None and impairment:
            self._netem = netem_available(self.host, endpoint.namespace)
        link.apply(impairment, direction, netem=bool(self._netem))
        if impairment:
            self._links[endpoint] = link
        else:
            self._links.pop(endpoint, None)

    # -- partitions ---------------------------------------------------------

    def partition(self, group_a: Iterable[Namespace | str] | Namespace | str,
                  group_b: Iterable[Namespace | str] | Namespace | str) -> None:
        """Make the namespaces of ``group_a`` and ``group_b`` unable to reach each other (both ways, all IP
        traffic, silently dropped: clients time out), while each group still works inside. :meth:`heal` ends it.

        Works within one network and across networks; several partitions add up.
        """
        side_a, side_b = self._group("group_a", group_a), self._group("group_b", group_b)
        both = [self._user_name(namespace) for namespace in side_a if namespace in side_b]
        if both:
            raise InvalidValue("group_b", both, "a namespace cannot be on both sides of a partition")
        self._partitions.append((side_a, side_b))
        try:
            self._write_partitions()
        except BaseException:
            self._partitions.pop()
            self._write_partitions()
            raise

    def heal(self) -> None:
        """End every partition."""
        self._partitions.clear()
        self._write_partitions()

    def _group(self, field: str, group: Iterable[Namespace | str] | Namespace | str) -> list[Namespace]:
        members = [group] if isinstance(group, (Namespace, str)) else list(group)
        if not members:
            raise InvalidValue(field, [], "a partition needs a namespace on each side")
        found = []
        for member in members:
            namespace = self.namespaces.get(member) if isinstance(member, str) else member
            if namespace is None or namespace not in self.namespaces.values():
                raise InvalidValue(field, str(member), "is not a namespace of this lab")
            if namespace.name not in self._applied_namespaces:
                raise InvalidValue(field, str(member), "is not applied yet (call lab.apply() first)")
            found.append(namespace)
        return found

    def _addresses(self, namespace: Namespace) -> list[Any]:
        return [endpoint.ip.ip for endpoint in self.endpoints if endpoint.namespace is namespace]

    def _cut(self) -> Iterator[tuple[Namespace, Namespace]]:
        """Every (namespace, namespace it must not hear) of the partitions in force, both ways."""
        for side_a, side_b in self._partitions:
            for mine, theirs in ((side_a, side_b), (side_b, side_a)):
                for namespace in mine:
                    for other in theirs:
                        yield namespace, other

    def _write_partitions(self) -> None:
        """Rewrite each namespace's drops from the partitions in force; remove them where none is left."""
        blocked: dict[str, list[Any]] = {}
        for namespace, other in self._cut():
            drops = blocked.setdefault(namespace.name, [])
            drops += [ip for ip in self._addresses(other) if ip not in drops]
        self._write_forward_drops()
        firewall = self.host.firewall.name
        for name in sorted(self._blocked - set(blocked)):
            argv, script = partition.unblock_commands(firewall)
            Namespace(name, host=self.host).run(argv, input=script, check=False)  # it may be gone already
            self._blocked.discard(name)
        for name, drops in blocked.items():
            if drops:
                argv, script = partition.block_commands(firewall, drops, first=name not in self._blocked)
                Namespace(name, host=self.host).run(argv, input=script)
                self._blocked.add(name)

    def _write_forward_drops(self) -> None:
        """The host side of the partitions: routed traffic, and the way round through published ports."""
        pairs = [(source, destination) for namespace, other in self._cut()
                 for source in self._addresses(namespace) for destination in self._addresses(other)
                 if source.version == destination.version]
        old, self._drops = self._drops, []
        delete_all(old, missing_ok=True)
        where = dict(namespace=self.host_namespace, host=self.host, tag=self.tag)
        drops = [ForwardDrops("partitions", dict.fromkeys(mine), **where)  # type: ignore[arg-type]
                 for version in (4, 6) if (mine := [pair for pair in pairs if pair[0].version == version])]
        create_all(drops)  # one object per IP version
        self._drops = drops

    # -- compiling --------------------------------------------------------

    @property
    def _where(self) -> NetnsRef:
        return NetnsRef.root() if self.host_namespace is None else self.host_namespace.ref

    def _stages(self) -> list[list[_Job]]:
        """What apply() runs: stages in order, the jobs of one stage concurrently.

        1. ``ip -batch``: the new namespaces (and, for a host lab, the bridges and veths);
        2. ``ip -n HOST -batch``: an isolated lab's bridges and veths in its host namespace;
        3. one ``ip -n NS -batch`` per new namespace, alongside one firewall transaction;
        4. the new bridges come up (ports joining a bridge that is down cost the kernel no pass over
           the others, so N namespaces stay O(N)).
        """
        host, links, tag = self.host, self.host.links, self.tag
        root, where = NetnsRef.root(), self._where
        first = self.host_namespace is not None and self.host_namespace.name not in self._applied_namespaces
        setup = Plan()
        for namespace in self._new_namespaces(include_host=first):
            setup.add(host.ip_step(root, ("netns", "add", namespace.name), ("netns", "delete", namespace.name)))
        wiring, finish = Plan(), Plan()
        if first and self.host_namespace is not None:
            wiring.add(host.ip_step(where, links.link_set("lo", alias=tag, up=True)))
        for net in self.networks.values():
            if not net.applied:
                bridge = links.bridge_add(net.bridge, mtu=net.mtu)
                wiring.add(host.ip_step(where, bridge, links.link_delete(net.bridge)))
                # a new bridge comes up last: ports joining a bridge that is up cost the kernel a pass
                # over all its ports each, so N veths would cost N² (see the benchmark's --scaling)
                wiring.add(host.ip_step(where, links.link_set(net.bridge, alias=tag)))
                wiring.add(host.ip_step(where, links.addr_add(net.bridge, str(net.gateway))))
                finish.add(host.ip_step(where, links.link_set(net.bridge, up=True)))
        for endpoint in self.endpoints:
            if not endpoint.applied:
                add = links.veth_add(endpoint.host_interface, endpoint.interface, peer_netns=endpoint.namespace.name,
                                     mtu=endpoint.network.mtu, mac=None, peer_mac=None, master=endpoint.network.bridge)
                wiring.add(host.ip_step(where, add, links.link_delete(endpoint.host_interface)))
                wiring.add(host.ip_step(where, links.link_set(endpoint.host_interface, alias=tag)))
        if where.kind == "root":
            setup.extend(wiring)
            wiring = Plan()
        inside: list[_Job] = [_PlanJob(host, plan) for namespace in self.namespaces.values()
                              if len(plan := self._inside_plan(namespace))]
        firewall = self._firewall_job()
        if firewall is not None:
            inside.append(firewall)  # independent of the namespaces' insides: run alongside them
        stages: list[list[_Job]] = [[_PlanJob(host, setup)] if len(setup) else [],
                                    [_PlanJob(host, wiring)] if len(wiring) else [], inside,
                                    [_PlanJob(host, finish)] if len(finish) else []]
        return [stage for stage in stages if stage]

    def _firewall_job(self) -> _FirewallJob | None:
        """NAT, isolation and published ports declared since the last apply: one firewall transaction."""
        objects = self._firewall_objects()
        return _FirewallJob(self, objects) if objects else None

    def _firewall_objects(self) -> list[_Firewalled]:
        objects: list[_Firewalled] = []
        bridges = [net.bridge for net in self.networks.values()]
        foreign = self._foreign_bridges()
        for index, net in enumerate(self.networks.values()):
            if net.applied:
                continue
            where = dict(namespace=self.host_namespace, host=self.host, tag=self.tag)
            if net.nat:
                objects.append(Masquerade(net.subnet, net.bridge, **where))  # type: ignore[arg-type]
            others = bridges[:index] + foreign
            if others or net.internal:
                # IPv6 too, whatever the subnet: a namespace can always send IPv6 to its gateway's link-local address
                objects += Isolation.both(net.bridge, others, net.internal, **where)
        objects += [portmap for portmap in self.published if portmap not in self._firewall]
        return objects

    def _foreign_bridges(self) -> list[str]:
        """The bridges of the other live labs on the same host namespace: Docker isolates every network
        from every other, not only those of one project (an isolated lab has its host to itself)."""
        if self.isolated or self.host.dry_run:
            return []
        return [bridge for record in labs() if record.id != self.id and (record.alive or record.persistent)
                and not record.data.get("isolated") for bridge in record.data.get("links", ())]

    def _new_namespaces(self, include_host: bool) -> Iterator[Namespace]:
        if include_host and self.host_namespace is not None:
            yield self.host_namespace
        for namespace in self.namespaces.values():
            if namespace.name not in self._applied_namespaces:
                yield namespace

    def _inside_plan(self, namespace: Namespace) -> Plan:
        host, links, tag = self.host, self.host.links, self.tag
        plan = Plan()
        if namespace.name not in self._applied_namespaces:
            plan.add(host.ip_step(namespace.ref, links.link_set("lo", alias=tag, up=True)))
        mine = [endpoint for endpoint in self.endpoints if endpoint.namespace is namespace]
        for index, endpoint in enumerate(mine):
            if endpoint.applied:
                continue
            plan.add(host.ip_step(namespace.ref, links.link_set(endpoint.interface, alias=tag, up=True)))
            plan.add(host.ip_step(namespace.ref, links.addr_add(endpoint.interface, str(endpoint.ip))))
            if index == 0:
                gateway = str(endpoint.network.gateway.ip)
                route = links.route_add("default", via=gateway, device=None, metric=None)
                plan.add(host.ip_step(namespace.ref, route))
        return plan

    def plan(self) -> list[Call]:
        """The commands :meth:`apply` would run now, without running them.

        Firewall scripts are shown as written to a firewall holding no pynetns
        rules yet (exact for an isolated lab); the rules' checks (ports in use)
        and the sysctls read before writing are left out.
        """
        return [call for stage in self._stages() for job in stage for call in job.calls()]

    def explain(self) -> display.Commands:
        """:meth:`plan` as copy-pasteable shell (batch inputs as here-documents); a code block in a notebook."""
        return display.commands(self.plan())

    def diagram(self) -> display.Diagram:
        """The topology as a picture (SVG through Graphviz's ``dot``; without it, DOT source and tables)."""
        return display.diagram(self)

    @property
    def destroyed(self) -> bool:
        return self._destroyed

    def _repr_html_(self) -> str:
        return display.html_lab(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self) if cycle else display.text_lab(self))

    # -- applying ---------------------------------------------------------

    def apply(self, progress: Callable[[str], None] | None = None) -> None:
        """Create what was declared since the last apply; on failure remove what this apply made.

        ``progress`` is called with a line saying what each stage does (``pynetns up`` prints them).
        """
        if self._destroyed:
            raise PynetnsError(f"lab {self.name} was destroyed")
        stages = self._stages()
        if not stages:
            return
        self._claim_subnets()
        done: list[_Job] = []
        try:
            for number, stage in enumerate(stages, 1):
                if progress is not None:
                    progress(f"[{number}/{len(stages)}] {_describe(stage)}")
                self._run_stage(stage)
                done.extend(stage)
        except BaseException:
            for job in reversed(done):
                job.undo()
            if not self._applied_namespaces:  # nothing of the lab exists: its journal goes too
                self._remove_journal()
            raise
        for stage in stages:
            for job in stage:
                if isinstance(job, _FirewallJob):
                    self._firewall.extend(job.objects)
        self._applied_namespaces.update(namespace.name for namespace in self._new_namespaces(include_host=True))
        for net in self.networks.values():
            net.applied = True
        for endpoint in self.endpoints:
            endpoint.applied = True

    def _run_stage(self, stage: list[_Job]) -> None:
        if len(stage) == 1:
            stage[0].run()
            return
        errors: list[BaseException] = []
        applied: list[_Job] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=_CONCURRENCY) as pool:
            futures = {pool.submit(job.run): job for job in stage}
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is None:
                    applied.append(futures[future])
                else:
                    errors.append(error)
        if errors:
            for job in applied:
                job.undo()
            raise errors[0]

    def destroy(self) -> None:
        """Remove everything this lab created (idempotent)."""
        for namespace in self.namespaces.values():
            namespace.stop_processes()
        for link in self._links.values():  # the impairment engines; their rules and qdiscs go with the namespaces
            link.stop_engines()
        created = [namespace for namespace in self.namespaces.values() if namespace.name in self._applied_namespaces]
        if self.host_namespace is not None and self.host_namespace.name in self._applied_namespaces:
            created.insert(0, self.host_namespace)  # first: its bridges go at once, not port by port
        kill_processes_in(self.host, [namespace.name for namespace in created])
        owned = self._firewall + self._drops
        if owned and self.host_namespace is None:
            # in the root namespace the rules outlive the lab's devices; an isolated lab's go with its namespace
            delete_all(owned, missing_ok=True)
        self._firewall.clear()
        self._drops = []
        self._links.clear()
        self._partitions.clear()
        self._blocked.clear()
        teardown = Plan()
        root = NetnsRef.root()
        for namespace in created:
            teardown.add(self.host.ip_step(root, ("netns", "delete", namespace.name)))
        if self.host_namespace is None:
            for net in self.networks.values():
                if net.applied:
                    teardown.add(self.host.ip_step(root, self.host.links.link_delete(net.bridge)))
        teardown.rollback(self.host.runner)
        self._applied_namespaces.clear()
        for net in self.networks.values():
            net.applied = False
        for endpoint in self.endpoints:
            endpoint.applied = False
        self._remove_journal()
        self._destroyed = True

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._detached:
            self.destroy()

    # -- journal ----------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return runtime_dir() / f"{self.id}.json"

    def _journal(self) -> dict[str, Any]:
        namespaces = [namespace.name for namespace in self.namespaces.values()]
        if self.host_namespace is not None:
            namespaces.append(self.host_namespace.name)
        return {
            "id": self.id,
            "name": self.name,
            "tag": self.tag,
            "owner_pid": None if self._persistent else os.getpid(),
            "owner_start": None if self._persistent else start_time(os.getpid()),
            "persistent": self._persistent,
            "isolated": self.isolated,
            "namespaces": namespaces,
            "members": {name: namespace.name for name, namespace in self.namespaces.items()},
            "host_namespace": None if self.host_namespace is None else self.host_namespace.name,
            "endpoints": [{"namespace": self._user_name(endpoint.namespace), "interface": endpoint.interface,
                           "ip": str(endpoint.ip), "network": endpoint.network.name,
                           "host_interface": endpoint.host_interface} for endpoint in self.endpoints],
            "published": [str(portmap) for portmap in self.published],
            "links": [] if self.isolated else [net.bridge for net in self.networks.values()],
            "firewall": not self.isolated and bool(self._firewall or self._firewall_objects()),
            "networks": [{"name": net.name, "subnet": str(net.subnet), "bridge": net.bridge,
                          "gateway": str(net.gateway), "nat": net.nat, "internal": net.internal}
                         for net in self.networks.values()],
        }

    def _user_name(self, namespace: Namespace) -> str:
        return next(name for name, candidate in self.namespaces.items() if candidate is namespace)

    def detach(self) -> LabRecord:
        """Leave the lab running after this process ends: its journal names no owner, so :func:`cleanup`
        leaves it alone (but ``cleanup(all=True)``); ``pynetns down NAME`` or :func:`remove` ends it."""
        if self._destroyed:
            raise PynetnsError(f"lab {self.name} was destroyed")
        self._persistent = True
        self._write_journal()
        self._detached = True
        return next(record for record in labs() if record.id == self.id)

    def _write_journal(self) -> None:
        if self.host.dry_run:
            return
        path = self.journal_path
        temporary = path.with_suffix(".tmp")
        for attempt in range(3):  # another process may prune the folder between mkdir and write
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                temporary.write_text(json.dumps(self._journal(), indent=2))
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        temporary.replace(path)

    def _remove_journal(self) -> None:
        if not self.host.dry_run:
            remove_journal(self.journal_path)


def _refuse_overlap(subnet: IPNetwork, taken: Iterable[IPNetwork], why: str) -> None:
    clash = next((other for other in taken if other.overlaps(subnet)), None)
    if clash is not None:
        raise SubnetOverlap("subnet", str(subnet), f"overlaps {clash}, {why}")


def _describe(stage: list[_Job]) -> str:
    """What a stage does, in a few words: "3 processes: 120 commands, firewall (42 rules)"."""
    commands = sum(len(job.plan) for job in stage if isinstance(job, _PlanJob))
    rules = sum(len(obj.rules()) for job in stage if isinstance(job, _FirewallJob) for obj in job.objects)
    parts = [f"{commands} commands"] if commands else []
    parts += [f"a firewall transaction of {rules} rules"] if rules else []
    return f"{len(stage)} {'process' if len(stage) == 1 else 'processes at once'}: {', '.join(parts)}"


class _Job:
    """One unit of an apply stage: run it, or undo it after a later failure."""

    def calls(self) -> list[Call]:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError


class _PlanJob(_Job):
    def __init__(self, host: Host, plan: Plan) -> None:
        self.host, self.plan = host, plan

    def calls(self) -> list[Call]:
        return self.plan.calls()

    def run(self) -> None:
        self.host.apply(self.plan)

    def undo(self) -> None:
        self.plan.undo_plan().rollback(self.host.runner)


class _FirewallJob(_Job):
    """A lab's firewall objects, created together, after the settings of the devices they use."""

    def __init__(self, lab: Lab, objects: list[_Firewalled]) -> None:
        self.lab, self.objects = lab, objects
        self.host = lab.host
        self.site = _Site(lab.host_namespace or Namespace.host(lab.host))

    def _settings(self) -> Plan:
        """Hairpin on the bridge ports of published endpoints; ``route_localnet`` on their bridges."""
        ports = [portmap for portmap in self.objects if isinstance(portmap, _LabPortMap)]
        plan = Plan()
        where, links = self.site.where, self.host.links
        for port in dict.fromkeys(portmap.endpoint.host_interface for portmap in ports):
            plan.add(self.host.ip_step(where, links.bridge_port_set(port, hairpin=True)))
        # route_localnet exactly where a port map's rules carry its guard (IPv4, published on every address or loopback)
        bridges = dict.fromkeys(device for port in ports if (device := port._path(self.site).localnet) is not None)
        if bridges:
            keys = [f"net.ipv4.conf.{bridge}.route_localnet=1" for bridge in bridges]
            plan.add(Step(self.host.exec_argv(where, ("sysctl", "-q", "-w", *keys))))
        return plan

    def calls(self) -> list[Call]:
        return preview(self.objects) + self._settings().calls()

    def run(self) -> None:
        # again now that the journal is written: a lab applied meanwhile is isolated from this one, or sees it
        self.objects = self.lab._firewall_objects()
        # the rules first: route_localnet goes on only once the guard against 127.0.0.0/8 is in place
        create_all(self.objects)
        try:
            self.host.apply(self._settings())
        except BaseException:
            delete_all(self.objects, missing_ok=True)
            raise

    def undo(self) -> None:
        delete_all(self.objects, missing_ok=True)


@attrs.define(eq=False)
class _LabPortMap(PortMap):
    """A lab's published port: it knows its endpoint, so it needs no route lookup to find the bridge port."""

    endpoint: Endpoint = attrs.field(default=None, kw_only=True, repr=False)

    def _path(self, site: _Site) -> _Path:
        bridge = self.endpoint.network.bridge
        localnet = bridge if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        return _Path(localnet, self.endpoint.host_interface, managed=True)
