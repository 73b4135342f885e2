"""The downstream example project (examples/pytest_downstream) passes, run as its users run it: ``pytest -n 4``."""

import subprocess
import sys
from pathlib import Path

import pytest

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
