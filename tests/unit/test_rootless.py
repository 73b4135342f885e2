"""The rootless Host without a kernel: the commands its sandbox makes, the refusal where the machine
forbids unprivileged user namespaces (a fake probe), and the runner's prefixes.

The real sandbox, run as an unprivileged user, is tested in tests/kernel/test_rootless.py.
"""

from __future__ import annotations

import sys

import pytest

from pynetns import Host
from pynetns.backends import get_backend
from pynetns.backends.base import SandboxBackend
from pynetns.backends.recording import RecordingRunner
from pynetns.errors import BackendUnavailable, InvalidValue, PermissionDenied, SandboxRefused
from pynetns.runner import SandboxRunner
from pynetns.sandbox import Sandbox, refusal


def sysctls(**values: str):
    table = {key.replace("__", "."): value for key, value in values.items()}
    return table.get


def test_unshare_backend_commands():
    backend = get_backend("unshare")()
    assert isinstance(backend, SandboxBackend)
    assert backend.holder_command() == (
        "unshare", "--user", "--map-root-user", "--net", "--mount", "--propagation", "private",
        "--pid", "--fork", "--kill-child", "--", "cat",
    )  # fmt: skip
    assert backend.enter_prefix(4242) == (
        "nsenter", "--preserve-credentials", "-U", "-m", "-n", "-p", "-t", "4242", "--",
    )  # fmt: skip
    assert backend.spawn_prefix() == ("setpriv", "--pdeathsig", "KILL", "--")
    assert backend.setup_commands("/run/pynetns") == [
        ("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "pynetns-sandbox", "/run"),
        ("mkdir", "-p", "/run/netns", "/run/pynetns"),
        ("ip", "link", "set", "lo", "up"),
    ]


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"kernel.unprivileged_userns_clone": "0"}, "sysctl -w kernel.unprivileged_userns_clone=1"),
        ({"user.max_user_namespaces": "0"}, "sysctl -w user.max_user_namespaces=15000"),
        ({"kernel.apparmor_restrict_unprivileged_userns": "1"}, "kernel.apparmor_restrict_unprivileged_userns=0"),
    ],
)
def test_refusal_says_what_forbids_and_how_to_allow(settings, names):
    why = refusal(settings.get)
    assert why is not None and names in why
    assert "AppArmor" in why if "apparmor" in names else "disabled" in why


def test_refusal_none_where_allowed():
    allowed = {
        "kernel.unprivileged_userns_clone": "1",
        "user.max_user_namespaces": "15000",
        "kernel.apparmor_restrict_unprivileged_userns": "0",
    }
    assert refusal(allowed.get) is None
    assert refusal(lambda key: None) is None  # a kernel without those keys


def test_refused_before_any_command(monkeypatch):
    import pynetns.sandbox as sandbox_module

    monkeypatch.setattr(sandbox_module, "privileged", lambda: False)  # the settings hold back users only
    launcher = RecordingRunner()
    with pytest.raises(SandboxRefused, match=r"user\.max_user_namespaces is 0") as caught:
        Sandbox.start(launcher=launcher, read={"user.max_user_namespaces": "0"}.get)
    assert isinstance(caught.value, PermissionDenied)
    assert launcher.history == []


class FailingHolder(SandboxBackend):
    """A holder that dies at once, as ``unshare`` does where a seccomp filter forbids user namespaces."""

    name = "failing"

    def __init__(self, message: str) -> None:
        self.message = message

    def holder_command(self):
        return (sys.executable, "-c", f"import sys; sys.exit({self.message!r})")

    def enter_prefix(self, pid):
        return ("true",)

    def spawn_prefix(self):
        return ()

    def setup_commands(self, runtime):
        return []


def test_holder_refused_by_the_kernel_is_explained():
    backend = FailingHolder("unshare: unshare failed: Operation not permitted")
    with pytest.raises(SandboxRefused, match=r"refused an unprivileged user namespace.*apparmor_restrict"):
        Sandbox.start(backend=backend, read=lambda key: None)


def test_holder_failing_otherwise_names_the_tool():
    with pytest.raises(BackendUnavailable, match="holder exited: something else"):
        Sandbox.start(backend=FailingHolder("something else"), read=lambda key: None)


def test_sandbox_backend_checked():
    with pytest.raises(InvalidValue, match="SandboxBackend"):
        Sandbox.start(backend="iproute2", read=lambda key: None)


def test_sandbox_runner_prefixes_commands_and_spawned_programs():
    runner = SandboxRunner(["env", "PYNETNS_ENTERED=1"], ["env", "PYNETNS_SPAWNED=1"])
    script = "import os; print(os.environ.get('PYNETNS_ENTERED'), os.environ.get('PYNETNS_SPAWNED'))"
    with runner.capture() as calls:
        assert runner.run([sys.executable, "-c", script]).stdout.split() == ["1", "None"]
        process = runner.popen([sys.executable, "-c", script])
        process.wait(timeout=10)
        assert process.stdout is not None and process.stdout.read().split() == [b"1", b"1"]
        process.stop()
    assert [call.argv[0] for call in calls] == [sys.executable] * 2  # what is announced: the command itself
    assert not runner.in_caller_namespace


@pytest.mark.parametrize("option", ["runner", "runtime", "sudo", "dry_run", "machine"])
def test_rootless_refuses_options_it_chooses(option):
    with pytest.raises(InvalidValue, match=r"chosen by Host\.rootless"):
        Host.rootless(**{option: None})


def test_auto_is_the_plain_host_when_privileged(monkeypatch):
    import pynetns.host as host_module

    monkeypatch.setattr(host_module, "privileged", lambda: True)
    host = Host.auto(tag="pynetns:auto-test")
    assert host.sandbox is None and host.tag == "pynetns:auto-test"
    host.close()  # a no-op


def test_auto_is_rootless_when_not_privileged(monkeypatch):
    import pynetns.host as host_module

    started = []
    monkeypatch.setattr(host_module, "privileged", lambda: False)
    monkeypatch.setattr(host_module.Host, "rootless", classmethod(lambda cls, **options: started.append(options)))
    Host.auto(firewall="nftables")
    assert started == [{"firewall": "nftables"}]


def test_commands_enter_the_sandbox_whole():
    """What a rootless Host starts: the unshare backend's prefix, then the command (a program after setpriv)."""
    backend = get_backend("unshare")()
    runner = SandboxRunner(backend.enter_prefix(4242), backend.spawn_prefix())
    command = runner._local._command(("ip", "netns", "add", "web"))
    argv = [str(arg) for arg in command.formulate()]
    assert argv[0].endswith("/nsenter")
    assert argv[1:] == [
        "--preserve-credentials",
        "-U",
        "-m",
        "-n",
        "-p",
        "-t",
        "4242",
        "--",
        "ip",
        "netns",
        "add",
        "web",
    ]
    # not the caller's namespace: Host.netns_key (the host lock's key) is asked through the runner, in the sandbox
    assert not runner.in_caller_namespace
