"""Labs: Docker-style networks declared in code, applied in a few batched processes, removed without a trace.

>>> from pynetns import Host
>>> with Lab("demo", host=Host(dry_run=True)) as lab:
...     net = lab.network("front", subnet="10.20.0.0/24")
...     web = lab.namespace("web", networks=[net])
...     print(lab.endpoints[0].ip)
10.20.0.2/24

A lab owns what it creates: kernel names carry its short id (``pn1a2b3c-web``,
``pnb1a2b3c0``), interfaces carry its tag (``pynetns:<id>``), and a journal under
the runtime directory, written before each apply's first command and held by its
owner process, lets :func:`cleanup` remove the leftovers of a lab whose owner died
(journals: :mod:`pynetns.lab.journal`).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..backends.base import NetnsRef
from ..errors import (
    CleanupError,
    CommandError,
    InvalidValue,
    NotFound,
    PermissionDenied,
    PynetnsError,
    SubnetOverlap,
    WaitTimeout,
)
from ..firewall import Firewalled as _Firewalled
from ..firewall import (
    ForwardDrops,
    Isolation,
    Masquerade,
    PortMap,
    create_all,
    delete_all,
    preview,
)
from ..firewall import HostPath as _Path
from ..firewall import Site as _Site
from ..host import Host
from ..impair.link import ImpairedLink, netem_available
from ..impairment import DurationLike, FractionLike, Impairment, RateLike, parse_direction
from ..namespace import Namespace, kill_processes_in, resolve_host
from ..plan import Plan, Step, attach_undo_errors, undo_errors
from ..polling import wait_until
from ..runner import Call, Commands, LocalRunner, commands
from ..validation import IPInterface, IPNetwork, interface_name, namespace_name
from ..validation import mtu as valid_mtu
from ..validation import subnet as valid_subnet
from ..views import Viewable, view
from .ipam import Allocator, pick_subnet, rebase
from .journal import (
    HOW_TO_PRIVILEGE,
    JournalFile,
    LabRecord,
    cleanup,
    find,
    labs,
    remove,
    remove_journal,
    runtime_dir,
    taken_networks,
)

__all__ = ["Lab", "Network", "Endpoint", "LabRecord", "labs", "cleanup", "find", "remove", "runtime_dir",
           "taken_networks"]

log = logging.getLogger(__name__)

_CONCURRENCY = 4


@attrs.define(eq=False)
class Endpoint(Viewable):
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



@attrs.define(eq=False)
class Network(Viewable):
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
    #: declared without a subnet: its first apply may move it to the next free one of the default pools
    pooled: bool = attrs.field(default=False, repr=False)

    @property
    def gateway(self) -> IPInterface:
        return self.allocator.gateway

    def connect(self, namespace: Namespace | str, ip: str | None = None, ifname: str | None = None) -> Endpoint:
        """Join ``namespace`` to this network; the next free address unless ``ip`` is given."""
        return self.lab.connect(self, namespace, ip=ip, ifname=ifname)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.lab.endpoints if endpoint.network is self]



class Lab(Viewable):
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
        self._leftovers: list[_Job] = []  # the jobs of a failed apply whose undo was incomplete
        self._lock = threading.Lock()
        self._journal_file: JournalFile | None = None
        self.host_namespace: Namespace | None = None
        if isolated:
            self.host_namespace = Namespace(f"pn{self.id}-host", host=self.host)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, host: Host | None = None, isolated: bool | None = None) -> Lab:
        """A lab with everything a topology file (TOML, JSON, YAML) declares; see :mod:`pynetns.lab.topology`."""
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
        """Declare a network; without ``subnet`` a free one is taken from the default pools.

        That one is tentative (:meth:`explain` shows it): :meth:`apply` takes it for good, under the host lock,
        or the next free one if another lab took it meanwhile (addresses keep their place in the subnet).
        """
        namespace_name("name", name)
        if name in self.networks:
            raise InvalidValue("name", name, "a network of that name is already declared in this lab")
        if mtu is not None:
            valid_mtu("mtu", mtu)
        taken = self._taken_subnets()
        chosen = pick_subnet(taken) if subnet is None else valid_subnet("subnet", subnet)
        _refuse_overlap(chosen, taken, "already in use")
        net = Network(self, name, chosen, self._kernel_name("b"), Allocator(chosen, gateway), nat=nat and not internal,
                      internal=internal, mtu=mtu, pooled=subnet is None)
        self.networks[name] = net
        return net

    def _taken_subnets(self) -> list[IPNetwork]:
        taken: list[IPNetwork] = [net.subnet for net in self.networks.values()]
        if self.isolated or self.host.dry_run:
            return taken
        return taken + taken_networks(self.host, other_than=self.id)

    def _claim_subnets(self) -> bool:
        """Choose, then journal, the subnets this apply creates: under the lock, so no other lab or demo
        picking a subnet at the same moment can take the same one. A subnet given at declaration must
        still be free; one taken from the pools moves to the next free one if it is not. Returns whether
        one moved."""
        if self.isolated or self.host.dry_run:
            self._write_journal()
            return False
        moved = False
        with self.host.lock():
            taken = taken_networks(self.host, other_than=self.id)
            new = [net for net in self.networks.values() if not net.applied]
            for net in new:
                if not net.pooled:
                    _refuse_overlap(net.subnet, taken, "taken since it was declared")
            mine = [net.subnet for net in self.networks.values() if net.applied or not net.pooled]
            for net in new:
                if net.pooled:
                    if any(net.subnet.overlaps(other) for other in taken + mine):
                        self._move(net, pick_subnet(taken + mine))
                        moved = True
                    mine.append(net.subnet)
            self._write_journal()
        return moved

    def _move(self, net: Network, subnet: IPNetwork) -> None:
        """Give a network that is not applied yet another subnet: its addresses (and the ports published on
        them) keep their place in it."""
        log.info("lab %s: network %s takes %s (%s was taken meanwhile)", self.name, net.name, subnet, net.subnet)
        old, net.subnet, net.allocator = net.subnet, subnet, net.allocator.moved_to(subnet)
        for endpoint in net.endpoints:
            endpoint.ip = ipaddress.ip_interface(f"{rebase(endpoint.ip.ip, old, subnet)}/{subnet.prefixlen}")
        for index, portmap in enumerate(self.published):
            if isinstance(portmap, _LabPortMap) and portmap.endpoint.network is net:
                moved = attrs.evolve(portmap, address=portmap.endpoint.ip.ip)
                self.published[index] = moved
                for mappings in self._ports.values():
                    mappings[:] = [moved if item is portmap else item for item in mappings]

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

        ``target`` is an endpoint, or a namespace (the address on its first network that is not internal).
        In an isolated lab "the host" is :attr:`host_namespace`. Never on an internal network: nothing
        is forwarded to or from one (as Docker), so that is refused.
        """
        endpoint = self._endpoint(target)
        if endpoint.network.internal:
            where = f"{self._user_name(endpoint.namespace)}:{endpoint.interface}"
            rule = (f"is on internal network {endpoint.network.name}, which nothing is forwarded to or from: "
                    "publish on an endpoint of a network that is not internal")
            raise InvalidValue("target", where, rule)
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
        mine = [endpoint for endpoint in self.endpoints if endpoint.namespace is namespace]
        first = next((endpoint for endpoint in mine if not endpoint.network.internal), mine[0] if mine else None)
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
                                bridge_port=self.isolated, tag=self.tag)
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
        if not self.isolated:
            self._write_journal()  # it writes firewall rules on the host from now on: cleanup must know
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
        firewall = self.host.firewall
        for name in sorted(self._blocked - set(blocked)):
            argv, script = firewall.partition_unblock(self.tag)
            Namespace(name, host=self.host).run(argv, input=script, check=False)  # it may be gone already
            self._blocked.discard(name)
        for name, drops in blocked.items():
            if drops:
                argv, script = firewall.partition_block([str(ip) for ip in drops], self.tag,
                                                        first=name not in self._blocked)
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
            setup.add(host.ip_step(root, links.netns_add(namespace.name), links.netns_delete(namespace.name)))
        wiring, finish = Plan(), Plan()
        if self.host_namespace is not None and any(not net.applied and net.subnet.version == 6
                                                   for net in self.networks.values()):
            # the lab's own host namespace: its new bridges' gateways skip duplicate address detection too
            keys = ("net/ipv6/conf/all/accept_dad=0", "net/ipv6/conf/default/accept_dad=0")
            wiring.add(Step(host.exec_argv(where, ("sysctl", "-q", "-w", *keys))))
        if first and self.host_namespace is not None:
            wiring.add(host.ip_step(where, links.link_set("lo", alias=tag, up=True)))
        for net in self.networks.values():
            if not net.applied:
                bridge = links.bridge_add(net.bridge, mtu=net.mtu)
                wiring.add(host.ip_step(where, bridge, links.link_delete(net.bridge)))
                # a new bridge comes up last: ports joining a bridge that is up cost the kernel a pass
                # over all its ports each, so N veths would cost N² (see the benchmark's --scaling)
                wiring.add(host.ip_step(where, links.link_set(net.bridge, alias=tag)))
                # an IPv6 gateway skips duplicate address detection: usable as soon as apply() returns
                address = links.addr_add(net.bridge, str(net.gateway), nodad=net.subnet.version == 6)
                wiring.add(host.ip_step(where, address))
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
                                    [_BridgesUp(host, finish, where, self._fresh_bridges6())] if len(finish) else []]
        return [stage for stage in stages if stage]

    def _fresh_bridges6(self) -> list[str]:
        """The new IPv6 networks' bridges that will have a port (a bridge without one never gets a carrier)."""
        return [net.bridge for net in self.networks.values()
                if not net.applied and net.subnet.version == 6 and net.endpoints]

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
        mine = [endpoint for endpoint in self.endpoints if endpoint.namespace is namespace]
        # no duplicate address detection in here: an IPv6 address is usable as soon as apply() returns
        fresh6 = [endpoint.interface for endpoint in mine if not endpoint.applied and endpoint.ip.version == 6]
        if fresh6:
            keys = [f"net/ipv6/conf/{name}/accept_dad=0" for name in ("all", *fresh6)]
            plan.add(Step(host.exec_argv(namespace.ref, ("sysctl", "-q", "-w", *keys))))
        if namespace.name not in self._applied_namespaces:
            plan.add(host.ip_step(namespace.ref, links.link_set("lo", alias=tag, up=True)))
        # the default route goes through the first network that is not internal (nothing leaves an internal one)
        outward = next((endpoint for endpoint in mine if not endpoint.network.internal), None)
        for endpoint in mine:
            if endpoint.applied:
                continue
            plan.add(host.ip_step(namespace.ref, links.link_set(endpoint.interface, alias=tag, up=True)))
            plan.add(host.ip_step(namespace.ref, links.addr_add(endpoint.interface, str(endpoint.ip))))
            if endpoint is outward:
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

    def explain(self) -> Commands:
        """:meth:`plan` as copy-pasteable shell (batch inputs as here-documents); a code block in a notebook."""
        return commands(self.plan())

    def diagram(self) -> Any:
        """The topology as a picture (SVG through Graphviz's ``dot``; without it, DOT source and tables)."""
        return view("diagram", self)

    @property
    def destroyed(self) -> bool:
        return self._destroyed


    # -- applying ---------------------------------------------------------

    def apply(self, progress: Callable[[str], None] | None = None) -> None:
        """Create what was declared since the last apply; on failure remove what this apply made.

        ``progress`` is called with a line saying what each stage does (``pynetns up`` prints them).

        On failure (Ctrl-C included) everything this apply may have made is removed, carrying on past
        failures; the error is raised with those failures in its ``undo_errors`` (and notes, Python 3.11+:
        :func:`pynetns.plan.attach_undo_errors`). If that removal was incomplete the journal stays, and the
        next :meth:`apply` (or :meth:`destroy`) removes the rest first: a :class:`CleanupError` if it cannot.
        """
        if self._destroyed:
            raise PynetnsError(f"lab {self.name} was destroyed")
        self._remove_leftovers()
        stages = self._stages()
        if not stages:
            return
        _refuse_unprivileged(self.host)
        if self._claim_subnets():  # a subnet from the pools moved: the commands name its new addresses
            stages = self._stages()
        done: list[_Job] = []
        started: list[_Job] = []
        try:
            for number, stage in enumerate(stages, 1):
                if progress is not None:
                    progress(f"[{number}/{len(stages)}] {_describe(stage)}")
                started.extend(stage)
                self._run_stage(stage, done)
        except BaseException as error:
            attach_undo_errors(error, _undo(done))
            if undo_errors(error):  # something may be left: the next apply or destroy tries again
                self._leftovers = started
            elif not self._applied_namespaces:  # nothing of the lab exists: its journal goes too
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

    def _run_stage(self, stage: list[_Job], done: list[_Job]) -> None:
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

    def _remove_leftovers(self) -> None:
        """Undo, again, an earlier failed apply whose undo was incomplete (:class:`CleanupError` if it still is)."""
        if self._leftovers:
            failures = _undo(self._leftovers)
            if failures:
                raise CleanupError(f"lab {self.name}: what a failed apply left could not be removed", failures)
            self._leftovers = []

    def destroy(self) -> None:
        """Remove everything this lab created (idempotent).

        Every part runs even when another fails: processes, firewall rules, namespaces, bridges, and what a
        failed apply left. Then, if anything failed, a :class:`CleanupError` lists every failure; the lab
        and its journal stay, so calling destroy() again (or :func:`cleanup`, once this process is gone)
        finishes the work.
        """
        failures: list[Exception] = []

        def attempt(action: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
            try:
                action(*args, **kwargs)
            except Exception as error:
                log.warning("while destroying lab %s: %s", self.name, error)
                failures.append(error)
                return False
            return True

        for namespace in self.namespaces.values():
            attempt(namespace.stop_processes)
        for link in self._links.values():  # the impairment engines; their rules and qdiscs go with the namespaces
            attempt(link.stop_engines)
        created = [namespace for namespace in self.namespaces.values() if namespace.name in self._applied_namespaces]
        if self.host_namespace is not None and self.host_namespace.name in self._applied_namespaces:
            created.insert(0, self.host_namespace)  # first: its bridges go at once, not port by port
        attempt(kill_processes_in, self.host, [namespace.name for namespace in created])
        owned = self._firewall + self._drops
        # in the root namespace the rules outlive the lab's devices; an isolated lab's go with its namespace
        if not owned or self.host_namespace is not None or attempt(delete_all, owned, missing_ok=True):
            self._firewall.clear()
            self._drops = []
        self._links.clear()
        self._partitions.clear()
        self._blocked.clear()
        leftovers = _undo(self._leftovers)
        failures += leftovers
        if not leftovers:
            self._leftovers = []
        teardown = Plan()
        root = NetnsRef.root()
        for namespace in created:
            teardown.add(self.host.ip_step(root, self.host.links.netns_delete(namespace.name)))
        if self.host_namespace is None:
            for net in self.networks.values():
                if net.applied:
                    teardown.add(self.host.ip_step(root, self.host.links.link_delete(net.bridge)))
        failures += teardown.rollback(self.host.runner)
        if failures:
            raise CleanupError(f"lab {self.name} was not removed entirely", failures)
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
            "owner_pid": None if self._persistent else os.getpid(),  # information: liveness is the journal's flock
            "persistent": self._persistent,
            "host_netns": self.host.netns_key,
            "isolated": self.isolated,
            "namespaces": namespaces,
            "members": {name: namespace.name for name, namespace in self.namespaces.items()},
            "host_namespace": None if self.host_namespace is None else self.host_namespace.name,
            "endpoints": [{"namespace": self._user_name(endpoint.namespace), "interface": endpoint.interface,
                           "ip": str(endpoint.ip), "network": endpoint.network.name,
                           "host_interface": endpoint.host_interface} for endpoint in self.endpoints],
            "published": [str(portmap) for portmap in self.published],
            "links": [] if self.isolated else [net.bridge for net in self.networks.values()],
            "veths": [] if self.isolated else [endpoint.host_interface for endpoint in self.endpoints],
            "firewall": not self.isolated
            and bool(self._firewall or self._partitions or self._drops or self._firewall_objects()),
            "networks": [{"name": net.name, "subnet": str(net.subnet), "bridge": net.bridge,
                          "gateway": str(net.gateway), "nat": net.nat, "internal": net.internal}
                         for net in self.networks.values()],
        }

    def _user_name(self, namespace: Namespace) -> str:
        return next(name for name, candidate in self.namespaces.items() if candidate is namespace)

    def name_of(self, namespace: Namespace) -> str:
        """The name ``namespace`` has in this lab (its key in :attr:`namespaces`); NotFound if not the lab's."""
        for name, candidate in self.namespaces.items():
            if candidate is namespace:
                return name
        raise NotFound(f"namespace {namespace.name} is not in lab {self.name}")

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
        """Journal what the lab is and will be, under the host lock; held by this process unless persistent."""
        if self.host.dry_run:
            return
        with self.host.lock():
            if self._journal_file is None:
                self._journal_file = JournalFile(self.journal_path)
            try:
                self._journal_file.write(self._journal(), owned=not self._persistent)
            except PermissionError as error:
                raise PermissionDenied(f"cannot write the journal of lab {self.name} in {self.journal_path.parent} "
                                   f"({error.strerror}): {HOW_TO_PRIVILEGE}") from error

    def _remove_journal(self) -> None:
        if self.host.dry_run:
            return
        with self.host.lock():
            if self._journal_file is not None:
                self._journal_file.remove()
            else:
                remove_journal(self.journal_path)


def _refuse_unprivileged(host: Host) -> None:
    """Refuse, before any command, to apply a lab without the privileges it needs (a local runner
    without CAP_NET_ADMIN and CAP_SYS_ADMIN, or a runtime directory this user cannot write)."""
    if host.dry_run:
        return
    from plumbum import local

    runner = host.runner
    if isinstance(runner, LocalRunner) and not runner.sudo and runner.machine is local and not _capable():
        raise PermissionDenied(f"applying a lab needs the privileges to make network namespaces: {HOW_TO_PRIVILEGE}")
    folder = runtime_dir()
    existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), folder)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionDenied(f"cannot write lab journals in {folder} ({existing} is not writable by this user): "
                           f"{HOW_TO_PRIVILEGE}")


def _capable() -> bool:
    """This process has CAP_NET_ADMIN and CAP_SYS_ADMIN (``ip netns add`` needs both)."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return os.geteuid() == 0
    effective = int(line.split()[1], 16)
    return all(effective >> bit & 1 for bit in (12, 21))  # CAP_NET_ADMIN, CAP_SYS_ADMIN


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


def _undo(jobs: Sequence[_Job]) -> list[Exception]:
    """Undo ``jobs``, last first, carrying on past failures; return them."""
    failures: list[Exception] = []
    for job in reversed(jobs):
        failures += job.undo()
    return failures


class _Job:
    """One unit of an apply stage: run it, or undo it after a later failure.

    :meth:`undo` removes all the job may have made, tolerating what is already gone (so it may run again),
    and returns its failures instead of raising them.
    """

    def calls(self) -> list[Call]:
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def undo(self) -> list[Exception]:
        raise NotImplementedError

    def undo_after(self, error: BaseException) -> bool:
        """Whether a run that failed with ``error`` may have left what only :meth:`undo` removes."""
        return False  # a plan undoes itself


class _PlanJob(_Job):
    def __init__(self, host: Host, plan: Plan) -> None:
        self.host, self.plan = host, plan

    def calls(self) -> list[Call]:
        return self.plan.calls()

    def run(self) -> None:
        self.host.apply(self.plan)

    def undo(self) -> list[Exception]:
        return self.plan.undo_plan().rollback(self.host.runner)


class _BridgesUp(_PlanJob):
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

    def undo_after(self, error: BaseException) -> bool:
        # create_all's own removal may have failed too; but a refusal (no command failed: a port in use,
        # a missing tool, bad input, the lock) came before anything was written
        return not isinstance(error, PynetnsError) or isinstance(error, CommandError)

    def undo(self) -> list[Exception]:
        try:
            for retry in self.host.runner.retrying():
                with retry:
                    delete_all(self.objects, missing_ok=True)
        except Exception as error:
            log.warning("while removing the firewall rules of lab %s: %s", self.lab.name, error)
            return [error]
        return []


@attrs.define(eq=False)
class _LabPortMap(PortMap):
    """A lab's published port: it knows its endpoint, so it needs no route lookup to find the bridge port."""

    endpoint: Endpoint = attrs.field(default=None, kw_only=True, repr=False)

    def _path(self, site: _Site) -> _Path:
        bridge = self.endpoint.network.bridge
        localnet = bridge if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        return _Path(localnet, self.endpoint.host_interface, managed=True)
