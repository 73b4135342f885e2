"""Total rollback and teardown: undo carries on past failures, a killed batch is undone whole, transient
failures are retried, the journal stays while anything may be left, ``destroy()`` runs every part.

Fast tests drive a fake kernel (a runner that models namespaces and links, and fails on request); the root
tests inject the same faults into a lab on a ``playhost`` (firewall, NAT, a published port, ``ip_forward``).
``PYNETNS_SWEEP=3`` (or more) sweeps every position of the kernel lab with one and with three failing commands
(by default: every position with one, a sample with three).

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_rollback.py.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pynetns import (
    BackendUnavailable,
    CommandError,
    CommandTimeout,
    Host,
    Plan,
    PynetnsError,
    ResourceBusy,
    Step,
)
from pynetns.backends.base import NetnsRef
from pynetns.errors import CleanupError, NotFound
from pynetns.lab.lab import Lab
from pynetns.namespace import Namespace
from pynetns.plan import undo_errors
from pynetns.runner import CompletedCommand, Runner
from tests.support.rollback import small_lab


@pytest.fixture(autouse=True)
def _own_runtime_dir(request, tmp_path, monkeypatch):
    """The fake-kernel tests keep their journals to themselves (root tests use the session's, checked)."""
    if request.node.get_closest_marker("root") is None:
        monkeypatch.setenv("PYNETNS_RUNTIME_DIR", str(tmp_path / "run"))


class FakeKernel(Runner):
    """Runs ``ip`` commands and batches against a model of namespaces and links; everything else succeeds.

    ``fail`` holds the numbers (1-based, in the order started) of the commands to fail: ``mode="refuse"``
    fails without doing anything (exit 1, no line named); ``mode="kill"`` runs half of a batch (or all of
    a single command) and then reports exit 137, as a killed process does.
    """

    in_caller_namespace = True
    retry_max_delay = 0.5

    def __init__(self, fail: Sequence[int] = (), mode: str = "refuse") -> None:
        super().__init__()
        self.namespaces: set[str] = set()
        self.links: dict[tuple[str, str], tuple[str, str] | None] = {}  # (netns, name) → its veth peer
        self.fail, self.mode = set(fail), mode
        self.count = 0
        self.started: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def leftovers(self) -> list[str]:
        return sorted(self.namespaces) + sorted(f"{netns or 'root'}/{name}" for netns, name in self.links)

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        with self._lock:
            self.count += 1
            self.started.append(argv)
            injected = self.count in self.fail
            if injected and self.mode == "refuse":
                return CompletedCommand(argv, 1, "", "injected failure\n")
            if argv[0] != "ip" or "exec" in argv or "-j" in argv:
                return CompletedCommand(argv, 0)
            netns = argv[argv.index("-n") + 1] if "-n" in argv else ""
            if "-batch" in argv:
                lines = (input or "").splitlines()
                if injected:
                    lines = lines[: len(lines) // 2]
                for number, line in enumerate(lines, 1):
                    error = self._line(netns, line.split())
                    if error and "-force" not in argv:
                        return CompletedCommand(argv, 1, "", f"{error}\nCommand failed -:{number}\n")
            else:
                words = [word for word in argv[1:] if not word.startswith("-")]
                error = self._line(netns, words[1:] if argv[1] == "-n" else words)
                if error and not injected:
                    return CompletedCommand(argv, 2, "", error + "\n")
            return CompletedCommand(argv, 137, "", "") if injected else CompletedCommand(argv, 0)

    def _line(self, netns: str, words: list[str]) -> str | None:
        if words[:3] == ["link", "set", "dev"]:
            words = words[:2] + words[3:]
        match words:
            case ["netns", "add", name]:
                if name in self.namespaces:
                    return f'Cannot create namespace file "/run/netns/{name}": File exists'
                self.namespaces.add(name)
            case ["netns", "delete", name]:
                if name not in self.namespaces:
                    return f'Cannot remove namespace file "/run/netns/{name}": No such file or directory'
                self.namespaces.discard(name)
                for key in [key for key in self.links if key[0] == name]:
                    self._delete(key)
            case ["link", "add", name, *rest]:
                if (netns, name) in self.links:
                    return "RTNETLINK answers: File exists"
                peer = None
                if "peer" in rest:
                    peer = (rest[rest.index("netns") + 1] if "netns" in rest else netns, rest[rest.index("name") + 1])
                    self.links[peer] = (netns, name)
                self.links[(netns, name)] = peer
            case ["link", "delete", name]:
                if (netns, name) not in self.links:
                    return f'Cannot find device "{name}"'
                self._delete((netns, name))
            case ["link", "set", name, *_] | ["addr", "add", _, "dev", name]:
                if (netns, name) not in self.links and name != "lo":
                    return f'Cannot find device "{name}"'
        return None

    def _delete(self, key: tuple[str, str]) -> None:
        peer = self.links.pop(key, None)
        if peer is not None:
            self.links.pop(peer, None)

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise AssertionError("no process is started here")


class Scripted(Runner):
    """Fails the commands whose argv is in ``errors`` with the given error (a list: one per attempt)."""

    def __init__(self, errors: dict[tuple[str, ...], list[Exception]]) -> None:
        super().__init__()
        self.errors, self.ran = errors, []

    def run(self, argv: Sequence[str], **kwargs: Any) -> CompletedCommand:
        self.ran.append(tuple(argv))
        pending = self.errors.get(tuple(argv))
        if pending:
            raise pending.pop(0)
        return CompletedCommand(argv, 0)

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        raise AssertionError

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise AssertionError


def three_steps() -> Plan:
    return Plan(Step(["mk", name], undo=Step(["rm", name])) for name in ("a", "b", "c"))


@pytest.mark.parametrize(
    "undo_error",
    [
        CommandError(["rm", "b"], 1, stderr="boom"),
        BackendUnavailable("rm"),
        CommandTimeout(["rm", "b"], -9, stderr="timed out"),
        RuntimeError("a bug in a backend"),
    ],
    ids=["command", "backend", "timeout", "other"],
)
def test_a_failing_undo_step_neither_stops_the_undo_nor_replaces_the_error(undo_error):
    original = CommandError(["mk", "d"], 1, stderr="the original")
    plan = three_steps()
    plan.add(Step(["mk", "d"]))
    runner = Scripted({("mk", "d"): [original], ("rm", "b"): [undo_error]})
    with pytest.raises(CommandError) as caught:
        plan.apply(runner)
    assert caught.value is original
    assert runner.ran[-3:] == [("rm", "c"), ("rm", "b"), ("rm", "a")]
    assert undo_errors(caught.value) == [undo_error]
    assert any("while undoing" in note for note in getattr(caught.value, "__notes__", ["while undoing"]))


def test_undo_errors_survive_pickling():
    """They travel with the error (xdist, multiprocessing)."""
    original, undo_error = PynetnsError("the original"), PynetnsError("an undo failed")
    plan = three_steps()
    plan.add(Step(["mk", "d"]))
    with pytest.raises(PynetnsError) as caught:
        plan.apply(Scripted({("mk", "d"): [original], ("rm", "b"): [undo_error]}))
    copy = pickle.loads(pickle.dumps(caught.value))
    assert [str(error) for error in undo_errors(copy)] == [str(undo_error)]
    assert getattr(copy, "__notes__", None) == getattr(caught.value, "__notes__", None)


def test_a_step_refused_before_it_started_is_not_undone():
    plan = three_steps()
    runner = Scripted({("mk", "b"): [BackendUnavailable("mk")]})
    with pytest.raises(BackendUnavailable) as caught:
        plan.apply(runner)
    assert runner.ran == [("mk", "a"), ("mk", "b"), ("rm", "a")] and undo_errors(caught.value) == []


def test_an_undo_step_already_gone_is_not_a_failure():
    original = CommandError(["mk", "d"], 1, stderr="the original")
    plan = three_steps()
    plan.add(Step(["mk", "d"]))
    gone = NotFound(["rm", "b"], 1, stderr='Cannot find device "b"')
    with pytest.raises(CommandError) as caught:
        plan.apply(Scripted({("mk", "d"): [original], ("rm", "b"): [gone]}))
    assert undo_errors(caught.value) == []


def test_a_transient_failure_while_undoing_is_retried():
    original = CommandError(["mk", "d"], 1, stderr="the original")
    plan = three_steps()
    plan.add(Step(["mk", "d"]))
    busy = [ResourceBusy(["rm", "b"], 1, stderr="Device or resource busy") for _ in range(2)]
    runner = Scripted({("mk", "d"): [original], ("rm", "b"): busy})
    runner.retry_max_delay = 1.0
    with pytest.raises(CommandError) as caught:
        plan.apply(runner)
    assert undo_errors(caught.value) == []
    assert runner.ran.count(("rm", "b")) == 3 and runner.ran[-1] == ("rm", "a")


def test_a_transient_failure_in_an_undo_batch_resends_from_its_line():
    batch = ("ip", "-batch", "-")
    undo = Plan(Step(["ip", "link", "delete", name], batch=batch, line=f"link delete {name}") for name in "abc")
    sent: list[list[str]] = []

    class Busy(Scripted):
        def run_batch(self, argv: Sequence[str], lines: Sequence[str], **kwargs: Any) -> CompletedCommand:
            sent.append(list(lines))
            if len(sent) == 1:  # a wrapper's failure: the runner's own retry never saw it
                raise ResourceBusy(argv, 2, stderr="busy", line_number=2, line=lines[1])
            return CompletedCommand(argv, 0)

    assert undo.rollback(Busy({})) == []
    assert sent == [["link delete a", "link delete b", "link delete c"], ["link delete b", "link delete c"]]


def bridges(host: Host, names: Sequence[str]) -> Plan:
    where = NetnsRef.root()
    return Plan(
        host.ip_step(where, ("link", "add", name, "type", "bridge"), ("link", "delete", name)) for name in names
    )


def test_a_batch_killed_without_naming_its_line_is_undone_whole():
    kernel = FakeKernel(fail=[1], mode="kill")
    host = Host(runner=kernel, tag="pynetns:test-kill")
    plan = bridges(host, ["pnk1", "pnk2", "pnk3", "pnk4"])
    with pytest.raises(CommandError) as caught:
        plan.apply(kernel)
    assert caught.value.returncode == 137 and caught.value.line_number is None
    assert kernel.leftovers() == [] and undo_errors(caught.value) == []
    # the undo is one batch, resent after each line that found nothing to delete ("Cannot find device")
    assert {call for call in kernel.started} == {("ip", "-batch", "-")}


def test_an_undo_batch_failing_without_a_line_is_resent_step_by_step():
    kernel = FakeKernel(fail=[2, 3])  # "false", then the undo batch, fail naming no line
    host = Host(runner=kernel, tag="pynetns:test-kill")
    plan = bridges(host, ["pnk1", "pnk2", "pnk3"])
    plan.add(Step(["false"]))
    with pytest.raises(CommandError) as caught:
        plan.apply(kernel)
    assert kernel.leftovers() == [] and undo_errors(caught.value) == []
    assert kernel.started[3:] == [("ip", "link", "delete", name) for name in ("pnk3", "pnk2", "pnk1")]


def lab_on(kernel: FakeKernel, isolated: bool = False) -> Lab:
    return small_lab(Host(runner=kernel, tag="pynetns:test-fake", firewall="nftables"), isolated)


def clean_apply_count(isolated: bool) -> int:
    """How many commands an apply of the small lab starts (declaring it runs some too: not counted)."""
    kernel = FakeKernel()
    lab = lab_on(kernel, isolated)
    declared = kernel.count
    lab.apply()
    count = kernel.count - declared
    lab.destroy()
    assert kernel.leftovers() == [] and not lab.journal_path.exists()
    return count


def check_failed_apply(kernel: FakeKernel, lab: Lab, error: BaseException, retry_here: bool) -> bool:
    """After a failed apply: nothing left if the undo was complete (and no journal), else the journal stays
    and a retry (or destroy) removes the rest. True if the undo was complete."""
    complete = not undo_errors(error)
    if complete:
        assert kernel.leftovers() == [], error
        assert not lab.journal_path.exists()
    else:
        assert lab.journal_path.exists(), "something may be left: the journal must stay"
    kernel.fail = set()
    if retry_here:
        lab.apply()
        assert kernel.namespaces == {namespace.name for namespace in lab.namespaces.values()} | (
            {lab.host_namespace.name} if lab.host_namespace else set()
        )
    lab.destroy()
    assert kernel.leftovers() == [] and not lab.journal_path.exists()
    again = lab_on(kernel, lab.isolated)
    again.apply()
    again.destroy()
    assert kernel.leftovers() == []
    return complete


@pytest.mark.parametrize("isolated", [False, True], ids=["host", "isolated"])
@pytest.mark.parametrize("failures", [1, 3], ids=["one", "three"])
@pytest.mark.parametrize("mode", ["refuse", "kill"])
def test_every_position_of_a_fake_lab(isolated, failures, mode):
    """Fail command k (or k, k+1, k+2: the undo fails too) of an apply, at every k: nothing stays."""
    total = clean_apply_count(isolated)
    incomplete = 0
    for position in range(1, total + 1):
        kernel = FakeKernel(mode=mode)
        lab = lab_on(kernel, isolated)
        kernel.fail = {kernel.count + k for k in range(position, position + failures)}
        try:
            lab.apply()
        except Exception as error:  # any injected failure
            incomplete += not check_failed_apply(kernel, lab, error, retry_here=position % 2 == 0)
        else:  # the failure was ignored on purpose (an optional probe): the lab is whole
            lab.destroy()
            assert kernel.leftovers() == []
    assert total >= 10
    if failures == 1:
        assert incomplete == 0  # one failure: the undo is complete


def test_lab_undo_carries_on_past_a_failing_job(monkeypatch):
    """A job whose undo fails does not stop the others'; its failure is attached; the journal stays."""
    from pynetns.lab import compile as lab_module

    kernel = FakeKernel()
    lab = lab_on(kernel)
    kernel.fail = {kernel.count + clean_apply_count(isolated=False)}  # the last command: the bridge comes up
    firewall_error = CommandError(["nft", "-f", "-"], 1, stderr="Error: injected")

    def failing_delete(objects: Any, *, missing_ok: bool = False) -> None:
        raise firewall_error

    monkeypatch.setattr(lab_module, "delete_all", failing_delete)
    with pytest.raises(CommandError) as caught:
        lab.apply()
    assert "injected failure" in str(caught.value)
    assert undo_errors(caught.value) == [firewall_error]
    assert kernel.leftovers() == []  # the namespaces and links went after the firewall's undo failed
    assert lab.journal_path.exists()
    with pytest.raises(CleanupError) as cleanup:
        lab.destroy()
    assert cleanup.value.errors == [firewall_error]
    assert lab.journal_path.exists() and not lab.destroyed
    monkeypatch.undo()
    lab.destroy()
    assert not lab.journal_path.exists() and lab.destroyed


def test_ctrl_c_during_a_concurrent_stage_undoes_the_jobs_that_finished(monkeypatch):
    """Ctrl-C while the namespaces' insides and the firewall run: the firewall, finished, is undone."""
    from pynetns.lab import compile as lab_module

    kernel = FakeKernel()
    lab = lab_on(kernel)
    deleted: list[Any] = []
    monkeypatch.setattr(lab_module, "delete_all", lambda objects, missing_ok=False: deleted.append(objects))
    firewall_done = threading.Event()
    monkeypatch.setattr(lab_module, "create_all", lambda objects: firewall_done.set())
    real_wait = lab_module.concurrent.futures.as_completed

    def interrupted(futures: Any, *args: Any, **kwargs: Any) -> Any:
        assert firewall_done.wait(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(lab_module.concurrent.futures, "as_completed", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        lab.apply()
    monkeypatch.setattr(lab_module.concurrent.futures, "as_completed", real_wait)
    assert len(deleted) == 1 and {type(obj).__name__ for obj in deleted[0]} >= {"Masquerade", "LabPortMap"}
    assert kernel.leftovers() == [] and undo_errors(caught.value) == []
    assert not lab.journal_path.exists()


def test_destroy_runs_every_part_and_reports_every_failure(monkeypatch):
    from pynetns.lab import lab as lab_module

    kernel = FakeKernel()
    lab = lab_on(kernel)
    lab.apply()
    firewall_error = BackendUnavailable("nft", detail="injected")

    def failing_delete(objects: Any, *, missing_ok: bool = False) -> None:
        raise firewall_error

    monkeypatch.setattr(lab_module, "delete_all", failing_delete)
    web = lab.namespaces["web"]

    def stop_processes(self: Namespace, grace: float = 3.0) -> None:
        if self is web:
            raise OSError("stuck")

    monkeypatch.setattr(Namespace, "stop_processes", stop_processes)
    with pytest.raises(CleanupError) as caught:
        lab.destroy()
    assert [type(error) for error in caught.value.errors] == [OSError, BackendUnavailable]
    assert kernel.leftovers() == []  # the namespaces and the bridge went all the same
    assert lab.journal_path.exists() and not lab.destroyed  # the rules may remain: still journaled
    copy = pickle.loads(pickle.dumps(caught.value))
    assert "2 failed" in str(copy) and len(copy.errors) == 2
    monkeypatch.undo()
    lab.destroy()
    assert lab.destroyed and not lab.journal_path.exists()
