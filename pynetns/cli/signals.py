"""Signals on the command line: unwind on SIGINT/SIGTERM/SIGHUP, and pass them on to a foreground command."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runner import Process

__all__ = ["Forwarding", "Signals", "Terminated", "terminal_foreground"]


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (running every ``finally``), then exit ``128 + signum``.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Forwarding:
    """While a foreground command runs, pass SIGTERM and SIGHUP (and SIGINT, unless a terminal sent it) on to it.

    A Ctrl-C typed in the terminal reaches the command by itself (it is in our process group), so it is
    not passed on a second time. A signal that arrives before the command started is kept, and the
    command is not started.
    """

    NUMBERS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.process: Process | None = None
        self.early: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Forwarding:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.NUMBERS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, action in self._previous.items():
            signal.signal(signum, action)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and terminal_foreground():
            return
        if self.process is None:
            self.early = self.early or signum
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    def run(self, start: Callable[[], Process]) -> int:
        """Start the command with ``start()``, wait for it, and return its status shell-style (128 + N for signal N)."""
        if self.early is not None:
            return 128 + self.early
        process = self.process = start()
        if self.early is not None:  # it came while the command was starting
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, self.early)
        status = process.wait()
        return 128 - status if status < 0 else status


def terminal_foreground() -> bool:
    """This process group is the foreground of its terminal (so the terminal's Ctrl-C reaches all of it)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


class Signals:
    """SIGINT → KeyboardInterrupt, SIGTERM/SIGHUP → :class:`Terminated`, once; later ones wait for the cleanup."""

    NUMBERS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.NUMBERS}

    def restore(self) -> None:
        for signum, action in self._previous.items():
            signal.signal(signum, action)

    def ignore(self) -> None:
        """The work is done: a signal now would only turn a clean exit into a traceback or a kill."""
        for signum in self.NUMBERS:
            signal.signal(signum, signal.SIG_IGN)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            os.write(2, b"pynetns: still cleaning up, please wait\n")
            return
        self.received = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)
