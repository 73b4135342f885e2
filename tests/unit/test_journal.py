"""Journals without root: the owner's flock (liveness), atomic replacement, forks, several labs in one
process, what a journal names before the first command, and default subnets moved at apply."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from pynetns import Host
from pynetns.backends.recording import RecordingRunner
from pynetns.lab import orphans
from pynetns.lab.journal import JournalFile, labs, owner_alive
from pynetns.lab.lab import Lab
from pynetns.runner import CompletedCommand, Runner
from pynetns.runtime import LocalRuntime

WORKTREE = str(Path(__file__).resolve().parent.parent.parent)


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path / "run" / "labs"


def test_the_owner_holds_its_journal_until_it_lets_go(runtime):
    journal = JournalFile(runtime / "aaaaaa.json")
    journal.write({"id": "aaaaaa"}, owned=True)
    assert owner_alive(journal.path)  # another open file description of this very process: still "held"
    journal.write({"id": "aaaaaa", "more": 1}, owned=True)
    assert owner_alive(journal.path) and json.loads(journal.path.read_text())["more"] == 1
    assert [path.name for path in runtime.iterdir()] == ["aaaaaa.json"]  # no temporary file left
    journal.write({"id": "aaaaaa", "persistent": True}, owned=False)
    assert not owner_alive(journal.path) and not journal.held
    journal.write({"id": "aaaaaa"}, owned=True)
    journal.remove()
    assert not runtime.exists() and not journal.held


def test_a_journal_is_never_seen_unheld_while_it_is_rewritten(runtime):
    journal = JournalFile(runtime / "bbbbbb.json")
    journal.write({"id": "bbbbbb"}, owned=True)
    seen: list[bool] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(owner_alive(journal.path))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for index in range(300):
            journal.write({"id": "bbbbbb", "n": index}, owned=True)
    finally:
        done.set()
        watcher.join()
    journal.remove()
    assert seen and all(seen), f"{seen.count(False)} of {len(seen)} looks said the owner was dead"


def test_several_labs_of_one_process_hold_their_own_journals(runtime):
    one, two = JournalFile(runtime / "cccccc.json"), JournalFile(runtime / "dddddd.json")
    one.write({"id": "cccccc"}, owned=True)
    two.write({"id": "dddddd"}, owned=True)
    one.remove()
    assert owner_alive(two.path) and [record.id for record in labs()] == ["dddddd"]
    two.remove()


def test_a_forked_child_does_not_keep_its_parents_lab_alive(runtime):
    journal = JournalFile(runtime / "eeeeee.json")
    journal.write({"id": "eeeeee"}, owned=True)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's hold is not its own, and its exit takes nothing from the parent
        try:
            os.close(reader)
            os.write(writer, b"1" if not journal.held and owner_alive(journal.path) else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    told = os.read(reader, 1)
    os.close(reader)
    os.waitpid(pid, 0)
    assert told == b"1" and owner_alive(journal.path)
    journal.release()
    assert not owner_alive(journal.path)  # no copy of the descriptor kept it
    journal.remove()


def test_a_killed_owner_lets_go_of_its_journal(runtime):
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from pynetns.lab.journal import JournalFile
        JournalFile(Path(sys.argv[1])).write({"id": "ffffff"}, owned=True)
        import subprocess
        sleeper = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(sleeper.pid, flush=True)  # a program it started must not inherit the hold
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    path = runtime / "ffffff.json"
    child = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": WORKTREE},
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    sleeper = int(child.stdout)
    try:
        assert path.exists() and not owner_alive(path)
        assert [record.state for record in labs()] == ["stale"]
    finally:
        path.unlink()
        os.kill(sleeper, signal.SIGKILL)


class Fake(Runner):
    """Succeeds at everything (JSON commands print ``[]``) and, at each command, notes the journals on disk."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.seen: list[tuple[tuple[str, ...], str | None, dict[str, Any] | None]] = []

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        journals = sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []
        self.seen.append((argv, input, json.loads(journals[-1].read_text()) if journals else None))
        if argv[0] == "stat":
            return CompletedCommand(argv, 0, "1-2\n")
        if argv[0] == "nft" and "-j" in argv:
            return CompletedCommand(argv, 0, '{"nftables": [{"metainfo": {"json_schema_version": 1}}]}')
        return CompletedCommand(argv, 0, "[]" if "-j" in argv else "")

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise NotImplementedError


def test_the_journal_names_everything_before_the_first_command(runtime):
    runner = Fake(runtime)
    lab = Lab("ahead", host=Host(runner=runner))
    net = lab.network("net", subnet="10.80.0.0/24", nat=False)
    lab.namespace("a", networks=[net])
    lab.namespace("b", networks=[net])
    lab.apply()
    first = next(index for index, (argv, input, _) in enumerate(runner.seen) if input and "netns add" in input)
    journal = runner.seen[first][2]
    assert journal is not None and all(data is None for _, _, data in runner.seen[:first])
    assert set(journal["namespaces"]) == {f"pn{lab.id}-a", f"pn{lab.id}-b"}
    assert journal["links"] == [net.bridge] and journal["veths"] == [e.host_interface for e in lab.endpoints]
    assert journal["host_netns"] == "1-2" and journal["tag"] == lab.tag and journal["firewall"] is False
    assert [record.state for record in labs()] == ["alive"]
    lab.destroy()
    assert not runtime.exists()


class Elsewhere(LocalRuntime):
    """A runtime whose journals live in a folder of its own (as a remote or sandboxed Host's would)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    @property
    def folder(self) -> Path:
        return self._folder


def test_the_journal_goes_through_the_hosts_runtime(runtime, tmp_path):
    folder = tmp_path / "elsewhere" / "labs"
    host = Host(runner=Fake(folder), runtime=Elsewhere(folder))
    lab = Lab("there", host=host)
    lab.namespace("a", networks=[lab.network("net", subnet="10.81.0.0/24", nat=False)])
    lab.apply()
    assert lab.journal_path == folder / f"{lab.id}.json" and lab.journal_path.exists()
    assert [record.state for record in labs(host)] == ["alive"] and labs() == []  # not in the default runtime
    lab.destroy()
    assert not (tmp_path / "elsewhere").exists() and not runtime.exists()


def test_a_default_subnet_taken_meanwhile_moves_to_the_next_free_one(runtime):
    runner = Fake(runtime)
    lab = Lab("moved", host=Host(runner=runner, firewall="nftables"))
    net = lab.network("net")
    web = lab.namespace("web", networks=[net])
    fixed = net.connect(lab.namespace("db"), ip=str(net.subnet.network_address + 9))
    portmap = lab.publish(web, 8080, 80)
    assert str(net.subnet) == "172.17.0.0/16" and str(portmap.address) == "172.17.0.2"
    other = JournalFile(runtime / "aaaaaa.json")  # a live lab took it since (its journal reserves it)
    other.write({"id": "aaaaaa", "host_netns": "1-2", "networks": [{"subnet": "172.17.0.0/16"}]}, owned=True)
    try:
        plan_before = lab.plan()
        lab.apply()
    finally:
        other.remove()
    assert str(net.subnet) == "172.18.0.0/16" and str(net.gateway) == "172.18.0.1/16"
    assert [str(endpoint.ip) for endpoint in lab.endpoints] == ["172.18.0.2/16", "172.18.0.9/16"]
    assert fixed.ip.ip == ipaddress.ip_address("172.18.0.9")
    assert len(lab.published) == 1 and str(lab.published[0].address) == "172.18.0.2"
    batches = "".join(input or "" for argv, input, _ in runner.seen)
    assert "172.18.0.1/16" in batches and "172.17." not in batches
    assert any("172.17.0.1/16" in (call.input or "") for call in plan_before)  # what explain() showed before
    lab.destroy()


def test_a_partition_on_the_host_is_journaled_before_its_rules(runtime):
    runner = Fake(runtime)
    lab = Lab("parted", host=Host(runner=runner, firewall="nftables"))
    net = lab.network("net", subnet="10.81.0.0/24", nat=False)
    a, b = lab.namespace("a", networks=[net]), lab.namespace("b", networks=[net])
    lab.apply()
    assert json.loads(lab.journal_path.read_text())["firewall"] is False
    runner.seen.clear()
    lab.partition(a, b)
    first = next(data for argv, _, data in runner.seen if "nft" in argv)
    assert first is not None and first["firewall"] is True
    lab.destroy()


def test_orphans_are_listed_before_the_journals_are_read(monkeypatch):
    """A lab writes its journal before its first command: reading the journals after listing the objects
    never takes a lab being applied right now for an orphan."""
    cleanup_module = sys.modules["pynetns.lab.cleanup"]
    runner = RecordingRunner()
    runner.respond(("ip", "-j", "netns", "list"), json.dumps([{"name": "pnabcdef-web"}, {"name": "other"}]))
    lo = [{"ifindex": 1, "ifname": "lo", "ifalias": "pynetns:abcdef", "flags": ["UP"], "addr_info": []}]
    runner.respond(("ip", "-n", "pnabcdef-web"), json.dumps(lo))
    host = Host(runner=runner)
    read_at = []

    def journals_now(host=None):
        read_at.append(len(runner.history))
        return [] if len(read_at) == 1 else [_Record("abcdef")]

    monkeypatch.setattr(cleanup_module, "labs", journals_now)
    assert orphans(host) == ["namespace pnabcdef-web"]  # no journal names abcdef
    assert orphans(host) == []  # its journal appeared: left alone
    assert read_at[0] == len(runner.history) // 2 and read_at[1] == len(runner.history)  # after every listing


class _Record:
    def __init__(self, id):
        self.id, self.data = id, {"tag": f"pynetns:{id}"}
