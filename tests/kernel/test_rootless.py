"""The rootless Host on the kernel, run as an unprivileged user (uid 65534, through ``setpriv``): a lab
with two networks and a published port reached from the sandbox's host (127.0.0.1 too), an impairment,
a partition, explain(), the journal and cleanup(); the owner killed with SIGKILL leaves nothing on the
machine (no process, no mount, no namespace); ``PYNETNS_SWEEP=N`` kills N owners.

The scenario is tests/support/rootless.py; command generation is tested in tests/unit/test_rootless.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynetns import Host, UnknownBackend, wait_until
from tests.support.nobody import nobody as as_nobody

root = pytest.mark.root
SCENARIO = Path(__file__).resolve().parent.parent / "support" / "rootless.py"
#: how many times the owner is killed (``PYNETNS_SWEEP=N``, the suite's common size knob)
SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))
pytestmark = [
    root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


@pytest.fixture
def nobody() -> Iterator[tuple[list[str], dict[str, str]]]:
    """The argv of the scenario run as uid 65534, and its environment (HOME and XDG_RUNTIME_DIR its own)."""
    with as_nobody() as (python, env, _):
        yield [*python, str(SCENARIO)], env


def facts(output: str) -> dict[str, object]:
    found: dict[str, object] = {}
    for line in output.splitlines():
        found.update(json.loads(line))
    return found


@pytest.mark.parametrize("mode", ["lab", "isolated"])
def test_lab_as_an_unprivileged_user(nobody, mode):
    argv, env = nobody
    result = subprocess.run([*argv, mode], env=env, capture_output=True, text=True, timeout=60, cwd="/")
    assert result.returncode == 0, result.stderr
    seen = facts(result.stdout)
    assert seen["rootless"] is True and seen["key"] != Host().netns_key
    assert seen["explain"] is True and seen["journal"] is True
    assert str(seen["journal_path"]).startswith("/proc/")  # on the sandbox's tmpfs, not on the machine
    assert seen["published"] == "rootless"
    if mode == "lab":
        assert seen["front"] == "rootless"  # through a bridge's address too
    assert seen["before"] is True and seen["impaired"] is True
    assert seen["names"] is True and seen["by_name"] is True  # in the sandbox's own /etc/netns
    assert seen["partitioned"] is True and seen["healed"] is True
    assert seen["cleaned"] is True and seen["labs"] == 0 and seen["netns"] == ""


def _namespaces(pid: int) -> set[str]:
    found = set()
    for kind in ("user", "mnt", "net", "pid"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/{pid}/ns/{kind}"))
    return found


def _running() -> dict[int, set[str]]:
    """Every process and its namespaces (a zombie has none left: it holds nothing)."""
    return {int(entry.name): _namespaces(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit()}


@pytest.mark.parametrize("round", range(SWEEP))
def test_killed_owner_leaves_nothing(nobody, round):
    argv, env = nobody
    machine_netns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"))
    owner = subprocess.Popen([*argv, "kill"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, owner.stderr.read() if owner.stderr else ""
        seen = json.loads(line)
        holder, pid1 = int(seen["holder"]), int(seen["pid1"])
        info = os.stat(f"/proc/{pid1}/ns/net")
        assert seen["netns"] == f"{info.st_dev}-{info.st_ino}"  # the host lock's key: the sandbox's namespace
        sandbox = _namespaces(pid1) - _namespaces(1)
        assert len(sandbox) == 4  # its own user, mount, network and PID namespaces
        members = [pid for pid, spaces in _running().items() if spaces & sandbox]
        assert len(members) >= 3  # the holder, its PID 1, the server in the lab
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    # every process of the sandbox ends (a zombie holds nothing; a reused pid is in other namespaces);
    # namespace inodes are reused at once, so only the processes seen in the sandbox are checked
    wait_until(
        lambda: not [pid for pid in {holder, pid1, *members} if _namespaces(pid) & sandbox],
        timeout=15,
        what="every process of the killed owner's sandbox to end",
    )
    # no mount of it from the machine's side: its tmpfs and named namespaces were its own mount namespace's
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "pynetns-sandbox" not in mounts and seen["lab"] not in mounts
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n"))
    assert not [name for name in after - machine_netns if seen["lab"] in name]  # its namespaces were never here


def test_rootless_host_closes_its_sandbox():
    """Root may use a sandbox too (root of its own user namespace); close() ends it at once."""
    with Host.rootless() as host:
        assert host.sandbox is not None
        pid1 = host.sandbox.pid
        assert host.run(["ip", "netns", "list"]).stdout == ""
        assert host.netns_key != Host().netns_key
    assert not host.sandbox.alive
    wait_until(lambda: not _namespaces(pid1), what="the sandbox's PID 1 to end")


def test_rootless_host_with_a_bad_option_leaves_no_sandbox(monkeypatch):
    import pynetns.host as host_module

    started = []
    start = host_module.Sandbox.start
    monkeypatch.setattr(host_module.Sandbox, "start", lambda **options: started.append(start(**options)) or started[-1])
    with pytest.raises(UnknownBackend, match="nope"):
        Host.rootless(links="nope")
    [sandbox] = started
    assert not sandbox.alive and not _namespaces(sandbox.pid) and not _namespaces(sandbox.holder.pid)
