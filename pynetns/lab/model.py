"""The declaration of a lab: its networks and their endpoints, and the subnets they take (its IPAM use).

A :class:`Network` is a bridge with a gateway address; an :class:`Endpoint` a namespace's veth on it.
:func:`claim_subnets` takes the subnets of an apply for good, under the host lock, moving one taken from the
default pools to the next free one if another lab took it meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from ..errors import SubnetOverlap
from ..firewall import HostPath, PortMap, Site
from ..impairment import DurationLike, FractionLike, Impairment, RateLike
from ..namespace import Namespace
from ..validation import IPInterface, IPNetwork
from ..views import Viewable
from .ipam import Allocator, pick_subnet, rebase, taken_networks

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Endpoint", "Network", "LabPortMap", "claim_subnets", "refuse_overlap", "taken_subnets"]

log = logging.getLogger(__name__)


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
        impairment = Impairment(delay=delay, jitter=jitter, loss=loss, rate=rate, duplicate=duplicate, corrupt=corrupt)
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


@attrs.define(eq=False)
class LabPortMap(PortMap):
    """A lab's published port: it knows its endpoint, so it needs no route lookup to find the bridge port."""

    endpoint: Endpoint = attrs.field(default=None, kw_only=True, repr=False)

    def _path(self, site: Site) -> HostPath:
        bridge = self.endpoint.network.bridge
        localnet = bridge if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        return HostPath(localnet, self.endpoint.host_interface, managed=True)


def taken_subnets(lab: Lab) -> list[IPNetwork]:
    taken: list[IPNetwork] = [net.subnet for net in lab.networks.values()]
    if lab.isolated or lab.host.dry_run:
        return taken
    return taken + taken_networks(lab.host, other_than=lab.id)


def claim_subnets(lab: Lab) -> bool:
    """Choose, then journal, the subnets this apply creates: under the lock, so no other lab or demo
    picking a subnet at the same moment can take the same one. A subnet given at declaration must
    still be free; one taken from the pools moves to the next free one if it is not. Returns whether
    one moved."""
    if lab.isolated or lab.host.dry_run:
        lab._write_journal()
        return False
    moved = False
    with lab.host.lock():
        taken = taken_networks(lab.host, other_than=lab.id)
        new = [net for net in lab.networks.values() if not net.applied]
        for net in new:
            if not net.pooled:
                refuse_overlap(net.subnet, taken, "taken since it was declared")
        mine = [net.subnet for net in lab.networks.values() if net.applied or not net.pooled]
        for net in new:
            if net.pooled:
                if any(net.subnet.overlaps(other) for other in taken + mine):
                    _move(lab, net, pick_subnet(taken + mine))
                    moved = True
                mine.append(net.subnet)
        lab._write_journal()
    return moved


def _move(lab: Lab, net: Network, subnet: IPNetwork) -> None:
    """Give a network that is not applied yet another subnet: its addresses (and the ports published on
    them) keep their place in it."""
    log.info("lab %s: network %s takes %s (%s was taken meanwhile)", lab.name, net.name, subnet, net.subnet)
    old, net.subnet, net.allocator = net.subnet, subnet, net.allocator.moved_to(subnet)
    for endpoint in net.endpoints:
        endpoint.ip = ipaddress.ip_interface(f"{rebase(endpoint.ip.ip, old, subnet)}/{subnet.prefixlen}")
    for index, portmap in enumerate(lab.published):
        if isinstance(portmap, LabPortMap) and portmap.endpoint.network is net:
            moved = attrs.evolve(portmap, address=portmap.endpoint.ip.ip)
            lab.published[index] = moved
            for mappings in lab._ports.values():
                mappings[:] = [moved if item is portmap else item for item in mappings]


def refuse_overlap(subnet: IPNetwork, taken: Iterable[IPNetwork], why: str) -> None:
    clash = next((other for other in taken if other.overlaps(subnet)), None)
    if clash is not None:
        raise SubnetOverlap("subnet", str(subnet), f"overlaps {clash}, {why}")
