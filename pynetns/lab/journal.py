"""Lab journals: what each lab makes, who owns it, and the cleanup of labs whose owner died.

Every applied :class:`~pynetns.Lab` keeps a journal, ``<runtime dir>/labs/<id>.json``
(``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``), written before the first command of each
apply: its tag, the network namespace that plays its host, the namespaces, links and
networks it will make. The owner holds an ``flock`` on its journal for the lab's life, so
any process that shares the folder tells a live owner from a dead one, in whatever PID
namespace either runs. :func:`labs` lists them; :func:`cleanup` removes the leftovers of
labs whose owner is gone, touching only what a journal names and the lab's name or tag
marks; :func:`remove` ends one lab by name (``pynetns down``).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import re
import secrets
import weakref
from pathlib import Path
from typing import Any

import attrs

from ..backends.base import NetnsRef
from ..errors import CommandError, InvalidValue, NotOwned, PermissionDenied, PynetnsError
from ..firewall import remove_tagged
from ..host import Host
from ..namespace import Namespace, kill_processes_in, resolve_host
from ..validation import IPNetwork

__all__ = [
    "LabRecord",
    "Cleaned",
    "JournalFile",
    "labs",
    "cleanup",
    "find",
    "remove",
    "runtime_dir",
    "taken_networks",
    "owner_alive",
    "HOW_TO_PRIVILEGE",
]

log = logging.getLogger(__name__)

#: what to do when the kernel or the runtime directory refuses this user
HOW_TO_PRIVILEGE = (
    "run it as root (e.g. with sudo), or give the process CAP_NET_ADMIN and CAP_SYS_ADMIN, "
    "or use Host(sudo=True) and set PYNETNS_RUNTIME_DIR to a folder this user can write"
)
_LAB_ID = re.compile(r"[0-9a-f]{6}")


def runtime_dir() -> Path:
    """Where lab journals live: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``."""
    return Path(os.environ.get("PYNETNS_RUNTIME_DIR", "/run/pynetns")) / "labs"


def owner_alive(path: Path) -> bool:
    """Whether a process holds the journal at ``path`` (its owner runs), as the kernel's ``flock`` says.

    Right across PID namespaces and containers sharing the folder; a journal replaced while it is
    looked at is looked at again (the owner locks the new file before it takes the path).
    """
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:  # free, unless the path names a newer file by now; closing the fd lets the lock go
            opened, current = os.fstat(fd), _stat(path)
            if current is None or (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return False
        finally:
            os.close(fd)
    return False


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class JournalFile:
    """One lab's journal file: replaced whole (a reader sees the old text or the new, never half), and
    locked by its owner while ``owned``.

    The lock is an ``flock`` on the file itself, taken on the temporary file before it is renamed over
    the journal, so the journal's path always names a locked file while its owner lives. The descriptor
    is not inherited by programs the owner starts, and a forked child closes its copy (the lab stays
    its parent's). Several labs of one process each hold their own file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        _open_files.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def write(self, data: dict[str, Any], *, owned: bool) -> None:
        """Replace the journal with ``data``; ``owned``: this process holds it (else it is persistent)."""
        text = json.dumps(data, indent=2).encode()
        for attempt in range(3):  # another process may prune the folder, or a stale temporary file, meanwhile
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.stem}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            try:
                if owned:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(text)
                while view:
                    view = view[os.write(fd, view) :]
                os.replace(temporary, self.path)
            except FileNotFoundError:
                os.close(fd)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                os.close(fd)
                temporary.unlink(missing_ok=True)
                raise
            old, self._fd = self._fd, fd if owned else None
            if not owned:
                os.close(fd)
            if old is not None:  # after the rename: the path never names an unlocked file while owned
                os.close(old)
            return

    def remove(self) -> None:
        """Remove the journal (and the folders it leaves empty), then let the lock go."""
        remove_journal(self.path)
        self.release()

    def release(self) -> None:
        """Stop holding the journal (its file stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _forget(self) -> None:
        """In a forked child: the parent's hold is not the child's."""
        self.release()


_open_files: weakref.WeakSet[JournalFile] = weakref.WeakSet()


def _after_fork() -> None:
    for journal in list(_open_files):
        journal._forget()


os.register_at_fork(after_in_child=_after_fork)


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


class Cleaned(list[str]):
    """What :func:`cleanup` removed (the list itself), and the labs it left, each with why."""

    def __init__(self) -> None:
        super().__init__()
        #: lab id → why it was left alone (another network namespace plays its host)
        self.skipped: dict[str, str] = {}
        #: lab id → what of it could not be removed (its journal stays)
        self.remaining: dict[str, list[str]] = {}


def labs() -> list[LabRecord]:
    """Every lab with a journal on this machine, and whether its owner is alive."""
    records = []
    try:
        paths = sorted(runtime_dir().glob("*.json"))
    except OSError as error:  # a folder this user may not read: no lab it can know of
        log.debug("cannot list lab journals: %s", error)
        paths = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        alive = not data.get("persistent") and owner_alive(path)
        records.append(
            LabRecord(data.get("id", path.stem), data.get("name", ""), data.get("owner_pid"), alive, path, data)
        )
    return records


def cleanup(host: Host | None = None, *, all: bool = False) -> Cleaned:
    """Remove the leftovers of labs whose owner is dead (every lab with ``all=True``), under the host lock.

    Only what a journal names is removed, and of that only what carries the lab's id in its name or its
    tag. A lab whose host was another network namespace than ``host``'s is left alone whole (see
    :attr:`Cleaned.skipped`); a journal stays until nothing it names is left (:attr:`Cleaned.remaining`).
    Returns what was removed.
    """
    host = resolve_host(host)
    cleaned = Cleaned()
    with host.lock():
        for record in labs():
            if (record.alive or record.persistent) and not all:
                continue
            why = _elsewhere(record, host)
            if why is not None:
                log.warning("cleanup leaves lab %s (%s) alone: %s", record.name, record.id, why)
                cleaned.skipped[record.id] = why
                continue
            removed, remaining = _remove_record(record, host)
            cleaned += removed
            if remaining:
                log.warning(
                    "lab %s (%s): could not remove %s; its journal %s stays",
                    record.name,
                    record.id,
                    ", ".join(remaining),
                    record.path,
                )
                cleaned.remaining[record.id] = remaining
        _remove_orphans(runtime_dir())
    return cleaned


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
    """Remove the lab called ``name`` (or with that id) from its journal, whoever owns it: ``pynetns down``.

    Refused (``PynetnsError``) if another network namespace played its host; raises if something it names
    could not be removed (its journal then stays).
    """
    host = resolve_host(host)
    with host.lock():
        record = find(name)
        why = _elsewhere(record, host)
        if why is not None and record.host_netns is not None:
            raise PynetnsError(f"lab {record.name} ({record.id}) is left alone: {why}")
        removed, remaining = _remove_record(record, host)
    if remaining:
        done = f" (removed: {', '.join(removed)})" if removed else ""
        raise PynetnsError(
            f"lab {record.name} ({record.id}): could not remove {', '.join(remaining)}{done}; "
            f"its journal {record.path} stays for another try"
        )
    return removed


def _elsewhere(record: LabRecord, host: Host) -> str | None:
    """Why ``host`` cannot remove ``record``'s lab whole (another network namespace played its host), or None."""
    theirs = record.host_netns
    if theirs is None:
        return (
            "its journal does not say which network namespace played its host (an older pynetns wrote it): "
            "remove it from that namespace with 'pynetns down ID' (pynetns.lab.journal.remove)"
        )
    if theirs != host.netns_key:
        return (
            f"network namespace {theirs} played its host, and this Host plays {host.netns_key}: clean up "
            f"from there (a Host whose commands run in that namespace)"
        )
    return None


def _remove_record(record: LabRecord, host: Host) -> tuple[list[str], list[str]]:
    """Remove what a journal names and is the lab's; the journal goes once none of it is left.
    Returns (what was removed, what is left)."""
    removed: list[str] = []
    failed: list[str] = []
    tag = record.data.get("tag")
    namespaces = _its_namespaces(record, host)
    kill_processes_in(host, namespaces)
    if record.data.get("firewall") and tag and not record.data.get("isolated"):
        try:
            count = remove_tagged(Namespace.host(host), tag)
        except PynetnsError as error:
            failed.append(f"firewall rules tagged {tag} ({error})")
        else:
            if count:
                removed.append(f"{count} firewall rules")
    for name in namespaces:
        host.ip(NetnsRef.root(), host.links.netns_delete(name), check=False)
        removed.append(f"namespace {name}")
    for name in _its_links(record, host):
        result = host.ip(NetnsRef.root(), host.links.link_delete(name), check=False)
        if result.returncode == 0:
            removed.append(f"interface {name}")
    remaining = failed + [f"namespace {name}" for name in _its_namespaces(record, host)]
    remaining += [f"interface {name}" for name in _its_links(record, host)]
    if not remaining:
        remove_journal(record.path)
    return removed, remaining


def _ours(record: LabRecord, name: str) -> bool:
    """``name`` carries the lab's id (``pn<id>…``), as every kernel name a lab makes does."""
    return bool(_LAB_ID.fullmatch(record.id)) and name.startswith(f"pn{record.id}")


def _its_namespaces(record: LabRecord, host: Host) -> list[str]:
    """The named namespaces of the journal that exist and are the lab's: by name, or tagged (``lo``'s alias)."""
    named = record.data.get("namespaces", ())
    if not named:
        return []
    existing = {namespace.name for namespace in Namespace.all(host)}
    tag = record.data.get("tag")
    return [name for name in named if name in existing and (_ours(record, name) or _tagged_namespace(host, name, tag))]


def _its_links(record: LabRecord, host: Host) -> list[str]:
    """The host-side links (bridges, veth ends) of the journal that exist and are the lab's."""
    named = [*record.data.get("links", ()), *record.data.get("veths", ())]
    if not named:
        return []
    tag = record.data.get("tag")
    aliases = {item.name: item.alias for item in Namespace.host(host).interfaces()}
    return [name for name in dict.fromkeys(named) if name in aliases and (_ours(record, name) or aliases[name] == tag)]


def _remove_orphans(folder: Path) -> None:
    """Remove temporary journal files their writer left when it died (nobody holds them; no live journal)."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.tmp"):
        journal = folder / f"{path.name.split('.', 1)[0]}.json"
        if journal.exists():
            continue  # its lab is being written, or not cleaned up yet: the journal's own cleanup takes it
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            path.unlink()
    _prune(folder)


def remove_journal(path: Path) -> None:
    """Remove a journal and its writer's leftover temporary files, then the runtime folders left empty."""
    path.unlink(missing_ok=True)
    for temporary in path.parent.glob(f"{path.stem}.*.tmp"):
        temporary.unlink(missing_ok=True)
    _prune(path.parent)


def _prune(folder: Path) -> None:
    for empty in (folder, folder.parent):
        try:
            empty.rmdir()
        except OSError:  # not empty (another lab's journal) or already gone
            return


def taken_networks(host: Host | None = None, *, other_than: str | None = None) -> list[IPNetwork]:
    """The IPv4/IPv6 networks in use on the host: its routes (the default aside), its addresses, and the
    subnets of live labs (but ``other_than``), those their journals reserve before they exist included."""
    root = Namespace.host(resolve_host(host))
    taken: list[IPNetwork] = [
        ipaddress.ip_network(route.destination, strict=False)
        for route in root.routes()
        if route.destination != "default"
    ]
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
