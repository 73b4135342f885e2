"""The star benchmark runs (at a small N) and leaves nothing behind. Timing is its own business."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def test_star_benchmark_small_n():
    script = Path(__file__).parent.parent.parent / "benchmarks" / "star.py"
    result = subprocess.run([sys.executable, str(script), "-n", "5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "(a) pynetns Lab" in result.stdout and "(d) raw ip -batch script" in result.stdout
    assert "(e) pynetns Lab, rootless" in result.stdout and "failed" not in result.stdout
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert " bn" not in f" {leftovers}"


def test_star_benchmark_rootless_side_by_side():
    """``--rootless``: root and rootless Lab at each N, with the processes each starts (the same count)."""
    script = Path(__file__).parent.parent.parent / "benchmarks" / "star.py"
    argv = [sys.executable, str(script), "--rootless", "3"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["3"])
    assert "failed:" not in row, result.stdout
    assert row[4].count("/") == 1, result.stdout


def test_remote_benchmark_small_n():
    """benchmarks/remote.py: the same lab on a simulated remote machine (sshd in namespaces) and locally."""
    script = Path(__file__).parent.parent.parent / "benchmarks" / "remote.py"
    argv = [sys.executable, str(script), "-n", "3", "--rounds", "1"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {row[0]: row for row in map(str.split, result.stdout.splitlines()) if len(row) == 4}
    assert rows["local"][3] == rows["remote"][3], result.stdout  # the same processes, each one command
    assert "remote / local: x" in result.stdout
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "bmach-" not in leftovers
