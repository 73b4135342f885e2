"""The downstream example project (examples/pytest_downstream) passes, run as its users run it: ``pytest -n 4``."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nobody import NOBODY, nobody

PROJECT = Path(__file__).parent.parent.parent / "examples" / "pytest_downstream"


@pytest.mark.root
@pytest.mark.timeout(600)
def test_the_downstream_project_passes_under_xdist():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "4", "-p", "no:cacheprovider", "-q"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    assert "pynetns leftovers" not in result.stdout


@pytest.mark.root
@pytest.mark.timeout(600)
def test_the_downstream_project_passes_without_root():
    """As its users run it without root: uid 65534, ``pytest -n 4 --pynetns-require`` — the fixtures make a
    rootless Host (an unprivileged user namespace plays the host), so nothing may skip."""
    with nobody() as (python, env, home):
        project = home / "project"  # a copy the user may read (the checkout may sit under /root)
        shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        for path in (project, *project.rglob("*")):
            os.chown(path, NOBODY, NOBODY)
        result = subprocess.run(
            [*python, "-m", "pytest", "-n", "4", "-p", "no:cacheprovider", "-q", "--pynetns-require"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout and "error" not in result.stdout.lower()
    assert "pynetns leftovers" not in result.stdout
