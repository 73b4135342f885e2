"""Jepsen's partition shapes, as pure groupings over the members' names (pynetns.lab.shapes)."""

import pytest

from pynetns.errors import InvalidValue
from pynetns.lab import Lab
from pynetns.lab.shapes import Partition, bisect, complete_grudge, grudge, one_way_grudge

NODES = ["n1", "n2", "n3", "n4", "n5"]


def heard(drops, member, members=NODES):
    return {other for other in members if other not in drops[member]}


def test_bisect_puts_the_smaller_half_first_as_jepsen_does():
    assert bisect([]) == ([], [])
    assert bisect(["a"]) == ([], ["a"])
    assert bisect(["a", "b", "c", "d"]) == (["a", "b"], ["c", "d"])
    assert bisect(NODES) == (["n1", "n2"], ["n3", "n4", "n5"])


def test_complete_and_one_way_grudges():
    assert complete_grudge([["a"], ["b", "c"]]) == {"a": ("b", "c"), "b": ("a",), "c": ("a",)}
    assert one_way_grudge(["a"], ["b", "c"]) == {"b": ("a",), "c": ("a",)}
    cut = Partition("one-way", one_way_grudge(["a"], ["b"]))
    assert not cut.reaches("a", "b") and cut.reaches("b", "a") and cut.cut == [("a", "b")]


def test_halves():
    drops, seed = grudge("halves", NODES)
    assert seed is None
    assert drops == complete_grudge([["n1", "n2"], ["n3", "n4", "n5"]])


def test_random_halves_are_reproducible_from_their_seed():
    drops, seed = grudge("random-halves", NODES)
    assert seed is not None and grudge("random-halves", NODES, seed=seed) == (drops, seed)
    small = [member for member in NODES if len(drops[member]) == 3]
    assert len(small) == 2 and all(heard(drops, member) == set(small) for member in small)
    draws = {tuple(sorted(grudge("random-halves", NODES, seed=s)[0]["n1"])) for s in range(20)}
    assert len(draws) > 1  # the seed changes the draw


def test_isolate_one_node():
    drops, _ = grudge("isolate", NODES, node="n3")
    assert drops["n3"] == ("n1", "n2", "n4", "n5") and all(drops[m] == ("n3",) for m in NODES if m != "n3")
    drawn, seed = grudge("isolate", NODES)  # a random node, reproducible
    assert grudge("isolate", NODES, seed=seed)[0] == drawn
    assert sum(len(others) == 4 for others in drawn.values()) == 1


def test_majorities_ring_of_five_each_sees_its_own_majority_overlapping_its_neighbours():
    drops, _ = grudge("majorities-ring", NODES)
    majorities = {member: heard(drops, member) for member in NODES}
    assert majorities["n1"] == {"n5", "n1", "n2"} and majorities["n3"] == {"n2", "n3", "n4"}
    assert all(len(seen) == 3 and member in seen for member, seen in majorities.items())
    assert len({frozenset(seen) for seen in majorities.values()}) == 5  # no two the same majority
    for i, member in enumerate(NODES):  # neighbours on the ring share a majority's worth but one
        assert len(majorities[member] & majorities[NODES[(i + 1) % 5]]) == 2
    assert all(a in drops[b] for a in NODES for b in drops[a])  # symmetric: a cut is both ways


@pytest.mark.parametrize("count", [3, 4, 6, 7])
def test_majorities_ring_of_other_sizes(count):
    members = [f"n{i}" for i in range(count)]
    drops, _ = grudge("majorities-ring", members)
    assert all(len(heard(drops, m, members)) == count // 2 + 1 for m in members)


def test_bridge_two_halves_plus_one_node_in_both():
    drops, _ = grudge("bridge", NODES)
    assert drops["n3"] == () and heard(drops, "n3") == set(NODES)
    assert heard(drops, "n1") == heard(drops, "n2") == {"n1", "n2", "n3"}
    assert heard(drops, "n4") == heard(drops, "n5") == {"n3", "n4", "n5"}
    shuffled, seed = grudge("bridge", NODES, seed=7)
    assert seed == 7 and sum(others == () for others in shuffled.values()) == 1


@pytest.mark.parametrize(
    ("shape", "members", "options", "match"),
    [
        ("triangle", NODES, {}, "must be one of"),
        ("bridge", ["a", "b"], {}, "at least 3"),
        ("halves", ["a"], {}, "at least 2"),
        ("halves", ["a", "a"], {}, "distinct"),
        ("halves", NODES, {"seed": "7"}, "integer"),
        ("halves", NODES, {"node": "n1"}, "only the isolate"),
        ("isolate", NODES, {"node": "n9"}, "not one of"),
    ],
)
def test_bad_shapes_are_refused(shape, members, options, match):
    with pytest.raises(InvalidValue, match=match):
        grudge(shape, members, **options)


def test_the_lab_returns_each_partition_and_refuses_bad_ones_before_any_command(dry_host):
    with Lab("shapes", host=dry_host, isolated=True) as lab:
        net = lab.network("net", subnet="10.9.0.0/24")
        for name in NODES:
            lab.namespace(name, networks=[net])
        lab.apply()
        assert lab.partition(shape="bridge").drops["n3"] == ()
        assert lab.isolate("n2") == Partition("isolate", complete_grudge([["n2"], ["n1", "n3", "n4", "n5"]]))
        assert lab.partition(["n1"], ["n2", "n3"], one_way=True).cut == [("n1", "n2"), ("n1", "n3")]
        drawn = lab.partition(shape="random-halves", among=["n1", "n2", "n3", "n4"])
        assert lab.partition(shape="random-halves", among=["n1", "n2", "n3", "n4"], seed=drawn.seed) == drawn
        lab.heal()
        for bad, match in [
            ({"shape": "halves", "one_way": True}, "takes no groups"),
            ({"group_a": "n1"}, "two groups, or a shape"),
            ({"group_a": "n1", "group_b": "n2", "seed": 3}, "by shape, not by groups"),
            ({"shape": "halves", "among": ["n1", "n9"]}, "not a namespace of this lab"),
        ]:
            with pytest.raises(InvalidValue, match=match):
                lab.partition(**bad)
