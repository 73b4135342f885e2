"""The declaration of a lab: its networks and their endpoints, the impaired links of those, and the
subnets' overlap rule.

A :class:`Network` is a bridge with a gateway address; an :class:`Endpoint` a namespace's veth on it.
Both belong to a lab, which they know only as a :class:`LabLike` (the :class:`~pynetns.Lab` meets it; this
module does not import it). :class:`Impairments` is a lab's registry of impaired links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

import attrs

from ..errors import InvalidValue, SubnetOverlap
from ..firewall import HostPath, PortMap, Site
from ..host import Host
from ..impair.link import ImpairedLink, netem_available
from ..impairment import DurationLike, FractionLike, Impairment, RateLike, parse_direction
from ..namespace import Namespace
from ..validation import IPAddress, IPInterface, IPNetwork, IsolateMode
from ..views import Viewable
from .ipam import Allocator

__all__ = ["Endpoint", "Impairments", "LabLike", "LabPortMap", "Network", "refuse_overlap"]

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
    """A namespace's attachment to a network: a veth with ``interface`` inside and ``ip`` on it."""

    network: Network
    namespace: Namespace
    interface: str
    ip: IPInterface
    host_interface: str
    applied: bool = False

    @property
    def lab(self) -> LabLike:
        return self.network.lab

    @property
    def addresses(self) -> list[IPAddress]:
        """Every address of this endpoint (what other members' hosts files name it by)."""
        return [self.ip.ip]

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
            mine = [other for other in self._endpoints if other.namespace is endpoint.namespace]
            link = ImpairedLink(
                self.host,
                endpoint.namespace,
                endpoint.interface,
                self.host_namespace,
                endpoint.host_interface,
                queue=100 + 2 * mine.index(endpoint),
                # on an isolated lab's own host side only: nothing of it may outlive the lab
                bridge_port=self.host_namespace is not None,
                tag=self.tag,
            )
        if self.netem is None and impairment:
            self.netem = netem_available(self.host, endpoint.namespace)
            if not self.netem:
                log.warning(
                    "this kernel has no netem qdisc: delay, jitter and loss go through pynetns' userspace "
                    "engine (NFQUEUE), which delays IP packets only (not ARP); ping without -U shows only "
                    "the delay of what the pinging namespace sends (endpoint.impairment_mode says 'nfqueue')"
                )
        link.apply(impairment, direction, netem=bool(self.netem))
        if impairment:
            self.links[endpoint] = link
        else:
            self.links.pop(endpoint, None)


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

    @property
    def gateway(self) -> IPInterface:
        return self.allocator.gateway

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

    def _path(self, site: Site) -> HostPath:
        bridge = self.endpoint.network.bridge
        localnet = bridge if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        return HostPath(localnet, self.endpoint.host_interface, managed=True)


def refuse_overlap(subnet: IPNetwork, taken: Iterable[IPNetwork], why: str) -> None:
    clash = next((other for other in taken if other.overlaps(subnet)), None)
    if clash is not None:
        raise SubnetOverlap("subnet", str(subnet), f"overlaps {clash}, {why}")
