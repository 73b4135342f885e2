"""The README's code blocks, and a throwaway machine to run them in (for tests/examples/test_readme.py).

``blocks(path)`` reads a Markdown file's fenced blocks (indented ones in list items too), each with
the ``<!-- not run: why -->`` or ``<!-- output -->`` marker on the line before it, if any.
``sandboxed(argv, cwd)`` runs ``argv`` in its own network, mount and PID namespaces with a fresh
tmpfs on ``/run`` and ``lo`` up — a machine of its own, so fixed names (``c1``, ``docker0``, a lab
called ``shop``), firewall rules and sysctls touch nothing else, and whatever it starts ends with
it — and reads that machine's state before and after.

Run as a script (``python readme.py state [--like FILE]``), it prints the state of the machine it
runs in as JSON; with ``--like`` it first waits (5 s at most) for the state to match FILE's, as
the kernel removes a deleted namespace's links asynchronously.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not run|output)\s*(?::(?P<why>.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """A fenced block: its language, its code (dedented), the line of its opening fence and its marker."""

    language: str
    code: str
    line: int
    marker: str | None = None  # "not run" or "output"
    why: str = ""  # the reason a "not run" marker gives
    output: str | None = None  # for a block followed by one marked <!-- output -->: that block's text

    @property
    def id(self) -> str:
        return f"{self.language or 'plain'}-line{self.line}"


def blocks(path: Path = README) -> list[Block]:
    """The fenced blocks of ``path``, in order; a block marked ``<!-- output -->`` becomes its predecessor's output."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        if opening is None:
            number += 1
            continue
        indent, language = opening["indent"], opening["language"]
        end = next(
            (index for index in range(number + 1, len(lines)) if lines[index].rstrip() == f"{indent}```"),
            None,
        )
        if end is None:
            raise AssertionError(f"{path.name}:{number + 1}: the block opened here is never closed")
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[number + 1 : end]]
        before = next((lines[index] for index in range(number - 1, -1, -1) if lines[index].strip()), "")
        marker = _MARKER.match(before)
        block = Block(
            language=language,
            code="\n".join(body) + "\n",
            line=number + 1,
            marker=None if marker is None else marker["kind"],
            why="" if marker is None else (marker["why"] or "").strip(),
        )
        if block.marker == "output":
            if not found or found[-1].language != "python":
                raise AssertionError(f"{path.name}:{block.line}: an <!-- output --> block must follow a python block")
            previous = found.pop()
            found.append(Block(**{**previous.__dict__, "output": block.code}))
        else:
            found.append(block)
        number = end + 1
    return found


# -- the throwaway machine ---------------------------------------------------------------------

#: what runs as PID 1 of the sandbox: a private /run, lo up, the state, the command, the state again
_INSIDE = """\
set -eu
mount -t tmpfs pynetns-readme /run
ip link set lo up
"$SANDBOX_PYTHON" "$SANDBOX_STATE" state > .state-before.json
set +e
"$@"
status=$?
set -e
"$SANDBOX_PYTHON" "$SANDBOX_STATE" state --like .state-before.json > .state-after.json
exit $status
"""

_UNSHARE = [
    "unshare",
    "--net",
    "--mount",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
    "--propagation",
    "private",
]


@dataclass(frozen=True)
class Sandboxed:
    """How a command run in a sandbox ended, and the sandbox's state before and after it."""

    result: subprocess.CompletedProcess[str]
    before: dict[str, Any]
    after: dict[str, Any]

    def report(self) -> str:
        return (
            f"exit status {self.result.returncode}\n--- stdout\n{self.result.stdout}\n--- stderr\n{self.result.stderr}"
        )


def environment(folder: Path) -> dict[str, str]:
    """The environment a README block runs in: this checkout's pynetns first, ``pynetns`` and ``python3`` on PATH.

    ``folder/bin/pynetns`` runs this interpreter's ``-m pynetns``; the runtime directory is the default
    one (``/run/pynetns``, private to the sandbox), not the test session's.
    """
    shims = folder / "bin"
    shims.mkdir(exist_ok=True)
    shim = shims / "pynetns"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m pynetns "$@"\n')
    shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "PYNETNS_RUNTIME_DIR"}
    python_path = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env["PATH"] = os.pathsep.join([str(shims), str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


def sandboxed(argv: list[str], cwd: Path, timeout: float = 60) -> Sandboxed:
    """Run ``argv`` in ``cwd`` inside a sandbox of its own (needs root); everything in it ends with it."""
    env = environment(cwd)
    env.update(SANDBOX_PYTHON=sys.executable, SANDBOX_STATE=str(Path(__file__).resolve()))
    for name in (".state-before.json", ".state-after.json"):
        (cwd / name).unlink(missing_ok=True)
    result = subprocess.run(
        [*_UNSHARE, "--", "sh", "-c", _INSIDE, "sandbox", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    states = []
    for name in (".state-before.json", ".state-after.json"):
        text = (cwd / name).read_text() if (cwd / name).exists() else ""
        if not text:
            raise AssertionError(f"the sandbox did not record its state ({name})\n{result.stderr}")
        states.append(json.loads(text))
    return Sandboxed(result, *states)


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True).stdout
    except FileNotFoundError:
        return ""


def state() -> dict[str, Any]:
    """What a README block may create on the machine it runs in; it must be as it was when the block ends."""
    me = os.getpid()
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (1, me):
            continue
        try:
            name, rest = entry.joinpath("stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        if rest.split()[0] != "Z":
            processes.append(f"{entry.name} {name.split('(', 1)[1]}")
    links = json.loads(_run(["ip", "-j", "link", "show"]) or "[]")
    namespaces = json.loads(_run(["ip", "-j", "netns", "list"]) or "[]")
    sysctls = [
        "net/ipv4/ip_forward",
        "net/ipv4/conf/all/route_localnet",
        "net/ipv4/conf/lo/route_localnet",
        "net/ipv6/conf/all/forwarding",
    ]
    runtime = Path("/run/pynetns")
    return {
        "namespaces": sorted(item["name"] for item in namespaces),
        "links": sorted(item["ifname"] for item in links),
        "firewall": _run(["nft", "list", "ruleset"]).strip().splitlines(),
        "sysctls": {name: Path("/proc/sys", name).read_text().strip() for name in sysctls},
        "processes": sorted(processes),
        "runtime files": sorted(str(path) for path in runtime.rglob("*") if path.is_file()) if runtime.exists() else [],
    }


def _main(args: list[str]) -> None:
    if args[:1] != ["state"]:
        raise SystemExit("usage: readme.py state [--like FILE]")
    if args[1:2] == ["--like"]:
        from pynetns import WaitTimeout, wait_until

        wanted = json.loads(Path(args[2]).read_text())
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: state() == wanted, timeout=5, what="the sandbox to be as it was")
    print(json.dumps(state(), indent=1))


if __name__ == "__main__":
    _main(sys.argv[1:])
