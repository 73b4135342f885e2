"""The ``pynetns`` command line, through real invocations (``python -m pynetns.cli ...``).

The session's runtime directory (``$PYNETNS_RUNTIME_DIR``, see conftest) is inherited by every
invocation, so the labs made here are seen only by this test worker. Every lab is isolated:
nothing here touches the machine's own network or firewall.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from pynetns.cli import app as cli_module
from pynetns.lab import labs
from tests.support.cli import cli, one_error_line, write_topology

SUBCOMMANDS = ["up", "down", "ls", "show", "exec", "explain", "cleanup", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"pynetns {command}" in result.stdout and "Usage:" in result.stdout


def test_main_help_lists_the_subcommands():
    result = cli("--help")
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert re.search(rf"^    {command} ", result.stdout, re.M), command


def test_python_dash_m_pynetns_is_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "pynetns", "ls", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "pynetns ls" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("no-such-command",), ("ls", "--no-such-switch"), ("up",), ("up", "a.toml", "b.toml"), ("show",),
     ("down",), ("exec",), ("exec", "web"), ("explain", "--isolated", "--no-isolated", "x.toml"),
     ("cleanup", "extra"), ("exec", "shop:web", "--lab", "other", "--", "true")],
)  # fmt: skip
def test_usage_errors_exit_2(args):
    result = cli(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_explain_prints_the_commands_and_runs_none(tmp_path, token):
    path = write_topology(tmp_path, token)
    # no program can be found: any command started would fail
    result = cli("explain", str(path), env={**os.environ, "PATH": str(tmp_path / "nothing")})
    assert result.returncode == 0, result.stderr
    text = result.stdout
    host = re.search(r"^netns add (pn\w+-host)$", text, re.M)
    assert host is not None, text
    lab = host.group(1)[: -len("-host")]
    assert f"netns add {lab}-web-{token}" in text and f"netns add {lab}-db-{token}" in text
    assert f"ip -n {lab}-host -batch - <<'EOF'" in text
    assert "addr add 10.82.0.10/24 dev eth0" in text
    assert "route add default via 10.81.0.1" in text
    assert "dnat" in text  # the published port, in the firewall script
    assert labs() == []  # a dry run writes no journal


def test_explain_overrides(tmp_path, token):
    path = write_topology(tmp_path, token)
    result = cli("explain", "--no-isolated", "--name", f"other-{token}", str(path))
    assert result.returncode == 0, result.stderr
    assert "-host" not in result.stdout  # built on "the host" itself: no host namespace
    assert "link add pn" in result.stdout


def test_bad_topology_is_one_line_naming_the_file_and_the_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('isolated = true\n[networks.front]\nsubnet = "10.81.0.0/33"\n')
    for command in ("explain", "up"):
        line = one_error_line(cli(command, str(path)), command)
        assert str(path) in line and "networks.front.subnet" in line and "10.81.0.0/33" in line


def test_unknown_key_and_missing_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('isolated = true\n[networks.front]\nsubnett = "10.81.0.0/24"\n')
    line = one_error_line(cli("explain", str(path)), "explain")
    assert "networks.front" in line and "subnett" in line
    line = one_error_line(cli("explain", str(tmp_path / "missing.toml")), "explain")
    assert "missing.toml" in line and "No such file" in line


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[networks.front]\nsubnet = "10.81.0.0/33"\n')
    result = cli("--debug", "explain", str(path))
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "TopologyError" in result.stderr and "networks.front.subnet" in result.stderr


def test_unknown_labs_are_one_line_listing_the_known_ones(token):
    line = one_error_line(cli("show", f"nothing-{token}"), "show")
    assert f"nothing-{token}" in line and "no such lab (labs: none)" in line
    result = cli("ls")
    assert result.returncode == 0 and result.stdout.split() == [
        "NAME",
        "ID",
        "STATE",
        "OWNER",
        "NAMESPACES",
        "NETWORKS",
    ]
    assert json.loads(cli("ls", "--json").stdout) == []


@pytest.mark.parametrize("args", [("down", "x"), ("exec", "web", "--", "true")])
def test_labs_of_the_machine_need_root(monkeypatch, capsys, args):
    """Without root, a lab on the machine itself (not in one of the user's sandboxes) is still root's."""
    from types import SimpleNamespace

    found = (SimpleNamespace(name="x", id="1a2b3c", data={"members": {"web": "pn1a2b3c-web"}}), None)
    monkeypatch.setattr(cli_module.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(cli_module, "locate", lambda name: found)
    monkeypatch.setattr(cli_module, "find_member", lambda lab, name: found)
    assert cli_module.run(list(args)) == 1
    err = capsys.readouterr().err
    assert (
        err == f"pynetns {args[0]}: error: pynetns {args[0]} needs root, to enter and change network "
        "namespaces (try sudo)\n"
    )


def test_up_without_root_says_why_no_sandbox_can_be_made(monkeypatch, tmp_path, capsys):
    from pynetns import SandboxRefused, sandbox

    def refuse(**options):
        raise SandboxRefused("unprivileged user namespaces are disabled: user.max_user_namespaces is 0")

    monkeypatch.setattr(sandbox, "privileged", lambda: False)
    monkeypatch.setattr(sandbox.Sandbox, "start", refuse)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert cli_module.run(["up", str(write_topology(tmp_path, "x"))]) == 1
    err = capsys.readouterr().err
    assert err == "pynetns up: error: unprivileged user namespaces are disabled: user.max_user_namespaces is 0\n"


def test_cleanup_orphans_asks_for_the_orphans_too(monkeypatch, capsys):
    from pynetns.lab import Cleaned

    cleanup_module = sys.modules["pynetns.lab.cleanup"]  # the package's ``cleanup`` is the function

    asked = []

    def fake_cleanup(host=None, *, all=False, orphans=False):
        asked.append((all, orphans))
        cleaned = Cleaned()
        cleaned.append("namespace pn1a2b3c-web")
        return cleaned

    monkeypatch.setattr(cli_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cleanup_module, "cleanup", fake_cleanup)
    assert cli_module.run(["cleanup", "--orphans"]) == 0
    assert asked == [(False, True)] and "removed namespace pn1a2b3c-web" in capsys.readouterr().out
    assert "--orphans" in cli("cleanup", "--help").stdout
