"""The runner: argv only, evidence on failure, bounded retries, batches, missing tools."""

import pytest

from pynetns import BackendUnavailable, CommandError, CommandTimeout, InvalidValue, LocalRunner, NotFound, ResourceBusy
from pynetns.backends.recording import RecordingRunner
from pynetns.runner import Call, CompletedCommand


class FlakyRunner(RecordingRunner):
    """Answers EBUSY ``failures`` times, then succeeds."""

    def __init__(self, failures, line=None):
        super().__init__()
        self.failures = failures
        self.line = line

    def _execute(self, argv, input, timeout):
        if self.failures:
            self.failures -= 1
            where = f"\nCommand failed -:{self.line}" if self.line else ""
            return CompletedCommand(argv, 2, "", "RTNETLINK answers: Device or resource busy" + where)
        return CompletedCommand(argv, 0)


def test_shell_strings_are_refused():
    with pytest.raises(InvalidValue, match="not a shell string"):
        RecordingRunner().run("ip link show; reboot")


def test_transient_errors_are_retried():
    runner = FlakyRunner(failures=2)
    runner.retry_max_delay = 5
    assert runner.run(["ip", "link", "add", "x", "type", "dummy"]).ok
    assert len(runner.history) == 3


def test_retries_are_bounded():
    runner = FlakyRunner(failures=100)
    with pytest.raises(ResourceBusy):
        runner.run(["ip", "link"])
    assert len(runner.history) == runner.retry_attempts


def test_other_errors_are_not_retried():
    runner = RecordingRunner()
    runner.respond(["ip"], stderr='Cannot find device "x"', returncode=1)
    with pytest.raises(NotFound) as caught:
        runner.run(["ip", "link", "set", "x", "up"])
    assert len(runner.history) == 1
    assert caught.value.argv == ("ip", "link", "set", "x", "up")
    assert not runner.run(["ip", "link"], check=False).ok


def test_a_transient_batch_failure_resends_only_the_rest():
    runner = FlakyRunner(failures=1, line=2)
    runner.run_batch(["ip", "-batch", "-"], ["link set a up", "link set b up", "link set c up"])
    assert [call.input for call in runner.history] == [
        "link set a up\nlink set b up\nlink set c up\n",
        "link set b up\nlink set c up\n",
    ]


def test_batch_lines_must_be_single_lines():
    with pytest.raises(InvalidValue):
        RecordingRunner().run_batch(["ip", "-batch", "-"], ["link set a up\nflush ruleset"])


def test_call_renders_copy_pasteable_shell():
    assert str(Call(["ip", "link", "set", "a b", "up"])) == "ip link set 'a b' up"
    assert str(Call(["ip", "-batch", "-"], "link set lo up\n")) == "ip -batch - <<'EOF'\nlink set lo up\nEOF"


def test_capture_and_listeners():
    runner = RecordingRunner()
    with runner.capture() as calls:
        runner.run(["true"])
    runner.run(["false"])
    assert calls == [Call(["true"])]


def test_local_runner_reports_evidence():
    runner = LocalRunner()
    assert runner.run(["sh", "-c", "echo out; echo err >&2"]).stdout == "out\n"
    with pytest.raises(CommandError) as caught:
        runner.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert (caught.value.returncode, caught.value.stderr) == (3, "boom\n")
    assert runner.run(["cat"], input="fed\n").stdout == "fed\n"


def test_local_runner_timeout():
    with pytest.raises(CommandTimeout):
        LocalRunner().run(["sleep", "5"], timeout=0.2)


def test_missing_tool_names_its_package():
    runner = LocalRunner(path=["/nonexistent"])
    with pytest.raises(BackendUnavailable, match="iproute2"):
        runner.run(["ip", "link"])


def test_popen_and_stop():
    process = LocalRunner().popen(["sleep", "30"])
    assert process.alive()
    assert process.stop(grace=1) != 0
    assert not process.alive()
