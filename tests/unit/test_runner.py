"""The runner: argv only, evidence on failure, bounded retries, batches, missing tools."""

import os
import signal
import subprocess

import pytest

from pynetns import (
    BackendUnavailable,
    CommandError,
    CommandTimeout,
    InvalidValue,
    LocalRunner,
    NotFound,
    ResourceBusy,
    wait_until,
)
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


def test_stop_keeps_the_output_readable():
    process = LocalRunner().popen(["sh", "-c", "echo err >&2; echo out; exec sleep 30"])
    with pytest.raises(InvalidValue, match="not stopped"):
        _ = process.stdout_text
    wait_until(lambda: process.stdout is not None and process.stdout.peek(1), what="the first line")
    process.stop(grace=1)
    assert process.stopped and process.stdout_text == "out\n" and process.stderr_text == "err\n"
    assert process.stdout is not None and process.stdout.closed
    process.stop()  # again: nothing changes
    assert process.stdout_text == "out\n"


def test_stop_does_not_wait_for_a_child_holding_the_pipe():
    process = LocalRunner().popen(["sh", "-c", "sleep 30 & echo $!; wait"])
    child = int(wait_until(lambda: process.stdout is not None and process.stdout.readline(), what="the child pid"))
    try:
        process.stop(grace=1)  # sh is gone, its child still holds stdout open: stop must not block on it
        assert process.stdout_text == "" and process.stderr_text == ""
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_process_without_pipes_has_empty_output():
    process = LocalRunner().popen(["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process.wait(timeout=5)
    process.stop()
    assert process.stdout_text == process.stderr_text == ""


def test_wait_for_port_reads_the_listeners_and_refuses_bad_values():
    from pynetns import Host, Namespace
    from pynetns.namespace import listening_ports

    listing = "LISTEN 0 5 127.0.0.1:8080 0.0.0.0:*\nLISTEN 0 5 [::]:443 [::]:*\nUNCONN 0 0 *%eth0:53 *:*\n"
    assert listening_ports(listing) == {8080, 443, 53}
    host = Host(dry_run=True)
    web = Namespace("web", host=host)
    web.wait_for_port(8080, protocol="udp")
    assert [str(call) for call in host.history] == ["ip netns exec web ss -H -l -n -p -u"]
    for bad in ({"port": 0}, {"port": "80"}, {"port": 80, "protocol": "icmp"}, {"port": 80, "timeout": 0}):
        with pytest.raises(InvalidValue):
            web.wait_for_port(**bad)
    assert len(host.history) == 1
