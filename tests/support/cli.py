"""Helpers shared by tests/unit/test_cli.py and tests/kernel/test_cli.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "pynetns.cli"]


def cli(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    if "input" not in kwargs:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def write_topology(folder: Path, token: str) -> Path:
    """An isolated lab ``cli-TOKEN``: web-TOKEN on front and back, db-TOKEN on back (10.82.0.10)."""
    path = folder / "lab.toml"
    path.write_text(
        textwrap.dedent(f"""\
        name = "cli-{token}"
        isolated = true

        [networks.front]
        subnet = "10.81.0.0/24"

        [networks.back]
        subnet = "10.82.0.0/24"
        internal = true

        [namespaces.web-{token}]
        networks = ["front", "back"]

        [namespaces.db-{token}]
        networks = [{{ network = "back", ip = "10.82.0.10" }}]

        [[publish]]
        namespace = "web-{token}"
        host_port = 8080
        port = 80
        """)
    )
    return path


def one_error_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The failure's stderr: exactly one line, ``pynetns COMMAND: error: ...``, and no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pynetns {command}: error: "), lines[0]
    return lines[0]
