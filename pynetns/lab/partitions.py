"""Partitions: namespaces of a lab that cannot reach each other (:meth:`Lab.partition <pynetns.Lab.partition>`),
as drops in each namespace and, on the lab's host, drops of routed traffic; and healing them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import InvalidValue
from ..firewall import ForwardDrops, create_all, delete_all
from ..namespace import Namespace
from .state import LabState

__all__ = ["addresses", "cut", "heal", "partition", "write_partitions"]


def partition(
    state: LabState,
    group_a: Iterable[Namespace | str] | Namespace | str,
    group_b: Iterable[Namespace | str] | Namespace | str,
) -> None:
    """Make the namespaces of ``group_a`` and ``group_b`` unable to reach each other (both ways, all IP
    traffic, silently dropped: clients time out), while each group still works inside. :func:`heal` ends it.

    Works within one network and across networks; several partitions add up.
    """
    side_a, side_b = _group(state, "group_a", group_a), _group(state, "group_b", group_b)
    both = [state.name_of(namespace) for namespace in side_a if namespace in side_b]
    if both:
        raise InvalidValue("group_b", both, "a namespace cannot be on both sides of a partition")
    state.partitions.append((side_a, side_b))
    if not state.isolated:
        state.write_journal(firewall=True)  # it writes firewall rules on the host from now on: cleanup must know
    try:
        write_partitions(state)
    except BaseException:
        state.partitions.pop()
        write_partitions(state)
        raise


def heal(state: LabState) -> None:
    """End every partition."""
    state.partitions.clear()
    write_partitions(state)


def _group(state: LabState, field: str, group: Iterable[Namespace | str] | Namespace | str) -> list[Namespace]:
    members = [group] if isinstance(group, (Namespace, str)) else list(group)
    if not members:
        raise InvalidValue(field, [], "a partition needs a namespace on each side")
    found = []
    for member in members:
        namespace = state.namespaces.get(member) if isinstance(member, str) else member
        if namespace is None or namespace not in state.namespaces.values():
            raise InvalidValue(field, str(member), "is not a namespace of this lab")
        if namespace.name not in state.applied_namespaces:
            raise InvalidValue(field, str(member), "is not applied yet (call lab.apply() first)")
        found.append(namespace)
    return found


def addresses(state: LabState, namespace: Namespace) -> list[Any]:
    return [endpoint.ip.ip for endpoint in state.endpoints if endpoint.namespace is namespace]


def cut(state: LabState) -> Iterator[tuple[Namespace, Namespace]]:
    """Every (namespace, namespace it must not hear) of the partitions in force, both ways."""
    for side_a, side_b in state.partitions:
        for mine, theirs in ((side_a, side_b), (side_b, side_a)):
            for namespace in mine:
                for other in theirs:
                    yield namespace, other


def write_partitions(state: LabState) -> None:
    """Rewrite each namespace's drops from the partitions in force; remove them where none is left."""
    blocked: dict[str, list[Any]] = {}
    for namespace, other in cut(state):
        drops = blocked.setdefault(namespace.name, [])
        drops += [ip for ip in addresses(state, other) if ip not in drops]
    _write_forward_drops(state)
    firewall = state.host.firewall
    for name in sorted(state.blocked - set(blocked)):
        argv, script = firewall.partition_unblock(state.tag)
        Namespace(name, host=state.host).run(argv, input=script, check=False)  # it may be gone already
        state.blocked.discard(name)
    for name, drops in blocked.items():
        if drops:
            argv, script = firewall.partition_block(
                [str(ip) for ip in drops], state.tag, first=name not in state.blocked
            )
            Namespace(name, host=state.host).run(argv, input=script)
            state.blocked.add(name)


def _write_forward_drops(state: LabState) -> None:
    """The host side of the partitions: routed traffic, and the way round through published ports."""
    pairs = [
        (source, destination)
        for namespace, other in cut(state)
        for source in addresses(state, namespace)
        for destination in addresses(state, other)
        if source.version == destination.version
    ]
    old, state.drops = state.drops, []
    delete_all(old, missing_ok=True)
    where = dict(namespace=state.host_namespace, host=state.host, tag=state.tag)
    drops = [
        ForwardDrops("partitions", dict.fromkeys(mine), **where)  # type: ignore[arg-type]
        for version in (4, 6)
        if (mine := [pair for pair in pairs if pair[0].version == version])
    ]
    create_all(drops)  # one object per IP version
    state.drops = drops
