"""Running Python as an unprivileged user (uid 65534, through ``setpriv``), for the rootless kernel tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
CHECKOUT = Path(__file__).resolve().parent.parent.parent


def interpreter(env: dict[str, str]) -> list[str] | None:
    """A Python the unprivileged user may run, with pynetns' dependencies (this venv's may be under /root);
    sets ``env["PYTHONPATH"]`` for it."""
    site = sysconfig.get_paths()["purelib"]
    for python, path in ((sys.executable, str(CHECKOUT)), ("/usr/bin/python3", f"{CHECKOUT}:{site}")):
        probe = {**env, "PYTHONPATH": path}
        # the lab's servers run as sys.executable: the child must be able to start it again
        script = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import pynetns'], check=True)"
        check = [*AS_NOBODY, python, "-c", script]
        if subprocess.run(check, env=probe, capture_output=True, cwd="/").returncode == 0:
            env["PYTHONPATH"] = path
            return [python]
    return None


@contextlib.contextmanager
def nobody() -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """The argv prefix and environment of a Python run as uid 65534, and a folder it owns (its HOME and
    XDG_RUNTIME_DIR); skips where no such Python exists."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    folder = Path(tempfile.mkdtemp(prefix="pynetns-nobody-"))
    os.chown(folder, NOBODY, NOBODY)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "XDG_RUNTIME_DIR": str(folder)}
    try:
        python = interpreter(env)
        if python is None:
            pytest.skip("no Python interpreter with pynetns' dependencies is runnable by uid 65534")
        yield [*AS_NOBODY, *python], env, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
