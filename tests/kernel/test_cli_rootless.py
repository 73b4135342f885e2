"""The command line as an unprivileged user (uid 65534, through ``setpriv``): ``up`` starts a persistent
sandbox for the lab, which outlives the CLI; ``ls``/``exec``/``show`` find the lab in it; ``down`` (and
``cleanup --all``) end it, leaving no process, no sandbox record and nothing in the machine's ``ip netns``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import pytest

from pynetns import wait_until
from tests.support.nobody import NOBODY
from tests.support.nobody import nobody as as_nobody

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]


@pytest.fixture
def pynetns() -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """The CLI run as uid 65534, its environment, and its folder (HOME and XDG_RUNTIME_DIR)."""
    with as_nobody() as (python, env, folder):
        yield [*python, "-m", "pynetns.cli"], env, folder


def run(pynetns, *args: str) -> subprocess.CompletedProcess[str]:
    argv, env, _ = pynetns
    return subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=60, cwd="/")


def topology(folder: Path, name: str, more: str = "") -> Path:
    """Lab ``name``: web and db on front (10.83.0.0/24); ``more``: TOML lines added to front's table."""
    path = folder / f"{name}.toml"
    path.write_text(
        textwrap.dedent(f"""\
        name = "{name}"

        [networks.front]
        subnet = "10.83.0.0/24"
        {more}

        [namespaces.web]
        networks = ["front"]

        [namespaces.db]
        networks = ["front"]

        [[publish]]
        namespace = "web"
        host_port = 8080
        port = 80
        """)
    )
    return path


def record(folder: Path, name: str) -> dict[str, object]:
    return json.loads((folder / "pynetns" / "sandboxes" / f"{name}.json").read_text())  # type: ignore[no-any-return]


def in_namespace(user_ns: str) -> list[int]:
    """The processes in user namespace ``user_ns`` (the sandbox's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "user") == user_ns:
                    found.append(int(entry.name))
    return found


def owned_by_nobody(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid)).stat().st_uid == NOBODY
    except OSError:
        return False


def holder_of(sandbox: dict[str, object]) -> int:
    """The pid of the process holding the sandbox (``unshare``, the parent of its PID 1)."""
    stat = Path(f"/proc/{sandbox['pid']}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def assert_ended(folder: Path, name: str, sandbox: dict[str, object], lab_id: str, holder: int) -> None:
    """Nothing of the sandbox is left: no process in its namespaces, no holder, no record, no named namespace."""
    user_ns = str(sandbox["identity"]).split(":", 1)[1]
    wait_until(lambda: not in_namespace(user_ns), timeout=10, what="the sandbox's processes to end")
    wait_until(lambda: not owned_by_nobody(holder), timeout=10, what="the sandbox's holder to be reaped")
    assert not (folder / "pynetns" / "sandboxes" / f"{name}.json").exists()
    assert lab_id not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_up_ls_exec_show_down_as_an_unprivileged_user(pynetns, token):
    _, _, folder = pynetns
    name = f"nb-{token}"
    up = run(pynetns, "up", str(topology(folder, name)))
    assert up.returncode == 0, up.stderr
    assert "without root: in a sandbox of its own" in up.stdout
    sandbox = record(folder, name)
    holder = holder_of(sandbox)
    assert sandbox["lab"] == name and sandbox["backend"] == "unshare"
    # the CLI has exited: the sandbox outlives it (its PID 1 runs, as uid 65534, in a user namespace of its own)
    pid = int(str(sandbox["pid"]))
    assert owned_by_nobody(pid) and os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")

    ls = run(pynetns, "ls", "--json")
    assert ls.returncode == 0, ls.stderr
    (lab,) = [item for item in json.loads(ls.stdout) if item["name"] == name]
    assert lab["state"] == "persistent" and lab["namespaces"] == ["db", "web"]
    assert name in run(pynetns, "ls").stdout

    addresses = run(pynetns, "exec", "web", "--", "ip", "-br", "a")
    assert addresses.returncode == 0, addresses.stderr
    assert "10.83.0.2/24" in addresses.stdout
    assert run(pynetns, "exec", f"{name}:db", "--", "sh", "-c", "exit 7").returncode == 7
    reach = run(pynetns, "exec", "web", "--", "ping", "-c1", "-W2", "10.83.0.3")
    assert reach.returncode == 0, reach.stdout + reach.stderr

    cut = run(pynetns, "partition", name, "web", "db")  # a lab in the user's sandbox, attached from its journal
    assert cut.returncode == 0, cut.stderr
    assert run(pynetns, "exec", "web", "--", "ping", "-c1", "-W1", "10.83.0.3").returncode == 1
    healed = run(pynetns, "heal", name)
    assert healed.returncode == 0 and "healed 1 partition" in healed.stdout, healed.stderr
    assert run(pynetns, "exec", "web", "--", "ping", "-c1", "-W2", "10.83.0.3").returncode == 0
    slow = run(pynetns, "impair", name, "db", "--loss", "100%")
    assert slow.returncode == 0, slow.stderr
    assert run(pynetns, "exec", "web", "--", "ping", "-c1", "-W1", "10.83.0.3").returncode == 1
    assert run(pynetns, "impair", name, "db", "--clear").returncode == 0
    assert run(pynetns, "exec", "web", "--", "ping", "-c1", "-W2", "10.83.0.3").returncode == 0

    show = run(pynetns, "show", "--json", name)
    assert show.returncode == 0, show.stderr
    shown = json.loads(show.stdout)
    assert shown["name"] == name and shown["live"]["namespaces"] == {"web": True, "db": True}
    assert shown["journal"].startswith(f"/proc/{pid}/root/")  # on the sandbox's tmpfs

    down = run(pynetns, "down", name)
    assert down.returncode == 0, down.stderr
    assert f"ended its sandbox (PID 1 {pid})" in down.stdout
    assert_ended(folder, name, sandbox, lab["id"], holder)
    assert run(pynetns, "ls", "--json").stdout.strip() == "[]"
    gone = run(pynetns, "exec", "web", "--", "true")
    assert gone.returncode == 1 and "no lab has a namespace of that name" in gone.stderr


def test_cleanup_all_ends_the_sandboxes_and_forgets_gone_ones(pynetns, token):
    _, _, folder = pynetns
    name = f"nc-{token}"
    up = run(pynetns, "up", str(topology(folder, name)))
    assert up.returncode == 0, up.stderr
    sandbox = record(folder, name)
    holder = holder_of(sandbox)
    lab_id = json.loads(run(pynetns, "show", "--json", name).stdout)["id"]
    (folder / "pynetns" / "sandboxes" / "old.json").write_text(
        json.dumps({**sandbox, "lab": "old", "identity": "1:user:[1]"})  # its pid is not that process
    )
    cleanup = run(pynetns, "cleanup")  # a persistent lab stays, and its sandbox
    assert cleanup.returncode == 0, cleanup.stderr
    assert "(lab old): it is gone" in cleanup.stdout and name not in cleanup.stdout
    assert owned_by_nobody(int(str(sandbox["pid"])))
    everything = run(pynetns, "cleanup", "--all")
    assert everything.returncode == 0, everything.stderr
    assert f"removed lab {name}" in everything.stdout and "no lab is left in it" in everything.stdout
    assert_ended(folder, name, sandbox, lab_id, holder)


def test_concurrent_ups_of_one_name_make_one_lab_and_one_sandbox(pynetns, token):
    """Three ``up``s of one name at once without root: one lab in one sandbox; no other sandbox is left."""
    argv, env, folder = pynetns
    name = f"nu-{token}"
    path = str(topology(folder, name))
    running = [
        subprocess.Popen([*argv, "up", path], env=env, cwd="/", stdout=PIPE, stderr=PIPE, text=True) for _ in range(3)
    ]
    results = [(process.wait(timeout=120), *process.communicate()) for process in running]
    assert sorted(code for code, _, _ in results) == [0, 1, 1], results
    assert all("a lab of that name exists" in err for code, _, err in results if code), results
    sandbox = record(folder, name)
    holder = holder_of(sandbox)
    lab_id = json.loads(run(pynetns, "show", "--json", name).stdout)["id"]
    ours = {_user_ns(pid) for pid in _started_here(folder)} - {None, os.readlink("/proc/self/ns/user")}
    assert ours == {str(sandbox["identity"]).split(":", 1)[1]}  # one sandbox runs: the lab's
    down = run(pynetns, "down", name)
    assert down.returncode == 0, down.stderr
    assert_ended(folder, name, sandbox, lab_id, holder)


def _started_here(folder: Path) -> list[int]:
    """The running processes of uid 65534 whose environment names ``folder`` (this test's)."""
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        with contextlib.suppress(OSError):
            if (
                owned_by_nobody(pid)
                and f"XDG_RUNTIME_DIR={folder}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
            ):
                found.append(pid)
    return found


def _user_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None


def test_a_dual_stack_lab_up_without_root_answers_on_both_loopbacks_until_down(pynetns, token):
    """``up`` declares nothing outside its sandbox (the IPv6 /48 is drawn in there), and the [::1] proxy of
    the published port outlives the CLI, inside the sandbox, until ``down``."""
    argv, env, folder = pynetns
    name = f"n6-{token}"
    path = topology(folder, name, "ipv6 = true")
    up = run(pynetns, "up", str(path))
    assert up.returncode == 0, up.stderr
    sandbox = record(folder, name)
    holder = holder_of(sandbox)
    lab_id = json.loads(run(pynetns, "show", "--json", name).stdout)["id"]
    server = subprocess.Popen(
        [*argv, "exec", "web", "--", "python3", "-m", "http.server", "-b", "::", "80"],
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    enter = ["nsenter", "--preserve-credentials", "-U", "-m", "-n", "-p", "-t", str(sandbox["pid"])]

    def answers(url: str) -> bool:
        done = subprocess.run([*enter, "curl", "-g", "-s", "-m", "2", "-o", "/dev/null", url], check=False)
        return done.returncode == 0

    try:
        wait_until(lambda: answers("http://127.0.0.1:8080/"), timeout=10, what="the published port")
        assert answers("http://[::1]:8080/")
    finally:
        server.kill()
        server.wait()
    down = run(pynetns, "down", name)
    assert down.returncode == 0, down.stderr
    assert_ended(folder, name, sandbox, lab_id, holder)
