"""The processes a test started (as uid 65534, say), found by a mark in their environment: every child,
grandchild and program started inside a sandbox inherits it, so none can hide from the count."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

MARK = "PYNETNS_TEST_MARK"


def mark(env: dict[str, str]) -> str:
    """Put a new mark into ``env`` (for the processes about to be started with it); returns it."""
    env[MARK] = secrets.token_hex(6)
    return env[MARK]


def marked(token: str) -> list[int]:
    """The live processes whose environment carries ``token`` (a zombie has none left: it holds nothing)."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found
