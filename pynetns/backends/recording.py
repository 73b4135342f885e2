"""The recording backend: a runner that collects commands instead of running them.

It is what ``Host(dry_run=True)`` uses, what unit tests drive, and what a
notebook uses to show the commands without root.

>>> runner = RecordingRunner()
>>> runner.respond(["ip", "-j", "netns", "list"], stdout='[{"name": "web"}]')
>>> runner.run(["ip", "-j", "netns", "list"]).json()
[{'name': 'web'}]
>>> [str(call) for call in runner.history]
['ip -j netns list']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ..runner import Call, CompletedCommand, Runner

__all__ = ["RecordingRunner"]


@attrs.frozen
class _Response:
    prefix: tuple[str, ...]
    stdout: str
    stderr: str
    returncode: int


class _FinishedPopen:
    """Stands in for a process that was never started."""

    pid = 0
    returncode = 0
    stdin = stdout = stderr = None

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def terminate(self) -> None:
        pass

    kill = terminate


class RecordingRunner(Runner):
    """Records every command in :attr:`history` and answers from canned responses.

    Unanswered commands succeed with empty output, so a dry run walks through
    ``create()`` and ``delete()`` exactly as it would for real.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Call] = []
        self._responses: list[_Response] = []
        self.subscribe(self.history.append)

    def respond(self, argv_prefix: Sequence[str], stdout: str = "", *, stderr: str = "", returncode: int = 0) -> None:
        """Answer every later command starting with ``argv_prefix`` (the newest, longest match wins)."""
        self._responses.append(_Response(tuple(argv_prefix), stdout, stderr, returncode))

    def clear(self) -> None:
        """Forget the recorded history (responses stay)."""
        self.history.clear()

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        best: _Response | None = None
        for response in self._responses:
            if argv[: len(response.prefix)] == response.prefix and (
                best is None or len(response.prefix) >= len(best.prefix)
            ):
                best = response
        if best is None:
            return CompletedCommand(argv, 0)
        return CompletedCommand(argv, best.returncode, best.stdout, best.stderr)

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        return _FinishedPopen()
