"""The shapes of partitions, as Jepsen's nemeses draw them: pure functions over the members' names.

A partition is a *grudge* (Jepsen's word): each member → the members whose traffic it no longer
receives. Two groups cut both ways make a complete grudge; a one-way cut (``a → b`` dropped) is the
half of it where only ``b`` holds a grudge against ``a``.

>>> grudge("halves", ["n1", "n2", "n3", "n4", "n5"])[0]["n1"]
('n3', 'n4', 'n5')
>>> sorted(grudge("majorities-ring", ["n1", "n2", "n3", "n4", "n5"])[0]["n1"])
['n3', 'n4']
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import InvalidValue
from ..views import Viewable

__all__ = ["SHAPES", "Partition", "bisect", "complete_grudge", "grudge", "one_way_grudge"]

#: the named shapes :func:`grudge` draws (Jepsen: partition-halves, partition-random-halves,
#: partition-random-node, partition-majorities-ring, bridge)
SHAPES = ("halves", "random-halves", "isolate", "majorities-ring", "bridge")

Grudge = dict[str, tuple[str, ...]]


@attrs.frozen
class Partition(Viewable):
    """A partition in force: who no longer hears whom (``drops[b]`` holds ``a`` when ``a → b`` is dropped).

    ``shape`` is ``"groups"`` for two explicit groups, ``"one-way"`` for a one-way cut, or one of :data:`SHAPES`;
    ``seed`` is the seed a random shape was drawn with (pass it again to draw the same partition).
    """

    shape: str
    drops: Mapping[str, tuple[str, ...]] = attrs.field(hash=False)
    seed: int | None = None

    def reaches(self, source: str, destination: str) -> bool:
        """Whether this partition lets ``source``'s packets arrive at ``destination``."""
        return source not in self.drops.get(destination, ())

    @property
    def cut(self) -> list[tuple[str, str]]:
        """Every dropped direction, as (source, destination) pairs."""
        return [(source, destination) for destination, sources in self.drops.items() for source in sources]

    @property
    def members(self) -> list[str]:
        """Every namespace the partition names, in the order its drops name them."""
        return list(dict.fromkeys([*self.drops, *(source for sources in self.drops.values() for source in sources)]))

    @property
    def groups(self) -> list[list[str]]:
        """The members grouped by how the partition treats them: the same members dropped by each, and
        dropping each the same (two explicit groups, halves: two groups; a bridge: its two sides and the
        bridge; a majorities ring: every member alone)."""
        found: dict[tuple[frozenset[str], frozenset[str]], list[str]] = {}
        for member in self.members:
            hears_not = frozenset(self.drops.get(member, ()))
            not_heard_by = frozenset(name for name, sources in self.drops.items() if member in sources)
            found.setdefault((hears_not, not_heard_by), []).append(member)
        return list(found.values())

    def to_dict(self) -> dict[str, Any]:
        """As a lab's journal keeps it (:meth:`from_dict` reads it back)."""
        return {"shape": self.shape, "drops": {name: list(sources) for name, sources in self.drops.items()},
                "seed": self.seed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Partition:
        """The partition :meth:`to_dict` wrote."""
        try:
            drops = {str(name): tuple(str(source) for source in sources) for name, sources in data["drops"].items()}
            seed = data.get("seed")
            return cls(str(data["shape"]), drops, None if seed is None else int(seed))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidValue("partition", data, f"is not a partition as a journal keeps it ({error})") from None


def bisect(members: Sequence[str]) -> tuple[list[str], list[str]]:
    """Two halves, the first the smaller when the count is odd (Jepsen's ``bisect``)."""
    middle = len(members) // 2
    return list(members[:middle]), list(members[middle:])


def complete_grudge(groups: Iterable[Sequence[str]]) -> Grudge:
    """Each member drops every member of the other groups (both ways)."""
    groups = [list(group) for group in groups]
    return {
        member: tuple(other for j, group in enumerate(groups) if j != i for other in group)
        for i, mine in enumerate(groups)
        for member in mine
    }


def one_way_grudge(sources: Sequence[str], destinations: Sequence[str]) -> Grudge:
    """``sources → destinations`` dropped, the other way open: only the destinations hold a grudge."""
    return {destination: tuple(sources) for destination in destinations}


def grudge(
    shape: str, members: Sequence[str], *, seed: int | None = None, node: str | None = None
) -> tuple[Grudge, int | None]:
    """The grudge of a named shape over ``members`` (in their order), and the seed it was drawn with.

    - ``halves``: the first ⌊n/2⌋ members against the rest;
    - ``random-halves``: the same after a shuffle by ``seed`` (a fresh seed, returned, when it is None);
    - ``isolate``: ``node`` alone against the rest (a member drawn by ``seed`` when ``node`` is None);
    - ``majorities-ring``: the members on a ring, each hearing only the majority centred on itself, so that
      each sees a majority and no two see the same one (needs 3 members or more; at 3 nothing is cut);
    - ``bridge``: two halves cut from each other, the first member of the second half in both.

    ``majorities-ring`` and ``bridge`` take the members in order, or shuffled by ``seed`` when it is given.
    """
    if shape not in SHAPES:
        raise InvalidValue("shape", shape, f"must be one of {', '.join(SHAPES)}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidValue("seed", seed, "must be an integer")
    members = list(members)
    if len(set(members)) != len(members):
        raise InvalidValue("members", members, "must be distinct")
    least = 3 if shape in ("majorities-ring", "bridge") else 2
    if len(members) < least:
        raise InvalidValue("members", members, f"a {shape} partition needs at least {least} namespaces")
    if node is not None and shape != "isolate":
        raise InvalidValue("node", node, "only the isolate shape takes a node")
    randomized = shape == "random-halves" or (shape == "isolate" and node is None) or seed is not None
    if randomized and seed is None:
        seed = random.SystemRandom().randrange(2**32)
    if seed is not None:
        random.Random(seed).shuffle(members)
    if shape in ("halves", "random-halves"):
        return complete_grudge(bisect(members)), seed
    if shape == "isolate":
        if node is None:
            node = members[0]
        elif node not in members:
            raise InvalidValue("node", node, "is not one of the partitioned namespaces")
        return complete_grudge([[node], [member for member in members if member != node]]), seed
    if shape == "majorities-ring":
        count, majority = len(members), len(members) // 2 + 1
        drops: Grudge = {}
        for i, member in enumerate(members):
            heard = {members[(i + offset - majority // 2) % count] for offset in range(majority)}
            drops[member] = tuple(other for other in members if other not in heard)
        return drops, seed
    first, second = bisect(members)  # bridge
    middle, rest = second[0], second[1:]
    drops = complete_grudge([first, rest])
    return {**drops, middle: ()}, seed
