"""Cleanup: remove the leftovers of labs whose owner died (:func:`cleanup`), or one lab by name (:func:`remove`,
``pynetns down``), touching only what a journal names and the lab's name or tag marks.
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

__all__ = ["Cleaned", "cleanup", "remove"]

log = logging.getLogger(__name__)

_LAB_ID = re.compile(r"[0-9a-f]{6}")


class Cleaned(list[str]):
    """What :func:`cleanup` removed (the list itself), and the labs it left, each with why."""

    def __init__(self) -> None:
        super().__init__()
        #: lab id → why it was left alone (another network namespace plays its host)
        self.skipped: dict[str, str] = {}
        #: lab id → what of it could not be removed (its journal stays)
        self.remaining: dict[str, list[str]] = {}


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


def _its_links(record: LabRecord, host: Host) -> list[str]:
    """The host-side links (bridges, veth ends) of the journal that exist and are the lab's."""
    named = [*record.data.get("links", ()), *record.data.get("veths", ())]
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
