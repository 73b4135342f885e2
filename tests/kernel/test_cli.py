"""The ``pynetns`` command line, through real invocations (``python -m pynetns.cli ...``).

The session's runtime directory (``$PYNETNS_RUNTIME_DIR``, see conftest) is inherited by every
invocation, so the labs made here are seen only by this test worker. Every lab is isolated:
nothing here touches the machine's own network or firewall.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from subprocess import PIPE

import pytest

from pynetns.cli import app as cli_module
from pynetns.lab import labs, remove
from tests.support.cli import CLI, cli, one_error_line, write_topology


def netns_names() -> set[str]:
    listed = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {item["name"] for item in json.loads(listed.strip() or "[]")}


@pytest.mark.root
def test_up_ls_exec_show_cleanup_down(tmp_path, token):
    path = write_topology(tmp_path, token)
    name, web, db = f"cli-{token}", f"web-{token}", f"db-{token}"

    up = cli("up", str(path))
    assert up.returncode == 0, up.stderr
    assert up.stderr == ""  # a small lab: no progress report
    record = next(record for record in labs() if record.name == name)
    kernel = list(record.data["namespaces"])
    try:
        assert f"lab {name} ({record.id}): persistent" in up.stdout
        assert re.search(r"front\s+10\.81\.0\.0/24\s+gateway 10\.81\.0\.1", up.stdout)
        assert re.search(rf"{db}\s+pn{record.id}-{db}\s+eth0 10\.82\.0\.10/24 \(back\)", up.stdout)
        assert "8080->10.81.0.2:80/tcp" in up.stdout
        assert set(kernel) <= netns_names()

        listing = cli("ls")
        assert listing.returncode == 0
        row = next(line.split() for line in listing.stdout.splitlines() if line.startswith(name))
        assert row == [name, record.id, "persistent", "-", "2", "front=10.81.0.0/24", "back=10.82.0.0/24"]
        (item,) = json.loads(cli("ls", "--json").stdout)
        assert item["state"] == "persistent" and item["owner_pid"] is None and item["namespaces"] == [db, web]

        ping = cli("exec", web, "--", "ping", "-c1", "-W1", "10.82.0.10")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "1 received" in ping.stdout  # the command's own output, passed through
        assert cli("exec", web, "--", "false").returncode == 1
        assert cli("exec", f"{name}:{web}", "--", "sh", "-c", "exit 7").returncode == 7
        assert cli("exec", "--lab", record.id, f"{db}", "--", "true").returncode == 0
        echoed = cli("exec", f"{name}/{db}", "--", "cat", input="from stdin\n")
        assert echoed.returncode == 0 and echoed.stdout == "from stdin\n"
        inside = cli("exec", db, "--", "ip", "-j", "addr", "show", "eth0")
        assert json.loads(inside.stdout)[0]["addr_info"][0]["local"] == "10.82.0.10"
        line = one_error_line(cli("exec", f"nothing-{token}", "--", "true"), "exec")
        assert f"{name}:{web}" in line and f"{name}:{db}" in line

        shown = cli("show", name, "--json")
        assert shown.returncode == 0, shown.stderr
        data = json.loads(shown.stdout)
        assert data["state"] == "persistent" and data["isolated"] is True
        assert data["members"] == {web: f"pn{record.id}-{web}", db: f"pn{record.id}-{db}"}
        assert {net["name"]: net["subnet"] for net in data["networks"]} == {
            "front": "10.81.0.0/24",
            "back": "10.82.0.0/24",
        }
        assert data["live"] == {"namespaces": {web: True, db: True}, "host_namespace": True}
        assert {(e["namespace"], e["ip"]) for e in data["endpoints"]} >= {(db, "10.82.0.10/24")}
        text = cli("show", record.id)
        assert text.returncode == 0
        assert re.search(rf"{web}\s+pn{record.id}-{web}\s+up\s+eth0 10\.81\.0\.2/24", text.stdout), text.stdout

        again = one_error_line(cli("up", str(path)), "up")
        assert "a lab of that name exists" in again and record.id in again

        cleaned = cli("cleanup")
        assert cleaned.returncode == 0 and cleaned.stdout == ""
        assert [r.id for r in labs()] == [record.id] and set(kernel) <= netns_names()
    finally:
        down = cli("down", name)
    assert down.returncode == 0, down.stderr
    assert f"removed namespace pn{record.id}-host" in down.stdout.splitlines()
    assert down.stdout.splitlines()[-1] == f"lab {name} ({record.id}) is down"
    assert labs() == []
    assert not set(kernel) & netns_names()
    assert "no such lab" in one_error_line(cli("down", name), "down")


@pytest.mark.root
def test_cleanup_all_removes_persistent_labs(tmp_path, token):
    up = cli("up", "--name", f"all-{token}", str(write_topology(tmp_path, token)))
    assert up.returncode == 0, up.stderr
    (record,) = labs()
    assert record.name == f"all-{token}"
    result = cli("cleanup", "--all")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"removed namespace pn{record.id}-host" in lines and lines[-1] == f"removed lab all-{token} ({record.id})"
    assert labs() == [] and not set(record.data["namespaces"]) & netns_names()


@pytest.mark.root
def test_exec_passes_signals_on_and_exits_like_a_shell(tmp_path, token):
    assert cli("up", str(write_topology(tmp_path, token))).returncode == 0
    try:
        command = [*CLI, "exec", f"web-{token}", "--", "sh", "-c", "echo ready; exec sleep 30"]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 128 + signal.SIGTERM
        process.stdout.close()
    finally:
        assert cli("down", f"cli-{token}").returncode == 0


@pytest.mark.root
def test_a_failed_up_removes_what_it_made(tmp_path, token):
    """No firewall tool to be found: the lab's namespaces were made before that fails, and are removed."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ip", "nsenter", "sysctl", "ls", "mkdir", "tee", "ln", "rm", "rmdir", "cat"):  # names: coreutils
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    result = cli("up", "--verbose", str(write_topology(tmp_path, token)), env={**os.environ, "PATH": str(tools)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    *progress, line = result.stderr.splitlines()
    assert line.startswith("pynetns up: error: ") and "is not available" in line
    lab_id = re.findall(rf"creating lab cli-{token} \((\w+)\)", progress[0])[0]
    # it failed with the firewall, after the namespaces (1) and their names (2)
    assert [item.split()[1] for item in progress[1:]] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]"]
    assert labs() == []
    assert not [name for name in netns_names() if name.startswith(f"pn{lab_id}-")]


@pytest.mark.root
def test_an_up_failing_while_it_writes_the_names_removes_what_it_made(tmp_path, token):
    """No ``ln``: the names files are written, not linked; the files, their folder and the namespaces go."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("ip", "nsenter", "sysctl", "ls", "mkdir", "tee", "rm", "rmdir", "cat"):
        (tools / tool).symlink_to(str(shutil.which(tool)))
    result = cli("up", "--verbose", str(write_topology(tmp_path, token)), env={**os.environ, "PATH": str(tools)})
    assert result.returncode == 1 and "'ln' is not available" in result.stderr and "coreutils" in result.stderr
    *progress, _ = result.stderr.splitlines()
    lab_id = re.findall(rf"creating lab cli-{token} \((\w+)\)", progress[0])[0]
    assert [item.split()[1] for item in progress[1:]] == ["[1/5]", "[2/5]"]
    assert labs() == []
    assert not [name for name in netns_names() if name.startswith(f"pn{lab_id}-")]
    assert not (Path(os.environ["PYNETNS_RUNTIME_DIR"]) / "names").exists()


@pytest.mark.root
def test_a_large_lab_reports_progress_and_ctrl_c_removes_it(tmp_path, token):
    path = tmp_path / "large.toml"
    lines = [f'name = "big-{token}"', "isolated = true", "[networks.net]", 'subnet = "10.83.0.0/24"']
    for number in range(cli_module.LARGE_LAB + 2):
        lines += [f"[namespaces.n{number}-{token}]", 'networks = ["net"]']
    path.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [*CLI, "up", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    seen = []
    try:
        for line in process.stderr:
            seen.append(line)
            if line.startswith("pynetns: [4/5]"):  # the namespaces' stage has begun
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=60)
    finally:  # whatever went wrong, the lab must not outlive the test
        process.kill()
        process.communicate()
        for record in labs():
            if record.name == f"big-{token}" and not [line for line in seen if "[4/5]" in line]:
                remove(record.id)
    assert seen[0].startswith(f"pynetns: creating lab big-{token} (")
    assert [line.split()[1] for line in seen[1:]] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]"], seen
    assert process.returncode == 128 + signal.SIGINT, out + err
    assert err == "pynetns: interrupted\n"
    assert labs() == []
    lab_id = seen[0].split("(")[1].split(")")[0]
    assert not [name for name in netns_names() if token in name or name.startswith(f"pn{lab_id}-")]


@pytest.mark.root
def test_up_json_exec_host_side_graph_and_down_file(tmp_path, token):
    """containerlab's verbs: up/down --json, down FILE, exec LAB:host and a command without '--', graph."""
    path = write_topology(tmp_path, token)
    name, web = f"cli-{token}", f"web-{token}"
    up = cli("up", "--json", str(path))
    assert up.returncode == 0, up.stderr
    item = json.loads(up.stdout)
    down = None
    try:
        assert item["name"] == name and item["state"] == "persistent" and item["sandbox_pid"] is None
        assert item["namespaces"] == [f"db-{token}", web]

        inside = cli("exec", web, "ip", "-br", "a")  # no '--': '-br' is ip's
        assert inside.returncode == 0, inside.stderr
        assert re.search(r"^eth0@if\d+\s+UP\s+10\.81\.0\.2/24", inside.stdout, re.M), inside.stdout
        host_side = cli("exec", f"{name}:host", "--debug", "ip", "-j", "addr", "show")
        assert host_side.returncode == 0, host_side.stderr
        addresses = {info["local"] for link in json.loads(host_side.stdout) for info in link.get("addr_info", ())}
        assert {"10.81.0.1", "10.82.0.1"} <= addresses  # the gateways: the bridges are the host side's
        assert "pynetns" in host_side.stderr  # --debug after the subcommand logged the commands
        assert "is LAB:host" in one_error_line(cli("exec", "host", "true"), "exec")  # no lab given: not found

        graph = cli("graph", "--format", "mermaid", name)
        assert graph.returncode == 0, graph.stderr
        assert graph.stdout.startswith("flowchart LR") and "10.82.0.10/24" in graph.stdout

        down = cli("down", "--json", str(path))
    finally:
        if down is None or down.returncode != 0:
            cli("down", name)
    assert down.returncode == 0, down.stderr
    gone = json.loads(down.stdout)
    assert gone["name"] == name and gone["id"] == item["id"] and gone["sandbox_pid"] is None
    assert f"namespace pn{item['id']}-host" in gone["removed"]
    assert labs() == [] and not set(item["namespaces"]) & netns_names()


@pytest.mark.root
def test_concurrent_ups_of_one_name_make_one_lab(tmp_path, token):
    """Four ``up``s of one file at once: one makes the lab, the others see it and stop (exit 1)."""
    path = str(write_topology(tmp_path, token))
    running = [
        subprocess.Popen([*CLI, "up", path], stdin=subprocess.DEVNULL, stdout=PIPE, stderr=PIPE, text=True)
        for _ in range(4)
    ]
    results = [(process.wait(timeout=120), *process.communicate()) for process in running]
    assert sorted(code for code, _, _ in results) == [0, 1, 1, 1], results
    assert all("a lab of that name exists" in err for code, _, err in results if code), results
    (record,) = labs()
    down = cli("down", f"cli-{token}")
    assert down.returncode == 0, down.stderr
    assert labs() == [] and not set(record.data["namespaces"]) & netns_names()
