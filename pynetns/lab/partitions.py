"""Partitions: namespaces of a lab that cannot reach each other (:meth:`Lab.partition <pynetns.Lab.partition>`),
by two groups, one way, or Jepsen's named shapes (:mod:`~pynetns.lab.shapes`), as drops in each namespace of
what it must not hear and, on the lab's host, drops of routed traffic; and healing them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import InvalidValue
from ..firewall import ForwardDrops, create_all, delete_all
from ..namespace import Namespace
from .machines import by_host
from .shapes import Partition, complete_grudge, grudge, one_way_grudge
from .state import LabState

__all__ = ["addresses", "cut", "heal", "isolate", "partition", "restore", "write_partitions"]


def partition(
    state: LabState,
    group_a: Iterable[Namespace | str] | Namespace | str | None = None,
    group_b: Iterable[Namespace | str] | Namespace | str | None = None,
    *,
    shape: str | None = None,
    one_way: bool = False,
    seed: int | None = None,
    among: Iterable[Namespace | str] | None = None,
    node: Namespace | str | None = None,
) -> Partition:
    """Cut the lab's namespaces from each other (all IP traffic, silently dropped: clients time out) and say how.

    Either two groups, cut both ways (each group still works inside) or, with ``one_way=True``, only
    ``group_a → group_b`` (what ``group_b`` receives from ``group_a`` is dropped; what ``group_a`` receives
    from ``group_b`` arrives, but a reply back to ``group_b`` is dropped as well, so only one-way
    protocols such as UDP get through); or a named ``shape`` (:data:`~pynetns.lab.shapes.SHAPES`) over
    ``among`` (default: every namespace of the lab, in declaration order), drawn with ``seed`` where it is
    random. :func:`heal` ends it; several partitions add up.
    """
    if shape is None:
        if group_a is None or group_b is None:
            raise InvalidValue("group_b", None, "a partition takes two groups, or a shape")
        for field, value in (("seed", seed), ("among", among), ("node", node)):
            if value is not None:
                raise InvalidValue(field, str(value), "is for a partition by shape, not by groups")
        side_a, side_b = _group(state, "group_a", group_a), _group(state, "group_b", group_b)
        both = [state.name_of(namespace) for namespace in side_a if namespace in side_b]
        if both:
            raise InvalidValue("group_b", both, "a namespace cannot be on both sides of a partition")
        names_a, names_b = [state.name_of(n) for n in side_a], [state.name_of(n) for n in side_b]
        if one_way:
            made = Partition("one-way", one_way_grudge(names_a, names_b))
        else:
            made = Partition("groups", complete_grudge([names_a, names_b]))
    else:
        if group_a is not None or group_b is not None or one_way:
            raise InvalidValue("shape", shape, "a partition by shape takes no groups and is not one-way")
        members = _group(state, "among", among if among is not None else list(_applied(state)))
        names = [state.name_of(namespace) for namespace in members]
        picked = None if node is None else state.name_of(_group(state, "node", node)[0])
        drops, seed = grudge(shape, names, seed=seed, node=picked)
        made = Partition(shape, drops, seed)
    return _add(state, made)


def isolate(state: LabState, node: Namespace | str) -> Partition:
    """Cut ``node`` from every other namespace of the lab, both ways."""
    return partition(state, shape="isolate", node=node)


def _applied(state: LabState) -> Iterator[Namespace]:
    return (namespace for namespace in state.namespaces.values() if namespace.name in state.applied_namespaces)


def _add(state: LabState, made: Partition) -> Partition:
    state.partitions.append(made)
    # before the rules (it writes firewall rules on the hosts from now on: cleanup must know), and naming the
    # partition, so that a process attaching to the lab (pynetns heal) finds it
    for host in state.hosts():
        state.write_journal(firewall=not state.isolated or state.journaled_firewall, host=host)
    try:
        write_partitions(state)
    except BaseException:
        state.partitions.pop()
        write_partitions(state)
        state.rewrite_journal()
        raise
    return made


def heal(state: LabState) -> None:
    """End every partition."""
    state.partitions.clear()
    write_partitions(state)
    state.rewrite_journal()


def restore(state: LabState) -> None:
    """What the partitions of ``state`` (read from its journal) left in force: the namespaces holding drops and
    the drops on the host, as :func:`write_partitions` made them, so that :func:`heal` removes them."""
    state.blocked = {name for name, drops in _blocked(state).items() if drops}
    state.drops = _forward_drops(state)


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
    # a dual-stack endpoint's two addresses: a partition cuts both families
    return [
        address.ip for endpoint in state.endpoints if endpoint.namespace is namespace for address in endpoint.addresses
    ]


def cut(state: LabState) -> Iterator[tuple[Namespace, Namespace]]:
    """Every (namespace, namespace it must not hear) of the partitions in force."""
    for made in state.partitions:
        for name, others in made.drops.items():
            for other in others:
                yield state.namespaces[name], state.namespaces[other]


def write_partitions(state: LabState) -> None:
    """Rewrite each namespace's drops from the partitions in force; remove them where none is left."""
    blocked = _blocked(state)
    _write_forward_drops(state)
    hosts = {namespace.name: namespace.host for namespace in state.namespaces.values()}  # a lab may span Hosts
    for name in sorted(state.blocked - set(blocked)):
        host = hosts.get(name, state.host)
        for argv, script in host.firewall.partition_unblock(state.tag):
            Namespace(name, host=host).run(argv, input=script, check=False)  # it may be gone already
        state.blocked.discard(name)
    for name, drops in blocked.items():
        if drops:
            host = hosts[name]
            commands = host.firewall.partition_block(
                [str(ip) for ip in drops], state.tag, first=name not in state.blocked
            )
            for argv, script in commands:
                Namespace(name, host=host).run(argv, input=script)
            state.blocked.add(name)


def _blocked(state: LabState) -> dict[str, list[Any]]:
    """Each namespace's kernel name → the addresses it must not hear."""
    blocked: dict[str, list[Any]] = {}
    for namespace, other in cut(state):
        drops = blocked.setdefault(namespace.name, [])
        drops += [ip for ip in addresses(state, other) if ip not in drops]
    return blocked


def _write_forward_drops(state: LabState) -> None:
    """The host side of the partitions: routed traffic, and the way round through published ports (each cut
    direction on its own: a one-way cut drops only the packets of its sources to its destinations)."""
    drops = _forward_drops(state)
    old, state.drops = state.drops, []
    for group in by_host(old):
        delete_all(group, missing_ok=True)
    for group in by_host(drops):
        create_all(group)  # one object per IP version, on each Host
        state.drops += group


def _forward_drops(state: LabState) -> list[ForwardDrops]:
    pairs = [
        (source, destination)
        for namespace, other in cut(state)
        for source in addresses(state, other)
        for destination in addresses(state, namespace)
        if source.version == destination.version
    ]
    drops = []
    for host in state.hosts():  # routed traffic crosses the Host of either end: the drops are on each
        namespace = state.host_namespace if host is state.host else None
        where = dict(namespace=namespace, host=host, tag=state.tag)
        drops += [
            ForwardDrops("partitions", dict.fromkeys(mine), **where)  # type: ignore[arg-type]
            for version in (4, 6)
            if (mine := [pair for pair in pairs if pair[0].version == version])
        ]
    return drops
