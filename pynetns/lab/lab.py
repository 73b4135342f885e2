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

:class:`Lab` is a facade: its data is a :class:`~pynetns.lab.state.LabState`, which the parts below it work on
(:mod:`~pynetns.lab.compile`, :mod:`~pynetns.lab.subnets`, :mod:`~pynetns.lab.partitions`); its networks and
endpoints know it only as a :class:`~pynetns.lab.model.LabLike`.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..backends.base import NetnsRef
from ..errors import CleanupError, InvalidValue, LabDestroyed, NotFound, PermissionDenied
from ..firewall import PortMap, delete_all
from ..firewall.site import refuse_without_sctp
from ..host import Host
from ..impairment import DurationLike, FractionLike, Impairment, RateLike
from ..namespace import Namespace, kill_processes_in, resolve_host
from ..plan import Plan, attach_undo_errors, undo_errors
from ..runner import Call, Commands, LocalRunner, commands
from ..sandbox import privileged
from ..validation import IPAddress, IsolateMode, interface_name, namespace_name
from ..validation import isolate as valid_isolate
from ..validation import mtu as valid_mtu
from ..validation import subnet as valid_subnet
from ..views import Viewable, view
from . import loopback6, names, partitions, span
from .compile import FirewallJob, Job, describe, new_namespaces, run_stage, undo, write_journal
from .ipam import Allocator, dual_stack, pick_subnet
from .journal import HOW_TO_PRIVILEGE, LabRecord, find, labs
from .machines import Machine, by_host, vxlan_name
from .model import Endpoint, LabPortMap, Network, publish_addresses, refuse_overlap
from .names import stages as compile_stages
from .shapes import Partition
from .state import LabState
from .subnets import claim_subnets
from .topology import Topology, flag, lab_id

__all__ = ["Lab"]

log = logging.getLogger(__name__)


class Lab(Viewable):
    """Everything declared in it is created by :meth:`apply` and removed by :meth:`destroy`.

    ``isolated=True`` puts the lab's bridges inside a private namespace that
    plays the host (:attr:`host_namespace`), so the machine's own network is
    never touched and labs may reuse the same subnets side by side.
    """

    def __init__(
        self,
        name: str | None = None,
        host: Host | None = None,
        isolated: bool = False,
        *,
        id: str | None = None,
        names: bool = True,
    ) -> None:
        """``id``: the lab's short id (six hex digits), which its kernel names carry; a fresh one by default
        (``pynetns explain FILE --id X`` shows the commands ``pynetns up FILE --id X`` runs, names and all).
        ``names=False``: its members do not resolve each other by name (no files in ``/etc/netns``: see
        :mod:`pynetns.lab.names`), as on Docker's default bridge."""
        id = secrets.token_hex(3) if id is None else lab_id("id", id)
        name = namespace_name("name", name) if name is not None else f"lab-{id}"
        self._state = LabState(id, name, resolve_host(host), isolated)
        self._state.resolve_names = flag("names", names)
        self._detached = False
        self._leftovers: list[Job] = []  # the jobs of a failed apply whose undo was incomplete

    @property
    def id(self) -> str:
        """The lab's short id: its kernel names carry it (``pn1a2b3c-web``)."""
        return self._state.id

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def host(self) -> Host:
        return self._state.host

    @property
    def tag(self) -> str:
        """What the lab's interfaces and firewall rules carry: ``pynetns:<id>``."""
        return self._state.tag

    @property
    def isolated(self) -> bool:
        return self._state.isolated

    @property
    def host_namespace(self) -> Namespace | None:
        """An isolated lab's private namespace playing the host (``None``: the lab's host is the Host's)."""
        return self._state.host_namespace

    @property
    def networks(self) -> dict[str, Network]:
        return self._state.networks

    @property
    def namespaces(self) -> dict[str, Namespace]:
        return self._state.namespaces

    @property
    def endpoints(self) -> list[Endpoint]:
        return self._state.endpoints

    @property
    def published(self) -> list[PortMap]:
        """The published ports (:meth:`publish`), in declaration order."""
        return self._state.published

    @property
    def partitions(self) -> list[Partition]:
        """The partitions in force (:meth:`partition`), oldest first; :meth:`heal` ends them."""
        return list(self._state.partitions)

    @property
    def destroyed(self) -> bool:
        return self._state.destroyed

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, host: Host | None = None, isolated: bool | None = None) -> Lab:
        """A lab with everything a topology file (TOML, JSON, YAML) declares; see :mod:`pynetns.lab.topology`."""
        return cls.from_topology(Topology.from_file(path), host=host, isolated=isolated)

    @classmethod
    def from_topology(
        cls, topology: Topology, *, host: Host | None = None, isolated: bool | None = None, id: str | None = None
    ) -> Lab:
        """A new lab named as ``topology`` says, isolated as it says (unless ``isolated`` is given), with everything
        it declares declared (``id``: its short id, else a fresh one). Nothing is created until :meth:`apply`;
        the impairments and partitions it declares come after that (:meth:`Topology.apply_faults`)."""
        isolated = topology.isolated if isolated is None else flag("isolated", isolated)
        lab = cls(topology.name, host=host, isolated=isolated, id=id, names=topology.names)
        return topology.declare(lab)

    @classmethod
    def attach(cls, name: str, host: Host | None = None) -> Lab:
        """The persistent lab called ``name`` (or with that id; made by ``pynetns up`` or :meth:`detach`), from its
        journal, to partition, heal and impair from this process (``pynetns partition``): what that changes is
        journaled, so ``pynetns down`` and :func:`cleanup` remove it, and the next process attaching finds it.
        Refused for a lab another running process owns. It is not destroyed on leaving a ``with`` block."""
        from .attach import restore

        lab = cls.__new__(cls)
        lab._detached, lab._leftovers = True, []
        host = resolve_host(host)
        lab._state = restore(find(name, host), host, lab)
        return lab

    def __repr__(self) -> str:
        return f"<Lab {self.name} id={self.id} networks={list(self.networks)} namespaces={list(self.namespaces)}>"

    # -- declaring ---------------------------------------------------------

    def network(
        self,
        name: str,
        subnet: str | None = None,
        gateway: str | None = None,
        nat: bool = True,
        mtu: int | None = None,
        internal: bool = False,
        isolate: IsolateMode = True,
        *,
        subnet6: str | None = None,
        ipv6: bool = False,
        gateway6: str | None = None,
        vni: int | None = None,
    ) -> Network:
        """Declare a network; without ``subnet`` a free one is taken from the default pools.

        Dual stack (as ``docker network create --ipv6``): ``subnet6="fd00:30::/64"`` beside an IPv4 ``subnet``,
        or ``ipv6=True`` for a free /64 of the host's unique local /48 (drawn once per host, as Docker 27 does).
        Members then get an address of each family and both default routes, the bridge both gateways, and
        NAT, isolation and published ports cover both families. A ``subnet`` that is IPv6 alone makes an
        IPv6-only network.

        ``isolate``: two networks cannot reach each other, only each other's published ports, when both isolate
        (``True``, as Docker's bridges always do); ``False`` (netavark's default) forwards freely to and from the
        networks that do not isolate either; ``"strict"`` (netavark's) cuts a network off from every other one,
        isolating or not, published ports included (a connection through the host to a port published by
        another network is dropped too). The lab's host still reaches it and its published ports.

        That one is tentative (:meth:`explain` shows it): :meth:`apply` takes it for good, under the host lock,
        or the next free one if another lab took it meanwhile (addresses keep their place in the subnet).

        ``vni``: the VXLAN network identifier the network has if it spans Hosts (:meth:`machine`); by default
        a random one, different for each network of the lab.
        """
        namespace_name("name", name)
        if name in self.networks:
            raise InvalidValue("name", name, "a network of that name is already declared in this lab")
        if mtu is not None:
            valid_mtu("mtu", mtu)
        isolate = valid_isolate("isolate", isolate)
        taken = self._state.taken_subnets()
        chosen = pick_subnet(taken) if subnet is None else valid_subnet("subnet", subnet)
        refuse_overlap(chosen, taken, "already in use")
        allocator6 = dual_stack(chosen, subnet6, flag("ipv6", ipv6), gateway6, taken, self._state.ula)
        chosen_vni = span.choose_vni(self._state, vni)
        net = Network(
            self,
            name,
            chosen,
            self._state.kernel_name("b"),
            Allocator(chosen, gateway),
            nat=nat and not internal,
            internal=internal,
            mtu=mtu,
            isolate=isolate,
            pooled=subnet is None,
            impairments=self._state.impairments,
            subnet6=None if allocator6 is None else allocator6.subnet,
            allocator6=allocator6,
            pooled6=allocator6 is not None and subnet6 is None,
        )
        self.networks[name] = net
        self._state.overlay.vnis[name] = chosen_vni
        return net

    def namespace(
        self,
        name: str,
        networks: Sequence[Network | str] = (),
        aliases: Sequence[str] = (),
        *,
        host: Host | None = None,
    ) -> Namespace:
        """Declare a namespace (a "container"), joined to ``networks`` as eth0, eth1, …

        The members of its networks resolve it by ``name`` and by ``aliases`` (like Docker's ``--network-alias``):
        ``getent hosts db``, ``ping postgres`` (:mod:`pynetns.lab.names`).

        ``host``: the Host it lives on (default: the lab's). A network with members on several Hosts spans
        them, joined by VXLAN: give each of those Hosts' underlay address with :meth:`machine`.
        """
        namespace_name("name", name)
        if name in self.namespaces:
            raise InvalidValue("name", name, "a namespace of that name is already declared in this lab")
        if host is not None and not isinstance(host, Host):
            raise InvalidValue("host", host, "must be a pynetns.Host")
        if host is not None and host is not self.host and self.isolated:
            raise InvalidValue("host", host, "an isolated lab lives on its own Host only")
        known = names.known_names(self._state)
        if name in known:
            raise InvalidValue("name", name, f"is an alias of namespace {known[name]} in this lab")
        if aliases and not self._state.resolve_names:
            raise InvalidValue("aliases", aliases, f"lab {self.name} resolves no names (it was made with names=False)")
        aliases = names.valid_aliases(self._state, name, aliases)
        namespace = Namespace(f"pn{self.id}-{name}", host=self.host if host is None else host)
        self.namespaces[name] = namespace
        self._state.aliases[name] = aliases
        for net in networks:
            self.connect(net, namespace)
        return namespace

    def connect(
        self,
        net: Network | str,
        namespace: Namespace | str,
        ip: str | None = None,
        ifname: str | None = None,
        *,
        ip6: str | None = None,
    ) -> Endpoint:
        """Join ``namespace`` to ``net`` as ``ifname``: the next free address unless ``ip`` (and, on a dual-stack
        network, ``ip6``) is given."""
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
        if ip6 is not None and net.allocator6 is None:
            raise InvalidValue("ip6", ip6, f"network {net.name} has no IPv6 subnet beside its {net.subnet}")
        address = net.allocator.allocate(ip)
        try:
            address6 = None if net.allocator6 is None else net.allocator6.allocate(ip6)
        except BaseException:
            net.allocator.release(address)
            raise
        span.joined(self._state, net, namespace.host)  # its gateway on that Host, if it is not the lab's
        endpoint = Endpoint(net, namespace, ifname, address, self._state.kernel_name("v"), address6=address6)
        self.endpoints.append(endpoint)
        return endpoint

    def machine(self, host: Host, underlay: str, *, mtu: int = 1500, name: str | None = None) -> Machine:
        """Say how the lab's other Hosts reach ``host``: its ``underlay`` address (the VXLAN packets of the
        networks spanning it go to and from that address, UDP port 4789), the ``mtu`` of the link that
        address is on (the networks spanning it get that minus 50 bytes, 70 over IPv6) and a ``name`` for
        :meth:`explain` (default: the address).

        Needed for each Host of a spanning network, the lab's own included::

            lab = Lab("shop", host=a)
            lab.machine(a, underlay="192.0.2.1")
            lab.machine(b, underlay="192.0.2.2")
            front = lab.network("front")
            lab.namespace("web", [front])            # on a
            lab.namespace("db", [front], host=b)     # on b: front spans a and b
        """
        return span.machine(self._state, host, underlay, mtu, name)

    @property
    def machines(self) -> list[Machine]:
        """The Hosts the lab was told the underlay of (:meth:`machine`), in that order."""
        return list(self._state.overlay.machines.values())

    @property
    def hosts(self) -> list[Host]:
        """The Hosts the lab uses: its own first, then those of its namespaces."""
        return self._state.hosts()

    def vni(self, network: Network | str) -> int:
        """The VXLAN network identifier of ``network`` (it uses it when it spans Hosts)."""
        return self._state.overlay.vnis[self._network(network).name]

    def gateway(self, network: Network | str, host: Host | None = None) -> IPAddress:
        """``network``'s gateway on ``host`` (default: the lab's own, the network's gateway): each Host a
        network spans has one, its members' default route."""
        net = self._network(network)
        host = self.host if host is None else host
        if all(host is not candidate for candidate in self._state.network_hosts(net)):
            raise NotFound(f"network {net.name} has no part on {host!r}")
        return span.gateway(self._state, net, host).ip

    def publish(
        self,
        target: Namespace | Endpoint | str,
        host_port: int,
        port: int,
        protocol: str = "tcp",
        host_ip: str | None = None,
        host_port_end: int | None = None,
        *,
        host: Host | None = None,
    ) -> PortMap:
        """Publish ``host_port`` of the lab's host on ``port`` of ``target``, like ``docker run -p``.

        ``target`` is an endpoint, or a namespace (the address on its first network that is not internal).
        In an isolated lab "the host" is :attr:`host_namespace`. Never on an internal network: nothing
        is forwarded to or from one (as Docker), so that is refused.

        On a dual-stack network one call publishes both families (``host_ip`` of one family: that one only);
        the mapping returned is the IPv4 one, its :attr:`~pynetns.lab.model.LabPortMap.twin` the IPv6 one, and
        the port answers on the host's ``[::1]`` too (a small proxy; see :mod:`pynetns.lab.loopback6`).

        ``host``: of a lab spanning Hosts, the one publishing (default: the lab's own); ``target``'s network
        must have a part there (a member there, or the lab's Host), and may live on another Host.
        """
        endpoint = self._endpoint(target)
        host = self.host if host is None else host
        if all(host is not candidate for candidate in self._state.network_hosts(endpoint.network)):
            rule = f"network {endpoint.network.name} has no part on that Host: publish on one of its Hosts"
            raise InvalidValue("host", host, rule)
        if endpoint.network.internal:
            where = f"{self.name_of(endpoint.namespace)}:{endpoint.interface}"
            rule = (
                f"is on internal network {endpoint.network.name}, which nothing is forwarded to or from: "
                "publish on an endpoint of a network that is not internal"
            )
            raise InvalidValue("target", where, rule)
        mappings = [
            LabPortMap(
                host_port,
                address.ip,
                port,
                protocol,
                host_ip,
                host_port_end,
                namespace=self.host_namespace if host is self.host else None,
                host=host,
                tag=self.tag,
                endpoint=endpoint,
            )
            for address in publish_addresses(endpoint, host_ip)
        ]
        for portmap in mappings:
            low, high = portmap.host_ports
            where = str(portmap.host_ip or "any")
            for number in range(low, high + 1):
                for other in self._state.ports.get((portmap.protocol, number), ()):
                    # one family's port is not the other's: 0.0.0.0:8080 and [::]:8080 are two sockets (Docker's)
                    same = other.host is host and other.family == portmap.family
                    if same and other._overlaps(low, high, where):
                        raise InvalidValue("host_port", host_port, f"overlaps {other}, already published in this lab")
        if len(mappings) == 2:
            mappings[0].twin = mappings[1]
        for portmap in mappings:
            low, high = portmap.host_ports
            for number in range(low, high + 1):
                self._state.ports.setdefault((portmap.protocol, number), []).append(portmap)
            self.published.append(portmap)
        return mappings[0]

    def unpublish(self, portmap: PortMap) -> None:
        """Stop publishing ``portmap`` (what :meth:`publish` returned), like removing ``-p`` from a container.

        An applied one's rules go at once (and the conntrack entries of its UDP ports); its host ports are free
        for a new :meth:`publish` in this lab. One not yet applied is only forgotten.
        """
        state = self._state
        if state.destroyed:
            raise LabDestroyed(f"lab {self.name} was destroyed")
        if portmap not in state.published:  # port maps compare by identity
            raise NotFound(f"{portmap} is not published in lab {self.name}")
        twin = portmap.twin if isinstance(portmap, LabPortMap) else None
        both = [portmap] + ([twin] if twin is not None and twin in state.published else [])
        applied = [mapping for mapping in both if mapping in state.firewall]
        if applied:
            delete_all(applied)
        for mapping in both:
            if mapping in applied:
                state.firewall.remove(mapping)
            loopback6.stop(state, mapping)
            state.published.remove(mapping)
            low, high = mapping.host_ports
            for number in range(low, high + 1):
                key = (mapping.protocol, number)
                state.ports[key] = [other for other in state.ports.get(key, ()) if other is not mapping]
                if not state.ports[key]:
                    del state.ports[key]
        if state.journal_file is not None:
            write_journal(state)

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

    # -- looking up --------------------------------------------------------

    def __getitem__(self, name: str) -> Namespace:
        """The namespace declared as ``name``: ``lab["web"]`` (:class:`~pynetns.errors.NotFound` if none)."""
        if not isinstance(name, str):
            raise InvalidValue("name", name, "must be the name a namespace was declared with, like 'web'")
        namespace = self.namespaces.get(name)
        if namespace is None:
            known = ", ".join(self.namespaces) or "none"
            raise NotFound(f"lab {self.name} has no namespace {name!r} (it has: {known})")
        return namespace

    def __contains__(self, name: object) -> bool:
        return name in self.namespaces

    def endpoint(self, namespace: Namespace | str, network: Network | str | None = None) -> Endpoint:
        """``namespace``'s attachment to ``network`` (default: its first network), like ``lab.endpoint("web",
        "front")``; :class:`~pynetns.errors.NotFound` if the lab has no such namespace, network or attachment."""
        member = self[namespace] if isinstance(namespace, str) else namespace
        if member not in self.namespaces.values():
            raise InvalidValue("namespace", member.name, f"is not a namespace of lab {self.name}")
        mine = [endpoint for endpoint in self.endpoints if endpoint.namespace is member]
        who = self.name_of(member)
        if network is None:
            if not mine:
                raise NotFound(f"{who} in lab {self.name} is connected to no network")
            return mine[0]
        net = self._network(network)
        found = next((endpoint for endpoint in mine if endpoint.network is net), None)
        if found is None:
            joined = ", ".join(endpoint.network.name for endpoint in mine) or "none"
            raise NotFound(f"{who} in lab {self.name} is not connected to network {net.name} (its networks: {joined})")
        return found

    def ip(
        self, namespace: Namespace | str, network: Network | str | None = None, *, version: int | None = None
    ) -> IPAddress:
        """The address of ``namespace`` on ``network`` (default: its first network), an
        :mod:`ipaddress` object: ``lab.ip("web")``, ``lab.ip("web", "front")``; ``str()`` it for a command.

        On a dual-stack network that is the IPv4 address; ``version=6`` gives the IPv6 one (``version=4``
        the IPv4 one): :class:`~pynetns.errors.NotFound` if the network has none of that family."""
        endpoint = self.endpoint(namespace, network)
        if version is None:
            return endpoint.ip.ip
        if version not in (4, 6) or isinstance(version, bool):
            raise InvalidValue("version", version, "must be 4 or 6 (or None: the network's first address)")
        found = next((address for address in endpoint.addresses if address.version == version), None)
        if found is None:
            who = self.name_of(endpoint.namespace)
            raise NotFound(f"{who} has no IPv{version} address on network {endpoint.network.name} ({endpoint.ip})")
        return found.ip

    def impair(
        self,
        namespace: Namespace | str,
        delay: DurationLike = None,
        jitter: DurationLike = None,
        loss: FractionLike = None,
        rate: RateLike = None,
        duplicate: FractionLike = None,
        corrupt: FractionLike = None,
        direction: str = "both",
        *,
        network: Network | str | None = None,
    ) -> Impairment:
        """Impair ``namespace``'s link to ``network`` (default: its first network): ``lab.impair("web",
        delay="50ms")``; the arguments are :meth:`Endpoint.impair <pynetns.lab.model.Endpoint.impair>`'s."""
        endpoint = self.endpoint(namespace, network)
        return endpoint.impair(delay, jitter, loss, rate, duplicate, corrupt, direction)

    def _network(self, network: Network | str) -> Network:
        if isinstance(network, Network):
            if self.networks.get(network.name) is not network:
                raise InvalidValue("network", network.name, f"is not a network of lab {self.name}")
            return network
        if not isinstance(network, str):
            raise InvalidValue("network", network, "must be a network or the name it was declared with")
        if network not in self.networks:
            known = ", ".join(self.networks) or "none"
            raise NotFound(f"lab {self.name} has no network {network!r} (it has: {known})")
        return self.networks[network]

    # -- partitions --------------------------------------------------------

    def partition(
        self,
        group_a: Iterable[Namespace | str] | Namespace | str | None = None,
        group_b: Iterable[Namespace | str] | Namespace | str | None = None,
        *,
        shape: str | None = None,
        one_way: bool = False,
        seed: int | None = None,
        among: Iterable[Namespace | str] | None = None,
        node: Namespace | str | None = None,
    ) -> Partition:
        """Cut namespaces from each other (all IP traffic, silently dropped: clients time out); returns who no
        longer hears whom (:class:`~pynetns.lab.shapes.Partition`). :meth:`heal` ends every partition.

        - ``partition(a, b)``: the groups cannot reach each other, both ways; each still works inside.
        - ``partition(a, b, one_way=True)``: ``a → b`` dropped, ``b → a`` open (b's packets arrive at a, but
          a's replies do not come back: UDP gets through, TCP and ping do not).
        - ``partition(shape=...)``: Jepsen's shapes over ``among`` (default: every namespace of the lab, in
          declaration order): ``"halves"``, ``"random-halves"`` (drawn with ``seed``; a fresh one, in the
          result, when it is None), ``"isolate"`` (see :meth:`isolate`), ``"majorities-ring"`` (each hears a
          majority around itself, no two the same one), ``"bridge"`` (two halves, one namespace in both);
          ``node`` is the one ``"isolate"`` cuts off (drawn with ``seed`` when it is None).

        Works within one network and across networks; several partitions add up.
        """
        return partitions.partition(
            self._state, group_a, group_b, shape=shape, one_way=one_way, seed=seed, among=among, node=node
        )

    def isolate(self, node: Namespace | str) -> Partition:
        """Cut ``node`` from every other namespace of the lab, both ways (:meth:`heal` ends it)."""
        return partitions.isolate(self._state, node)

    def heal(self) -> None:
        """End every partition."""
        partitions.heal(self._state)

    # -- compiling ---------------------------------------------------------

    def plan(self) -> list[Call]:
        """The commands :meth:`apply` would run now, without running them.

        Firewall scripts are shown as written to a firewall holding no pynetns
        rules yet (exact for an isolated lab); the rules' checks (ports in use)
        and the sysctls read before writing are left out.
        """
        return [call for stage in compile_stages(self._state) for job in stage for call in job.calls()]

    def explain(self) -> Commands:
        """:meth:`plan` as copy-pasteable shell (batch inputs as here-documents); a code block in a notebook.

        A lab spanning Hosts shows each Host's commands under a header (``# on machine b (192.0.2.2)``).
        """
        hosts = self._state.hosts()
        if len(hosts) == 1:
            return commands(self.plan())
        stages = compile_stages(self._state)
        parts = []
        for host in hosts:
            machine = self._state.overlay.machines.get(host)
            title = f"machine {machine.name} ({machine.underlay})" if machine is not None else repr(host)
            calls = [call for stage in stages for job in stage if job.host is host for call in job.calls()]
            parts.append(f"# on {title}\n" + commands(calls))
        return Commands("\n".join(parts))

    def diagram(self) -> Any:
        """The topology as a picture (SVG through Graphviz's ``dot``; without it, DOT source and tables)."""
        return view("diagram", self)

    # -- applying ----------------------------------------------------------

    def apply(self, progress: Callable[[str], None] | None = None) -> None:
        """Create what was declared since the last apply; on failure remove what this apply made.

        ``progress`` is called with a line saying what each stage does (``pynetns up`` prints them).

        On failure (Ctrl-C included) everything this apply may have made is removed, carrying on past
        failures; the error is raised with those failures in its ``undo_errors`` (and notes, Python 3.11+:
        :func:`pynetns.plan.attach_undo_errors`). If that removal was incomplete the journal stays, and the
        next :meth:`apply` (or :meth:`destroy`) removes the rest first: a :class:`CleanupError` if it cannot.
        """
        if self._state.destroyed:
            raise LabDestroyed(f"lab {self.name} was destroyed")
        self._remove_leftovers()
        stages = compile_stages(self._state)
        if not stages:
            return
        for host in self._state.hosts():
            refuse_unprivileged(host)
        for portmap in self.published:  # before any command
            if portmap.protocol == "sctp" and portmap not in self._state.firewall:
                refuse_without_sctp(portmap.host, f"lab {self.name}'s published sctp ports")
        if claim_subnets(self._state):  # a subnet from the pools moved: the commands name its new addresses
            stages = compile_stages(self._state)
        done: list[Job] = []
        started: list[Job] = []
        try:
            for number, stage in enumerate(stages, 1):
                if progress is not None:
                    progress(f"[{number}/{len(stages)}] {describe(stage)}")
                started.extend(stage)
                run_stage(stage, done)
        except BaseException as error:
            attach_undo_errors(error, undo(done))
            if undo_errors(error):  # something may be left: the next apply or destroy tries again
                self._leftovers = started
            elif not self._state.applied_namespaces:  # nothing of the lab exists: its journal goes too
                self._state.remove_journal()
            raise
        for stage in stages:
            for job in stage:
                if isinstance(job, FirewallJob):
                    self._state.firewall.extend(job.objects)
        namespaces = new_namespaces(self._state, include_host=True)
        self._state.applied_namespaces.update(namespace.name for namespace in namespaces)
        span.mark_applied(self._state)
        for net in self.networks.values():
            net.applied = True
        for endpoint in self.endpoints:
            endpoint.applied = True

    def _remove_leftovers(self) -> None:
        """Undo, again, an earlier failed apply whose undo was incomplete (:class:`CleanupError` if it still is)."""
        if self._leftovers:
            failures = undo(self._leftovers)
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
        state = self._state
        failures: list[Exception] = []

        def attempt(action: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
            try:
                action(*args, **kwargs)
            except Exception as error:
                log.warning("while destroying lab %s: %s", self.name, error)
                failures.append(error)
                return False
            return True

        attempt(loopback6.stop_all, state)  # the [::1] proxies of published IPv6 ports
        for namespace in self.namespaces.values():
            attempt(namespace.stop_processes)
        for (
            link
        ) in state.impairments.links.values():  # the impairment engines; their rules and qdiscs go with the namespaces
            attempt(link.stop_engines)
        created = [namespace for namespace in self.namespaces.values() if namespace.name in state.applied_namespaces]
        if self.host_namespace is not None and self.host_namespace.name in state.applied_namespaces:
            created.insert(0, self.host_namespace)  # first: its bridges go at once, not port by port
        hosts = state.hosts()
        for host in hosts:
            attempt(kill_processes_in, host, [namespace.name for namespace in created if namespace.host is host])
        owned = state.firewall + state.drops
        # in the root namespace the rules outlive the lab's devices; an isolated lab's go with its namespace
        if self.host_namespace is not None or all(
            [attempt(delete_all, group, missing_ok=True) for group in by_host(owned)]
        ):
            state.firewall.clear()
            state.drops = []
        state.impairments.links.clear()
        state.partitions.clear()
        state.blocked.clear()
        leftovers = undo(self._leftovers)
        failures += leftovers
        if not leftovers:
            self._leftovers = []
        root = NetnsRef.root()
        for host in hosts:  # each Host's part: its namespaces, then its bridges and VXLAN devices
            teardown = Plan()
            for namespace in created:
                if namespace.host is host:
                    teardown.add(host.ip_step(root, host.links.netns_delete(namespace.name)))
            if self.host_namespace is None:
                for net in self.networks.values():
                    if span.part_applied(state, net, host):
                        teardown.add(host.ip_step(root, host.links.link_delete(net.bridge)))
                        if span.spanning(state, net):
                            teardown.add(host.ip_step(root, host.links.link_delete(vxlan_name(net.bridge))))
            failures += teardown.rollback(host.runner)
        failures += names.remove(state)
        if failures:
            raise CleanupError(f"lab {self.name} was not removed entirely", failures)
        state.overlay.parts.clear()
        state.overlay.spanned.clear()
        state.applied_namespaces.clear()
        for net in self.networks.values():
            net.applied = False
        for endpoint in self.endpoints:
            endpoint.applied = False
        state.remove_journal()
        state.destroyed = True

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._detached:
            self.destroy()

    # -- journal -----------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self._state.journal_path

    def name_of(self, namespace: Namespace) -> str:
        """The name ``namespace`` was declared with in this lab (``web`` for ``pn1a2b3c-web``; else its kernel name)."""
        return self._state.name_of(namespace)

    def detach(self) -> LabRecord:
        """Leave the lab running after this process ends: its journal names no owner, so :func:`cleanup`
        leaves it alone (but ``cleanup(all=True)``); ``pynetns down NAME`` or :func:`remove` ends it."""
        if self._state.destroyed:
            raise LabDestroyed(f"lab {self.name} was destroyed")
        self._state.persistent = True
        write_journal(self._state)
        loopback6.persist(self._state)  # the [::1] proxies live on with the journal
        self._detached = True
        return next(record for record in labs(self.host) if record.id == self.id)


def refuse_unprivileged(host: Host) -> None:
    """Refuse, before any command, to apply a lab without the privileges it needs (a local runner
    without CAP_NET_ADMIN and CAP_SYS_ADMIN, or a runtime directory this user cannot write)."""
    if host.dry_run:
        return
    from plumbum import local

    runner = host.runner
    if isinstance(runner, LocalRunner) and not runner.sudo and runner.machine is local and not privileged():
        raise PermissionDenied(f"applying a lab needs the privileges to make network namespaces: {HOW_TO_PRIVILEGE}")
    why = host.runtime.unwritable()
    if why is not None:
        raise PermissionDenied(f"{why}: {HOW_TO_PRIVILEGE}")
