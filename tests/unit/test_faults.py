"""Faults without root: impairment and partitions in topology files, the ``impair``/``partition``/``heal`` command
lines, a lab attached from its journal, a Partition's displays, and SCTP rules and their refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pynetns import BackendUnavailable, Host, Impairment, InvalidValue, PortMap, TopologyError
from pynetns.cli import run
from pynetns.display.html import render_partition as html_partition
from pynetns.display.text import render_partition, state
from pynetns.firewall.site import refuse_without_sctp
from pynetns.lab import Lab, Partition, Topology
from pynetns.lab.shapes import complete_grudge, grudge, one_way_grudge
from pynetns.lab.topology import ImpairSpec, PartitionSpec
from pynetns.reports import Interface
from pynetns.runner import CompletedCommand, Runner
from pynetns.views import render
from tests.support.nat import dry, scripts

NET = '[networks.net]\nsubnet = "10.40.0.0/24"\n'
ABC = NET + "".join(f'[namespaces.{name}]\nnetworks = ["net"]\n' for name in "abc") + "[namespaces.lonely]\n"
FAULTS = (
    ABC
    + '[[impair]]\nnamespace = "a"\ndelay = "50ms"\njitter = "5ms"\nloss = "1%"\n'
    + '[[links]]\nnamespace = "lonely"\nnetwork = "net"\nimpair = { rate = "1mbit", direction = "egress" }\n'
    + '[[partition]]\ngroups = [["a"], "b,c"]\none_way = true\n'
    + '[[partition]]\nshape = "isolate"\nnode = "b"\nseed = 4\n'
)


def test_a_topology_declares_impairment_and_partitions():
    topology = Topology.from_text(FAULTS, "toml")
    assert topology.impair == (
        ImpairSpec("a", None, Impairment(delay="50ms", jitter="5ms", loss="1%")),
        ImpairSpec("lonely", "net", Impairment(rate="1mbit"), "egress"),
    )
    assert topology.partition == (
        PartitionSpec(groups=(("a",), ("b", "c")), one_way=True),
        PartitionSpec(shape="isolate", node="b", seed=4),
    )
    data = topology.to_dict()
    assert data["impair"][1] == {"namespace": "lonely", "network": "net", "rate": 1000000, "direction": "egress"}
    assert data["partition"][0] == {"groups": [["a"], ["b", "c"]], "one_way": True}
    assert Topology.from_text(json.dumps(data), "json") == topology


class Recorder:
    """What apply_faults asks of a lab."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def endpoint(self, namespace: str, network: str | None = None) -> Any:
        recorder = self

        class Endpoint:
            def impair(self, **kwargs: Any) -> str:
                recorder.calls.append(("impair", (namespace, network, kwargs)))
                return "impaired"

        return Endpoint()

    def partition(self, *groups: Any, **kwargs: Any) -> str:
        self.calls.append(("partition", (groups, kwargs)))
        return "cut"


def test_apply_faults_impairs_then_partitions_in_order():
    lab = Recorder()
    assert Topology.from_text(FAULTS, "toml").apply_faults(lab) == ["impaired", "impaired", "cut", "cut"]  # type: ignore[arg-type]
    (kind, (namespace, network, options)), *_ = lab.calls
    assert (kind, namespace, network, options["delay"], options["direction"]) == ("impair", "a", None, 0.05, "both")
    assert lab.calls[2] == ("partition", ((["a"], ["b", "c"]), {"one_way": True}))
    assert lab.calls[3] == ("partition", ((), {"shape": "isolate", "seed": 4, "among": None, "node": "b"}))


REFUSED = [
    ('[[partition]]\nshape = "halfs"\n', "partition[0].shape", '"halfs" is not a partition shape; the shapes: '
     "halves, random-halves, isolate, majorities-ring, bridge"),
    ('[[partition]]\ngroups = [["a"], ["zz"]]\n', "partition[0].groups", "unknown namespace 'zz'; declared: a, b, "
     "c, lonely"),
    ('[[partition]]\nshape = "bridge"\namong = ["a", "bee"]\n', "partition[0].among", "unknown namespace 'bee'; "
     "declared: a, b, c, lonely"),
    ('[[partition]]\nshape = "bridge"\namong = ["a", "b"]\n', "partition[0].among", "a bridge partition needs at "
     "least 3 namespaces"),
    ('[[partition]]\nshape = "halves"\none_way = true\n', "partition[0].one_way", "true: goes with two groups, not "
     "with a shape"),
    ('[[partition]]\nshape = "halves"\nnode = "a"\n', "partition[0].node", '"a": only the isolate shape takes a node'),
    ('[[partition]]\ngroups = [["a"], ["a", "b"]]\n', "partition[0].groups", '["a"]: a namespace cannot be on both '
     "sides of a partition"),
    ('[[partition]]\ngroups = [["a"]]\n', "partition[0].groups", '[["a"]] must be two groups of namespaces, like '
     '[["web"], ["db", "cache"]]'),
    ("[[partition]]\none_way = true\n", "partition[0].groups", "is required: two groups of namespaces, or a shape"),
    ('[[partition]]\nshape = "halves"\nseed = "x"\n', "partition[0].seed", '"x" must be an integer'),
    ('[[partition]]\nshape = "halves"\nsides = 2\n', "partition[0].sides", "unknown key; expected one of: "
     "groups, shape, one_way, seed, among, node"),
    ('[[impair]]\nnamespace = "a"\ndelay = "5 parsecs"\n', "impair[0].delay", "\"5 parsecs\" must be a duration "
     "such as '50ms', '1.5s' or '200us', or a number of seconds"),
    ('[[impair]]\nnamespace = "a"\nloss = "150%"\n', "impair[0].loss", None),
    ('[[impair]]\nnamespace = "a"\n', "impair[0]", "gives no impairment: set delay, jitter, loss, rate, duplicate "
     "or corrupt"),
    ('[[impair]]\nnamespace = "zz"\ndelay = 1\n', "impair[0].namespace", "unknown namespace 'zz'; declared: a, b, c, "
     "lonely"),
    ('[[impair]]\nnamespace = "lonely"\ndelay = 1\n', "impair[0].namespace", "namespace lonely is connected to no "
     "network, so it has no link to impair"),
    ('[[impair]]\nnamespace = "a"\nnetwork = "wan"\ndelay = 1\n', "impair[0].network", "namespace a is not "
     "connected to network wan (its networks: net)"),
    ('[[impair]]\nnamespace = "a"\ndelay = 1\ndirection = "up"\n', "impair[0].direction", "\"up\" must be 'both', "
     "'egress' or 'ingress'"),
    ('[[impair]]\nnamespace = "a"\ndelay = 1\n[[impair]]\nnamespace = "a"\nnetwork = "net"\nloss = 0.1\n',
     "impair[1]", "the link of a to network net is already impaired by impair[0]"),
    ('[[links]]\nnamespace = "lonely"\nnetwork = "net"\nimpair = { pace = 1 }\n', "links[0].impair.pace",
     "unknown key; expected one of: delay, jitter, loss, rate, duplicate, corrupt, direction"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "field", "rule"), REFUSED, ids=[f"{i}-{case[1]}" for i, case in enumerate(REFUSED)])
def test_bad_faults_are_refused_naming_the_key(text, field, rule):
    with pytest.raises(TopologyError) as caught:
        Topology.from_text(ABC + text, "toml", source="lab.toml")
    error = caught.value
    assert (error.source, error.field) == ("lab.toml", field), str(error)
    if rule is not None:
        assert error.rule == rule


def test_an_inline_impair_names_its_own_place():
    text = NET + '[namespaces.a]\nnetworks = [{ network = "net", impair = { delay = "1ms" } }]\n'
    text += '[[impair]]\nnamespace = "a"\nloss = 0.5\n'
    with pytest.raises(TopologyError) as caught:
        Topology.from_text(text, "toml", source="lab.toml")
    assert str(caught.value) == (
        "lab.toml: namespaces.a.networks[0].impair: the link of a to network net is already impaired by impair[0]"
    )


# -- the command line (in this process: usage is checked before any lab is looked for) -----------------------


@pytest.mark.parametrize(
    "args",
    [("impair", "shop", "web"), ("impair", "shop", "web", "--clear", "--loss", "1%"),
     ("impair", "shop", "web", "--delay", "soon"), ("impair", "shop", "web", "--direction", "up", "--delay", "1"),
     ("impair", "shop"), ("partition", "shop"), ("partition", "shop", "a"), ("partition", "shop", "a", "b", "c"),
     ("partition", "shop", "--shape", "thirds"), ("partition", "shop", "a", "b", "--shape", "halves"),
     ("partition", "shop", "--shape", "halves", "--one-way"), ("partition", "shop", "a", "b", "--seed", "3"),
     ("partition", "shop", "--shape", "halves", "--node", "a"), ("partition", "shop", ",", "b"),
     ("partition", "shop", "--shape", "halves", "--seed", "x"), ("heal",), ("heal", "a", "b"),
     ("explain", "--id", "xyz", "lab.toml"), ("up", "--id", "ABCDEF", "lab.toml")],
)  # fmt: skip
def test_usage_errors_exit_2(args, capsys):
    assert run(args) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_lab_that_does_not_exist_is_a_failure(capsys, token):
    assert run(["heal", f"none-{token}"]) == 1
    assert capsys.readouterr().err.startswith(f"pynetns heal: error: lab='none-{token}': no such lab")


def test_explain_names_what_up_will_make(tmp_path, capsys):
    path = tmp_path / "lab.toml"
    path.write_text('name = "faulty"\nisolated = true\n' + FAULTS)
    assert run(["explain", str(path), "--id", "1a2b3c"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [
        "# lab faulty, id 1a2b3c: 'pynetns up FILE --id 1a2b3c' runs exactly these commands",
        "# namespaces: a=pn1a2b3c-a, b=pn1a2b3c-b, c=pn1a2b3c-c, lonely=pn1a2b3c-lonely; host side pn1a2b3c-host",
        "# bridges: net=pn1a2b3cb1",
        "# then: impair a: delay 50ms 5ms loss 1%, both",
    ]
    assert "# then: partition a -> b,c" in out and "# then: partition --shape isolate seed 4" in out
    assert "netns add pn1a2b3c-a" in out
    assert run(["explain", str(path)]) == 0
    assert "'pynetns up' draws a fresh id" in capsys.readouterr().out


# -- a lab attached from its journal ------------------------------------------------------------------------------


def test_a_partition_and_an_impairment_are_found_by_a_lab_attached_later(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path))
    host = Host(dry_run=True)
    lab = Lab("attached", host=host, isolated=True, id="abc123")
    net = lab.network("net", subnet="10.41.0.0/24")
    for name in "abc":
        lab.namespace(name, networks=[net])
    ring = Partition("majorities-ring", dict(grudge("majorities-ring", ["a", "b", "c"])[0]))
    cut = Partition("groups", complete_grudge([["a"], ["b", "c"]]), None)
    data = lab._state.journal(firewall=False)
    data.update(persistent=True, owner_pid=None, published=["8080->10.41.0.2:80/tcp"], future={"kept": 1})
    data["partitions"] = [ring.to_dict(), cut.to_dict()]
    data["impairments"] = [{"namespace": "b", "network": "net", "interface": "eth0", "impairment": {"delay": 0.1},
                            "direction": "both", "netem": True, "mode": "netem", "engines": []}]  # fmt: skip
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "abc123.json").write_text(json.dumps(data))

    again = Lab.attach("attached", host=host)
    assert (again.id, again.partitions, again.tag) == ("abc123", [ring, cut], "pynetns:abc123")
    assert again.endpoint("b").impairment == Impairment(delay=0.1)
    assert [str(endpoint.ip) for endpoint in again.endpoints] == ["10.41.0.2/24", "10.41.0.3/24", "10.41.0.4/24"]
    journal = again._state.journal(firewall=False)
    assert journal["published"] == data["published"] and journal["future"] == {"kept": 1}  # kept as written
    host.runner.clear()
    again.heal()
    unblocked = [str(call) for call in host.history if "delete table inet pynetns_partition" in str(call)]
    assert unblocked == [f"ip netns exec pnabc123-{name} nft delete table inet pynetns_partition" for name in "abc"]
    assert any("list table ip pynetns" in str(call) for call in host.history)  # the host side's drops, looked for
    assert again.partitions == [] and again._state.journal(firewall=False)["partitions"] == []
    again.endpoint("b").clear_impairment()
    assert any("qdisc del dev eth0 root" in str(call) for call in host.history)
    assert again._state.journal(firewall=False)["impairments"] == []


def test_a_lab_owned_by_a_running_process_is_not_attached(tmp_path, monkeypatch):
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path))
    host = Host(dry_run=True)
    lab = Lab("mine", host=host, id="def456")
    data = {**lab._state.journal(firewall=False), "persistent": False}
    (tmp_path / "labs").mkdir()
    (tmp_path / "labs" / "def456.json").write_text(json.dumps(data))
    with pytest.raises(InvalidValue, match="left by a process that died: 'pynetns cleanup' removes it"):
        Lab.attach("def456", host=host)


def test_a_partition_round_trips_through_its_journal_form():
    made = Partition("random-halves", complete_grudge([["a"], ["b"]]), 7)
    assert Partition.from_dict(json.loads(json.dumps(made.to_dict()))) == made
    with pytest.raises(InvalidValue, match="not a partition as a journal keeps it"):
        Partition.from_dict({"shape": "halves"})


# -- displays ----------------------------------------------------------------------------------------------------


def test_a_partition_shows_its_groups_who_reaches_whom_and_the_cut():
    bridge = Partition("bridge", grudge("bridge", ["n1", "n2", "n3", "n4", "n5"])[0])
    assert render(bridge, "text") == render_partition(bridge)
    assert render_partition(bridge).splitlines() == [
        "Partition bridge (5 namespaces, 8 directions cut)",
        "groups: n1 n2 | n4 n5 | n3",
        "  from \\ to  n1  n2  n4  n5  n3",
        "  n1         -   ·   x   x   ·",
        "  n2         ·   -   x   x   ·",
        "  n4         x   x   -   ·   ·",
        "  n5         x   x   ·   -   ·",
        "  n3         ·   ·   ·   ·   -",
        "cut: n4 -> n1, n5 -> n1, n4 -> n2, n5 -> n2, n1 -> n4, n2 -> n4, n1 -> n5, n2 -> n5",
    ]
    one_way = Partition("one-way", one_way_grudge(["a"], ["b", "c"]))
    assert one_way.groups == [["b", "c"], ["a"]]
    assert "cut: a -> b, a -> c" in render_partition(one_way)
    assert render_partition(Partition("groups", {})) == "Partition groups: nothing cut"
    seeded = Partition("random-halves", *grudge("random-halves", ["a", "b", "c", "d"], seed=11))
    assert render_partition(seeded).startswith("Partition random-halves (seed 11, 4 namespaces, 8 directions cut)")


def test_a_partition_in_a_notebook():
    page = Partition("halves", grudge("halves", ["a", "b", "c"])[0])._repr_html_()
    assert page is not None and page == html_partition(Partition("halves", grudge("halves", ["a", "b", "c"])[0]))
    assert "<b>Partition</b> <code>halves</code>" in page and "3 namespaces · 4 directions cut" in page
    assert "group 1: <code>a</code>" in page and "group 2: <code>b</code> <code>c</code>" in page
    assert page.count("✗") == 4 and page.count("✓") == 2
    assert "<script" not in html_partition(Partition("groups", complete_grudge([["<script>"], ["b"]])))


def link(flags: tuple[str, ...], operstate: str) -> Interface:
    return Interface(name="br0", index=3, kind="bridge", mac=None, mtu=1500, state=operstate, flags=flags)


@pytest.mark.parametrize(
    ("flags", "operstate", "shown"),
    [(("BROADCAST", "UP", "LOWER_UP"), "UP", "UP"), (("NO-CARRIER", "BROADCAST", "UP"), "DOWN", "UP (NO-CARRIER)"),
     (("LOOPBACK", "UP", "LOWER_UP"), "UNKNOWN", "UNKNOWN"), (("BROADCAST",), "DOWN", "DOWN (admin down)"),
     (("BROADCAST", "UP"), "LOWERLAYERDOWN", "UP (operstate LOWERLAYERDOWN)")],
)  # fmt: skip
def test_the_admin_state_comes_first(flags, operstate, shown):
    assert state(link(flags, operstate)) == shown


# -- SCTP ---------------------------------------------------------------------------------------------------------


def test_sctp_rules_on_nftables_and_iptables():
    host, gw = dry()
    PortMap(9000, "10.0.0.2", 7000, protocol="sctp", namespace=gw, host=host).create()
    (script,) = scripts(host)
    assert (
        "add rule ip pynetns published sctp dport 9000 counter dnat to 10.0.0.2:7000 "
        'comment "pynetns:unit portmap/sctp/any/9000-9000"'
    ) in script.splitlines()
    host, gw = dry("iptables")
    PortMap(9000, "10.0.0.2", 7000, protocol="SCTP", namespace=gw, host=host).create()
    (script,) = scripts(host)
    assert (
        "-A PYNETNS-DNAT -p sctp -m sctp --dport 9000 -m comment --comment "
        '"pynetns:unit portmap/sctp/any/9000-9000" -j DNAT --to-destination 10.0.0.2:7000'
    ) in script.splitlines()
    assert host.links.listeners("sctp")[-1] == "-S"


class NoSctp(Runner):
    """A kernel without SCTP: ``stat /proc/net/sctp`` fails; every other command is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, ...]] = []

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        self.seen.append(argv)
        if argv[-1] == "/proc/net/sctp":
            return CompletedCommand(argv, 1, "", "stat: cannot statx '/proc/net/sctp': No such file or directory")
        raise AssertionError(f"only the probe may run: {argv}")

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise AssertionError(argv)


def test_sctp_is_refused_where_the_kernel_has_none_after_one_probe():
    runner = NoSctp()
    host = Host(runner=runner)
    with pytest.raises(BackendUnavailable, match=r"'sctp' is not available \(publishing sctp needs SCTP"):
        refuse_without_sctp(host, "publishing sctp")
    assert runner.seen == [("stat", "-c", "%n", "/proc/net/sctp")]
    refuse_without_sctp(Host(dry_run=True), "a dry run runs nothing")
