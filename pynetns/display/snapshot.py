"""What the kernel shows of an object, read through the object's Host: the only I/O of :mod:`pynetns.display`.

A snapshot never raises for a missing or unreachable object: it carries a note saying why
it was not looked at (``dry run: not inspected``, ``not created``, ``not inspected: …``).
On a dry-run Host nothing runs at all.

>>> from pynetns import Host, Namespace
>>> namespace_snapshot(Namespace("web", host=Host(dry_run=True))).seen.note
'dry run: not inspected'
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from ..errors import NotFound
from ..namespace import Namespace

if TYPE_CHECKING:
    from ..firewall import Masquerade, PortMap
    from ..host import Host
    from ..lab import Endpoint, Lab, LabLike, Network
    from ..links import Bridge, Veth
    from ..reports import Interface, RouteEntry
    from ..runner import Process

__all__ = [
    "DRY_RUN",
    "NOT_CREATED",
    "BridgeSnapshot",
    "EndpointSnapshot",
    "LabSnapshot",
    "NamespaceSnapshot",
    "Seen",
    "VethSnapshot",
    "bridge_snapshot",
    "counters",
    "endpoint_snapshot",
    "failed",
    "firewall_note",
    "lab_snapshot",
    "look",
    "namespace_snapshot",
    "network_side",
    "published",
    "veth_snapshot",
]

log = logging.getLogger(__name__)

DRY_RUN = "dry run: not inspected"
NOT_CREATED = "not created"


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def failed(error: Exception) -> str:
    """The note for an inspection that failed with ``error``."""
    return f"not inspected: {_first_line(error)}"


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


@attrs.frozen
class Seen:
    """What the kernel showed of one namespace, or (``note``) why it was not looked at."""

    interfaces: tuple[Interface, ...] = ()
    routes: tuple[RouteEntry, ...] = ()
    note: str | None = None

    @property
    def inspected(self) -> bool:
        return self.note is None

    def interface(self, name: str) -> Interface | None:
        return next((item for item in self.interfaces if item.name == name), None)


def _in(namespace: Namespace | None, host: Host) -> Namespace:
    """``namespace``, or the host's own namespace for None."""
    return namespace if namespace is not None else Namespace.host(host)


def _why(namespace: Namespace, error: Exception) -> str:
    """Inspecting ``namespace`` failed: because it does not exist, or for the error's reason."""
    try:
        if not namespace.exists():
            return NOT_CREATED
    except Exception:
        log.debug("could not tell whether %r exists", namespace, exc_info=True)
    return failed(error)


def look(namespace: Namespace, *, routes: bool = True, exists: bool | None = None) -> Seen:
    """Interfaces (and routes) of ``namespace``; on a dry run or when it is known not to exist, only a note."""
    if namespace.host.dry_run:
        return Seen(note=DRY_RUN)
    if exists is False:
        return Seen(note=NOT_CREATED)
    try:
        interfaces = tuple(namespace.interfaces())
        found: tuple[RouteEntry, ...] = ()
        if routes:
            found = tuple(namespace.routes(4))
            if any(
                address.version == 6 and not address.is_link_local and not address.is_loopback
                for item in interfaces
                for address in item.addresses
            ):
                found += tuple(namespace.routes(6))
    except Exception as error:
        return Seen(note=_why(namespace, error))
    return Seen(interfaces, found)


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


# -- namespaces, bridges, veth pairs -------------------------------------------


@attrs.frozen
class NamespaceSnapshot:
    seen: Seen
    running: tuple[Process, ...]


def namespace_snapshot(namespace: Namespace) -> NamespaceSnapshot:
    """Its interfaces and routes, and the processes pynetns started in it that still run."""
    running = tuple(process for process in namespace.processes if process.alive())
    return NamespaceSnapshot(look(namespace), running)


@attrs.frozen
class BridgeSnapshot:
    seen: Interface | str
    ports: tuple[Interface, ...] = ()


def bridge_snapshot(bridge: Bridge) -> BridgeSnapshot:
    """The bridge as the kernel shows it (or why not), and its ports."""
    seen = _interface(_in(bridge.namespace, bridge.host), bridge.name)
    ports: tuple[Interface, ...] = ()
    if not isinstance(seen, str):
        try:
            ports = tuple(bridge.ports())
        except Exception:
            log.debug("could not list the ports of %s", bridge.name, exc_info=True)
    return BridgeSnapshot(seen, ports)


@attrs.frozen
class VethSnapshot:
    #: (role, interface, namespace name, kernel view or note) for both ends
    ends: tuple[tuple[str, str, str, Interface | str], ...]

    @property
    def note(self) -> str | None:
        """The note both ends share when neither was inspected, else None."""
        notes = {seen for *_, seen in self.ends if isinstance(seen, str)}
        every = len(self.ends) == sum(isinstance(seen, str) for *_, seen in self.ends)
        return notes.pop() if len(notes) == 1 and every else None


def veth_snapshot(veth: Veth) -> VethSnapshot:
    ends = [("end", veth.name, veth.namespace), ("peer", veth.peer, veth.peer_namespace)]
    return VethSnapshot(
        tuple(
            (role, name, "host" if namespace is None else namespace.name, _interface(_in(namespace, veth.host), name))
            for role, name, namespace in ends
        )
    )


# -- firewall objects ----------------------------------------------------------


def firewall_note(item: PortMap | Masquerade) -> str | None:
    """None when the rule is in place, else why it is not shown."""
    if item.host.dry_run:
        return DRY_RUN
    try:
        return None if item.exists() else NOT_CREATED
    except Exception as error:
        return failed(error) if item.namespace is None else _why(item.namespace, error)


def counters(portmap: PortMap) -> str:
    """``3 packets, 180 bytes``, or why not."""
    note = firewall_note(portmap)
    if note is not None:
        return note
    try:
        found = portmap.counters()
    except Exception as error:
        return failed(error)
    return f"{_count(found.packets, 'packet')}, {_count(found.bytes, 'byte')}"


# -- labs: networks, endpoints, the whole --------------------------------------


def published(lab: Lab) -> list[PortMap]:
    return list(getattr(lab, "published", None) or [])


def _side(lab: LabLike) -> Namespace:
    """The namespace holding the lab's bridges and the host ends of its veths."""
    return _in(lab.host_namespace, lab.host)


def network_side(net: Network) -> Seen:
    """The host side of a network (its bridge, the host ends), when it was applied."""
    lab = net.lab
    if not net.applied:
        return Seen(note=DRY_RUN if lab.host.dry_run else NOT_CREATED)
    return look(_side(lab), routes=False)


@attrs.frozen
class EndpointSnapshot:
    #: the state of the inside end and of the host end (``UP 10.0.0.2/24``), or why not
    inside: str
    outside: str


def endpoint_snapshot(endpoint: Endpoint) -> EndpointSnapshot:
    if endpoint.network.lab.host.dry_run:
        return EndpointSnapshot(DRY_RUN, DRY_RUN)
    if not endpoint.applied:
        return EndpointSnapshot(NOT_CREATED, NOT_CREATED)
    lab = endpoint.network.lab
    # a member on another of the lab's Hosts has its host end in that Host's namespace
    side = _side(lab) if endpoint.namespace.host is lab.host else Namespace.host(endpoint.namespace.host)
    ends = (
        _interface(endpoint.namespace, endpoint.interface),
        _interface(side, endpoint.host_interface),
    )
    inside, outside = (seen if isinstance(seen, str) else _state_and_addresses(seen) for seen in ends)
    return EndpointSnapshot(inside, outside)


def _state_and_addresses(item: Interface) -> str:
    state = item.state if item.up else f"{item.state} (admin down)"
    return f"{state} {' '.join(str(address) for address in item.addresses)}".strip()


@attrs.frozen
class LabSnapshot:
    """A lab as the kernel shows it: its host side, each namespace by user name, each published port's counters."""

    note: str | None
    side: Seen
    namespaces: dict[str, Seen]
    counters: tuple[str, ...]

    def namespace(self, name: str) -> Seen:
        return self.namespaces.get(name, Seen(note=NOT_CREATED))


def lab_snapshot(lab: Lab) -> LabSnapshot:
    ports = published(lab)
    if lab.host.dry_run:
        seen = Seen(note=DRY_RUN)
        return LabSnapshot(DRY_RUN, seen, dict.fromkeys(lab.namespaces, seen), (DRY_RUN,) * len(ports))
    existing: set[str] | None
    try:
        existing = {item.name for host in getattr(lab, "hosts", [lab.host]) for item in Namespace.all(host)}
    except Exception:
        log.debug("could not list namespaces", exc_info=True)
        existing = None

    def known(namespace: Namespace) -> bool | None:
        return None if existing is None else namespace.name in existing

    applied = any(net.applied for net in lab.networks.values())
    side = Seen(note=NOT_CREATED)
    if lab.host_namespace is not None and known(lab.host_namespace) is not False:
        side = look(lab.host_namespace, routes=False, exists=known(lab.host_namespace))
    elif lab.host_namespace is None and applied:
        side = look(_side(lab), routes=False)
    namespaces = {name: look(namespace, exists=known(namespace)) for name, namespace in lab.namespaces.items()}
    live = (side.inspected and applied) or any(seen.inspected for seen in namespaces.values())
    note = None if live else "destroyed" if lab.destroyed else NOT_CREATED
    if note is None and (lab.host_namespace is None or side.inspected):
        found = tuple(counters(portmap) for portmap in ports)
    else:
        found = (note or side.note or NOT_CREATED,) * len(ports)
    return LabSnapshot(note, side, namespaces, found)
