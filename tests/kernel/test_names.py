"""Names on the kernel, like Docker's embedded DNS on user-defined networks: the members of a network resolve
each other by namespace name and alias (``getent hosts``, ``ping db``), through every way pynetns starts a
program (``Namespace.run``/``popen``, ``pynetns exec``); nothing else resolves (a member of another network,
the machine's own names, the host's DNS); two labs with the same names side by side keep theirs; the files
(``/etc/netns/NAME/``) go with ``destroy()``, a failed apply's undo, and ``cleanup()`` after the owner is killed.

The rootless sandbox (its own ``/etc`` overlay) is tested as uid 65534 in tests/kernel/test_rootless.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pynetns import AlreadyExists, Host, wait_until
from pynetns.backends.iproute2 import Iproute2
from pynetns.lab import Lab, cleanup, labs
from pynetns.lab.names import MARKER
from tests.support.cli import cli
from tests.support.lab import FailOn

pytestmark = pytest.mark.root
ETC = Path("/etc/netns")
#: the size knob of the suite's sweeps: the churn test runs 4 processes x 4 x N labs
SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))


def resolve(namespace, name):
    """What ``getent hosts NAME`` prints inside ``namespace``: the address, or None if the name does not resolve."""
    result = namespace.run(["getent", "hosts", name], check=False)
    return result.stdout.split()[0] if result.returncode == 0 else None


def folders(lab_id):
    """The names folders of lab ``lab_id`` on the machine."""
    return sorted(path.name for path in ETC.glob(f"pn{lab_id}-*")) if ETC.is_dir() else []


def machine_names():
    """The names the machine's /etc/hosts gives, but localhost's."""
    found = set()
    for line in Path("/etc/hosts").read_text().splitlines():
        words = line.split("#", 1)[0].split()
        found.update(word for word in words[1:] if "localhost" not in word and "loopback" not in word)
    return sorted(found) or ["pynetns-no-such-host"]


@pytest.mark.parametrize("isolated", [True, False], ids=["isolated", "host"])
def test_members_resolve_each_other_by_name_and_alias_and_nothing_else(isolated, request):
    host = None if isolated else request.getfixturevalue("playhost")
    with Lab("names", host=host, isolated=isolated) as lab:
        front = lab.network("front", subnet="10.81.0.0/24")
        back = lab.network("back", subnet="10.82.0.0/24")
        db = lab.namespace("db", networks=[front], aliases=["postgres", "db.internal"])
        web = lab.namespace("web", networks=[front, back])
        other = lab.namespace("other", networks=[back])
        lab.apply()
        assert folders(lab.id) == sorted(namespace.name for namespace in (db, web, other))
        address = str(lab.ip("db"))
        assert resolve(web, "db") == resolve(web, "postgres") == resolve(web, "db.internal") == address
        assert resolve(db, "web") == str(lab.ip("web", "front"))  # on the network they share
        assert resolve(other, "web") == str(lab.ip("web", "back"))
        assert resolve(db, "db") == address  # itself too, as a container sees its own name
        assert web.run(["ping", "-c1", "-W2", "postgres"]).returncode == 0  # ping by name
        # another network's member does not resolve; neither do the machine's names, nor anything by DNS
        assert resolve(other, "db") is None and resolve(other, "postgres") is None
        assert resolve(db, "other") is None
        for name in machine_names():
            assert resolve(web, name) is None, name
        assert resolve(web, "example.com") is None
        assert "nameserver" not in web.run(["cat", "/etc/resolv.conf"]).stdout
        # a program started with popen (what the pytest fixtures and `pynetns exec` use) sees the names too
        reader = web.popen(["getent", "hosts", "postgres"])
        assert reader.wait(timeout=10) == 0
        reader.stop()
        assert reader.stdout_text.split()[0] == address
        lab_id = lab.id
    assert folders(lab_id) == []


def test_a_later_apply_adds_names_that_running_programs_see(tmp_path):
    go = tmp_path / "go"
    with Lab("late", isolated=True) as lab:
        net = lab.network("net", subnet="10.83.0.0/24")
        a = lab.namespace("a", networks=[net])
        lab.apply()
        # started before "b" exists, it looks "b" up once told to: its /etc/hosts is the lab's file, rewritten in place
        waiting = a.popen(["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.05; done; getent hosts b', "sh", str(go)])
        assert resolve(a, "b") is None
        lab.namespace("b", networks=[net], aliases=["bee"])
        lab.apply()
        go.touch()
        assert waiting.wait(timeout=10) == 0
        waiting.stop()
        assert waiting.stdout_text.split()[:3] == [str(lab.ip("b")), "b", "bee"]
        assert resolve(a, "bee") == str(lab.ip("b"))


def test_two_labs_with_the_same_names_side_by_side_keep_their_own():
    with Lab("one", isolated=True) as one, Lab("two", isolated=True) as two:
        for lab, subnet in ((one, "10.84.0.0/24"), (two, "10.85.0.0/24")):
            net = lab.network("net", subnet=subnet)
            lab.namespace("db", networks=[net], aliases=["postgres"])
            lab.namespace("web", networks=[net])
            lab.apply()
        assert resolve(one["web"], "postgres") == str(one.ip("db"))
        assert resolve(two["web"], "postgres") == str(two.ip("db"))
        assert str(one.ip("db")) != str(two.ip("db"))
        ids = (one.id, two.id)
    assert [folders(lab_id) for lab_id in ids] == [[], []]


def test_pynetns_exec_sees_the_names():
    with Lab("cliname", isolated=True) as lab:
        net = lab.network("net", subnet="10.86.0.0/24")
        lab.namespace("db", networks=[net], aliases=["postgres"])
        lab.namespace("web", networks=[net])
        lab.apply()
        result = cli("exec", f"{lab.id}:web", "getent", "hosts", "postgres")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == str(lab.ip("db"))


def test_a_failed_apply_removes_the_names_files():
    runner = FailOn("never")
    lab = Lab("failing", host=Host(runner=runner), isolated=True)
    net = lab.network("net", subnet="10.87.0.0/24")
    lab.namespace("a", networks=[net])
    runner.needle = f"{net.bridge} up"  # the last stage's batch: the names were written by then
    with pytest.raises(Exception, match="injected"):
        lab.apply()
    assert folders(lab.id) == [] and labs() == []


def elsewhere(folder):
    """A Host whose names files go to ``folder`` instead of /etc/netns (``ip netns exec`` does not read them):
    the tests of the folders' ownership leave the machine's /etc/netns to the labs of other tests."""

    class Elsewhere(Iproute2):
        netns_etc = str(folder)

    return Host(links=Elsewhere())


def test_a_folder_not_made_by_the_lab_is_refused_and_left_alone(tmp_path):
    etc = tmp_path / "netns"
    lab = Lab("taken", host=elsewhere(etc), isolated=True)
    net = lab.network("net", subnet="10.88.0.0/24")
    namespace = lab.namespace("a", networks=[net])
    mine = etc / namespace.name
    mine.mkdir(parents=True)
    (mine / "hosts").write_text("10.88.0.99 someone\n")
    with pytest.raises(AlreadyExists, match=namespace.name):
        lab.apply()
    assert sorted(path.name for path in etc.iterdir()) == [namespace.name]
    assert (mine / "hosts").read_text() == "10.88.0.99 someone\n"
    assert labs() == []


def test_etc_netns_goes_only_when_pynetns_made_it(tmp_path):
    """The marker says pynetns made the folder; the last lab out removes it then, and only then."""
    etc = tmp_path / "netns"
    for existed in (False, True):
        if existed:
            etc.mkdir()
        with Lab("marker", host=elsewhere(etc), isolated=True) as lab:
            lab.namespace("a", networks=[lab.network("net", subnet="10.89.0.0/24")])
            lab.apply()
            entries = sorted(path.name for path in etc.iterdir())
            assert entries == ([] if existed else [MARKER]) + [lab["a"].name]
            assert sorted(path.name for path in (etc / lab["a"].name).iterdir()) == ["hosts", "resolv.conf"]
        assert etc.exists() == existed and (not existed or list(etc.iterdir()) == [])


OWNER = textwrap.dedent("""
    import os, signal
    from pynetns.lab import Lab
    lab = Lab("killed", isolated=True)
    net = lab.network("net", subnet="10.90.0.0/24")
    lab.namespace("a", networks=[net], aliases=["alpha"])
    lab.namespace("b", networks=[net])
    lab.apply()
    print(lab.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_cleanup_after_a_killed_owner_removes_the_names_files():
    child = subprocess.run([sys.executable, "-c", OWNER], capture_output=True, text=True, timeout=60, env=os.environ)
    assert child.returncode == -signal.SIGKILL, child.stderr
    lab_id = child.stdout.strip()
    assert len(folders(lab_id)) == 2
    removed = cleanup()
    assert sum("names folder" in line for line in removed) == 2, removed
    wait_until(lambda: not folders(lab_id), what="the names folders to go")
    assert labs() == []


CHURN = textwrap.dedent("""
    import sys
    from pynetns import Host
    from pynetns.backends.iproute2 import Iproute2
    from pynetns.lab import Lab

    class Elsewhere(Iproute2):
        netns_etc = sys.argv[1]

    for round in range(int(sys.argv[2])):
        with Lab("churn", host=Host(links=Elsewhere()), isolated=True) as lab:
            lab.namespace("a", networks=[lab.network("net", subnet="10.91.0.0/24")])
            lab.apply()
""")


def test_labs_of_processes_the_lock_does_not_reach_share_etc_netns(tmp_path):
    """Processes in other network namespaces (their host lock is another: ``unshare -n``) make and remove
    labs side by side with this one's: every apply finds the folder, and the last one out removes it."""
    etc = tmp_path / "netns"
    rounds = str(4 * SWEEP)
    argv = [sys.executable, "-c", CHURN, str(etc), rounds]
    children = [subprocess.Popen(argv if index % 2 else ["unshare", "-n", *argv], stderr=subprocess.PIPE, text=True)
                for index in range(4)]  # fmt: skip
    results = [(child.wait(timeout=120), child.stderr.read() if child.stderr else "") for child in children]
    assert all(code == 0 for code, _ in results), results
    assert not etc.exists(), sorted(path.name for path in etc.iterdir())


def test_members_resolve_hosts_by_files_and_dns_where_the_host_asks_more(tmp_path):
    """A host whose nsswitch.conf asks systemd's resolve or myhostname (reached through a socket or the
    machine's own name, not the lab's network): the members get a copy asking files and DNS only."""
    switch = tmp_path / "nsswitch.conf"
    switch.write_text("passwd: files\nhosts: files myhostname resolve [!UNAVAIL=return] dns\n")

    class Resolving(Iproute2):
        host_nsswitch = str(switch)

    with Lab("switch", host=Host(links=Resolving()), isolated=True) as lab:
        net = lab.network("net", subnet="10.92.0.0/24")
        lab.namespace("db", networks=[net], aliases=["postgres"])
        web = lab.namespace("web", networks=[net])
        lab.apply()
        assert web.run(["cat", "/etc/nsswitch.conf"]).stdout == "passwd: files\nhosts: files dns\n"
        assert resolve(web, "postgres") == str(lab.ip("db"))
        assert web.run(["getent", "passwd", "root"]).stdout.startswith("root:")
        assert sorted(path.name for path in (ETC / web.name).iterdir()) == ["hosts", "nsswitch.conf", "resolv.conf"]
        lab_id = lab.id
    assert folders(lab_id) == []
