"""examples/docker_networking.ipynb: committed without outputs, Part 0 runs without root, the rest for real.

The root test executes the notebook top to bottom in a Jupyter kernel (nbclient), as a reader
would. The notebook names everything ``nb<token>-*`` with the token it reads from
``$PYNETNS_NOTEBOOK_TOKEN``; whatever happens, the test then makes sure nothing with that token
is left — running the notebook's cleanup cell after a failed cell, and removing what is still
there itself (and failing) as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pynetns import wait_until
from pynetns.runner import LocalRunner
from tests.support.marked import mark, marked
from tests.support.nobody import nobody as as_nobody

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "docker_networking.ipynb"
CELL_TIMEOUT = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load() -> dict[str, Any]:
    return json.loads(NOTEBOOK.read_text())


def source(cell: dict[str, Any]) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def tagged(notebook: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    return [cell for cell in notebook["cells"] if tag in cell.get("metadata", {}).get("tags", [])]


# -- without root ------------------------------------------------------------------


def test_notebook_is_valid_v4_with_cleared_outputs():
    notebook = load()
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "the notebook has no code cell"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {cell.get('id')} has outputs"
    # the first code cell makes the ExitStack, the last one closes it
    assert "setup" in code[0]["metadata"].get("tags", []) and "ExitStack()" in source(code[0])
    assert "cleanup" in code[-1]["metadata"].get("tags", []) and "stack.close()" in source(code[-1])
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[notebook]')")
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))


def test_part0_shows_the_commands_without_running_any(monkeypatch, capsys):
    """The setup cell and Part 0 (Host(dry_run=True), lab.explain()) start no process: no root needed."""

    def refuse(*args: object) -> None:
        raise AssertionError(f"Part 0 started a process: {args}")

    monkeypatch.setattr(LocalRunner, "_execute", refuse)
    monkeypatch.setattr(LocalRunner, "_spawn", refuse)
    monkeypatch.setenv("PYNETNS_NOTEBOOK_TOKEN", "t0")
    notebook = load()
    scope: dict[str, Any] = {"__name__": "__notebook__"}
    try:
        for cell in tagged(notebook, "setup") + tagged(notebook, "dry-run"):
            exec(compile(source(cell), f"<cell {cell['id']}>", "exec"), scope)
    finally:
        if "stack" in scope:
            atexit.unregister(scope["stack"].close)
    out = capsys.readouterr().out
    assert "ip netns add c1\n" in out
    assert "link add veth1a2b3c4 master docker0 up type veth peer name eth0 netns c1\n" in out
    assert "dnat to 172.17.0.2:80" in out  # the -p 8080:80 rule, as a here-document
    assert "netns add pn" in out and "addr add 10.30.0.1/24 dev pn" in out  # the lab, explained


# -- for real ----------------------------------------------------------------------------


def leftovers(token: str) -> dict[str, list[str]]:
    """Namespaces and root-namespace interfaces of this run (by token or by the notebook's tag)."""
    netns = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout.strip()
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout.strip()
    return {
        "namespaces": [item["name"] for item in json.loads(netns or "[]") if token in item["name"]],
        "interfaces": [item["ifname"] for item in json.loads(links or "[]")
                       if token in item["ifname"] or item.get("ifalias") == f"pynetns:nb-{token}"],
    }  # fmt: skip


def remove(left: dict[str, list[str]]) -> None:
    """Remove exactly these: end the processes inside each namespace, delete it; delete the interfaces."""
    for name in left.get("namespaces", []):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if pids:
            subprocess.run(["kill", "-KILL", *pids], capture_output=True)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    for name in left.get("interfaces", []):
        subprocess.run(["ip", "link", "delete", name], capture_output=True)


def settled_leftovers(token: str, timeout: float = 5.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout
    while any(left := leftovers(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {kind: names for kind, names in left.items() if names}


def text_of(cell: Any) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
        elif "text/plain" in output.get("data", {}):
            parts.append(output["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.root
@pytest.mark.timeout(300)
def test_notebook_runs_top_to_bottom_and_leaves_nothing(token, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[notebook]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[notebook]')")
    pytest.importorskip("ipykernel", reason="ipykernel (the python3 kernel) is not installed in this environment")
    monkeypatch.setenv("PYNETNS_NOTEBOOK_TOKEN", token)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cleanup = next(index for index, cell in enumerate(notebook.cells) if "cleanup" in cell.metadata.get("tags", []))
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, interrupt_on_timeout=True, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    failure: BaseException | None = None
    index = -1
    started = time.monotonic()
    try:
        client.reset_execution_trackers()
        with client.setup_kernel():
            try:
                for index, cell in enumerate(notebook.cells):
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            except Exception as error:  # a failing cell, a timeout, a dead kernel
                failure = error
                if client.kc is not None and index != cleanup:  # the notebook's own try/finally
                    with contextlib.suppress(Exception):
                        client.execute_cell(notebook.cells[cleanup], cleanup)
    finally:
        elapsed = time.monotonic() - started
        left = settled_leftovers(token)
        if left:
            remove(left)
    problems = [] if failure is None else [f"the notebook failed after {elapsed:.1f} s: {ANSI.sub('', str(failure))}"]
    if left:
        problems.append(f"it left behind {left} (removed by the test)")
    assert not problems, "\n".join(problems)

    text = "\n".join(text_of(cell) for cell in notebook.cells)
    assert "ip netns add c1\n" in text  # Part 0, dry run
    assert f"ip netns add nb{token}-none\n" in text  # --network none, as run
    assert "OSError: [Errno 98] Address already in use" in text  # two --network host servers on one port
    assert "3 packets transmitted, 3 received, 0% packet loss" in text  # c1 pings c2
    assert "nsenter -t " in text and "the same namespace as" in text  # nsenter -t PID -n
    assert "refused: " in text and "DNAT rule: 0 -> 4 packets" in text  # -p 8080:80 and its counter
    assert_displays_masquerade_and_names(notebook, text)
    assert "left behind: nothing" in text


def assert_displays_masquerade_and_names(notebook: Any, text: str) -> None:
    """The live steps show objects with rich displays (HTML tables, the lab's diagram), masquerade reaches a
    namespace playing the outside world, and a user-defined network's members find each other by name."""
    shown = [output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])]
    assert sum("text/html" in data for data in shown) >= 8  # namespaces, veth, bridge, port map, masquerade, lab
    assert any('graph "nb' in data.get("text/plain", "") for data in shown)  # the live lab's diagram
    assert "without masquerade: no answer" in text and "client 203.0.113.1\n" in text  # masquerade
    assert "10.40.0.2\tdb postgres" in text  # the hosts file ip netns exec mounted over /etc/hosts
    assert "ping postgres: 1 packets transmitted, 1 received, 0% packet loss" in text
    assert "from lonely, on another network: db does not resolve" in text


# -- without root ------------------------------------------------------------------------

#: run as uid 65534: execute the notebook in a kernel of this very interpreter (a kernelspec in its own
#: folder), run the cleanup cell after a failure, and save the executed notebook for the test to read
AS_NOBODY = """
import json, sys
from pathlib import Path
import nbclient, nbformat

notebook_path, folder = sys.argv[1], Path(sys.argv[2])
spec = folder / "kernels" / "nobody"
spec.mkdir(parents=True)
argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
(spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "nobody", "language": "python"}))
notebook = nbformat.read(notebook_path, as_version=4)
cleanup = next(index for index, cell in enumerate(notebook.cells) if "cleanup" in cell.metadata.get("tags", []))
client = nbclient.NotebookClient(notebook, timeout=int(sys.argv[3]), kernel_name="nobody",
                                 resources={"metadata": {"path": str(folder)}})
failure = ""
with client.setup_kernel():
    for index, cell in enumerate(notebook.cells):
        try:
            client.execute_cell(cell, index, execution_count=index + 1)
        except Exception as error:
            failure = f"cell {index}: {error}"
            if index != cleanup:
                client.execute_cell(notebook.cells[cleanup], cleanup)
            break
nbformat.write(notebook, str(folder / "ran.ipynb"))
print(failure)
"""


@pytest.mark.root
@pytest.mark.timeout(300)
def test_notebook_runs_as_an_unprivileged_user(token):
    """The notebook as uid 65534, top to bottom: a rootless sandbox plays the host; nothing is left."""
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[notebook]')")
    with as_nobody() as (python, env, folder):
        mark_token = mark(env)
        env.update(PYNETNS_NOTEBOOK_TOKEN=token, JUPYTER_PATH=str(folder), JUPYTER_RUNTIME_DIR=str(folder))
        script = [*python, "-c", AS_NOBODY, str(NOTEBOOK), str(folder), str(CELL_TIMEOUT)]
        result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=280, cwd="/")
        ran = folder / "ran.ipynb"
        notebook = nbformat.read(ran, as_version=4) if ran.exists() else None
        wait_until(lambda: not marked(mark_token), timeout=10, what="every process of the notebook to end")
    assert result.returncode == 0 and not result.stdout.strip(), ANSI.sub("", result.stdout + result.stderr)[-3000:]
    assert notebook is not None and not settled_leftovers(token)  # its namespaces were the sandbox's
    text = "\n".join(text_of(cell) for cell in notebook.cells)
    assert "the host: a rootless sandbox that plays it" in text
    assert "3 packets transmitted, 3 received, 0% packet loss" in text
    assert "the same namespace as" in text and "DNAT rule: 0 -> 4 packets" in text
    assert_displays_masquerade_and_names(notebook, text)  # names in the sandbox's own /etc/netns
    assert "left behind: nothing" in text
