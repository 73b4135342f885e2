"""Shared fixtures for pynetns' own tests.

- ``names``: a factory of kernel names unique to this test (and so to this xdist worker).
- ``host``: a Host whose ownership tag is unique to this test.
- ``hostns``: a throwaway namespace that plays "the host" (firewall and sysctl tests go there).
- ``playhost``: a Host whose every command runs inside such a namespace, so code that works on
  "the root namespace" (a non-isolated Lab) changes only that namespace.
- Every test marked ``root`` is checked for leaks afterwards: no namespace or
  interface carrying its names or tag, no child process left running, and no
  file left in the runtime directory — neither in this session's own one
  (``$PYNETNS_RUNTIME_DIR``, a fresh folder per worker) nor in ``/run/pynetns``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pynetns import Host, Namespace
from pynetns.lab.ipam import ULA_FILE
from pynetns.runner import LocalRunner


def _kernel_ready() -> str | None:
    """None if this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root (run the suite as root, e.g. with sudo)"
    if shutil.which("ip") is None:
        return "needs iproute2 (apt-get install iproute2)"
    probe = f"pnprobe-{os.getpid()}-{secrets.token_hex(2)}"
    created = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return f"cannot create network namespaces: {created.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


_REASON: list[str | None] = []


def kernel_reason() -> str | None:
    if not _REASON:
        _REASON.append(_kernel_ready())
    return _REASON[0]


SYSTEM_RUNTIME = Path("/run/pynetns")
_SESSION: dict[str, Path | set[Path] | bool] = {}


def _entries(folder: Path) -> set[Path]:
    return {folder, *folder.rglob("*")} if folder.exists() else set()


#: the folder of the labs' names files (pynetns.lab.names): shared by every worker, so checked once, at the end
ETC_NETNS = Path("/etc/netns")


def _names_folders() -> set[str]:
    return {path.name for path in ETC_NETNS.iterdir()} if ETC_NETNS.is_dir() else set()


def pytest_configure(config: pytest.Config) -> None:
    """Give this process (and the programs it starts) a runtime directory of its own."""
    scratch = Path(tempfile.mkdtemp(prefix=f"pynetns-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-"))
    os.environ["PYNETNS_RUNTIME_DIR"] = str(scratch / "run")
    _SESSION.update(scratch=scratch, runtime=scratch / "run", system=_entries(SYSTEM_RUNTIME))
    _NAMES.update(_names_folders())
    _SESSION["etc_netns"] = ETC_NETNS.exists()


_NAMES: set[str] = set()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Once every test ran (in the controlling process, after all xdist workers): no names folder a lab
    made during the run is left in /etc/netns, nor /etc/netns itself if the run made it."""
    if hasattr(session.config, "workerinput") or os.geteuid() != 0:
        return
    left = sorted(_names_folders() - _NAMES)
    if not _SESSION.get("etc_netns") and ETC_NETNS.exists():
        left.append(f"{ETC_NETNS} itself")
    if left:
        print(f"\nthe run left names folders in {ETC_NETNS}: {', '.join(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    scratch = _SESSION.get("scratch")
    if isinstance(scratch, Path):
        shutil.rmtree(scratch, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") is not None:
            reason = kernel_reason()
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def token() -> str:
    """A short random token unique to this test."""
    return secrets.token_hex(3)


@pytest.fixture
def names(token: str) -> Callable[[str], str]:
    """``names("br")`` → ``"br-1a2b3c0"``: kernel names unique to this test (≤ 15 bytes)."""
    counter = iter(range(1000))

    def make(prefix: str) -> str:
        name = f"{prefix[:4]}-{token}{next(counter)}"
        assert len(name) <= 15, name
        return name

    return make


@pytest.fixture
def host(token: str) -> Host:
    """A local Host whose ownership tag is unique to this test."""
    return Host(tag=f"pynetns:test-{token}")


@pytest.fixture
def hostns(names: Callable[[str], str], host: Host) -> Iterator[Namespace]:
    """A throwaway namespace that plays the host; deleted after the test."""
    with Namespace(names("host"), host=host) as namespace:
        yield namespace


@pytest.fixture
def playhost(names: Callable[[str], str], token: str) -> Iterator[Host]:
    """A Host whose commands all run inside a throwaway namespace (via ``nsenter``): it plays the machine.

    Named namespaces it makes (``ip netns add``) are real ones; its "root namespace" — links, routes,
    firewall, sysctls — is the throwaway one, deleted after the test with everything in it.
    """
    name = names("play")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        runner = LocalRunner(wrap=("nsenter", f"--net=/run/netns/{name}"))
        yield Host(runner=runner, tag=f"pynetns:test-{token}")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _children() -> set[int]:
    mine = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == mine and fields[0] != "Z":
            found.add(int(entry))
    return found


def _lab_files(folder: Path) -> set[Path]:
    """The runtime files under ``folder`` but the host's unique local /48 (kept for good, as Docker keeps its own)."""
    found = {path for path in _entries(folder) if path.name != ULA_FILE}
    return set() if found == {folder} and (folder / ULA_FILE).exists() else found


def _leftovers(token: str, tag: str) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout.strip()
    for item in json.loads(netns or "[]"):
        if token in item["name"]:
            found.append(f"namespace {item['name']}")
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout.strip()
    for item in json.loads(links or "[]"):
        if token in item["ifname"] or item.get("ifalias") == tag:
            found.append(f"interface {item['ifname']}")
    found.extend(f"process {pid}" for pid in _children())
    runtime, system = _SESSION["runtime"], _SESSION["system"]
    assert isinstance(runtime, Path) and isinstance(system, set)
    found.extend(f"runtime file {path}" for path in sorted(_lab_files(runtime)))
    found.extend(f"runtime file {path}" for path in sorted(_lab_files(SYSTEM_RUNTIME) - system))
    return found


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a root test that leaves a namespace, interface or process behind."""
    if request.node.get_closest_marker("root") is None:
        yield
        return
    token = request.getfixturevalue("token")
    tag = f"pynetns:test-{token}"
    yield
    # Namespace teardown in the kernel is asynchronous: poll briefly before judging.
    deadline = time.monotonic() + 5
    while (left := _leftovers(token, tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"test leaked: {', '.join(left)}"


@pytest.fixture
def dry_host() -> Host:
    """A Host that records commands instead of running them."""
    return Host(dry_run=True)


@pytest.fixture
def machines(names: Callable[[str], str]) -> Iterator[Callable[[], Any]]:
    """``machines()`` → a new "machine" (``tests/support/ssh.py``): a network, mount and PID namespace running
    sshd, reached from the test over a veth underlay; ``machine.host()`` drives it with ``Host.ssh``. Every
    machine is ended after the test (its Hosts closed, its processes and namespace gone). Needs root and sshd."""
    from tests.support.ssh import Machine, sshd_reason

    reason = sshd_reason()
    if reason is not None:
        pytest.skip(reason)
    made: list[Any] = []

    def make() -> Any:
        made.append(Machine.start(names("mach"), names("ul")))
        return made[-1]

    yield make
    for machine in reversed(made):
        machine.close()
