"""The records of the user's persistent sandboxes (``pynetns up`` without root): where they live, what
they hold, and that a pid alone is never trusted (a record whose PID 1 is gone, or is another process
now, is refused and forgotten by ``cleanup``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pynetns import PynetnsError, sandbox
from pynetns.cli import app as cli_module
from pynetns.cli.records import SandboxEntry, sandbox_entries, sandbox_folder
from pynetns.sandbox import Sandbox, identity


@pytest.fixture
def runtime(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def gone_pid() -> int:
    """A pid no process has now (the highest free one below the kernel's maximum)."""
    top = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    return next(pid for pid in range(top, 1, -1) if not os.path.exists(f"/proc/{pid}"))


def test_the_folder_is_under_xdg_runtime_dir_or_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert sandbox_folder() == tmp_path / "pynetns" / "sandboxes"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sandbox_folder() == tmp_path / "home" / ".cache" / "pynetns" / "sandboxes"


def test_identity_is_the_start_time_and_user_namespace():
    me = identity(os.getpid())
    assert me is not None and me == identity(os.getpid())
    assert me.endswith(os.readlink("/proc/self/ns/user"))
    assert identity(gone_pid()) is None
    assert identity(1) != me


def test_a_record_round_trips(runtime):
    fake = SimpleNamespace(pid=os.getpid(), identity=identity(os.getpid()), backend=SimpleNamespace(name="unshare"))
    entry = SandboxEntry.save("shop", fake)
    assert entry.path == runtime / "pynetns" / "sandboxes" / "shop.json"
    assert json.loads(entry.path.read_text()) == {
        "lab": "shop",
        "pid": os.getpid(),
        "identity": fake.identity,
        "backend": "unshare",
    }
    assert sandbox_entries() == [entry]
    assert entry.attach() is not None  # the same process: accepted
    entry.forget()
    assert sandbox_entries() == []


def test_a_stale_pid_is_refused():
    me = identity(os.getpid())
    with pytest.raises(PynetnsError, match=r"is gone \(its PID 1 is another process"):
        Sandbox.attach(os.getpid(), "1:user:[1]")  # the pid runs, but it is not the recorded process
    with pytest.raises(PynetnsError, match=r"is gone \(its PID 1 ended"):
        Sandbox.attach(gone_pid(), me)
    with pytest.raises(PynetnsError, match="over 1"):
        Sandbox.attach(1, me)
    entry = SandboxEntry("shop", os.getpid(), "1:user:[1]", "unshare", sandbox_folder() / "shop.json")
    assert entry.attach() is None


def test_an_unreadable_record_is_skipped(runtime):
    folder = sandbox_folder()
    folder.mkdir(parents=True)
    (folder / "bad.json").write_text("{not json")
    (folder / "half.json").write_text('{"lab": "x"}')
    assert sandbox_entries() == []


def test_cleanup_forgets_the_records_of_gone_sandboxes(runtime, monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "privileged", lambda: False)
    folder = sandbox_folder()
    folder.mkdir(parents=True)
    pid = gone_pid()
    record = {"lab": "shop", "pid": pid, "identity": "1:user:[1]", "backend": "unshare"}
    (folder / "shop.json").write_text(json.dumps(record))
    reused = {**record, "lab": "old", "pid": os.getpid()}  # its pid now runs another process: this one
    (folder / "old.json").write_text(json.dumps(reused))
    assert cli_module.run(["cleanup"]) == 0
    out = capsys.readouterr().out
    assert f"removed the record of sandbox {pid} (lab shop): it is gone" in out
    assert f"removed the record of sandbox {os.getpid()} (lab old): it is gone" in out
    assert sandbox_entries() == []
    assert cli_module.run(["cleanup"]) == 0
    assert "nothing to remove (no sandbox of this user)" in capsys.readouterr().err
