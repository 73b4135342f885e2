"""Journals under pressure, on the kernel: labs started side by side, owners killed at any moment,
cleanup from another PID namespace or another network namespace, and use without the privileges.

Host labs run on ``playhost`` (a throwaway namespace plays the machine), so nothing of the machine's own
namespace changes but named namespaces and the runtime directory. The kill sweep kills the owner at 8
positions; ``PYNETNS_SWEEP=N`` (the suite's common size knob) at 8 x N, up to every position.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pynetns import Host, Namespace, wait_until
from pynetns.lab import cleanup, labs, runtime_dir
from pynetns.runner import CompletedCommand, LocalRunner

root = pytest.mark.root
needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)")
SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))
WORKTREE = str(Path(__file__).resolve().parent.parent.parent)


def _play(name: str) -> Host:
    return Host(runner=LocalRunner(wrap=("nsenter", f"--net=/run/netns/{name}")))


def _playns(host: Host) -> str:
    return host.runner.wrap[-1].rsplit("/", 1)[1]  # type: ignore[attr-defined]


@pytest.fixture
def otherhost(names: Callable[[str], str]) -> Iterator[Host]:
    """A second throwaway namespace playing a host: "another network namespace" for cleanup."""
    name = names("othr")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield _play(name)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": WORKTREE}


def _ruleset(host: Host) -> str:
    return host.run(["nft", "list", "ruleset"]).stdout


def _left(lab_id: str, host: Host) -> list[str]:
    """What of lab ``lab_id`` exists: named namespaces, links of the playing namespace, tagged rules, journal files."""
    found = [f"namespace {item.name}" for item in Namespace.all(host) if f"pn{lab_id}" in item.name]
    for item in host.run(["ip", "-j", "link", "show"]).json():
        if f"pn{lab_id}" in item["ifname"] or item.get("ifalias") == f"pynetns:{lab_id}":
            found.append(f"link {item['ifname']}")
    if f"pynetns:{lab_id}" in _ruleset(host):
        found.append("firewall rules")
    folder = runtime_dir()
    found += [f"file {path.name}" for path in folder.glob(f"{lab_id}*")] if folder.is_dir() else []
    etc = Path("/etc/netns")  # the names files (pynetns.lab.names)
    found += [f"names folder {path.name}" for path in etc.glob(f"pn{lab_id}-*")] if etc.is_dir() else []
    return found


def _gone(lab_id: str, host: Host) -> None:
    wait_until(lambda: not _left(lab_id, host), what=f"lab {lab_id} to vanish")


# -- (a) labs with default subnets, side by side ------------------------------

SIDE_BY_SIDE = textwrap.dedent("""
    import json, sys
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import CompletedCommand, LocalRunner

    host = Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + sys.argv[1])), firewall=sys.argv[2])
    lab = Lab(host=host)
    net = lab.network("net")
    a = lab.namespace("a", networks=[net])
    lab.namespace("b", networks=[net])
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        lab.apply()
    except Exception as error:
        print(json.dumps({"error": repr(error)}), flush=True)
        raise SystemExit(1)
    reached = a.run(["ping", "-c1", "-W2", str(lab.endpoints[1].ip.ip)], check=False).returncode == 0
    print(json.dumps({"id": lab.id, "subnet": str(net.subnet), "gateway": str(net.gateway), "ping": reached}),
          flush=True)
    sys.stdin.readline()
    lab.destroy()
""")


@root
@needs_nft
@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_labs_with_default_subnets_applied_side_by_side(playhost, firewall):
    count = 8
    before = _ruleset(playhost)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SIDE_BY_SIDE, _playns(playhost), firewall],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(count)
    ]
    try:
        assert [child.stdout.readline().strip() for child in children] == ["ready"] * count  # type: ignore[union-attr]
        for child in children:  # all at once
            with contextlib.suppress(BrokenPipeError):
                child.stdin.write("go\n")  # type: ignore[union-attr]
                child.stdin.flush()  # type: ignore[union-attr]
        results = [json.loads(child.stdout.readline() or '{"error": "no output"}') for child in children]  # type: ignore[union-attr]
    finally:
        for child in children:  # the end of their input: each destroys its lab
            with contextlib.suppress(BrokenPipeError):
                child.stdin.close()  # type: ignore[union-attr]
        codes = [child.wait(timeout=60) for child in children]
        for child in children:
            child.stdout.close()  # type: ignore[union-attr]
    assert [result.get("error") for result in results] == [None] * count, results
    assert codes == [0] * count
    subnets = [result["subnet"] for result in results]
    assert len(set(subnets)) == count, subnets
    assert all(result["ping"] for result in results), results
    for result in results:
        _gone(result["id"], playhost)
    after = _ruleset(playhost)
    assert after == before, after
    assert labs() == []


# -- (b) the owner killed at varied moments ------------------------------------

SWEEP_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import CompletedCommand, LocalRunner

    kill_after = int(sys.argv[2])
    ran = []
    armed = []

    class Killing(LocalRunner):
        # kills its own process right after the k-th command it ran (0: just before the journal is renamed)
        def _execute(self, argv, input, timeout):
            result = super()._execute(argv, input, timeout)
            if not armed:
                return result
            command = [word for word in argv[2:] if not word.startswith("-")][:3]
            first = (input or "").split("\\n", 1)[0]
            ran.append(" ".join(command) + (f" <<< {first} ..." if input else ""))
            if len(ran) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

    host = Host(runner=Killing(wrap=("nsenter", "--net=/run/netns/" + sys.argv[1])), firewall="nftables")
    lab = Lab("sweep", host=host)
    front = lab.network("front")
    back = lab.network("back", internal=True)
    web = lab.namespace("web", networks=[front, back])
    lab.namespace("db", networks=[back])
    lab.publish(web, 8080, 80)
    print(lab.id, flush=True)
    if kill_after == 0:
        os.replace = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    armed.append(True)  # count the commands of apply() only
    lab.apply()
    print(json.dumps(ran), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_at(playhost: Host, position: int) -> tuple[str, list[str] | None]:
    """Run a lab owner that SIGKILLs itself after its ``position``-th command; its lab id and, if it finished
    applying, the commands it ran."""
    child = subprocess.run(
        [sys.executable, "-c", SWEEP_CHILD, _playns(playhost), str(position)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert child.returncode == -9, child.stderr
    lines = child.stdout.splitlines()
    return lines[0], json.loads(lines[1]) if len(lines) > 1 else None


def _positions(commands: list[str], wanted: int) -> list[int]:
    """``wanted`` kill positions: before the journal is renamed (0), right after the batch that adds the
    namespaces (before any is tagged), then spread evenly over the rest."""
    adds = next(index for index, line in enumerate(commands, 1) if "netns add" in line)
    chosen = {0, adds}
    spread = [1 + (len(commands) - 1) * step // max(wanted - 2, 1) for step in range(max(wanted - 2, 1))]
    for position in spread + list(range(1, len(commands) + 1)):
        if len(chosen) >= wanted:
            break
        chosen.add(position)
    return sorted(chosen)


@root
@needs_nft
def test_owner_killed_at_any_moment_then_cleanup_leaves_nothing(playhost):
    before = _ruleset(playhost)
    lab_id, commands = _killed_at(playhost, 10**6)  # killed after apply returned: tells the commands
    assert commands and any("netns add" in line for line in commands), commands
    figures = {}
    for position in [len(commands) + 1, *_positions(commands, 8 * SWEEP)]:
        if position <= len(commands):
            lab_id, finished = _killed_at(playhost, position)
            assert finished is None
        found = _left(lab_id, playhost)
        removed = cleanup(playhost)
        after = _left(lab_id, playhost)
        figures[position] = (len(found), after, removed)
        if not after:
            _gone(lab_id, playhost)
        assert _ruleset(playhost) == before or after, f"ruleset changed after a kill at {position}"
    print(
        f"kill sweep: {len(commands)} commands, positions {sorted(figures)}: "
        + "; ".join(f"{position}: {count} objects, left {left}" for position, (count, left, _) in figures.items())
    )
    assert all(not left for _, left, _ in figures.values()), figures
    assert _ruleset(playhost) == before
    assert labs() == []


# -- (c) cleanup from another PID namespace -------------------------------------

OWNER = textwrap.dedent("""
    import sys
    from pynetns.lab.lab import Lab
    lab = Lab("owned", isolated=True)
    net = lab.network("net", subnet="10.78.0.0/24")
    lab.namespace("a", networks=[net])
    lab.apply()
    print(lab.id, flush=True)
    sys.stdin.readline()
    lab.destroy()
""")

CONTAINER = textwrap.dedent("""
    import json, os
    from pynetns.lab import cleanup, labs
    print(json.dumps({"pid": os.getpid(), "states": {r.id: r.state for r in labs()}, "removed": cleanup()}))
""")


@root
def test_cleanup_from_another_pid_namespace_leaves_a_live_lab_alone():
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        lab_id = owner.stdout.readline().strip()  # type: ignore[union-attr]
        assert lab_id
        inner = subprocess.run(
            ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-c", CONTAINER],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
        assert inner.returncode == 0, inner.stderr
        seen = json.loads(inner.stdout)
        assert seen["pid"] == 1 or seen["pid"] < 100  # it did run in a PID namespace of its own
        assert seen["states"] == {lab_id: "alive"} and seen["removed"] == []
        assert Namespace(f"pn{lab_id}-a").exists() and (runtime_dir() / f"{lab_id}.json").exists()
        assert [record.state for record in labs()] == ["alive"]
    finally:
        owner.stdin.close()  # type: ignore[union-attr]
        owner.wait(timeout=60)
        owner.stdout.close()  # type: ignore[union-attr]
    assert owner.returncode == 0
    wait_until(lambda: not Namespace(f"pn{lab_id}-a").exists(), what="the lab to go")
    assert labs() == []


# -- (d) cleanup from another network namespace ---------------------------------

DEAD = textwrap.dedent("""
    import os, signal, sys
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import CompletedCommand, LocalRunner
    lab = Lab("elsewhere", host=Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + sys.argv[1]))))
    net = lab.network("net")
    lab.namespace("a", networks=[net])
    lab.publish("a", 8080, 80)
    lab.apply()
    print(lab.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@root
@needs_nft
def test_cleanup_from_another_network_namespace_leaves_the_lab_whole(playhost, otherhost):
    before = _ruleset(playhost)
    child = subprocess.run(
        [sys.executable, "-c", DEAD, _playns(playhost)], capture_output=True, text=True, env=_env(), timeout=60
    )
    lab_id = child.stdout.strip()
    assert child.returncode == -9 and lab_id, child.stderr
    there = _left(lab_id, playhost)
    assert any(item.startswith("namespace") for item in there) and any(item.startswith("link") for item in there)
    assert "firewall rules" in there
    elsewhere = cleanup(otherhost)
    assert elsewhere == [] and "network namespace" in elsewhere.skipped[lab_id]
    assert _left(lab_id, playhost) == there  # untouched: not half
    (record,) = labs()
    assert record.state == "stale"
    removed = cleanup(playhost)
    assert removed and any("firewall" in item for item in removed), removed
    _gone(lab_id, playhost)
    assert _ruleset(playhost) == before and labs() == []


class Refusing(LocalRunner):
    """Deletes nothing: every ``… delete`` command fails as if the kernel refused it."""

    def _execute(self, argv, input, timeout):  # type: ignore[no-untyped-def]
        if "delete" in argv:
            return CompletedCommand(argv, 2, "", "RTNETLINK answers: Operation not supported\n")
        return super()._execute(argv, input, timeout)


@root
@needs_nft
def test_a_journal_stays_while_something_it_names_is_left(playhost):
    child = subprocess.run(
        [sys.executable, "-c", DEAD, _playns(playhost)], capture_output=True, text=True, env=_env(), timeout=60
    )
    lab_id = child.stdout.strip()
    assert child.returncode == -9 and lab_id, child.stderr
    stubborn = Host(runner=Refusing(wrap=playhost.runner.wrap))  # type: ignore[attr-defined]
    cleaned = cleanup(stubborn)
    remaining = cleaned.remaining[lab_id]
    assert f"namespace pn{lab_id}-a" in remaining and any(item.startswith("interface") for item in remaining)
    assert [record.id for record in labs()] == [lab_id]  # the journal stays: the next cleanup can finish
    assert cleanup(playhost)
    _gone(lab_id, playhost)
    assert labs() == []


# -- without the privileges -------------------------------------------------------

UNPRIVILEGED = textwrap.dedent("""
    import json
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import CompletedCommand, LocalRunner
    runner = LocalRunner()
    lab = Lab(host=Host(runner=runner))
    lab.namespace("a", networks=[lab.network("net", subnet="10.79.0.0/24")])
    with runner.capture() as calls:
        try:
            lab.apply()
        except Exception as error:
            print(json.dumps({"type": type(error).__name__, "message": str(error),
                              "pynetns": type(error).__module__.startswith("pynetns"), "commands": len(calls)}))
""")


@root
@pytest.mark.parametrize("runtime", ["system", "own"])
def test_unprivileged_apply_says_what_to_do_before_any_command(runtime):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    env = _env()
    folder = Path(tempfile.mkdtemp(prefix="pynetns-unprivileged-"))
    try:
        if runtime == "system":
            env.pop("PYNETNS_RUNTIME_DIR")
        else:  # a runtime directory the user can write: the kernel's refusal is still told first
            folder.chmod(0o777)
            env["PYNETNS_RUNTIME_DIR"] = str(folder / "run")
        child = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", UNPRIVILEGED],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd="/",
        )
        assert child.returncode == 0, child.stderr
        seen = json.loads(child.stdout)
        assert seen["pynetns"] and seen["commands"] == 0 and seen["type"] == "PermissionDenied", seen
        for hint in ("root", "sudo", "CAP_NET_ADMIN", "PYNETNS_RUNTIME_DIR"):
            assert hint in seen["message"], seen
        assert not any(folder.rglob("*.json"))
    finally:
        shutil.rmtree(folder)
