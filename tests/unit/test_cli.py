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
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pynetns.cli import app as cli_module
from pynetns.lab import labs
from tests.support.cli import cli, one_error_line, write_topology

SUBCOMMANDS = ["up", "down", "ls", "show", "exec", "graph", "explain", "impair", "partition", "heal", "cleanup", "demo"]


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
     ("cleanup", "extra"), ("exec", "shop:web", "--lab", "other", "--", "true"), ("graph",),
     ("graph", "--format", "png", "shop"), ("down", "a", "b")],
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


# -- like containerlab's: down FILE, graph, exec LAB:host, --json, --debug after the subcommand ----------


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[networks.front]\nsubnet = "10.81.0.0/33"\n')
    result = cli("explain", "--debug", str(path))
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "TopologyError" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["exec", "web", "ip", "-br", "a"], ("web", None, ("ip", "-br", "a"))),
     (["exec", "shop:web", "--", "ip", "-br", "a"], ("web", "shop", ("ip", "-br", "a"))),
     (["exec", "--lab", "shop", "web", "ls", "-l", "--", "x"], ("web", "shop", ("ls", "-l", "--", "x"))),
     (["exec", "web", "--lab", "shop", "sh", "-c", "exit 3"], ("web", "shop", ("sh", "-c", "exit 3"))),
     (["--debug", "exec", "shop:host", "ip", "-br", "a"], ("host", "shop", ("ip", "-br", "a")))],
)  # fmt: skip
def test_exec_takes_the_command_without_dashes(monkeypatch, args, expected):
    seen = []
    monkeypatch.setattr(
        cli_module.Exec, "_exec", lambda self, lab, name, command: seen.append((name, lab, command)) or 0
    )
    assert cli_module.run(args) == 0
    assert seen == [expected]


def test_exec_without_a_command_is_still_a_usage_error(capsys):
    assert cli_module.run(["exec", "web"]) == 2
    assert "give the command to run" in capsys.readouterr().err


def record_of(name="shop", isolated=True):
    from pathlib import Path

    from pynetns.lab.journal import LabRecord

    data = {
        "name": name, "isolated": isolated, "members": {"web": "pn1a2b-web", "db": "pn1a2b-db"},
        "host_namespace": "pn1a2b-host" if isolated else None,
        "networks": [{"name": "front", "subnet": "10.81.0.0/24", "bridge": "pn1a2b-front", "gateway": "10.81.0.1"},
                     {"name": "back", "subnet": "10.82.0.0/24", "bridge": "pn1a2b-back", "gateway": "10.82.0.1",
                      "internal": True}],
        "endpoints": [{"namespace": "web", "interface": "eth0", "ip": "10.81.0.2/24", "network": "front"},
                      {"namespace": "web", "interface": "eth1", "ip": "10.82.0.2/24", "network": "back"},
                      {"namespace": "db", "interface": "eth0", "ip": "10.82.0.10/24", "network": "back"}],
        "published": ["8080->10.81.0.2:80/tcp"],
    }  # fmt: skip
    return LabRecord("1a2b", name, None, False, Path("/nonexistent/1a2b.json"), data)


def test_graph_draws_a_lab_as_dot_mermaid_and_svg(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(cli_module, "locate", lambda name: asked.append(name) or (record_of(), None))

    assert cli_module.run(["graph", "shop"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('graph "shop" {') and dot.rstrip().endswith("}")
    assert '"net:back" -- "ns:db" [label="eth0 10.82.0.10/24"];' in dot
    assert 'host [label="host: pn1a2b-host", shape=box3d];' in dot
    assert 'label="-p 8080->10.81.0.2:80/tcp"' in dot

    assert cli_module.run(["graph", "--format", "mermaid", "shop"]) == 0
    mermaid = capsys.readouterr().out.splitlines()
    assert mermaid[0] == "flowchart LR"
    assert '  net1 ---|"eth0 10.82.0.10/24"| ns1' in mermaid
    assert '  ns0["web (pn1a2b-web)"]' in mermaid
    assert asked == ["shop", "shop"]

    if shutil.which("dot") is None:
        assert cli_module.run(["graph", "--format", "svg", "shop"]) == 1
        assert "Graphviz's dot is not installed" in capsys.readouterr().err
    else:
        assert cli_module.run(["graph", "--format", "svg", "shop"]) == 0
        svg = capsys.readouterr().out
        assert "<svg" in svg and "web (pn1a2b" in svg  # dot writes "-" as &#45;


def test_down_and_graph_read_the_lab_name_from_a_topology_file(monkeypatch, tmp_path, capsys, token):
    asked = []
    monkeypatch.setattr(cli_module, "locate", lambda name: asked.append(name) or (record_of(), None))
    path = write_topology(tmp_path, token)
    assert cli_module.run(["graph", str(path)]) == 0
    assert asked == [f"cli-{token}"]
    capsys.readouterr()

    nameless = tmp_path / "nameless.toml"
    nameless.write_text('[networks.front]\nsubnet = "10.81.0.0/24"\n')
    assert cli_module.run(["down", str(nameless)]) == 1
    assert "gives its lab no name" in capsys.readouterr().err
    assert cli_module.run(["down", str(tmp_path / "missing.toml")]) == 1
    assert "missing.toml: cannot read it" in capsys.readouterr().err
    assert asked == [f"cli-{token}"]  # neither was looked up


def test_exec_host_side_of_a_lab_that_is_not_isolated():
    from pynetns.cli.records import member_or_host_side
    from pynetns.errors import InvalidValue

    assert member_or_host_side(record_of(), "host").name == "pn1a2b-host"
    assert member_or_host_side(record_of(), "web").name == "pn1a2b-web"
    with pytest.raises(InvalidValue, match="is not isolated"):
        member_or_host_side(record_of(isolated=False), "host")


def test_ls_and_show_tell_both_families_of_a_dual_stack_lab():
    """A dual-stack lab's record (its journal, as a real Lab writes it) in ``show`` and ``ls --json``."""
    from pynetns import Host, Lab
    from pynetns.cli.records import describe, summary
    from pynetns.lab.journal import LabRecord

    lab = Lab("dual", host=Host(dry_run=True))
    lab.namespace("web", [lab.network("front", subnet="10.88.0.0/24", subnet6="fd00:88::/64")])
    data = lab._state.journal(firewall=True)
    record = LabRecord(lab.id, "dual", None, False, Path("/nonexistent.json"), data)
    text = "\n".join(describe(record))
    assert "10.88.0.0/24 fd00:88::/64" in text and "gateway 10.88.0.1 fd00:88::1" in text
    assert "eth0 10.88.0.2/24 fd00:88::2/64 (front)" in text
    assert summary(record)["networks"] == {"front": "10.88.0.0/24"}
    assert summary(record)["networks6"] == {"front": "fd00:88::/64"}
