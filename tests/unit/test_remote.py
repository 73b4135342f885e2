"""Remote Hosts without a remote machine: the pynetns agent (``pynetns.agent``) run here, as an ssh Host runs it
there, and what ``Host.ssh`` refuses before anything starts. The kernel tests (tests/kernel/test_remote.py) drive
real sshd "machines"."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess

import pytest

from pynetns import BackendUnavailable, ConnectionLost, Host, InvalidValue, LockTimeout, PynetnsError
from pynetns.agent import bind_lock
from pynetns.locking import held, host_lock
from pynetns.polling import wait_until
from pynetns.runner import Agent, LocalRunner, SshRunner, agent_argv
from pynetns.runtime import RemoteRuntime, owner_alive


@pytest.fixture
def runtime(tmp_path):
    """A RemoteRuntime whose "machine" is this one: its agent runs here, through a LocalRunner."""
    remote = RemoteRuntime(LocalRunner(), "here", str(tmp_path / "run"))
    yield remote
    remote.close()


def test_the_agents_journals_are_held_as_a_local_pynetns_holds_them(runtime, tmp_path):
    journal = runtime.journal("abc123")
    journal.write({"id": "abc123", "name": "shop"}, owned=True)
    path = tmp_path / "run" / "labs" / "abc123.json"
    assert runtime.journal_path("abc123") == path and journal.held
    assert owner_alive(path) and runtime.owner_alive(path)  # its flock, seen from here and from there
    assert runtime.journals() == [(path, {"id": "abc123", "name": "shop"})]
    journal.write({"id": "abc123", "name": "shop", "more": 1}, owned=True)  # replaced whole, still held
    assert owner_alive(path) and runtime.journals()[0][1]["more"] == 1
    journal.release()
    assert not owner_alive(path) and not runtime.owner_alive(path)
    journal.remove()
    assert not (tmp_path / "run").exists()  # the folders it left empty went too
    assert runtime.unwritable() is None


def test_the_agent_takes_the_same_host_lock_as_local_processes(runtime, token):
    key = f"test-remote-{token}"
    with host_lock(key, remote=runtime):
        assert held(key, "here") and not held(key)
        assert bind_lock(key) is None  # the agent's process holds the very socket a local pynetns binds
    assert not held(key, "here")
    with host_lock(key):  # and the other way round
        with pytest.raises(LockTimeout, match=f"{key} on here") as waited:
            runtime.acquire(key, 0.2)
        assert waited.value.holder == f"process {os.getpid()}"
    bound = bind_lock(key)
    assert bound is not None
    bound.close()


def test_the_agent_runs_argv_lists_and_says_what_is_missing():
    agent = Agent(LocalRunner().popen(agent_argv(), stdin=subprocess.PIPE), "here")
    try:
        done = agent.request("run", argv=["sh", "-c", 'cat; echo "$0" >&2; exit 3', "a b; c"], input="in\n")
        assert done == {"returncode": 3, "stdout": "in\n", "stderr": "a b; c\n"}  # no shell between
        assert agent.request("run", argv=["no-such-tool-x"], input=None, timeout=None, path=None) == {
            "missing": "not found on PATH"
        }
        timed_out = agent.request("run", argv=["sleep", "5"], input=None, timeout=0.2, path=None)
        assert timed_out["timeout"] is True
    finally:
        agent.close()
    assert not agent.alive
    with pytest.raises(ConnectionLost, match="here"):
        agent.request("journals", folder="/nonexistent")


def test_a_dead_agent_is_a_lost_connection_naming_the_machine(runtime):
    assert runtime.journals() == []
    agent = runtime._agent
    assert agent is not None
    os.kill(agent.process.pid, signal.SIGKILL)
    with pytest.raises(ConnectionLost, match="lost the connection to here") as lost:
        runtime.journals()
    assert lost.value.machine == "here" and "cleanup --host here" in str(lost.value)
    with pytest.raises(ConnectionLost):  # and stays lost: a new agent would not hold what the old one held
        runtime.owner_alive(runtime.journal_path("x"))


@pytest.mark.parametrize("destination", ["", "-oProxyCommand=sh", "a b", "root@x;reboot", "user@", 42])
def test_a_bad_destination_is_refused_before_anything_runs(destination):
    with pytest.raises(InvalidValue, match="destination"):
        SshRunner(destination)


def test_a_bad_port_and_options_the_ssh_host_chooses_itself_are_refused():
    with pytest.raises(InvalidValue, match="port"):
        SshRunner("root@machine", port=0)
    for taken in ("runner", "runtime", "machine", "dry_run"):
        with pytest.raises(InvalidValue, match=taken):
            Host.ssh("root@machine", **{taken: None})


@pytest.mark.skipif(importlib.util.find_spec("paramiko") is not None, reason="paramiko is installed")
def test_paramiko_is_asked_for_only_when_chosen():
    with pytest.raises(BackendUnavailable, match="paramiko"):
        Host.ssh("root@machine", paramiko=True)


def test_an_unreachable_machine_is_a_clear_error():
    """Port 1 of this machine's loopback: nothing listens; nothing is left running."""
    with pytest.raises(PynetnsError, match=r"cannot connect to root@127\.0\.0\.1 over ssh: .*refused"):
        Host.ssh("root@127.0.0.1", port=1, connect_timeout=2)


def test_an_interrupted_command_is_cancelled_there(tmp_path):
    """Ctrl-C while the agent runs a command: the command is killed there, not left running unwatched."""
    agent = Agent(LocalRunner().popen(agent_argv(), stdin=subprocess.PIPE), "here")
    marker = tmp_path / "pid"
    try:
        script = f"echo $$ > {marker}; exec sleep 60"
        with pytest.raises(KeyboardInterrupt):

            def interrupt(signum, frame):
                raise KeyboardInterrupt

            previous = signal.signal(signal.SIGALRM, interrupt)
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                agent.request("run", argv=["sh", "-c", script], input=None, timeout=None, path=None)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        pid = int(marker.read_text())
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), what="the cancelled command's end")
        assert agent.request("run", argv=["true"])["returncode"] == 0  # the agent carries on
    finally:
        agent.close()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_cleanup_host_cleans_the_machine_it_names(monkeypatch, capsys):
    """``pynetns cleanup --host``: a Host.ssh with the options given, cleaned up and closed; needs no local root."""
    import sys

    from pynetns.cli import app as cli_module
    from pynetns.lab import Cleaned

    cleanup_module = sys.modules["pynetns.lab.cleanup"]
    journal_module = sys.modules["pynetns.lab.journal"]
    made, cleaned_hosts = [], []

    class FakeRemote:
        closed = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.closed = True

    def fake_ssh(destination, **options):
        made.append((destination, options))
        return FakeRemote()

    def fake_cleanup(host=None, *, all=False, orphans=False):
        cleaned_hosts.append(host)
        cleaned = Cleaned()
        cleaned.append("namespace pn1a2b3c-web")
        return cleaned

    monkeypatch.setattr(Host, "ssh", fake_ssh)
    monkeypatch.setattr(cleanup_module, "cleanup", fake_cleanup)
    monkeypatch.setattr(journal_module, "labs", lambda host=None: [])
    argv = ["cleanup", "--host", "root@lab-2", "--ssh-port", "2222", "--ssh-key", "/k", "--ssh-option", "A=b"]
    assert cli_module.run(argv) == 0
    assert made == [("root@lab-2", {"port": 2222, "keyfile": "/k", "ssh_opts": ["-o", "A=b"]})]
    assert isinstance(cleaned_hosts[0], FakeRemote) and cleaned_hosts[0].closed
    assert "removed namespace pn1a2b3c-web" in capsys.readouterr().out
    assert cli_module.run(["cleanup", "--ssh-port", "22"]) != 0
    assert "go with --host" in capsys.readouterr().err
