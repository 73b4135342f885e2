"""The README is a contract: every code block in it runs as pasted, here (so CI runs them all).

How each kind of block runs (blocks are read by tests/support/readme.py):

- ``python``: each block by itself, in a fresh interpreter — blocks share no state; each is what a
  user would paste — inside a throwaway machine of its own (below). A block defining ``test_*``
  functions is a test file of the user's project: pytest runs it there and it must pass, not skip.
  A block that builds on a ``Host(dry_run=True)`` changes nothing: it runs without root, outside
  any sandbox. A block followed by a ``text`` block marked ``<!-- output -->`` prints exactly that.
- ``toml``: written to the file its first comment names (``# shop.toml — …``) and loaded with
  ``Lab.from_file`` on a dry-run Host (no root). The ``sh`` blocks find these files in their folder.
- ``sh``: every line is a ``pynetns`` command; the block runs as one ``sh -e`` script, in order,
  inside a throwaway machine (root).
- ``text``: output and drawings, never run. Any other language fails the test: a new block either
  runs here or says why not.
- ``<!-- not run: why -->`` on the line before a block leaves it out, saying why (kept rare).

The throwaway machine (``tests/support/readme.py: sandboxed``): ``unshare`` gives the block its own
network, mount and PID namespaces, a fresh tmpfs on ``/run`` (so ``/run/netns`` and
``/run/pynetns`` are its own) and ``lo`` up. The README's fixed names (``c1``, ``docker0``, a lab
``shop``), its firewall rules and sysctls touch nothing else, traffic stays inside, and whatever
the block starts ends with it. When the block ends, the machine must be as the block found it: no
namespace, link, firewall rule, process or journal left, sysctls as they were.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pynetns import Host, Lab, TopologyError
from tests.support.readme import README, Block, Sandboxed, blocks, environment, sandboxed

BLOCKS = blocks()
KINDS = {"python", "toml", "sh", "text"}


def runnable(language: str) -> list[Block]:
    return [block for block in BLOCKS if block.language == language and block.marker != "not run"]


def dry(block: Block) -> bool:
    """A block that only records commands (``Host(dry_run=True)``): it needs no root."""
    return "Host(dry_run=True)" in block.code


def params(selected: list[Block], root: bool | None = None) -> list[object]:
    """``selected`` as pytest params, marked ``root`` if ``root`` says so (None: unless the block is dry)."""
    found = []
    for block in selected:
        needs_root = not dry(block) if root is None else root
        found.append(pytest.param(block, id=block.id, marks=[pytest.mark.root] if needs_root else []))
    return found


def topology_files(folder: Path) -> list[Path]:
    """Write every toml block to the file its first comment names; return the paths."""
    written = []
    for block in runnable("toml"):
        named = re.match(r"#\s*(\S+\.toml)\b", block.code)
        assert named, f"README.md:{block.line}: a toml block's first line names its file: # NAME.toml — …"
        path = folder / named[1]
        path.write_text(block.code)
        written.append(path)
    return written


def assert_clean(run: Sandboxed) -> None:
    """The block succeeded and left its machine as it found it."""
    assert run.result.returncode == 0, run.report()
    assert run.after == run.before, f"the block left something behind\n{run.report()}"


# -- the README as a whole --------------------------------------------------------------------


def test_every_block_runs_or_says_why():
    languages = {block.language for block in BLOCKS}
    assert languages <= KINDS, f"blocks of kind {sorted(languages - KINDS)}: tag them {sorted(KINDS)}"
    for language in ("python", "toml", "sh"):
        assert runnable(language), f"no {language} block found in README.md: is the parser right?"
    skipped = [block for block in BLOCKS if block.marker == "not run"]
    assert all(block.why for block in skipped), "each <!-- not run: why --> gives its reason"
    assert len(skipped) <= 2, f"blocks not run: {[block.id for block in skipped]}; keep them rare"
    for block in runnable("sh"):
        for line in block.code.splitlines():
            assert not line.strip() or line.startswith("pynetns "), (
                f"README.md:{block.line}: a sh block holds pynetns command lines only, not {line!r}"
            )


# -- python blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", params(runnable("python")))
def test_python_block(block: Block, tmp_path: Path) -> None:
    tests = re.findall(r"^def (test_\w+)\(", block.code, re.M)
    if tests:  # a test file of the user's own project, using the fixtures
        script = tmp_path / "test_from_readme.py"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name]
    else:
        script = tmp_path / "block.py"
        argv = [sys.executable, script.name]
    script.write_text(block.code)
    if dry(block):
        result = subprocess.run(
            argv, cwd=tmp_path, env=environment(tmp_path), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        run = sandboxed(argv, tmp_path)
        assert_clean(run)
        result = run.result
    if tests:
        assert f"{len(tests)} passed" in result.stdout and "skipped" not in result.stdout, result.stdout
        assert "pynetns leftovers" not in result.stdout, result.stdout
    if block.output is not None:
        assert result.stdout == block.output, "the output the README shows after the block"


# -- topology files ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", params(runnable("toml"), root=False))
def test_topology_file_loads(block: Block, tmp_path: Path) -> None:
    (path,) = [path for path in topology_files(tmp_path) if path.read_text() == block.code]
    lab = Lab.from_file(path, host=Host(dry_run=True))
    assert lab.namespaces and lab.networks
    assert len(lab.published) == block.code.count("[[publish]]")
    assert "netns add" in lab.explain()


def test_the_topology_error_the_readme_shows(tmp_path: Path) -> None:
    """README: a db address outside back's subnet gives exactly the error it quotes."""
    quoted = re.search(r"`(shop\.toml: namespaces\.db\.networks\[0\]\.ip: [^`]+)`", README.read_text())
    assert quoted, "README.md quotes the error for a db address outside back's subnet"
    (path,) = [path for path in topology_files(tmp_path) if path.name == "shop.toml"]
    text = path.read_text()
    assert 'ip = "10.31.0.10"' in text
    path.write_text(text.replace('ip = "10.31.0.10"', 'ip = "10.99.0.1"'))
    with pytest.raises(TopologyError) as raised:
        Lab.from_file(path, host=Host(dry_run=True))
    message = " ".join(str(raised.value).split())
    assert message.endswith(quoted[1].removeprefix("shop.toml")), message
    assert message.startswith(str(path)), message


# -- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize("block", params(runnable("sh"), root=True))
def test_command_line_block(block: Block, tmp_path: Path) -> None:
    topology_files(tmp_path)
    (tmp_path / "commands.sh").write_text(block.code)
    run = sandboxed(["sh", "-e", "commands.sh"], tmp_path)
    assert_clean(run)
