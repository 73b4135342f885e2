"""Names (pynetns.lab.names) without root: the hosts files' text, aliases refused before any command, the
commands a lab runs and explains, the journal, and the ``/etc/netns`` marker on a folder of files (real
``mkdir``/``rm``, no kernel). The kernel tests are tests/kernel/test_names.py."""

from __future__ import annotations

import pytest

from pynetns import CommandError, Host, InvalidInput, InvalidValue
from pynetns.backends.iproute2 import Iproute2
from pynetns.lab import Lab
from pynetns.lab.names import MARKER, claim_etc, hosts_text, release_etc
from pynetns.lab.topology import Topology
from pynetns.runner import CompletedCommand, LocalRunner


def shop() -> Lab:
    lab = Lab("shop", host=Host(dry_run=True))
    front = lab.network("front", subnet="10.30.0.0/24")
    back = lab.network("back", subnet="10.31.0.0/24")
    lab.namespace("db", networks=[back], aliases=["postgres", "pg"])
    lab.namespace("web", networks=[front, back])
    lab.namespace("cache", networks=[front])
    return lab


def entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#") and "localhost" not in line]


def test_a_hosts_file_names_the_members_of_the_namespaces_networks_only():
    lab = shop()
    state = lab._state
    assert entries(hosts_text(state, lab["web"])) == [
        "10.30.0.2\tweb",  # front first: web's first network
        "10.30.0.3\tcache",
        "10.31.0.2\tdb postgres pg",
        "10.31.0.3\tweb",
    ]
    assert entries(hosts_text(state, lab["db"])) == ["10.31.0.2\tdb postgres pg", "10.31.0.3\tweb"]
    assert entries(hosts_text(state, lab["cache"])) == ["10.30.0.2\tweb", "10.30.0.3\tcache"]  # no db
    assert "127.0.0.1\tlocalhost\n" in hosts_text(state, lab["cache"])
    alone = lab.namespace("alone")
    assert entries(hosts_text(state, alone)) == []


@pytest.mark.parametrize(
    ("aliases", "rule"),
    [
        (["web"], "already names namespace web"),
        (["pg"], "already names namespace db"),
        (["new", "new"], "given twice"),
        (["new"], None),
        (["bad name"], "only letters"),
        (["10.0.0.1"], "not an IP address"),
        (["-x"], "not starting with '-'"),
        ("pg", "must be a list"),
    ],
)
def test_aliases_are_refused_before_any_command(aliases, rule):
    lab = shop()
    if rule is None:
        lab.namespace("new-one", aliases=aliases)
        return
    with pytest.raises(InvalidInput, match=rule):
        lab.namespace("new-one", aliases=aliases)
    assert "new-one" not in lab
    assert lab.host.history == []


def test_a_namespace_named_as_an_alias_is_refused():
    with pytest.raises(InvalidValue, match="is an alias of namespace db"):
        shop().namespace("postgres")


def test_explain_writes_the_files_before_the_namespaces_run_anything():
    lab = shop()
    text = lab.explain()
    # the files in a folder of the runtime, linked from /etc/netns (one entry there per namespace)
    stores = f"{lab.host.runtime.folder.parent}/names"
    assert f"mkdir -p -- {stores}/pn{lab.id}-db {stores}/pn{lab.id}-web {stores}/pn{lab.id}-cache" in text
    assert f"tee -- {stores}/pn{lab.id}-db/resolv.conf" in text and "nameserver" not in text
    assert "10.31.0.2\tdb postgres pg" in text
    assert f"ln -s -t /etc/netns -- {stores}/pn{lab.id}-db {stores}/pn{lab.id}-web" in text
    # after the namespaces are made, before anything runs in them
    assert text.index("netns add") < text.index("mkdir -p -- /etc/netns") < text.index(f"ip -n pn{lab.id}-db")
    assert text.index("ln -s") < text.index(f"ip -n pn{lab.id}-db")


def test_a_later_apply_rewrites_only_the_hosts_files_that_change():
    lab = shop()
    lab.apply()
    lab.host.runner.clear()  # type: ignore[attr-defined]
    lab.namespace("worker", networks=["front"])
    lab.apply()
    writes = [call for call in lab.host.history if call.argv[0] == "tee"]
    paths = [path for call in writes for path in call.argv[2:] if not path.endswith(MARKER)]  # a dry run makes it
    written = sorted(path.removeprefix(f"{lab.host.runtime.folder.parent}/names/pn{lab.id}-") for path in paths)
    # the newcomer's two files; the members of front (web, cache) get worker; db (back only) is left alone
    assert written == ["cache/hosts", "web/hosts", "worker/hosts", "worker/resolv.conf"]
    assert lab.plan() == []


def test_the_journal_names_the_folders_and_aliases():
    lab = shop()
    data = lab._state.journal(firewall=False)
    assert data["names"] == [f"pn{lab.id}-{name}" for name in ("db", "web", "cache")]
    assert data["aliases"] == {"db": ["postgres", "pg"]} and data["etc_netns"] is False


class Interleaved(LocalRunner):
    """Runs ``meanwhile`` right after the command removing the marker: another process's lab comes in."""

    def __init__(self, meanwhile):
        super().__init__()
        self.meanwhile = meanwhile

    def _execute(self, argv, input, timeout) -> CompletedCommand:
        result = super()._execute(argv, input, timeout)
        if argv[0] == "rm" and argv[-1].endswith(MARKER):
            self.meanwhile()
        return result


def test_the_marker_comes_back_when_a_folder_came_in_during_the_release(tmp_path):
    """Another network namespace's process (its lock is another) puts its folder in while the last lab here
    removes /etc/netns: the folder stays, with its marker, and its own last lab then removes it."""
    etc = tmp_path / "netns"

    class Elsewhere(Iproute2):
        netns_etc = str(etc)

    etc.mkdir()
    (etc / MARKER).write_text("# made by pynetns\n")
    theirs = etc / "pnabcdef-a"
    host = Host(links=Elsewhere(), runner=Interleaved(theirs.mkdir))
    assert release_etc(host) == []
    assert sorted(path.name for path in etc.iterdir()) == [MARKER, theirs.name]
    theirs.rmdir()
    assert release_etc(Host(links=Elsewhere())) == [] and not etc.exists()


def test_a_lab_made_with_names_false_writes_no_names_files():
    lab = Lab("plain", host=Host(dry_run=True), names=False)
    front = lab.network("front", subnet="10.32.0.0/24")
    lab.namespace("web", networks=[front])
    text = lab.explain()
    assert "/etc/netns" not in text and "tee" not in text and "netns add" in text
    with pytest.raises(InvalidValue, match="resolves no names"):
        lab.namespace("db", networks=[front], aliases=["postgres"])
    assert "db" not in lab.namespaces
    topology = Topology.from_dict({"name": "plain", "names": False, "networks": {"front": {}}})
    assert topology.names is False and topology.to_dict()["names"] is False
    assert "/etc/netns" not in Lab.from_topology(topology, host=Host(dry_run=True)).explain()


class MarkerFails(LocalRunner):
    """Fails the command writing the marker, as if the machine refused it (or it was killed)."""

    def _execute(self, argv, input, timeout) -> CompletedCommand:
        if argv[0] == "tee" and argv[-1].endswith(MARKER):
            return CompletedCommand(argv, 1, "", "tee: refused")
        return super()._execute(argv, input, timeout)


def test_a_folder_made_but_not_marked_does_not_stay(tmp_path):
    """``/etc/netns`` made, its marker not written: claiming it fails and leaves no unmarked folder behind
    (nothing would ever say pynetns made it)."""
    etc = tmp_path / "netns"

    class Elsewhere(Iproute2):
        netns_etc = str(etc)

    host = Host(links=Elsewhere(), runner=MarkerFails())
    with pytest.raises(CommandError):
        claim_etc(host, ["pnabcdef-a"])
    assert not etc.exists()


def test_an_unmarked_folder_a_lab_may_have_made_gets_the_marker_while_others_use_it(tmp_path):
    """The journal says the lab may have made /etc/netns (its undo failed after removing the marker), and other
    labs' entries are in it now: it is marked, so the last of them removes it; empty, it goes at once."""
    etc = tmp_path / "netns"

    class Elsewhere(Iproute2):
        netns_etc = str(etc)

    host = Host(links=Elsewhere(), runner=LocalRunner())
    etc.mkdir()
    (etc / "pnabcdef-a").mkdir()
    assert release_etc(host, unmarked=True) == []
    assert sorted(path.name for path in etc.iterdir()) == [MARKER, "pnabcdef-a"]
    (etc / "pnabcdef-a").rmdir()
    assert release_etc(host) == [] and not etc.exists()  # the last one out
    etc.mkdir()
    assert release_etc(host) == [] and etc.exists()  # unmarked, not said to be pynetns': left alone
    assert release_etc(host, unmarked=True) == [] and not etc.exists()
