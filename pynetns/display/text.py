"""Multi-line terminal text of an object, from its declaration and a snapshot: no I/O.

Also the words the HTML and the diagram share (an interface's state, a network's details,
what a lab has still to apply).

>>> from pynetns import Host, Namespace
>>> from pynetns.display.snapshot import NamespaceSnapshot, Seen
>>> render_namespace(Namespace("web", host=Host(dry_run=True)), NamespaceSnapshot(Seen(note="not created"), ()))
'Namespace web (named): not created'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .snapshot import (
    DRY_RUN,
    NOT_CREATED,
    BridgeSnapshot,
    EndpointSnapshot,
    LabSnapshot,
    NamespaceSnapshot,
    Seen,
    VethSnapshot,
    published,
)

if TYPE_CHECKING:
    from ..firewall import Masquerade, PortMap
    from ..lab import Endpoint, Lab, LabLike, Network, Partition
    from ..links import Bridge, Veth
    from ..namespace import Namespace
    from ..reports import Interface

__all__ = [
    "render_bridge",
    "render_endpoint",
    "render_lab",
    "render_masquerade",
    "render_namespace",
    "render_network",
    "render_partition",
    "render_portmap",
    "render_veth",
]


# -- words the renderers share ---------------------------------------------------


def where(namespace: Namespace | None) -> str:
    return "host" if namespace is None else namespace.name


def state(item: Interface) -> str:
    """The administrative state (the ``UP`` flag), then the operational one where it says otherwise: ``UP``;
    ``UP (NO-CARRIER)`` for a bridge whose carrier is still settling right after it was set up; ``UNKNOWN``
    (``lo``, as ``ip -br link`` shows it); ``DOWN (admin down)``."""
    if not item.up:
        return f"{item.state} (admin down)"
    if item.state in ("UP", "UNKNOWN"):
        return item.state
    return "UP (NO-CARRIER)" if "NO-CARRIER" in item.flags else f"UP (operstate {item.state})"


def addresses(item: Interface) -> str:
    return " ".join(str(address) for address in item.addresses)


def peer(item: Interface) -> str:
    parts = []
    if item.master:
        parts.append(f"master {item.master}")
    if item.peer_index is not None:
        netnsid = "" if item.link_netnsid is None else f" (netnsid {item.link_netnsid})"
        parts.append(f"peer if{item.peer_index}{netnsid}")
    return ", ".join(parts)


def count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


def partition_details(partition: Partition) -> list[str]:
    details = [partition.shape]
    if partition.seed is not None:
        details.append(f"seed {partition.seed}")
    details += [count(len(partition.members), "namespace"), f"{count(len(partition.cut), 'direction')} cut"]
    return details


def partition_matrix(partition: Partition) -> list[list[str]]:
    """Who reaches whom: a header row of destinations, then a row per source: ``x`` cut, ``·`` open."""
    members = [member for group in partition.groups for member in group]
    rows = [["from \\ to", *members]]
    for source in members:
        cells = ["-" if source == other else "·" if partition.reaches(source, other) else "x" for other in members]
        rows.append([source, *cells])
    return rows


def end_state(seen: Seen, name: str) -> str:
    """``UP``, or why the state is not known."""
    if not seen.inspected:
        return seen.note or ""
    item = seen.interface(name)
    return "missing" if item is None else state(item)


def namespace_details(namespace: Namespace, snapshot: NamespaceSnapshot) -> list[str]:
    details: list[str] = [namespace.ref.kind]
    running = len(snapshot.running)
    if running:
        details.append(f"{running} process{'es' if running > 1 else ''} running")
    return details


def bridge_details(bridge: Bridge) -> list[str]:
    details = [f"in {where(bridge.namespace)}"]
    if bridge.address is not None:
        details.append(f"address {bridge.address}")
    if bridge.mtu is not None:
        details.append(f"mtu {bridge.mtu}")
    return details


def veth_details(veth: Veth) -> list[str]:
    details = [f"in {where(veth.namespace)} <-> {veth.peer} in {where(veth.peer_namespace)}"]
    if veth.master is not None:
        details.append(f"on bridge {veth.master}")
    return details


def side_name(lab: LabLike) -> str:
    return "the host" if lab.host_namespace is None else f"host namespace {lab.host_namespace.name}"


def network_details(net: Network) -> list[str]:
    # a dual-stack network shows both subnets and gateways
    details = [both(net.subnets), f"gateway {both(net.gateways)}", f"bridge {net.bridge}"]
    details += ["internal"] if net.internal else ["nat"] if net.nat else []
    if net.mtu is not None:
        details.append(f"mtu {net.mtu}")
    return details


def both(items: Iterable[object]) -> str:
    """A dual-stack network's or endpoint's subnets, gateways or addresses: ``10.0.0.2/24 fd00::2/64``."""
    return " ".join(str(item) for item in items)


def endpoint_name(endpoint: Endpoint) -> str:
    return f"{endpoint.network.lab.name_of(endpoint.namespace)}:{endpoint.interface}"


def endpoint_details(endpoint: Endpoint) -> list[str]:
    lab = endpoint.network.lab
    return [
        f"{both(endpoint.addresses)} on {endpoint.network.name}",
        f"{endpoint.interface} in {endpoint.namespace.name} <-> {endpoint.host_interface} in {side_name(lab)}"
        f" on bridge {endpoint.network.bridge}",
    ]


def lab_details(lab: Lab) -> list[str]:
    details = [f"id {lab.id}"]
    if lab.host_namespace is not None:
        details.append(f"isolated in {lab.host_namespace.name}")
    return details


def pending(lab: Lab) -> str | None:
    """What the next :meth:`~pynetns.lab.lab.Lab.apply` would create, from the declaration alone.

    (Not ``lab.plan()``: planning may look at the firewall, and a view must run nothing on a dry run.)
    """
    if lab.destroyed:
        return None
    networks = sum(not net.applied for net in lab.networks.values())
    endpoints = sum(not endpoint.applied for endpoint in lab.endpoints)
    if not networks and not endpoints:
        return None
    parts = ([count(networks, "network")] if networks else []) + ([count(endpoints, "endpoint")] if endpoints else [])
    return f"to apply: {', '.join(parts)} (lab.explain() shows the commands)"


def namespace_rows(lab: Lab, snapshot: LabSnapshot) -> list[tuple[str, str, list[str], list[str], str | None]]:
    """(user name, kernel name, interface lines, route lines, note) per namespace."""
    rows = []
    for name, namespace in lab.namespaces.items():
        seen = snapshot.namespace(name)
        if seen.inspected:
            interfaces = [f"{item.name} {state(item)} {addresses(item)}".rstrip() for item in seen.interfaces]
        else:
            interfaces = [
                f"{ep.interface} {both(ep.addresses)} (declared)" for ep in lab.endpoints if ep.namespace is namespace
            ]
        rows.append((name, namespace.name, interfaces, [str(route) for route in seen.routes], seen.note))
    return rows


def pair_rows(lab: Lab, snapshot: LabSnapshot) -> list[list[str]]:
    """Per endpoint: inside end, address, host end, bridge (network), and both states when known."""
    rows = []
    for ep in lab.endpoints:
        seen = snapshot.namespace(lab.name_of(ep.namespace))
        inside = end_state(seen, ep.interface) if seen.inspected else ""
        outside = end_state(snapshot.side, ep.host_interface) if snapshot.side.inspected else ""
        rows.append(
            [
                endpoint_name(ep),
                both(ep.addresses),
                ep.host_interface,
                f"{ep.network.bridge} ({ep.network.name})",
                inside,
                outside,
            ]
        )
    return rows


# -- text building blocks ------------------------------------------------------


def _columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows of cells aligned in columns, trailing spaces removed."""
    widths = [max(len(row[i]) if i < len(row) else 0 for row in rows) for i in range(max(map(len, rows), default=0))]
    return [(indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))).rstrip() for row in rows]


def _title(kind: str, name: str, details: Sequence[str], note: str | None) -> str:
    text = f"{kind} {name}"
    if details:
        text += " " + ", ".join(details)
    return f"{text}: {note}" if note else text


def _seen_text(seen: Seen, indent: str = "  ") -> list[str]:
    lines = [f"{indent}{item}" for item in seen.interfaces]
    if seen.routes:
        lines.append(f"{indent}routes:")
        lines += [f"{indent}  {route}" for route in seen.routes]
    return lines


# -- the objects -------------------------------------------------------------------


def render_namespace(namespace: Namespace, snapshot: NamespaceSnapshot) -> str:
    """Interfaces like ``ip -br addr``, then routes, then the processes running in it."""
    seen = snapshot.seen
    lines = [_title("Namespace", namespace.name, [f"({', '.join(namespace_details(namespace, snapshot))})"], seen.note)]
    lines += _seen_text(seen)
    lines += [f"  process {process.pid}: {' '.join(process.argv)}" for process in snapshot.running]
    return "\n".join(lines)


def render_bridge(bridge: Bridge, snapshot: BridgeSnapshot) -> str:
    """The bridge as the kernel shows it, then its ports."""
    seen = snapshot.seen
    if isinstance(seen, str):
        return _title("Bridge", bridge.name, bridge_details(bridge), seen)
    ports = ", ".join(f"{port.name} {port.state}" for port in snapshot.ports) or "none"
    return "\n".join([_title("Bridge", bridge.name, bridge_details(bridge), None), f"  {seen}", f"  ports: {ports}"])


def render_veth(veth: Veth, snapshot: VethSnapshot) -> str:
    """Both ends, each in its namespace, with state and addresses."""
    note = snapshot.note
    lines = [_title("Veth", veth.name, veth_details(veth), note)]
    if note is None:
        declared = {veth.name: veth.address, veth.peer: veth.peer_address}
        for _, name, namespace, seen in snapshot.ends:
            if isinstance(seen, str):
                lines.append(f"  [{namespace}] {name}: {seen}")
            else:
                wanted = "" if declared[name] is None else f"  (declared {declared[name]})"
                lines.append(f"  [{namespace}] {seen}{wanted}")
    return "\n".join(lines)


def render_portmap(portmap: PortMap, counters: str) -> str:
    """The mapping and its counters (packets and bytes DNATed so far)."""
    return f"PortMap {portmap} in {where(portmap.namespace)}: {counters}"


def render_masquerade(masquerade: Masquerade, note: str | None) -> str:
    return f"Masquerade {masquerade.subnet} ! -o {masquerade.bridge} in {where(masquerade.namespace)}: " + (
        note or "active"
    )


def render_network(net: Network, side: Seen) -> str:
    """The network's bridge, then each endpoint with the state of its host end."""
    lines = [_title("Network", net.name, network_details(net), side.note or f"bridge {end_state(side, net.bridge)}")]
    rows = [
        [
            endpoint_name(ep),
            both(ep.addresses),
            "<->",
            ep.host_interface,
            "" if not side.inspected else end_state(side, ep.host_interface),
        ]
        for ep in net.endpoints
    ]
    return "\n".join(lines + _columns(rows))


def render_endpoint(endpoint: Endpoint, snapshot: EndpointSnapshot) -> str:
    """Where each end of the endpoint's veth sits, and its state."""
    inside, outside = snapshot.inside, snapshot.outside
    note = inside if inside == outside and inside in (DRY_RUN, NOT_CREATED) else None
    lines = [_title("Endpoint", endpoint_name(endpoint), endpoint_details(endpoint), note)]
    if note is None:
        lines += _columns([[endpoint.interface, inside], [endpoint.host_interface, outside]])
    return "\n".join(lines)


def render_lab(lab: Lab, snapshot: LabSnapshot) -> str:
    """Networks, namespaces with their interfaces and routes, veth pairs, published ports, what is to apply."""
    lines = [_title("Lab", lab.name, [f"({', '.join(lab_details(lab))})"], snapshot.note)]
    if lab.networks:
        lines.append("networks:")
        rows = []
        for net in lab.networks.values():
            details = network_details(net)
            row = [net.name, *details[:3], " ".join(details[3:])]
            if snapshot.side.inspected:
                row.append(end_state(snapshot.side, net.bridge))
            rows.append(row)
        lines += _columns(rows)
    if lab.namespaces:
        lines.append("namespaces:")
        for name, kernel, interfaces, routes, note in namespace_rows(lab, snapshot):
            lines.append(f"  {name} ({kernel})" + (f": {note}" if note and note != snapshot.note else ""))
            lines += [f"    {item}" for item in interfaces]
            lines += [f"    route {route}" for route in routes]
    if lab.endpoints:
        lines.append("veth pairs:")
        for inside, address, host_end, bridge, inside_state, outside_state in pair_rows(lab, snapshot):
            states = f"  [{inside_state or '?'} / {outside_state or '?'}]" if inside_state or outside_state else ""
            lines.append(f"  {inside} {address}  <->  {host_end} on bridge {bridge}, in {side_name(lab)}{states}")
    ports = published(lab)
    if ports:
        lines.append("published:")
        lines += _columns([[str(portmap), found] for portmap, found in zip(ports, snapshot.counters, strict=True)])
    to_apply = pending(lab)
    if to_apply:
        lines.append(to_apply)
    return "\n".join(lines)


def render_partition(partition: Partition) -> str:
    """The groups the partition treats alike, then who reaches whom (``x``: that direction is cut)."""
    if not partition.members:
        return f"Partition {partition.shape}: nothing cut"
    lines = [f"Partition {partition.shape} ({', '.join(partition_details(partition)[1:])})"]
    lines.append("groups: " + " | ".join(" ".join(group) for group in partition.groups))
    lines += _columns(partition_matrix(partition))
    lines.append("cut: " + (", ".join(f"{source} -> {destination}" for source, destination in partition.cut) or "none"))
    return "\n".join(lines)
