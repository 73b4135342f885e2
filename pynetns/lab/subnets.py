"""The subnets of an apply, taken for good under the host lock (:func:`claim_subnets`): one taken from the
default pools at declaration moves to the next free one if another lab took it meanwhile."""

from __future__ import annotations

import ipaddress
import logging

from ..validation import IPNetwork
from .compile import write_journal
from .ipam import pick_subnet, pick_subnet6, rebase, taken_networks
from .model import LabPortMap, Network, refuse_overlap
from .state import LabState

__all__ = ["claim_subnets"]

log = logging.getLogger(__name__)


def claim_subnets(state: LabState) -> bool:
    """Choose, then journal, the subnets this apply creates: under the lock, so no other lab or demo
    picking a subnet at the same moment can take the same one. A subnet given at declaration must
    still be free; one taken from the pools moves to the next free one if it is not. Returns whether
    one moved."""
    if state.isolated or state.host.dry_run:
        write_journal(state)
        return False
    moved = False
    with state.host.lock():
        taken = taken_networks(state.host, other_than=state.id)
        for host in state.hosts()[1:]:  # a lab spanning Hosts: its subnets are on each (read, not locked)
            taken += taken_networks(host, other_than=state.id)
        new = [net for net in state.networks.values() if not net.applied]
        for net in new:
            if not net.pooled:
                refuse_overlap(net.subnet, taken, "taken since it was declared")
            if net.subnet6 is not None and not net.pooled6:
                refuse_overlap(net.subnet6, taken, "taken since it was declared")
        mine = [net.subnet for net in state.networks.values() if net.applied or not net.pooled]
        mine += [
            net.subnet6
            for net in state.networks.values()
            if net.subnet6 is not None and (net.applied or not net.pooled6)
        ]
        for net in new:
            if net.pooled:
                if any(net.subnet.overlaps(other) for other in taken + mine):
                    _move(state, net, pick_subnet(taken + mine))
                    moved = True
                mine.append(net.subnet)
            if net.pooled6 and net.subnet6 is not None:
                if any(net.subnet6.overlaps(other) for other in taken + mine):
                    _move(state, net, pick_subnet6(taken + mine, state.ula()))
                    moved = True
                mine.append(net.subnet6)
        write_journal(state, [state.host])
    # the other Hosts' journals once the lock is let go: a process never holds two Hosts' locks at once
    write_journal(state, state.hosts()[1:])
    return moved


def _move(state: LabState, net: Network, subnet: IPNetwork) -> None:
    """Give a network that is not applied yet another subnet (of the family of ``subnet``: its IPv4 one or,
    on a dual-stack network, its IPv6 one): its addresses (and the ports published on them) keep their
    place in it."""
    second = net.subnet6 is not None and subnet.version == 6 and net.subnet.version == 4
    old = net.subnet6 if second else net.subnet
    assert old is not None
    log.info("lab %s: network %s takes %s (%s was taken meanwhile)", state.name, net.name, subnet, old)
    if second:
        assert net.allocator6 is not None
        net.subnet6, net.allocator6 = subnet, net.allocator6.moved_to(subnet)
    else:
        net.subnet, net.allocator = subnet, net.allocator.moved_to(subnet)
        state.overlay.rebase(net.name, old, subnet)  # its gateways on the lab's other Hosts
    for endpoint in net.endpoints:
        current = endpoint.address6 if second else endpoint.ip
        assert current is not None
        address = ipaddress.ip_interface(f"{rebase(current.ip, old, subnet)}/{subnet.prefixlen}")
        if second:
            endpoint.address6 = address
        else:
            endpoint.ip = address
    for portmap in state.published:
        if isinstance(portmap, LabPortMap) and portmap.endpoint.network is net and portmap.address in old:
            ip = portmap.endpoint.address6 if second else portmap.endpoint.ip
            assert ip is not None
            portmap.address = ip.ip  # in place: the object publish() returned stays the one applied
