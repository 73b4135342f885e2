"""Rich displays: notebook HTML, multi-line terminal text, and a lab's topology as a picture.

Each object is shown as declared and, when it is live, as the kernel sees it:
interfaces with their addresses and state, routes, port-map counters, which
veth end sits where. A view never raises: an object not created yet (or
deleted) is shown as declared with a note, and on ``Host(dry_run=True)`` no
command runs to inspect it.

>>> from pynetns import Host
>>> from pynetns.lab.lab import Lab
>>> host = Host(dry_run=True)
>>> lab = Lab("demo", host=host)
>>> web = lab.namespace("web", networks=[lab.network("front", subnet="10.20.0.0/24")])
>>> print(text_lab(lab))  # doctest: +ELLIPSIS
Lab demo (id ...): dry run: not inspected
networks:
  front  10.20.0.0/24  gateway 10.20.0.1/24  bridge pn...b1  nat
namespaces:
  web (pn...-web)
    eth0 10.20.0.2/24 (declared)
veth pairs:
  web:eth0 10.20.0.2/24  <->  pn...v2 on bridge pn...b1 (front), in the host
to apply: 1 network, 1 endpoint (lab.explain() shows the commands)
>>> print(diagram(lab).dot)  # doctest: +ELLIPSIS
graph "demo" {
...
  br0 -- ns0_0 [label="pn...v2 ↔ eth0"];
}
>>> host.history
[]
"""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ..errors import BackendUnavailable, NotFound
from ..firewall.nat import Masquerade, PortMap
from ..lab.lab import Lab
from ..lab.model import Endpoint, Network
from ..links import Bridge, Veth
from ..namespace import Namespace
from ..runner import Commands, LocalRunner, Runner, commands
from ..views import register, register_view

if TYPE_CHECKING:
    from ..reports import Interface
    from ..routes import Route

__all__ = [
    "Commands",
    "Diagram",
    "commands",
    "diagram",
    "html_bridge",
    "html_endpoint",
    "html_lab",
    "html_masquerade",
    "html_namespace",
    "html_network",
    "html_portmap",
    "html_veth",
    "text_bridge",
    "text_endpoint",
    "text_lab",
    "text_masquerade",
    "text_namespace",
    "text_network",
    "text_portmap",
    "text_veth",
]

log = logging.getLogger(__name__)

DRY_RUN = "dry run: not inspected"
NOT_CREATED = "not created"

_T = TypeVar("_T")


# -- never raise -------------------------------------------------------------


def _short_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


def _never_raises(render: Callable[[_T], str]) -> Callable[[_T], str]:
    """A view that shows its object's repr and the error instead of raising (a bug, or a very odd kernel)."""

    @functools.wraps(render)
    def guarded(obj: _T) -> str:
        try:
            return render(obj)
        except Exception as error:
            log.debug("could not display %s", _short_repr(obj), exc_info=True)
            text = f"{_short_repr(obj)}\n(could not display: {type(error).__name__}: {error})"
            return _pre(text) if render.__name__.startswith("html") else text

    return guarded


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _failed(error: Exception) -> str:
    return f"not inspected: {_first_line(error)}"


# -- what the kernel shows -----------------------------------------------------


@attrs.frozen
class _Seen:
    """What the kernel showed of one namespace, or (``note``) why it was not looked at."""

    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    note: str | None = None

    @property
    def inspected(self) -> bool:
        return self.note is None

    def interface(self, name: str) -> Interface | None:
        return next((item for item in self.interfaces if item.name == name), None)


def _why(namespace: Namespace, error: Exception) -> str:
    """Inspecting ``namespace`` failed: because it does not exist, or for the error's reason."""
    try:
        if not namespace.exists():
            return NOT_CREATED
    except Exception:
        log.debug("could not tell whether %r exists", namespace, exc_info=True)
    return _failed(error)


def _look(namespace: Namespace, *, routes: bool = True, exists: bool | None = None) -> _Seen:
    """Interfaces (and routes) of ``namespace``; on a dry run or when it is known not to exist, only a note."""
    if namespace.host.dry_run:
        return _Seen(note=DRY_RUN)
    if exists is False:
        return _Seen(note=NOT_CREATED)
    try:
        interfaces = tuple(namespace.interfaces())
        found: tuple[Route, ...] = ()
        if routes:
            found = tuple(namespace.routes(4))
            if any(address.version == 6 and not address.is_link_local and not address.is_loopback
                   for item in interfaces for address in item.addresses):
                found += tuple(namespace.routes(6))
    except Exception as error:
        return _Seen(note=_why(namespace, error))
    return _Seen(interfaces, found)


def _interface(namespace: Namespace, name: str) -> Interface | str:
    """One interface as the kernel shows it, or a note saying why not."""
    if namespace.host.dry_run:
        return DRY_RUN
    try:
        return namespace.interface(name)
    except NotFound:
        return NOT_CREATED
    except Exception as error:
        return _why(namespace, error)


def _where(namespace: Namespace | None) -> str:
    return "host" if namespace is None else namespace.name


def _state(item: Interface) -> str:
    return item.state if item.up else f"{item.state} (admin down)"


def _addresses(item: Interface) -> str:
    return " ".join(str(address) for address in item.addresses)


def _peer(item: Interface) -> str:
    parts = []
    if item.master:
        parts.append(f"master {item.master}")
    if item.peer_index is not None:
        where = "" if item.link_netnsid is None else f" (netnsid {item.link_netnsid})"
        parts.append(f"peer if{item.peer_index}{where}")
    return ", ".join(parts)


# -- HTML building blocks ------------------------------------------------------

_BOX = "font-family:inherit;line-height:1.4;margin:2px 0"
_CELL = "text-align:left;padding:1px 8px;vertical-align:top;border-bottom:1px solid rgba(127,127,127,.35)"
_HEAD = _CELL + ";font-weight:bold"
_TABLE = "border-collapse:collapse;margin:2px 0 6px 0;font-size:inherit"
_MUTED = "opacity:.7;font-style:italic"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _code(value: object) -> str:
    return f"<code>{_e(value)}</code>"


def _note(text: str) -> str:
    return f'<span style="{_MUTED}">{_e(text)}</span>'


def _pre(text: str) -> str:
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


def _box(kind: str, name: str, details: Sequence[str], note: str | None, body: str = "") -> str:
    """The frame of every view: a title line (kind, name, details, note), then the body."""
    title = f"<b>{_e(kind)}</b> {_code(name)}"
    if details:
        title += " " + _e(" · ".join(details))
    if note:
        title += " " + _note(f"({note})")
    return f'<div style="{_BOX}"><div>{title}</div>{body}</div>'


def _interfaces_html(items: Sequence[Interface]) -> str:
    rows = [[_code(item.name), _e(_state(item)), _lines(_e(a) for a in item.addresses), _e(item.mac or ""),
             _e(item.mtu), _e(item.kind), _e(_peer(item))] for item in items]
    return _table(["interface", "state", "addresses", "mac", "mtu", "kind", "link"], rows)


def _routes_html(routes: Sequence[Route]) -> str:
    if not routes:
        return _note("no routes")
    return _table(["route"], [[_code(route)] for route in routes])


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


def _seen_text(seen: _Seen, indent: str = "  ") -> list[str]:
    lines = [f"{indent}{item}" for item in seen.interfaces]
    if seen.routes:
        lines.append(f"{indent}routes:")
        lines += [f"{indent}  {route}" for route in seen.routes]
    return lines


# -- namespaces ------------------------------------------------------------------


def _namespace_details(namespace: Namespace) -> list[str]:
    running = [process for process in namespace.processes if process.alive()]
    details: list[str] = [namespace.ref.kind]
    if running:
        details.append(f"{len(running)} process{'es' if len(running) > 1 else ''} running")
    return details


@_never_raises
def text_namespace(namespace: Namespace) -> str:
    """Interfaces like ``ip -br addr``, then routes; ``dry run: not inspected`` on a dry run."""
    seen = _look(namespace)
    lines = [_title("Namespace", namespace.name, [f"({', '.join(_namespace_details(namespace))})"], seen.note)]
    lines += _seen_text(seen)
    lines += [f"  process {process.pid}: {' '.join(process.argv)}" for process in namespace.processes
              if process.alive()]
    return "\n".join(lines)


@_never_raises
def html_namespace(namespace: Namespace) -> str:
    """A table of interfaces with addresses and state, and one of routes."""
    seen = _look(namespace)
    body = ""
    if seen.inspected:
        body = _interfaces_html(seen.interfaces) + _routes_html(seen.routes)
    return _box("Namespace", namespace.name, _namespace_details(namespace), seen.note, body)


# -- bridges and veth pairs ----------------------------------------------------


def _bridge_details(bridge: Bridge) -> list[str]:
    details = [f"in {_where(bridge.namespace)}"]
    if bridge.address is not None:
        details.append(f"address {bridge.address}")
    if bridge.mtu is not None:
        details.append(f"mtu {bridge.mtu}")
    return details


def _bridge_seen(bridge: Bridge) -> tuple[Interface | str, list[Interface]]:
    seen = _interface(bridge._in(bridge.namespace), bridge.name)
    ports: list[Interface] = []
    if not isinstance(seen, str):
        try:
            ports = bridge.ports()
        except Exception:
            log.debug("could not list the ports of %s", bridge.name, exc_info=True)
    return seen, ports


@_never_raises
def text_bridge(bridge: Bridge) -> str:
    """The bridge as the kernel shows it, then its ports."""
    seen, ports = _bridge_seen(bridge)
    note = seen if isinstance(seen, str) else None
    lines = [_title("Bridge", bridge.name, _bridge_details(bridge), note)]
    if not isinstance(seen, str):
        lines.append(f"  {seen}")
        lines.append("  ports: " + (", ".join(f"{port.name} {port.state}" for port in ports) or "none"))
    return "\n".join(lines)


@_never_raises
def html_bridge(bridge: Bridge) -> str:
    seen, ports = _bridge_seen(bridge)
    if isinstance(seen, str):
        return _box("Bridge", bridge.name, _bridge_details(bridge), seen)
    body = _interfaces_html([seen]) + _section("ports", _interfaces_html(ports) if ports else _note("none"))
    return _box("Bridge", bridge.name, _bridge_details(bridge), None, body)


def _veth_ends(veth: Veth) -> list[tuple[str, str, str, Interface | str]]:
    """(role, interface, namespace, kernel view or note) for both ends."""
    ends = [("end", veth.name, veth.namespace), ("peer", veth.peer, veth.peer_namespace)]
    return [(role, name, _where(namespace), _interface(veth._in(namespace), name)) for role, name, namespace in ends]


def _veth_details(veth: Veth) -> list[str]:
    details = [f"in {_where(veth.namespace)} <-> {veth.peer} in {_where(veth.peer_namespace)}"]
    if veth.master is not None:
        details.append(f"on bridge {veth.master}")
    return details


def _veth_note(ends: Sequence[tuple[str, str, str, Interface | str]]) -> str | None:
    notes = {seen for *_, seen in ends if isinstance(seen, str)}
    return notes.pop() if len(notes) == 1 and len(ends) == sum(isinstance(seen, str) for *_, seen in ends) else None


@_never_raises
def text_veth(veth: Veth) -> str:
    """Both ends, each in its namespace, with state and addresses."""
    ends = _veth_ends(veth)
    note = _veth_note(ends)
    lines = [_title("Veth", veth.name, _veth_details(veth), note)]
    if note is None:
        declared = {veth.name: veth.address, veth.peer: veth.peer_address}
        for _, name, where, seen in ends:
            if isinstance(seen, str):
                lines.append(f"  [{where}] {name}: {seen}")
            else:
                wanted = "" if declared[name] is None else f"  (declared {declared[name]})"
                lines.append(f"  [{where}] {seen}{wanted}")
    return "\n".join(lines)


@_never_raises
def html_veth(veth: Veth) -> str:
    ends = _veth_ends(veth)
    note = _veth_note(ends)
    declared = {veth.name: veth.address, veth.peer: veth.peer_address}
    rows = []
    for role, name, where, seen in ends:
        wanted = "" if declared[name] is None else _e(declared[name])
        if isinstance(seen, str):
            rows.append([_e(role), _code(name), _e(where), wanted, _note(seen), "", ""])
        else:
            rows.append([_e(role), _code(name), _e(where), wanted, _e(_state(seen)), _lines(_e(a) for a in
                         seen.addresses), _e(seen.mac or "")])
    body = _table(["", "interface", "namespace", "declared", "state", "addresses", "mac"], rows)
    return _box("Veth", veth.name, _veth_details(veth), note, body)


# -- firewall objects ----------------------------------------------------------


def _firewall_note(item: PortMap | Masquerade) -> str | None:
    if item.host.dry_run:
        return DRY_RUN
    try:
        return None if item.exists() else NOT_CREATED
    except Exception as error:
        return _failed(error) if item.namespace is None else _why(item.namespace, error)


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


def _counters(portmap: PortMap) -> str:
    """``3 packets, 180 bytes``, or why not."""
    note = _firewall_note(portmap)
    if note is not None:
        return note
    try:
        counters = portmap.counters()
    except Exception as error:
        return _failed(error)
    return f"{_count(counters.packets, 'packet')}, {_count(counters.bytes, 'byte')}"


@_never_raises
def text_portmap(portmap: PortMap) -> str:
    """The mapping and its counters (packets and bytes DNATed so far)."""
    return f"PortMap {portmap} in {_where(portmap.namespace)}: {_counters(portmap)}"


@_never_raises
def html_portmap(portmap: PortMap) -> str:
    counters = _counters(portmap)
    shown = _e(counters) if counters[0].isdigit() else _note(counters)
    body = _table(["published", "in", "counters"], [[_code(portmap), _e(_where(portmap.namespace)), shown]])
    return _box("PortMap", str(portmap), [], None, body)


@_never_raises
def text_masquerade(masquerade: Masquerade) -> str:
    return f"Masquerade {masquerade.subnet} ! -o {masquerade.bridge} in {_where(masquerade.namespace)}: " + (
        _firewall_note(masquerade) or "active")


@_never_raises
def html_masquerade(masquerade: Masquerade) -> str:
    details = [f"not out of {masquerade.bridge}", f"in {_where(masquerade.namespace)}"]
    return _box("Masquerade", str(masquerade.subnet), details, _firewall_note(masquerade) or "active")


# -- labs: networks, endpoints, the whole --------------------------------------


def _published(lab: Lab) -> list[PortMap]:
    return list(getattr(lab, "published", None) or [])


def _side(lab: Lab) -> Namespace:
    """The namespace holding the lab's bridges and the host ends of its veths."""
    from ..namespace import Namespace

    return lab.host_namespace if lab.host_namespace is not None else Namespace.host(lab.host)


def _side_name(lab: Lab) -> str:
    return "the host" if lab.host_namespace is None else f"host namespace {lab.host_namespace.name}"


def _user_name(lab: Lab, namespace: Namespace) -> str:
    return lab.name_of(namespace)


def _network_details(net: Network) -> list[str]:
    details = [str(net.subnet), f"gateway {net.gateway}", f"bridge {net.bridge}"]
    details += ["internal"] if net.internal else ["nat"] if net.nat else []
    if net.mtu is not None:
        details.append(f"mtu {net.mtu}")
    return details


@attrs.frozen
class _LabState:
    """A lab as the kernel shows it: its host side, each namespace by user name, each published port's counters."""

    note: str | None
    side: _Seen
    namespaces: dict[str, _Seen]
    counters: tuple[str, ...]


def _inspect_lab(lab: Lab) -> _LabState:
    published = _published(lab)
    if lab.host.dry_run:
        seen = _Seen(note=DRY_RUN)
        return _LabState(DRY_RUN, seen, dict.fromkeys(lab.namespaces, seen), (DRY_RUN,) * len(published))
    from ..namespace import Namespace

    existing: set[str] | None
    try:
        existing = {item.name for item in Namespace.list(lab.host)}
    except Exception:
        log.debug("could not list namespaces", exc_info=True)
        existing = None

    def known(namespace: Namespace) -> bool | None:
        return None if existing is None else namespace.name in existing

    applied = any(net.applied for net in lab.networks.values())
    side = _Seen(note=NOT_CREATED)
    if lab.host_namespace is not None and known(lab.host_namespace) is not False:
        side = _look(lab.host_namespace, routes=False, exists=known(lab.host_namespace))
    elif lab.host_namespace is None and applied:
        side = _look(_side(lab), routes=False)
    namespaces = {name: _look(namespace, exists=known(namespace)) for name, namespace in lab.namespaces.items()}
    live = (side.inspected and applied) or any(seen.inspected for seen in namespaces.values())
    note = None if live else "destroyed" if _destroyed(lab) else NOT_CREATED
    if note is None and (lab.host_namespace is None or side.inspected):
        counters = tuple(_counters(portmap) for portmap in published)
    else:
        counters = (note or side.note or NOT_CREATED,) * len(published)
    return _LabState(note, side, namespaces, counters)


def _destroyed(lab: Lab) -> bool:
    return lab.destroyed


def _pending(lab: Lab) -> str | None:
    """What the next :meth:`~pynetns.lab.lab.Lab.apply` would create, from the declaration alone.

    (Not ``lab.plan()``: planning may look at the firewall, and a view must run nothing on a dry run.)
    """
    if _destroyed(lab):
        return None
    networks = sum(not net.applied for net in lab.networks.values())
    endpoints = sum(not endpoint.applied for endpoint in lab.endpoints)
    if not networks and not endpoints:
        return None
    parts = ([_count(networks, "network")] if networks else []) + ([_count(endpoints, "endpoint")] if endpoints else [])
    return f"to apply: {', '.join(parts)} (lab.explain() shows the commands)"


def _lab_details(lab: Lab) -> list[str]:
    details = [f"id {lab.id}"]
    if lab.host_namespace is not None:
        details.append(f"isolated in {lab.host_namespace.name}")
    return details


def _end_state(seen: _Seen, name: str) -> str:
    """``UP``, or why the state is not known."""
    if not seen.inspected:
        return seen.note or ""
    item = seen.interface(name)
    return "missing" if item is None else _state(item)


@_never_raises
def text_network(net: Network) -> str:
    """The network's bridge, then each endpoint with the state of its host end."""
    lab = net.lab
    side = _look(_side(lab), routes=False) if net.applied else _Seen(note=DRY_RUN if lab.host.dry_run else NOT_CREATED)
    bridge = _end_state(side, net.bridge)
    lines = [_title("Network", net.name, _network_details(net), side.note or f"bridge {bridge}")]
    rows = [[f"{_user_name(lab, ep.namespace)}:{ep.interface}", str(ep.ip), "<->", ep.host_interface,
             "" if not side.inspected else _end_state(side, ep.host_interface)] for ep in net.endpoints]
    return "\n".join(lines + _columns(rows))


@_never_raises
def html_network(net: Network) -> str:
    lab = net.lab
    side = _look(_side(lab), routes=False) if net.applied else _Seen(note=DRY_RUN if lab.host.dry_run else NOT_CREATED)
    rows = [[_code(f"{_user_name(lab, ep.namespace)}:{ep.interface}"), _e(ep.ip), _code(ep.host_interface),
             _e(_end_state(side, ep.host_interface)) if side.inspected else ""] for ep in net.endpoints]
    body = _table(["endpoint", "address", "host end", "state"], rows) if rows else _note("no endpoints")
    note = side.note or f"bridge {_end_state(side, net.bridge)}"
    return _box("Network", net.name, _network_details(net), note, body)


def _endpoint_states(endpoint: Endpoint) -> tuple[str, str]:
    """The state of the inside end and of the host end."""
    host = endpoint.network.lab.host
    if host.dry_run:
        return DRY_RUN, DRY_RUN
    if not endpoint.applied:
        return NOT_CREATED, NOT_CREATED
    ends = (_interface(endpoint.namespace, endpoint.interface),
            _interface(_side(endpoint.network.lab), endpoint.host_interface))
    inside, outside = (seen if isinstance(seen, str) else f"{_state(seen)} {_addresses(seen)}".strip()
                       for seen in ends)
    return inside, outside


def _endpoint_details(endpoint: Endpoint) -> list[str]:
    lab = endpoint.network.lab
    return [f"{endpoint.ip} on {endpoint.network.name}",
            f"{endpoint.interface} in {endpoint.namespace.name} <-> {endpoint.host_interface} in {_side_name(lab)}"
            f" on bridge {endpoint.network.bridge}"]


@_never_raises
def text_endpoint(endpoint: Endpoint) -> str:
    """Where each end of the endpoint's veth sits, and its state."""
    inside, outside = _endpoint_states(endpoint)
    name = f"{_user_name(endpoint.network.lab, endpoint.namespace)}:{endpoint.interface}"
    note = inside if inside == outside and inside in (DRY_RUN, NOT_CREATED) else None
    lines = [_title("Endpoint", name, _endpoint_details(endpoint), note)]
    if note is None:
        lines += _columns([[endpoint.interface, inside], [endpoint.host_interface, outside]])
    return "\n".join(lines)


@_never_raises
def html_endpoint(endpoint: Endpoint) -> str:
    inside, outside = _endpoint_states(endpoint)
    lab = endpoint.network.lab
    rows = [[_e("inside"), _code(endpoint.interface), _e(endpoint.namespace.name), _e(inside)],
            [_e("host end"), _code(endpoint.host_interface), _e(_side_name(lab)), _e(outside)]]
    body = _table(["", "interface", "namespace", "state"], rows)
    name = f"{_user_name(lab, endpoint.namespace)}:{endpoint.interface}"
    return _box("Endpoint", name, [*_endpoint_details(endpoint)[:1], f"bridge {endpoint.network.bridge}"], None, body)


def _namespace_rows(lab: Lab, state: _LabState) -> list[tuple[str, str, list[str], list[str], str | None]]:
    """(user name, kernel name, interface lines, route lines, note) per namespace."""
    rows = []
    for name, namespace in lab.namespaces.items():
        seen = state.namespaces.get(name, _Seen(note=NOT_CREATED))
        if seen.inspected:
            interfaces = [f"{item.name} {_state(item)} {_addresses(item)}".rstrip() for item in seen.interfaces]
        else:
            interfaces = [f"{ep.interface} {ep.ip} (declared)" for ep in lab.endpoints if ep.namespace is namespace]
        rows.append((name, namespace.name, interfaces, [str(route) for route in seen.routes], seen.note))
    return rows


def _pair_rows(lab: Lab, state: _LabState) -> list[list[str]]:
    """Per endpoint: inside end, address, host end, bridge (network), and both states when known."""
    rows = []
    for ep in lab.endpoints:
        seen = state.namespaces.get(_user_name(lab, ep.namespace), _Seen(note=NOT_CREATED))
        inside = _end_state(seen, ep.interface) if seen.inspected else ""
        outside = _end_state(state.side, ep.host_interface) if state.side.inspected else ""
        rows.append([f"{_user_name(lab, ep.namespace)}:{ep.interface}", str(ep.ip), ep.host_interface,
                     f"{ep.network.bridge} ({ep.network.name})", inside, outside])
    return rows


@_never_raises
def text_lab(lab: Lab) -> str:
    """Networks, namespaces with their interfaces and routes, veth pairs, published ports, what is to apply."""
    state = _inspect_lab(lab)
    lines = [_title("Lab", lab.name, [f"({', '.join(_lab_details(lab))})"], state.note)]
    if lab.networks:
        lines.append("networks:")
        rows = []
        for net in lab.networks.values():
            details = _network_details(net)
            row = [net.name, *details[:3], " ".join(details[3:])]
            if state.side.inspected:
                row.append(_end_state(state.side, net.bridge))
            rows.append(row)
        lines += _columns(rows)
    if lab.namespaces:
        lines.append("namespaces:")
        for name, kernel, interfaces, routes, note in _namespace_rows(lab, state):
            lines.append(f"  {name} ({kernel})" + (f": {note}" if note and note != state.note else ""))
            lines += [f"    {item}" for item in interfaces]
            lines += [f"    route {route}" for route in routes]
    if lab.endpoints:
        lines.append("veth pairs:")
        for inside, address, host_end, bridge, inside_state, outside_state in _pair_rows(lab, state):
            states = f"  [{inside_state or '?'} / {outside_state or '?'}]" if inside_state or outside_state else ""
            lines.append(f"  {inside} {address}  <->  {host_end} on bridge {bridge}, in {_side_name(lab)}{states}")
    published = _published(lab)
    if published:
        lines.append("published:")
        lines += _columns([[str(portmap), counters] for portmap, counters in zip(published, state.counters,
                                                                                    strict=True)])
    pending = _pending(lab)
    if pending:
        lines.append(pending)
    return "\n".join(lines)


def _topology_html(lab: Lab, state: _LabState) -> str:
    """The networks, namespaces, veth pairs and published ports as tables."""
    parts = []
    if lab.networks:
        rows = []
        for net in lab.networks.values():
            options = ", ".join(_network_details(net)[3:])
            bridge = _end_state(state.side, net.bridge) if state.side.inspected else ""
            rows.append([_code(net.name), _e(net.subnet), _e(net.gateway), _code(net.bridge), _e(options),
                         _e(bridge)])
        parts.append(_section("networks", _table(["network", "subnet", "gateway", "bridge", "options", "state"],
                                                 rows)))
    if lab.namespaces:
        rows = []
        for name, kernel, interfaces, routes, note in _namespace_rows(lab, state):
            shown = _lines(_code(item) for item in interfaces)
            if note and note != state.note:
                shown += _note(note)
            rows.append([_code(name), _code(kernel), shown, _lines(_code(route) for route in routes)])
        parts.append(_section("namespaces", _table(["namespace", "kernel name", "interfaces", "routes"], rows)))
    if lab.endpoints:
        side = "host end" if lab.host_namespace is None else f"end in {lab.host_namespace.name}"
        rows = [[_code(row[0]), _e(row[1]), _code(row[2]), _e(row[3]), _e(row[4]), _e(row[5])]
                for row in _pair_rows(lab, state)]
        parts.append(_section("veth pairs", _table(["inside", "address", side, "bridge", "inside state",
                                                    "host end state"], rows)))
    published = _published(lab)
    if published:
        rows = [[_code(portmap), _e(counters) if counters[:1].isdigit() else _note(counters)]
                for portmap, counters in zip(published, state.counters, strict=True)]
        parts.append(_section("published", _table(["port map", "counters"], rows)))
    return "".join(parts)


@_never_raises
def html_lab(lab: Lab) -> str:
    state = _inspect_lab(lab)
    body = _topology_html(lab, state)
    pending = _pending(lab)
    if pending:
        body += f"<div>{_note(pending)}</div>"
    return _box("Lab", lab.name, _lab_details(lab), state.note, body)


# -- commands --------------------------------------------------------------------


# -- diagrams --------------------------------------------------------------------


def _q(*lines: object) -> str:
    """A DOT quoted string, one label line per argument."""
    escaped = [str(line).replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
               for line in lines]
    return '"' + "\\n".join(escaped) + '"'


def _dot(lab: Lab, state: _LabState) -> str:
    out = [
        f"graph {_q(lab.name)} {{",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, bgcolor="white"];',
        '  node [fontname="Helvetica", fontsize=10, shape=box, style=rounded];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    published = _published(lab)
    if lab.host_namespace is None:
        host_label = _q("host (root namespace)")
    else:
        host_label = _q(f"host namespace {lab.host_namespace.name}", "(isolated lab)")
    out += ["  subgraph cluster_host {", f"    label={host_label}; style=dashed;"]
    if published:
        out.append(f"    host [label={_q('host')}, shape=box3d, style=solid];")
    bridges = {}
    for index, net in enumerate(lab.networks.values()):
        bridges[net.name] = f"br{index}"
        extra = [_end_state(state.side, net.bridge)] if state.side.inspected else []
        options = ", ".join(_network_details(net)[3:])
        label = _q(f"bridge {net.bridge}", f"{net.name} {net.subnet}", f"gateway {net.gateway}",
                   *([options] if options else []), *extra)
        out.append(f"    br{index} [label={label}, shape=box, style=\"rounded,bold\"];")
    for index, portmap in enumerate(published):
        out.append(f"    pub{index} [label={_q(str(portmap))}, shape=cds, style=solid];")
    out.append("  }")
    nodes: dict[int, str] = {}
    for number, (name, namespace) in enumerate(lab.namespaces.items()):
        seen = state.namespaces.get(name, _Seen(note=NOT_CREATED))
        out += [f"  subgraph cluster_ns{number} {{", f"    label={_q(name, namespace.name)}; style=rounded;"]
        mine = [ep for ep in lab.endpoints if ep.namespace is namespace]
        for position, ep in enumerate(mine):
            node = nodes[id(ep)] = f"ns{number}_{position}"
            extra = [_end_state(seen, ep.interface)] if seen.inspected else []
            out.append(f"    {node} [label={_q(ep.interface, ep.ip, *extra)}, shape=ellipse, style=solid];")
        if not mine:
            out.append(f"    ns{number}_lo [label={_q('lo only', '(no network)')}, shape=plaintext];")
        out.append("  }")
    for ep in lab.endpoints:
        label = _q(f"{ep.host_interface} ↔ {ep.interface}")
        out.append(f"  {bridges[ep.network.name]} -- {nodes[id(ep)]} [label={label}];")
    for index, portmap in enumerate(published):
        target = next((nodes[id(ep)] for ep in lab.endpoints if ep.ip.ip == portmap.address), None)
        if target is None:
            target = f"addr{index}"
            out.append(f"  {target} [label={_q(portmap.address)}, shape=plaintext];")
        out.append(f"  host -- pub{index} [dir=forward];")
        out.append(f"  pub{index} -- {target} [dir=forward, style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


class Diagram:
    """A lab's topology: its DOT source, an SVG drawn by Graphviz's ``dot`` when installed, else HTML tables.

    ``str(diagram)`` is the DOT source; in a notebook it shows as a picture,
    or without Graphviz as tables followed by the DOT source. ``runner`` is
    where ``dot`` runs (the local machine by default).
    """

    def __init__(self, name: str, dot: str, table: str = "", *, runner: Runner | None = None) -> None:
        self.name = name
        self.dot = dot
        self.table = table
        self._runner = runner
        self._svg: str | None = None
        self._drawn = False

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        return f"<Diagram of {self.name}: {self.dot.count(chr(10))} lines of DOT>"

    def svg(self) -> str | None:
        """The picture as SVG (``dot -Tsvg``, once), or None when Graphviz's ``dot`` is not installed.

        A DOT source that ``dot`` rejects raises :class:`~pynetns.errors.CommandError`.
        """
        if not self._drawn:
            runner = self._runner if self._runner is not None else LocalRunner()
            try:
                drawn = runner.run(["dot", "-Tsvg"], input=self.dot, timeout=60).stdout
            except BackendUnavailable:
                log.debug("Graphviz's dot is not installed; no SVG")
                drawn = ""
            self._svg = drawn if "<svg" in drawn else None
            self._drawn = True
        return self._svg

    def _svg_or_none(self) -> str | None:
        try:
            return self.svg()
        except Exception:
            log.debug("dot could not draw %s", self.name, exc_info=True)
            return None

    def _repr_svg_(self) -> str | None:
        return self._svg_or_none()

    def _repr_html_(self) -> str:
        svg = self._svg_or_none()
        if svg is not None:
            return f"<div>{svg[svg.index('<svg'):]}</div>"
        hint = _note("Graphviz's dot is not installed (apt-get install graphviz): no picture, the DOT source below")
        source = f"<details><summary>DOT source</summary>{_pre(self.dot)}</details>"
        return f'<div style="{_BOX}">{self.table}<div>{hint}</div>{source}</div>'

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.dot)


def diagram(lab: Lab, *, runner: Runner | None = None) -> Diagram:
    """The lab's topology: one cluster per namespace, bridges with their gateway, veth edges, published ports.

    Never raises: a lab that cannot be drawn gives a diagram saying why.
    """
    try:
        state = _inspect_lab(lab)
        return Diagram(lab.name, _dot(lab, state), _topology_html(lab, state), runner=runner)
    except Exception as error:
        log.debug("could not draw %s", _short_repr(lab), exc_info=True)
        text = f"could not draw {_short_repr(lab)}: {type(error).__name__}: {error}"
        return Diagram(getattr(lab, "name", "lab"), f"graph {{\n  error [label={_q(text)}, shape=plaintext];\n}}\n",
                       _pre(text), runner=runner)


# -- the objects' rich displays (pynetns.views) ------------------------------------

for _cls, _html, _text in (
    (Namespace, html_namespace, text_namespace),
    (Bridge, html_bridge, text_bridge),
    (Veth, html_veth, text_veth),
    (PortMap, html_portmap, text_portmap),
    (Masquerade, html_masquerade, text_masquerade),
    (Network, html_network, text_network),
    (Endpoint, html_endpoint, text_endpoint),
    (Lab, html_lab, text_lab),
):
    register(_cls, html=_html, text=_text)
register(Commands, html=_pre, text=str)
register_view("diagram", diagram)
