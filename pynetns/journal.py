"""Lab journals: what each lab made, who owns it, and the cleanup of labs whose owner died.

Every applied :class:`~pynetns.Lab` keeps a journal, ``<runtime dir>/labs/<id>.json``
(``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``): its tag, its owner process (pid and
start time, so a reused pid is not mistaken for it), its namespaces, links and
networks. :func:`labs` lists them; :func:`cleanup` removes the leftovers of labs
whose owner is gone, touching only objects carrying the lab's tag; :func:`remove`
ends one lab by name (``pynetns down``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Any

import attrs

from .backends.base import NetnsRef
from .errors import CommandError, InvalidValue, NotOwned, PermissionDenied, PynetnsError
from .host import Host
from .namespace import Namespace, kill_processes_in, resolve_host
from .nat import remove_tagged
from .validation import IPNetwork

__all__ = ["LabRecord", "labs", "cleanup", "find", "remove", "runtime_dir", "taken_networks"]

log = logging.getLogger(__name__)


def runtime_dir() -> Path:
    """Where lab journals live: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``."""
    return Path(os.environ.get("PYNETNS_RUNTIME_DIR", "/run/pynetns")) / "labs"


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@attrs.frozen
class LabRecord:
    """A lab as its journal describes it."""

    id: str
    name: str
    owner_pid: int | None
    #: the owner process is running (a persistent lab has no owner, so is never "alive")
    alive: bool
    path: Path
    data: dict[str, Any] = attrs.field(repr=False)

    @property
    def persistent(self) -> bool:
        """Made by ``pynetns up`` (or :meth:`Lab.detach`): owned by no process, removed only on request."""
        return bool(self.data.get("persistent"))

    @property
    def state(self) -> str:
        """``"persistent"``, ``"alive"`` or ``"stale"`` (the owner died: :func:`cleanup` removes it)."""
        return "persistent" if self.persistent else "alive" if self.alive else "stale"

    def namespace(self, name: str, host: Host | None = None) -> Namespace:
        """The lab's namespace called ``name`` (its user-facing name, like ``web``)."""
        members: dict[str, str] = self.data.get("members", {})
        if name not in members:
            known = ", ".join(sorted(members)) or "none"
            raise InvalidValue("namespace", name, f"is not a namespace of lab {self.name} (it has: {known})")
        return Namespace(members[name], host=host)


def labs() -> list[LabRecord]:
    """Every lab with a journal on this machine, and whether its owner is alive."""
    records = []
    folder = runtime_dir()
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = data.get("owner_pid")
        alive = pid is not None and start_time(pid) == data.get("owner_start")
        records.append(LabRecord(data.get("id", path.stem), data.get("name", ""), pid, alive, path, data))
    return records


def cleanup(host: Host | None = None, *, all: bool = False) -> list[str]:
    """Remove the leftovers of labs whose owner is dead (every lab with ``all=True``).

    Only objects that carry the lab's tag are removed: a namespace whose ``lo``
    is tagged, a link whose alias is the tag. Returns what was removed.
    """
    host = resolve_host(host)
    removed: list[str] = []
    for record in labs():
        if (record.alive or record.persistent) and not all:
            continue
        removed += _remove_record(record, host)
    return removed


def find(name: str) -> LabRecord:
    """The lab whose name or id is ``name`` (``InvalidValue`` if none, or several, match)."""
    every = labs()
    found = [record for record in every if record.id == name] or [r for r in every if r.name == name]
    if not found:
        known = ", ".join(f"{record.name} ({record.id})" for record in every) or "none"
        raise InvalidValue("lab", name, f"no such lab (labs: {known})")
    if len(found) > 1:
        raise InvalidValue("lab", name, f"names {len(found)} labs; use an id: {', '.join(r.id for r in found)}")
    return found[0]


def remove(name: str, host: Host | None = None) -> list[str]:
    """Remove the lab called ``name`` (or with that id) from its journal, whoever owns it: ``pynetns down``."""
    return _remove_record(find(name), resolve_host(host))


def _remove_record(record: LabRecord, host: Host) -> list[str]:
    """Remove what a journal names and carries its tag, then the journal."""
    removed: list[str] = []
    tag = record.data.get("tag")
    namespaces = [name for name in record.data.get("namespaces", ()) if _tagged_namespace(host, name, tag)]
    kill_processes_in(host, namespaces)
    if record.data.get("firewall") and tag:
        count = remove_tagged(Namespace.host(host), tag)
        if count:
            removed.append(f"{count} firewall rules")
    for name in namespaces:
        host.run(host.links.netns_delete(name), check=False)
        removed.append(f"namespace {name}")
    for name in record.data.get("links", ()):
        try:
            if Namespace.host(host).interface(name).alias == tag:
                host.ip(NetnsRef.root(), host.links.link_delete(name), check=False)
                removed.append(f"interface {name}")
        except CommandError:
            pass
    remove_journal(record.path)
    return removed


def remove_journal(path: Path) -> None:
    """Remove a journal, then the runtime folders it leaves empty: nothing of pynetns stays behind."""
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty (another lab's journal) or already gone
            return


def taken_networks(host: Host | None = None, *, other_than: str | None = None) -> list[IPNetwork]:
    """The IPv4/IPv6 networks in use on the host: its routes (the default aside), its addresses, and the
    subnets of live labs (but ``other_than``)."""
    root = Namespace.host(resolve_host(host))
    taken: list[IPNetwork] = [ipaddress.ip_network(route.destination, strict=False) for route in root.routes()
                              if route.destination != "default"]
    taken += [address.network for address in root.addresses()]
    for record in labs():
        if (record.alive or record.persistent) and record.id != other_than:
            taken += [ipaddress.ip_network(item["subnet"]) for item in record.data.get("networks", ())]
    return taken


def _tagged_namespace(host: Host, name: str, tag: str | None) -> bool:
    try:
        return Namespace(name, host=host).interface("lo").alias == tag
    except PermissionDenied:
        raise  # not "gone": without the privileges, nothing can be known (and the journal must stay)
    except (CommandError, NotOwned, PynetnsError):
        return False


