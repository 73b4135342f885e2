"""How the command line finds lab records and shows them (``ls``, ``show``, ``up``): from their journal.

>>> split_target("shop:web")
('shop', ':', 'web')
>>> table(["NAME", "ID"], [["shop", "1a2b"]])
['NAME  ID', 'shop  1a2b']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import InvalidValue, PynetnsError
from ..lab.journal import find

if TYPE_CHECKING:
    from ..lab.journal import LabRecord

__all__ = ["describe", "find_member", "known", "split_target", "summary", "table", "which_exist"]

log = logging.getLogger(__name__)


def known(records: Iterable[LabRecord]) -> str:
    return ", ".join(f"{record.name} ({record.id})" for record in records) or "none"


def split_target(target: str) -> tuple[str | None, str, str]:
    """``"shop:web"`` or ``"shop/web"`` → ``("shop", ":", "web")``; ``"web"`` → ``(None, "", "web")``."""
    for separator in (":", "/"):
        lab, found, name = target.partition(separator)
        if found:
            return lab, found, name
    return None, "", target


def find_member(lab_name: str | None, name: str) -> LabRecord:
    """The lab that has a namespace called ``name`` (and is ``lab_name``, if given)."""
    from ..lab.journal import labs

    if lab_name is not None:
        return find(lab_name)
    records = labs()
    found = [record for record in records if name in record.data.get("members", {})]
    if not found:
        have = [f"{record.name}:{member}" for record in records for member in record.data.get("members", {})]
        raise InvalidValue(
            "namespace", name, f"no lab has a namespace of that name (namespaces: {', '.join(have) or 'none'})"
        )
    if len(found) > 1:
        raise InvalidValue(
            "namespace", name, f"is in {len(found)} labs: {known(found)}; say which, as LAB:{name} or with --lab"
        )
    return found[0]


def which_exist(record: LabRecord) -> dict[str, Any]:
    """Which of the lab's namespaces exist now (one ``ip netns list``); ``None`` values if that cannot be told."""
    from ..host import Host
    from ..namespace import Namespace

    members: dict[str, str] = record.data.get("members", {})
    host_namespace: str | None = record.data.get("host_namespace")
    try:
        existing: set[str] | None = {namespace.name for namespace in Namespace.all(Host())}
    except PynetnsError as error:
        log.debug("cannot list namespaces: %s", error)
        existing = None
    return {
        "namespaces": {name: None if existing is None else kernel in existing for name, kernel in members.items()},
        "host_namespace": None if existing is None or host_namespace is None else host_namespace in existing,
    }


def summary(record: LabRecord) -> dict[str, Any]:
    """One lab in ``ls --json``."""
    return {
        "name": record.name,
        "id": record.id,
        "state": record.state,
        "owner_pid": record.owner_pid,
        "persistent": record.persistent,
        "alive": record.alive,
        "isolated": record.data.get("isolated"),
        "namespaces": sorted(record.data.get("members", {})),
        "networks": {net["name"]: net["subnet"] for net in record.data.get("networks", ())},
        "journal": str(record.path),
    }


def describe(record: LabRecord, live: dict[str, Any] | None = None) -> list[str]:
    """A lab as ``up`` and ``show`` print it, from its journal (and ``live``: which namespaces exist)."""
    data = record.data
    owner = "" if record.owner_pid is None else f", owner pid {record.owner_pid}"
    where = f"isolated (host namespace {data.get('host_namespace')})" if data.get("isolated") else "on this host"
    lines = [f"lab {record.name} ({record.id}): {record.state}{owner}, {where}"]
    if live is not None and live.get("host_namespace") is False:
        lines[0] += " -- its host namespace is gone"
    networks = [
        [
            net["name"],
            net["subnet"],
            f"gateway {net['gateway'].split('/')[0]}",
            f"bridge {net['bridge']}",
            "internal" if net.get("internal") else "nat" if net.get("nat") else "no nat",
        ]
        for net in data.get("networks", ())
    ]
    lines += ["networks:", *table(None, networks, indent="  ")] if networks else ["networks: none"]
    endpoints: dict[str, list[str]] = {}
    for endpoint in data.get("endpoints", ()):
        endpoints.setdefault(endpoint["namespace"], []).append(
            f"{endpoint['interface']} {endpoint['ip']} ({endpoint['network']})"
        )
    members: dict[str, str] = data.get("members", {})
    rows = []
    for name, kernel in members.items():
        row = [name, kernel]
        if live is not None:
            exists = live.get("namespaces", {}).get(name)
            row.append("?" if exists is None else "up" if exists else "missing")
        rows.append([*row, ", ".join(endpoints.get(name, ())) or "no network"])
    lines += ["namespaces:", *table(None, rows, indent="  ")] if rows else ["namespaces: none"]
    published = data.get("published", ())
    if published:
        lines += ["published:", *(f"  {item}" for item in published)]
    return lines


def table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns two spaces apart (with ``header`` first, if given)."""
    everything = [list(header), *rows] if header is not None else [list(row) for row in rows]
    if not everything:
        return []
    widths = [
        max(len(row[column]) for row in everything if column < len(row))
        for column in range(max(len(row) for row in everything))
    ]
    return [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in everything
    ]
