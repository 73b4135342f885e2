"""Cleanup: remove the leftovers of labs whose owner died (:func:`cleanup`), or one lab by name (:func:`remove`,
``pynetns down``), touching only what a journal names and the lab's name or tag marks; and, on request, the
orphans whose journal is gone (:func:`orphans`, ``pynetns cleanup --orphans``).
"""

from __future__ import annotations

import logging
import re

from ..backends.base import NetnsRef
from ..errors import CommandError, NotOwned, PermissionDenied, PynetnsError
from ..firewall import remove_tagged
from ..host import Host
from ..namespace import Namespace, kill_processes_in, resolve_host
from .journal import LabRecord, find, labs
from .names import present, remove_names

__all__ = ["Cleaned", "Orphans", "cleanup", "orphans", "remove"]

log = logging.getLogger(__name__)

_LAB_ID = re.compile(r"[0-9a-f]{6}")
#: a lab's tag, ``pynetns:<id>`` (a Host's own tag, ``pynetns:<pid>-<hex>``, is not a lab's)
_LAB_TAG = re.compile(r"pynetns:([0-9a-f]{6})")
#: a kernel name a lab makes: ``pn<id>-<name>`` (namespaces), ``pn<id><kind><n>`` (bridges, veths)
_LAB_NAME = re.compile(r"pn([0-9a-f]{6})")


class Cleaned(list[str]):
    """What :func:`cleanup` removed (the list itself), and the labs it left, each with why."""

    def __init__(self) -> None:
        super().__init__()
        #: lab id → why it was left alone (another network namespace plays its host)
        self.skipped: dict[str, str] = {}
        #: lab id → what of it could not be removed (its journal stays)
        self.remaining: dict[str, list[str]] = {}


def cleanup(host: Host | None = None, *, all: bool = False, orphans: bool = False) -> Cleaned:
    """Remove the leftovers of labs whose owner is dead (every lab with ``all=True``), under the host lock.

    Only what a journal names is removed, and of that only what carries the lab's id in its name or its
    tag. A lab whose host was another network namespace than ``host``'s is left alone whole (see
    :attr:`Cleaned.skipped`); a journal stays until nothing it names is left (:attr:`Cleaned.remaining`).
    ``orphans=True`` also removes the labs' objects that no journal names (:func:`orphans`).
    Returns what was removed.
    """
    host = resolve_host(host)
    cleaned = Cleaned()
    with host.lock():
        if orphans:
            cleaned += _remove_orphans(host, _find_orphans(host))
        for record in labs(host):
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
        host.runtime.remove_orphans()
    return cleaned


def remove(name: str, host: Host | None = None) -> list[str]:
    """Remove the lab called ``name`` (or with that id) from its journal, whoever owns it: ``pynetns down``.

    Refused (``PynetnsError``) if another network namespace played its host; raises if something it names
    could not be removed (its journal then stays).
    """
    host = resolve_host(host)
    with host.lock():
        record = find(name, host)
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
            "remove it from that namespace with 'pynetns down ID' (pynetns.lab.cleanup.remove)"
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
    folders = _its_names(record, host)
    unmarked = bool(record.data.get("etc_netns"))  # it may have made /etc/netns, and died before marking it
    failed += [f"names files ({failure})" for failure in remove_names(host, folders, unmarked=unmarked)]
    removed += [f"names folder {host.links.netns_etc}/{name}" for name in folders]
    remaining = failed + [f"namespace {name}" for name in _its_namespaces(record, host)]
    remaining += [f"interface {name}" for name in _its_links(record, host)]
    if not remaining:
        host.runtime.remove(record.path)
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


def _its_names(record: LabRecord, host: Host) -> list[str]:
    """The folders ``/etc/netns/NAME`` of the journal's names files that exist and are the lab's (by name)."""
    named = [name for name in record.data.get("names", ()) if isinstance(name, str) and _ours(record, name)]
    if not named:
        return []
    found = set(present(host))
    return [name for name in named if name in found]


def _its_links(record: LabRecord, host: Host) -> list[str]:
    """The host-side links (bridges, VXLAN devices, veth ends) of the journal that exist and are the lab's."""
    named = [*record.data.get("links", ()), *record.data.get("vxlans", ()), *record.data.get("veths", ())]
    if not named:
        return []
    tag = record.data.get("tag")
    aliases = {item.name: item.alias for item in Namespace.host(host).interfaces()}
    return [name for name in dict.fromkeys(named) if name in aliases and (_ours(record, name) or aliases[name] == tag)]


def _tagged_namespace(host: Host, name: str, tag: str | None) -> bool:
    try:
        return Namespace(name, host=host).interface("lo").alias == tag
    except PermissionDenied:
        raise  # not "gone": without the privileges, nothing can be known (and the journal must stay)
    except (CommandError, NotOwned, PynetnsError):
        return False


class Orphans(list[str]):
    """What :func:`orphans` found: the kernel names (namespaces, then host-side links), and :attr:`tags`."""

    def __init__(self) -> None:
        super().__init__()
        #: the orphaned labs' tags, ``pynetns:<id>``
        self.tags: set[str] = set()
        #: the namespaces among them (the rest are links of the Host's namespace)
        self.namespaces: list[str] = []
        #: the host-side links among them
        self.links: list[str] = []
        #: the tags of the labs with links in the Host's namespace (their firewall rules may be there too)
        self.host_tags: set[str] = set()


def orphans(host: Host | None = None) -> Orphans:
    """The objects of labs whose journal is gone: namespaces named ``pn<id>-…`` whose ``lo`` carries the tag
    ``pynetns:<id>``, and links of ``host``'s namespace named ``pn<id>…`` carrying it, where no journal of
    ``host``'s runtime names ``<id>``. Nothing is removed (``cleanup(orphans=True)`` does that).

    A journal is written before a lab's first command, so the objects are listed first and the journals
    read after: an object of a lab being applied right now always has its journal by then, and is left alone.
    A lab run with another runtime directory (``PYNETNS_RUNTIME_DIR``) has its journal where this cannot see
    it: its objects look orphaned; run this with the runtime directory the labs were made with.
    """
    return _find_orphans(resolve_host(host))


def _find_orphans(host: Host) -> Orphans:
    candidates: list[tuple[str, str, str]] = []  # (kind, name, tag)
    for namespace in Namespace.all(host):  # first the objects, then the journals: see orphans()
        match = _LAB_NAME.match(namespace.name)
        if match is None or not namespace.name.startswith(f"pn{match.group(1)}-"):
            continue
        tag = f"pynetns:{match.group(1)}"
        if _tagged_namespace(host, namespace.name, tag):
            candidates.append(("namespace", namespace.name, tag))
    for interface in Namespace.host(host).interfaces():
        match = _LAB_NAME.match(interface.name)
        alias = _LAB_TAG.fullmatch(interface.alias or "")
        if match is not None and alias is not None and alias.group(1) == match.group(1):
            candidates.append(("interface", interface.name, alias.group(0)))
    records = labs(host)
    journaled = {record.id for record in records} | {str(record.data.get("tag", "")) for record in records}
    found = Orphans()
    for kind, name, tag in candidates:
        if tag in journaled or tag.removeprefix("pynetns:") in journaled:
            continue
        found.append(f"{kind} {name}")
        found.tags.add(tag)
        if kind == "namespace":
            found.namespaces.append(name)
        else:
            found.links.append(name)
            found.host_tags.add(tag)
    return found


def _remove_orphans(host: Host, found: Orphans) -> list[str]:
    """Remove what :func:`_find_orphans` found: processes inside, namespaces, links, and the firewall rules of
    the Host's namespace carrying an orphan's tag. Returns what was removed."""
    removed: list[str] = []
    if not found:
        return removed
    log.warning("removing the objects of labs whose journal is gone (%s): %s", ", ".join(sorted(found.tags)), found)
    kill_processes_in(host, found.namespaces)
    for tag in sorted(found.host_tags):  # an isolated lab's rules went with its namespace
        try:
            count = remove_tagged(Namespace.host(host), tag)
        except PynetnsError as error:
            log.warning("could not look for firewall rules tagged %s: %s", tag, error)
        else:
            if count:
                removed.append(f"{count} firewall rules tagged {tag}")
    for name in found.namespaces:
        if host.ip(NetnsRef.root(), host.links.netns_delete(name), check=False).returncode == 0:
            removed.append(f"namespace {name}")
    for name in found.links:
        if host.ip(NetnsRef.root(), host.links.link_delete(name), check=False).returncode == 0:
            removed.append(f"interface {name}")
    # the names files of the namespaces removed (a folder whose namespace is gone is no proof of a dead lab:
    # /etc/netns may be shared with hosts whose /run/netns is another)
    folders = [name for name in present(host) if name in found.namespaces]
    for failure in remove_names(host, folders):
        log.warning("could not remove the names files of an orphaned lab: %s", failure)
    removed += [f"names folder {host.links.netns_etc}/{name}" for name in folders]
    return removed
