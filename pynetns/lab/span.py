"""Networks that span Hosts: a bridge on each Host joined by a VXLAN device, and the checks before any command.

A lab uses a Host other than its own as soon as one of its namespaces is declared there
(``lab.namespace("db", host=b)``); a network with members on several Hosts *spans* them. On each
of those Hosts it is a bridge (the lab's own Host always has one: the network's gateway is there)
with one ``vxlan`` device as a port: one VNI per network, chosen lab-wide; no learning and no
multicast: static forwarding entries send broadcasts to every other Host of the network
(``00:00:00:00:00:00 dst PEER``, head-end replication) and each member's frames to its Host
(members of a spanning network get a MAC derived from their address, as Docker's do). Every Host of
the network has a gateway of its own on its bridge, an address of the one lab-wide subnet: members
go out (NAT) and come in (published ports) through the Host they live on, as on Docker's swarm
nodes. The MTU of the bridge, the VXLAN device and the members is the underlay's minus VXLAN's
overhead (50 bytes over IPv4, 70 over IPv6).

Each Host's underlay address is given once per lab with :meth:`Lab.machine <pynetns.Lab.machine>`.
"""

from __future__ import annotations

import secrets

from ..backends.base import NetnsRef
from ..errors import InvalidValue
from ..host import Host
from ..plan import Plan, Step
from ..validation import IPInterface
from .journal import labs
from .machines import VNI_RANGE, VXLAN_PORT, Machine, vxlan_name
from .model import Endpoint, Network
from .state import LabState

__all__ = [
    "BROADCAST",
    "check",
    "choose_vni",
    "fdb_plan",
    "gateway",
    "joined",
    "mac",
    "machine",
    "mark_applied",
    "mtu",
    "on_host",
    "part_applied",
    "spanning",
    "vxlan_plan",
]

#: the forwarding entry of broadcasts and unknown destinations: one copy to each machine named
BROADCAST = "00:00:00:00:00:00"


def spanning(state: LabState, net: Network) -> bool:
    """Whether ``net`` has a part on more than one Host."""
    return len(state.network_hosts(net)) > 1


def on_host(state: LabState, net: Network, host: Host) -> bool:
    return any(candidate is host for candidate in state.network_hosts(net))


def part_applied(state: LabState, net: Network, host: Host) -> bool:
    """Whether ``net``'s bridge on ``host`` exists (was applied)."""
    if host is state.host:
        return net.applied
    return (net.name, host) in state.overlay.parts


def mark_applied(state: LabState) -> None:
    """After an apply: every network's part on every Host of it exists."""
    for net in state.networks.values():
        if spanning(state, net):
            state.overlay.spanned.add(net.name)
        for host in state.network_hosts(net)[1:]:
            state.overlay.parts.add((net.name, host))


def choose_vni(state: LabState, vni: int | None) -> int:
    """The VNI of a new network: ``vni`` if given (and not another network's of this lab), else a random free one."""
    taken = set(state.overlay.vnis.values())
    if vni is None:
        low, high = VNI_RANGE
        vni = low + secrets.randbelow(high - low + 1)
        while vni in taken:
            vni = low + secrets.randbelow(high - low + 1)
        return vni
    if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= VNI_RANGE[1]:
        raise InvalidValue("vni", vni, f"must be a VXLAN network identifier, 1 to {VNI_RANGE[1]}")
    if vni in taken:
        other = next(net for net, used in state.overlay.vnis.items() if used == vni)
        raise InvalidValue("vni", vni, f"is already network {other}'s in this lab")
    return vni


def joined(state: LabState, net: Network, host: Host) -> None:
    """A member of ``net`` is declared on ``host``: the network gets a gateway there (if not the lab's Host)."""
    if host is not state.host and (net.name, host) not in state.overlay.gateways:
        state.overlay.gateways[(net.name, host)] = net.allocator.allocate()


def gateway(state: LabState, net: Network, host: Host) -> IPInterface:
    """``net``'s gateway on ``host``: the network's own on the lab's Host, one of its addresses on each other."""
    if host is state.host:
        return net.gateway
    return state.overlay.gateways[(net.name, host)]


def mtu(state: LabState, net: Network) -> int | None:
    """The MTU of ``net``'s bridges, VXLAN devices and members: a spanning network's is at most its
    machines' underlay MTU minus the VXLAN overhead (and that by default)."""
    if not spanning(state, net):
        return net.mtu
    machines = [state.overlay.machines[host] for host in state.network_hosts(net)]
    room = min(machine.mtu - machine.overhead for machine in machines)
    return room if net.mtu is None else net.mtu


def mac(endpoint: Endpoint) -> str:
    """The MAC of a member of a spanning network: ``02:42`` and its address's last four bytes (Docker's way),
    so each Host knows, before anything runs, where each member's frames go."""
    tail = endpoint.ip.ip.packed[-4:]
    return "02:42:" + ":".join(f"{byte:02x}" for byte in tail)


def check(state: LabState) -> None:
    """Refuse, before any command, a lab that spans Hosts but cannot: a Host without an underlay address, an
    isolated lab, dry-run and real Hosts mixed, underlays of two IP versions in one network, an MTU the
    underlay has no room for, a VNI another lab uses on one of the Hosts."""
    hosts = state.hosts()
    if len(hosts) == 1:
        return
    if state.isolated:
        raise InvalidValue(
            "isolated", True, "a lab spanning Hosts cannot be isolated (yet): its bridges must be on each Host's own"
        )
    if len({host.dry_run for host in hosts}) > 1:
        raise InvalidValue("host", "dry_run", "a lab's Hosts are all dry runs or none is")
    for net in state.networks.values():
        mine = state.network_hosts(net)
        if len(mine) == 1:
            continue
        if net.applied and net.name not in state.overlay.spanned:
            raise InvalidValue(
                "host",
                mine[-1],
                f"network {net.name} was applied on one Host: a network spans Hosts from its first apply "
                "(its MTU and its members' MACs are chosen then); declare another network",
            )
        missing = [host for host in mine if host not in state.overlay.machines]
        if missing:
            raise InvalidValue(
                "underlay",
                None,
                f"network {net.name} spans {len(mine)} Hosts, and {', '.join(map(repr, missing))} has no underlay "
                "address: give each Host's with lab.machine(host, underlay='10.0.0.2')",
            )
        machines = [state.overlay.machines[host] for host in mine]
        if len({machine.underlay.version for machine in machines}) > 1:
            raise InvalidValue("underlay", None, f"network {net.name} spans IPv4 and IPv6 underlays: use one version")
        if len({machine.underlay for machine in machines}) < len(machines):
            raise InvalidValue("underlay", None, f"network {net.name} spans two Hosts with the same underlay address")
        room = min(machine.mtu - machine.overhead for machine in machines)
        if net.mtu is not None and net.mtu > room:
            raise InvalidValue(
                "mtu", net.mtu, f"network {net.name} spans Hosts: VXLAN leaves room for {room} bytes at most"
            )
    _refuse_vni_clash(state)


def _refuse_vni_clash(state: LabState) -> None:
    """A VNI is one per UDP socket of a Host: another live lab's on a Host this network spans is refused."""
    for net in state.networks.values():
        if not spanning(state, net):
            continue
        vni = state.overlay.vnis[net.name]
        for host in state.network_hosts(net):
            if host.dry_run:
                continue
            for record in labs(host):
                if record.id == state.id or not (record.alive or record.persistent):
                    continue
                if vni in record.data.get("vnis", {}).values():
                    rule = f"lab {record.name} uses it on {state.overlay.machines[host].name}: declare another"
                    raise InvalidValue("vni", vni, rule)


def vxlan_plan(state: LabState, host: Host) -> Plan:
    """The VXLAN devices of the spanning networks new on ``host``, each a port of its bridge."""
    plan = Plan()
    links, root = host.links, NetnsRef.root()
    for net in state.networks.values():
        if not spanning(state, net) or not on_host(state, net, host) or part_applied(state, net, host):
            continue
        device = vxlan_name(net.bridge)
        local = str(state.overlay.machines[host].underlay)
        add = links.vxlan_add(
            device, vni=state.overlay.vnis[net.name], local=local, port=VXLAN_PORT, mtu=mtu(state, net)
        )
        plan.add(host.ip_step(root, add, links.link_delete(device)))
        plan.add(host.ip_step(root, links.link_set(device, master=net.bridge, alias=state.tag, up=True)))
    return plan


def fdb_plan(state: LabState, host: Host) -> Plan:
    """The forwarding entries ``host`` gains: for each spanning network on it, broadcasts to each other Host
    (new there, or new here) and each member on another Host (new, or new here) to its Host."""
    plan = Plan()
    for net in state.networks.values():
        if not spanning(state, net) or not on_host(state, net, host):
            continue
        fresh = not part_applied(state, net, host)
        device = vxlan_name(net.bridge)
        for peer in state.network_hosts(net):
            if peer is host:
                continue
            address = str(state.overlay.machines[peer].underlay)
            if fresh or not part_applied(state, net, peer):
                plan.add(_bridge_step(host, device, BROADCAST, address))
            for endpoint in net.endpoints:
                if endpoint.namespace.host is peer and (fresh or not endpoint.applied):
                    plan.add(_bridge_step(host, device, mac(endpoint), address))
    return plan


def _bridge_step(host: Host, device: str, address: str, destination: str) -> Step:
    links, root = host.links, NetnsRef.root()
    args, undo = links.fdb_append(device, address, destination), links.fdb_delete(device, address, destination)
    batch = host.exec_argv(root, links.bridge_batch_command(None))
    undo_step = Step(host.exec_argv(root, links.bridge_command(None, undo)), batch=batch, line=" ".join(undo))
    return Step(
        host.exec_argv(root, links.bridge_command(None, args)), undo=undo_step, batch=batch, line=" ".join(args)
    )


def machine(state: LabState, host: Host, underlay: str, mtu: int = 1500, name: str | None = None) -> Machine:
    """Record ``host``'s underlay address (and MTU, and a name for explain()) in the lab."""
    if not isinstance(host, Host):
        raise InvalidValue("host", host, "must be a pynetns.Host")
    made = Machine(host, underlay, mtu) if name is None else Machine(host, underlay, mtu, name)
    for other in state.overlay.machines.values():
        if other.host is not host and other.underlay == made.underlay:
            raise InvalidValue("underlay", underlay, f"is already machine {other.name}'s")
        if other.host is not host and other.name == made.name:
            raise InvalidValue("name", made.name, "is already another machine's")
    applied = [net.name for net in state.networks.values() if spanning(state, net) and part_applied(state, net, host)]
    old = state.overlay.machines.get(host)
    if old is not None and applied and old.underlay != made.underlay:
        raise InvalidValue("underlay", underlay, f"networks {', '.join(applied)} already use {old.underlay} there")
    state.overlay.machines[host] = made
    return made
