"""The declaration of a lab: its networks and their endpoints, the impaired links of those, and the
subnets' overlap rule.

A :class:`Network` is a bridge with a gateway address; an :class:`Endpoint` a namespace's veth on it.
Both belong to a lab, which they know only as a :class:`LabLike` (the :class:`~pynetns.Lab` meets it; this
module does not import it). :class:`Impairments` is a lab's registry of impaired links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from ..backends.base import FirewallRule
from ..errors import InvalidValue, SubnetOverlap
from ..firewall import HostPath, PortMap, Site
from ..host import Host
from ..impair.link import ImpairedLink, netem_available
from ..impairment import DurationLike, FractionLike, Impairment, RateLike, parse_direction
from ..namespace import Namespace
from ..validation import IPInterface, IPNetwork, IsolateMode, ip_address
from ..views import Viewable
from .ipam import Allocator

__all__ = ["Endpoint", "Impairments", "LabLike", "LabPortMap", "Network", "publish_addresses", "refuse_overlap"]

log = logging.getLogger(__name__)


class LabLike(Protocol):
    """What a network and its endpoints (and their views) ask of the lab they belong to."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def host(self) -> Host: ...

    @property
    def host_namespace(self) -> Namespace | None: ...

    @property
    def networks(self) -> Mapping[str, Network]: ...

    @property
    def endpoints(self) -> list[Endpoint]: ...

    def name_of(self, namespace: Namespace) -> str: ...

    def connect(
        self, net: Network | str, namespace: Namespace | str, ip: str | None = None, ifname: str | None = None
    ) -> Endpoint: ...

    # what users reach for through ``endpoint.lab`` / ``network.lab``
    def apply(self, progress: Callable[[str], None] | None = None) -> None: ...

    def destroy(self) -> None: ...


@attrs.define(eq=False)
class Endpoint(Viewable):
    """A namespace's attachment to a network: a veth with ``interface`` inside and ``ip`` on it (and, on a
    dual-stack network, ``address6`` too: :attr:`ip6` is the IPv6 one whatever the network)."""

    network: Network
    namespace: Namespace
    interface: str
    ip: IPInterface
    host_interface: str
    applied: bool = False
    #: the IPv6 address besides ``ip`` on a dual-stack network
    address6: IPInterface | None = attrs.field(default=None, kw_only=True)

    @property
    def lab(self) -> LabLike:
        return self.network.lab

    @property
    def ip6(self) -> IPInterface | None:
        """The endpoint's IPv6 address (``None`` on an IPv4-only network)."""
        return self.ip if self.ip.version == 6 else self.address6

    @property
    def addresses(self) -> list[IPInterface]:
        """Every address of the endpoint: ``ip``, then the IPv6 one of a dual-stack network."""
        return [self.ip] if self.address6 is None else [self.ip, self.address6]

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
        impairment = Impairment(delay=delay, jitter=jitter, loss=loss, rate=rate, duplicate=duplicate, corrupt=corrupt)
        self.network.impairments.apply(self, impairment, direction)
        return impairment

    def clear_impairment(self) -> None:
        """Remove the impairment: the link is as fast as it was made."""
        self.network.impairments.apply(self, Impairment(), "both")

    @property
    def impairment(self) -> Impairment | None:
        """What :meth:`impair` put on this link (``None``: nothing)."""
        link = self.network.impairments.links.get(self)
        return None if link is None else link.impairment

    @property
    def impairment_mode(self) -> str | None:
        """How the impairment is made: ``"netem"`` (the kernel's qdisc), ``"nfqueue"`` (the userspace
        engine, where the kernel has no netem); ``None`` without one."""
        link = self.network.impairments.links.get(self)
        return None if link is None else link.mode


class Impairments:
    """A lab's impaired links, one per impaired endpoint, and whether its kernel has netem (asked once)."""

    def __init__(self, host: Host, tag: str, host_namespace: Namespace | None, endpoints: list[Endpoint]) -> None:
        self.host, self.tag, self.host_namespace = host, tag, host_namespace
        self._endpoints = endpoints  # the lab's, as it grows
        self.links: dict[Endpoint, ImpairedLink] = {}
        self.netem: bool | None = None
        #: called after each change (the lab journals its impaired links)
        self.changed: Callable[[], None] | None = None

    def apply(self, endpoint: Endpoint, impairment: Impairment, direction: str) -> None:
        """Put ``impairment`` on ``endpoint``'s link (an empty one takes it off)."""
        parse_direction("direction", direction)
        if not endpoint.applied:
            raise InvalidValue(
                "endpoint",
                f"{endpoint.namespace.name}:{endpoint.interface}",
                "is not applied yet (call lab.apply() first)",
            )
        link = self.links.get(endpoint)
        if link is None:
            if not impairment:
                return
            link = self._link(endpoint)
        if self.netem is None and impairment:
            self.netem = netem_available(self.host, endpoint.namespace)
            if not self.netem:
                log.warning(
                    "this kernel has no netem qdisc: delay, jitter and loss go through pynetns' userspace "
                    "engine (NFQUEUE), which delays IP packets only (not ARP); ping without -U shows only "
                    "the delay of what the pinging namespace sends (endpoint.impairment_mode says 'nfqueue')"
                )
        try:
            link.apply(impairment, direction, netem=bool(self.netem))
        finally:
            if link.impairment:
                self.links[endpoint] = link
            else:
                self.links.pop(endpoint, None)
            if self.changed is not None:
                self.changed()

    def adopt(self, endpoint: Endpoint, record: dict[str, Any]) -> None:
        """Take over the impairment another process put on ``endpoint``'s link, as its lab's journal
        describes it (:meth:`ImpairedLink.record <pynetns.impair.link.ImpairedLink.record>`)."""
        link = self._link(endpoint)
        link.adopt(record)
        if link.impairment:
            self.links[endpoint] = link
            self.netem = bool(record.get("netem")) if self.netem is None else self.netem

    def _link(self, endpoint: Endpoint) -> ImpairedLink:
        mine = [other for other in self._endpoints if other.namespace is endpoint.namespace]
        return ImpairedLink(
            endpoint.namespace.host,  # the Host the link is on (a lab may span several)
            endpoint.namespace,
            endpoint.interface,
            self.host_namespace,
            endpoint.host_interface,
            queue=100 + 2 * mine.index(endpoint),
            # on an isolated lab's own host side only: nothing of it may outlive the lab
            bridge_port=self.host_namespace is not None,
            tag=self.tag,
        )


@attrs.define(eq=False)
class Network(Viewable):
    """A bridge with a gateway address, like a ``docker network create`` network."""

    lab: LabLike = attrs.field(repr=False)
    name: str
    subnet: IPNetwork
    bridge: str
    allocator: Allocator = attrs.field(repr=False)
    impairments: Impairments = attrs.field(repr=False, kw_only=True)
    nat: bool = True
    internal: bool = False
    mtu: int | None = None
    #: isolated from the other networks as Docker does (True), not at all (False), or "strict" (ports too)
    isolate: IsolateMode = True
    applied: bool = False
    #: declared without a subnet: its first apply may move it to the next free one of the default pools
    pooled: bool = attrs.field(default=False, repr=False)
    #: the IPv6 subnet besides an IPv4 ``subnet`` (a dual-stack network), and its addresses
    subnet6: IPNetwork | None = attrs.field(default=None, kw_only=True)
    allocator6: Allocator | None = attrs.field(default=None, kw_only=True, repr=False)
    #: ``subnet6`` was drawn from the host's unique local /48: its first apply may move it to the next free /64
    pooled6: bool = attrs.field(default=False, kw_only=True, repr=False)

    @property
    def gateway(self) -> IPInterface:
        return self.allocator.gateway

    @property
    def gateway6(self) -> IPInterface | None:
        """The bridge's IPv6 address (``None`` on an IPv4-only network)."""
        if self.allocator6 is not None:
            return self.allocator6.gateway
        return self.gateway if self.subnet.version == 6 else None

    @property
    def subnets(self) -> list[IPNetwork]:
        """``subnet``, then ``subnet6`` on a dual-stack network."""
        return [self.subnet] if self.subnet6 is None else [self.subnet, self.subnet6]

    @property
    def gateways(self) -> list[IPInterface]:
        """The bridge's addresses: ``gateway``, then the IPv6 one of a dual-stack network."""
        return [self.gateway] if self.allocator6 is None else [self.gateway, self.allocator6.gateway]

    @property
    def has_ipv6(self) -> bool:
        return self.gateway6 is not None

    def connect(self, namespace: Namespace | str, ip: str | None = None, ifname: str | None = None) -> Endpoint:
        """Join ``namespace`` to this network; the next free address unless ``ip`` is given."""
        return self.lab.connect(self, namespace, ip=ip, ifname=ifname)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.lab.endpoints if endpoint.network is self]


@attrs.define(eq=False)
class LabPortMap(PortMap):
    """A lab's published port: it knows its endpoint, so it needs no route lookup to find the bridge port."""

    endpoint: Endpoint = attrs.field(default=None, kw_only=True, repr=False)
    #: the IPv6 mapping published with this IPv4 one by one ``publish()`` on a dual-stack network
    twin: LabPortMap | None = attrs.field(default=None, kw_only=True, repr=False)

    def _path(self, site: Site) -> HostPath:
        bridge = self.endpoint.network.bridge
        localnet = bridge if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        # a member on another Host of a spanning network is reached through the network's VXLAN device, which
        # takes no hairpin: the broadcasts it brings in would go back to their machine, and its bridge would
        # learn its own members' MACs on the VXLAN port (a member does not reach its own port published here)
        here = self.endpoint.namespace.host is self.host
        return HostPath(localnet, self.endpoint.host_interface if here else None, managed=True)

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        rules = super()._main_rules(path)
        if self.endpoint.namespace.host is not self.host:
            # a member on another Host of a spanning network answers through its own Host's gateway: what is
            # published here for it leaves with this Host's address on the network (as Docker swarm's ingress
            # does), so its replies come back here to be translated back
            masquerade = FirewallRule(
                "postrouting",
                self._comment(),
                self.family,
                self.protocol,  # type: ignore[arg-type]
                daddr=str(self.address),
                dport=self.ports,
                ct_dnat=True,
                action="masquerade",
            )
            rules.append(masquerade)
        return rules


def publish_addresses(endpoint: Endpoint, host_ip: str | None) -> list[IPInterface]:
    """The endpoint's addresses a port is published on: each family's, or the one of ``host_ip``'s family."""
    if host_ip is None:
        return endpoint.addresses
    version = ip_address("host_ip", host_ip).version
    return [address for address in endpoint.addresses if address.version == version] or [endpoint.ip]


def refuse_overlap(subnet: IPNetwork, taken: Iterable[IPNetwork], why: str) -> None:
    clash = next((other for other in taken if other.overlaps(subnet)), None)
    if clash is not None:
        raise SubnetOverlap("subnet", str(subnet), f"overlaps {clash}, {why}")
