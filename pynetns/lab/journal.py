"""Lab journals: what each lab makes and who owns it, kept in the Host's runtime (:mod:`pynetns.runtime`).

Every applied :class:`~pynetns.Lab` keeps a journal, ``<runtime dir>/labs/<id>.json``
(``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``), written before the first command of each
apply: its tag, the network namespace that plays its host, the namespaces, links and
networks it will make. The owner holds an ``flock`` on its journal for the lab's life, so
any process that shares the folder tells a live owner from a dead one, in whatever PID
namespace either runs. :func:`labs` lists them; :mod:`pynetns.lab.cleanup` removes the
leftovers of labs whose owner is gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from ..errors import InvalidValue
from ..host import Host
from ..namespace import Namespace, resolve_host
from ..runtime import JournalFile, owner_alive, remove_journal, runtime_dir

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "HOW_TO_PRIVILEGE",
    "JournalFile",
    "LabRecord",
    "find",
    "labs",
    "owner_alive",
    "remove_journal",
    "runtime_dir",
]

#: what to do when the kernel or the runtime directory refuses this user
HOW_TO_PRIVILEGE = (
    "run it as root (e.g. with sudo), or give the process CAP_NET_ADMIN and CAP_SYS_ADMIN, "
    "or use Host(sudo=True) and set PYNETNS_RUNTIME_DIR to a folder this user can write"
)


@attrs.frozen
class LabRecord:
    """A lab as its journal describes it."""

    id: str
    name: str
    #: the pid of the owner process, as it saw itself (information only: pids differ across PID namespaces)
    owner_pid: int | None
    #: the owner process holds the journal (a persistent lab has no owner, so is never "alive")
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

    @property
    def host_netns(self) -> str | None:
        """The network namespace that played the lab's host (:attr:`Host.netns_key`); None in old journals."""
        key = self.data.get("host_netns")
        return key if isinstance(key, str) else None

    def namespace(self, name: str, host: Host | None = None) -> Namespace:
        """The lab's namespace called ``name`` (its user-facing name, like ``web``)."""
        members: dict[str, str] = self.data.get("members", {})
        if name not in members:
            known = ", ".join(sorted(members)) or "none"
            raise InvalidValue("namespace", name, f"is not a namespace of lab {self.name} (it has: {known})")
        return Namespace(members[name], host=host)


def labs(host: Host | None = None) -> list[LabRecord]:
    """Every lab with a journal in ``host``'s runtime (this machine's by default), and whether its owner is alive."""
    runtime = resolve_host(host).runtime
    records = []
    for path, data in runtime.journals():
        alive = not data.get("persistent") and runtime.owner_alive(path)
        records.append(
            LabRecord(data.get("id", path.stem), data.get("name", ""), data.get("owner_pid"), alive, path, data)
        )
    return records


def find(name: str, host: Host | None = None) -> LabRecord:
    """The lab whose name or id is ``name`` (``InvalidValue`` if none, or several, match)."""
    every = labs(host)
    found = [record for record in every if record.id == name] or [r for r in every if r.name == name]
    if not found:
        known = ", ".join(f"{record.name} ({record.id})" for record in every) or "none"
        raise InvalidValue("lab", name, f"no such lab (labs: {known})")
    if len(found) > 1:
        raise InvalidValue("lab", name, f"names {len(found)} labs; use an id: {', '.join(r.id for r in found)}")
    return found[0]
