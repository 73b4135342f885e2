"""Partitions: namespaces of a lab that cannot reach each other (:meth:`Lab.partition <pynetns.Lab.partition>`),
as drops in each namespace and, on the lab's host, drops of routed traffic; and healing them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InvalidValue
from ..firewall import ForwardDrops, create_all, delete_all
from ..namespace import Namespace

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["partition", "heal", "cut", "addresses", "write_partitions"]


def partition(
    lab: Lab, group_a: Iterable[Namespace | str] | Namespace | str, group_b: Iterable[Namespace | str] | Namespace | str
) -> None:
    """Make the namespaces of ``group_a`` and ``group_b`` unable to reach each other (both ways, all IP
    traffic, silently dropped: clients time out), while each group still works inside. :meth:`heal` ends it.

    Works within one network and across networks; several partitions add up.
    """
    side_a, side_b = _group(lab, "group_a", group_a), _group(lab, "group_b", group_b)
    both = [lab.name_of(namespace) for namespace in side_a if namespace in side_b]
    if both:
        raise InvalidValue("group_b", both, "a namespace cannot be on both sides of a partition")
    lab._partitions.append((side_a, side_b))
    if not lab.isolated:
        lab._write_journal()  # it writes firewall rules on the host from now on: cleanup must know
    try:
        write_partitions(lab)
    except BaseException:
        lab._partitions.pop()
        write_partitions(lab)
        raise


def heal(lab: Lab) -> None:
    """End every partition."""
    lab._partitions.clear()
    write_partitions(lab)


def _group(lab: Lab, field: str, group: Iterable[Namespace | str] | Namespace | str) -> list[Namespace]:
    members = [group] if isinstance(group, (Namespace, str)) else list(group)
    if not members:
        raise InvalidValue(field, [], "a partition needs a namespace on each side")
    found = []
    for member in members:
        namespace = lab.namespaces.get(member) if isinstance(member, str) else member
        if namespace is None or namespace not in lab.namespaces.values():
            raise InvalidValue(field, str(member), "is not a namespace of this lab")
        if namespace.name not in lab._applied_namespaces:
            raise InvalidValue(field, str(member), "is not applied yet (call lab.apply() first)")
        found.append(namespace)
    return found


def addresses(lab: Lab, namespace: Namespace) -> list[Any]:
    return [endpoint.ip.ip for endpoint in lab.endpoints if endpoint.namespace is namespace]


def cut(lab: Lab) -> Iterator[tuple[Namespace, Namespace]]:
    """Every (namespace, namespace it must not hear) of the partitions in force, both ways."""
    for side_a, side_b in lab._partitions:
        for mine, theirs in ((side_a, side_b), (side_b, side_a)):
            for namespace in mine:
                for other in theirs:
                    yield namespace, other


def write_partitions(lab: Lab) -> None:
    """Rewrite each namespace's drops from the partitions in force; remove them where none is left."""
    blocked: dict[str, list[Any]] = {}
    for namespace, other in cut(lab):
        drops = blocked.setdefault(namespace.name, [])
        drops += [ip for ip in addresses(lab, other) if ip not in drops]
    _write_forward_drops(lab)
    firewall = lab.host.firewall
    for name in sorted(lab._blocked - set(blocked)):
        argv, script = firewall.partition_unblock(lab.tag)
        Namespace(name, host=lab.host).run(argv, input=script, check=False)  # it may be gone already
        lab._blocked.discard(name)
    for name, drops in blocked.items():
        if drops:
            argv, script = firewall.partition_block([str(ip) for ip in drops], lab.tag, first=name not in lab._blocked)
            Namespace(name, host=lab.host).run(argv, input=script)
            lab._blocked.add(name)


def _write_forward_drops(lab: Lab) -> None:
    """The host side of the partitions: routed traffic, and the way round through published ports."""
    pairs = [
        (source, destination)
        for namespace, other in cut(lab)
        for source in addresses(lab, namespace)
        for destination in addresses(lab, other)
        if source.version == destination.version
    ]
    old, lab._drops = lab._drops, []
    delete_all(old, missing_ok=True)
    where = dict(namespace=lab.host_namespace, host=lab.host, tag=lab.tag)
    drops = [
        ForwardDrops("partitions", dict.fromkeys(mine), **where)  # type: ignore[arg-type]
        for version in (4, 6)
        if (mine := [pair for pair in pairs if pair[0].version == version])
    ]
    create_all(drops)  # one object per IP version
    lab._drops = drops
