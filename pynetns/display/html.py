"""Notebook HTML of an object, from its declaration and a snapshot: no I/O.

>>> from pynetns import Host, Namespace
>>> from pynetns.display.snapshot import NamespaceSnapshot, Seen
>>> page = render_namespace(Namespace("web", host=Host(dry_run=True)), NamespaceSnapshot(Seen(note="not created"), ()))
>>> "<code>web</code>" in page and "(not created)" in page
True
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .snapshot import BridgeSnapshot, EndpointSnapshot, LabSnapshot, NamespaceSnapshot, Seen, VethSnapshot, published
from .text import (
    both,
    bridge_details,
    end_state,
    endpoint_details,
    endpoint_name,
    lab_details,
    namespace_details,
    namespace_rows,
    network_details,
    pair_rows,
    partition_details,
    partition_matrix,
    peer,
    pending,
    side_name,
    state,
    veth_details,
    where,
)

if TYPE_CHECKING:
    from ..firewall import Masquerade, PortMap
    from ..lab import Endpoint, Lab, Network, Partition
    from ..links import Bridge, Veth
    from ..namespace import Namespace
    from ..reports import Interface, RouteEntry

__all__ = [
    "BOX",
    "note",
    "pre",
    "render_bridge",
    "render_endpoint",
    "render_lab",
    "render_masquerade",
    "render_namespace",
    "render_network",
    "render_partition",
    "render_portmap",
    "render_veth",
    "topology",
]

BOX = "font-family:inherit;line-height:1.4;margin:2px 0"
_CELL = "text-align:left;padding:1px 8px;vertical-align:top;border-bottom:1px solid rgba(127,127,127,.35)"
_HEAD = _CELL + ";font-weight:bold"
_TABLE = "border-collapse:collapse;margin:2px 0 6px 0;font-size:inherit"
_MUTED = "opacity:.7;font-style:italic"


# -- building blocks -------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def note(text: str) -> str:
    """``text`` muted and in italics."""
    return f'<span style="{_MUTED}">{_e(text)}</span>'


def pre(text: str) -> str:
    """``text`` as a preformatted block."""
    return f'<pre style="text-align:left;margin:2px 0;white-space:pre-wrap">{_e(text)}</pre>'


def _lines(items: Iterable[str]) -> str:
    """Pre-escaped HTML fragments, one per line."""
    return "".join(f"<div>{item}</div>" for item in items)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; ``rows`` hold pre-escaped HTML cells."""
    head = "".join(f'<th style="{_HEAD}">{_e(title)}</th>' for title in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{cell}</td>' for cell in row) + "</tr>" for row in rows)
    return f'<table style="{_TABLE}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(title: str, body: str) -> str:
    return f'<div style="margin-top:4px"><b>{_e(title)}</b></div>{body}'


def _box(kind: str, name: str, details: Sequence[str], remark: str | None, body: str = "") -> str:
    """The frame of every view: a title line (kind, name, details, remark), then the body."""
    title = f"<b>{_e(kind)}</b> {_code(name)}"
    if details:
        title += " " + _e(" · ".join(details))
    if remark:
        title += " " + note(f"({remark})")
    return f'<div style="{BOX}"><div>{title}</div>{body}</div>'


def _interfaces(items: Sequence[Interface]) -> str:
    rows = [
        [
            _code(item.name),
            _e(state(item)),
            _lines(_e(a) for a in item.addresses),
            _e(item.mac or ""),
            _e(item.mtu),
            _e(item.kind),
            _e(peer(item)),
        ]
        for item in items
    ]
    return _table(["interface", "state", "addresses", "mac", "mtu", "kind", "link"], rows)


def _routes(routes: Sequence[RouteEntry]) -> str:
    if not routes:
        return note("no routes")
    return _table(["route"], [[_code(route)] for route in routes])


def _counters(counters: str) -> str:
    return _e(counters) if counters[:1].isdigit() else note(counters)


# -- the objects -------------------------------------------------------------------


def render_namespace(namespace: Namespace, snapshot: NamespaceSnapshot) -> str:
    """A table of interfaces with addresses and state, and one of routes."""
    seen = snapshot.seen
    body = _interfaces(seen.interfaces) + _routes(seen.routes) if seen.inspected else ""
    return _box("Namespace", namespace.name, namespace_details(namespace, snapshot), seen.note, body)


def render_bridge(bridge: Bridge, snapshot: BridgeSnapshot) -> str:
    seen = snapshot.seen
    if isinstance(seen, str):
        return _box("Bridge", bridge.name, bridge_details(bridge), seen)
    ports = _interfaces(snapshot.ports) if snapshot.ports else note("none")
    return _box("Bridge", bridge.name, bridge_details(bridge), None, _interfaces([seen]) + _section("ports", ports))


def render_veth(veth: Veth, snapshot: VethSnapshot) -> str:
    declared = {veth.name: veth.address, veth.peer: veth.peer_address}
    rows = []
    for role, name, namespace, seen in snapshot.ends:
        wanted = "" if declared[name] is None else _e(declared[name])
        if isinstance(seen, str):
            rows.append([_e(role), _code(name), _e(namespace), wanted, note(seen), "", ""])
        else:
            rows.append(
                [
                    _e(role),
                    _code(name),
                    _e(namespace),
                    wanted,
                    _e(state(seen)),
                    _lines(_e(a) for a in seen.addresses),
                    _e(seen.mac or ""),
                ]
            )
    body = _table(["", "interface", "namespace", "declared", "state", "addresses", "mac"], rows)
    return _box("Veth", veth.name, veth_details(veth), snapshot.note, body)


def render_portmap(portmap: PortMap, counters: str) -> str:
    body = _table(
        ["published", "in", "counters"], [[_code(portmap), _e(where(portmap.namespace)), _counters(counters)]]
    )
    return _box("PortMap", str(portmap), [], None, body)


def render_masquerade(masquerade: Masquerade, remark: str | None) -> str:
    details = [f"not out of {masquerade.bridge}", f"in {where(masquerade.namespace)}"]
    return _box("Masquerade", str(masquerade.subnet), details, remark or "active")


def render_network(net: Network, side: Seen) -> str:
    rows = [
        [
            _code(endpoint_name(ep)),
            _e(both(ep.addresses)),
            _code(ep.host_interface),
            _e(end_state(side, ep.host_interface)) if side.inspected else "",
        ]
        for ep in net.endpoints
    ]
    body = _table(["endpoint", "address", "host end", "state"], rows) if rows else note("no endpoints")
    return _box("Network", net.name, network_details(net), side.note or f"bridge {end_state(side, net.bridge)}", body)


def render_endpoint(endpoint: Endpoint, snapshot: EndpointSnapshot) -> str:
    lab = endpoint.network.lab
    rows = [
        [_e("inside"), _code(endpoint.interface), _e(endpoint.namespace.name), _e(snapshot.inside)],
        [_e("host end"), _code(endpoint.host_interface), _e(side_name(lab)), _e(snapshot.outside)],
    ]
    body = _table(["", "interface", "namespace", "state"], rows)
    details = [*endpoint_details(endpoint)[:1], f"bridge {endpoint.network.bridge}"]
    return _box("Endpoint", endpoint_name(endpoint), details, None, body)


def topology(lab: Lab, snapshot: LabSnapshot) -> str:
    """The networks, namespaces, veth pairs and published ports as tables."""
    parts = []
    if lab.networks:
        rows = []
        for net in lab.networks.values():
            options = ", ".join(network_details(net)[3:])
            bridge = end_state(snapshot.side, net.bridge) if snapshot.side.inspected else ""
            rows.append(
                [
                    _code(net.name),
                    _e(both(net.subnets)),
                    _e(both(net.gateways)),
                    _code(net.bridge),
                    _e(options),
                    _e(bridge),
                ]
            )
        header = ["network", "subnet", "gateway", "bridge", "options", "state"]
        parts.append(_section("networks", _table(header, rows)))
    if lab.namespaces:
        rows = []
        for name, kernel, interfaces, routes, remark in namespace_rows(lab, snapshot):
            shown = _lines(_code(item) for item in interfaces)
            if remark and remark != snapshot.note:
                shown += note(remark)
            rows.append([_code(name), _code(kernel), shown, _lines(_code(route) for route in routes)])
        parts.append(_section("namespaces", _table(["namespace", "kernel name", "interfaces", "routes"], rows)))
    if lab.endpoints:
        side = "host end" if lab.host_namespace is None else f"end in {lab.host_namespace.name}"
        rows = [
            [_code(row[0]), _e(row[1]), _code(row[2]), _e(row[3]), _e(row[4]), _e(row[5])]
            for row in pair_rows(lab, snapshot)
        ]
        header = ["inside", "address", side, "bridge", "inside state", "host end state"]
        parts.append(_section("veth pairs", _table(header, rows)))
    ports = published(lab)
    if ports:
        rows = [[_code(portmap), _counters(found)] for portmap, found in zip(ports, snapshot.counters, strict=True)]
        parts.append(_section("published", _table(["port map", "counters"], rows)))
    return "".join(parts)


def render_lab(lab: Lab, snapshot: LabSnapshot) -> str:
    body = topology(lab, snapshot)
    to_apply = pending(lab)
    if to_apply:
        body += f"<div>{note(to_apply)}</div>"
    return _box("Lab", lab.name, lab_details(lab), snapshot.note, body)


def render_partition(partition: Partition) -> str:
    """The groups, then a matrix of who reaches whom (a cut direction marked ✗), then the cut directions."""
    details = partition_details(partition)[1:]
    if not partition.members:
        return _box("Partition", partition.shape, details, "nothing cut")
    groups = _lines(f"group {number}: " + " ".join(_code(member) for member in group)
                    for number, group in enumerate(partition.groups, 1))  # fmt: skip
    header, *rows = partition_matrix(partition)
    marks = {"x": '<span style="color:#c0392b">✗</span>', "·": '<span style="opacity:.6">✓</span>', "-": ""}
    matrix = _table(header, ([_code(row[0]), *(marks[cell] for cell in row[1:])] for row in rows))
    cut = _lines(f"{_code(source)} → {_code(destination)}" for source, destination in partition.cut) or note("none")
    body = _section("groups", groups) + _section("who reaches whom (row: from, column: to)", matrix)
    return _box("Partition", partition.shape, details, None, body + _section("cut", cut))
