"""The ``pynetns`` command line.

::

    sudo pynetns demo             # the Docker networking walkthrough
    sudo pynetns demo --step      # ... pausing after each step
    pynetns --help

Exit status: 0 success; 1 failure, told in one line (``--debug`` logs every
command and shows the traceback); 2 usage error; 130 / 143 / 129 after
SIGINT / SIGTERM / SIGHUP, once everything created was removed.

A subcommand is a :class:`Command` registered with ``@Pynetns.subcommand(name)``
(or lazily, ``Pynetns.subcommand(name, "module:Class")``); its ``main`` wraps
its work in :meth:`Command.guard`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

from plumbum import cli

from . import __version__
from .errors import PynetnsError

__all__ = ["Command", "Pynetns", "Terminated", "main", "run"]

log = logging.getLogger(__name__)

#: exit status for a usage error
USAGE = 2


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (running every ``finally``), then exit ``128 + signum``.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Pynetns(cli.Application):
    """Docker-style Linux network topologies, built with plain ip commands."""

    PROGNAME = "pynetns"
    VERSION = __version__

    debug = cli.Flag("--debug", help="Log every command on stderr and show tracebacks")

    def main(self, *args: str) -> int:
        if args:
            print(f"pynetns: unknown command {args[0]!r}", file=sys.stderr)
            self.help()
            return USAGE
        if not self.nested_command:
            self.help()
            return USAGE
        if self.debug:
            logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)
            logging.getLogger("pynetns").setLevel(logging.DEBUG)
        return 0


class Command(cli.Application):
    """Base of the subcommands."""

    @property
    def debug(self) -> bool:
        """``pynetns --debug`` was given."""
        return isinstance(self.parent, Pynetns) and bool(self.parent.debug)

    def guard(self, work: Callable[[], int]) -> int:
        """Run ``work``; an error becomes one line on stderr and status 1 (``--debug``: the traceback)."""
        try:
            return work()
        except Exception as error:
            if self.debug:
                raise
            kind = "" if isinstance(error, PynetnsError) else f"{type(error).__name__}: "
            print(f"{self.PROGNAME}: error: {kind}{error}", file=sys.stderr)
            return 1


@Pynetns.subcommand("demo")
class Demo(Command):
    """Walk through Docker's networking (none, host, the default bridge), printing every command; needs root"""

    prefix = cli.SwitchAttr("--prefix", argtype=str, argname="PREFIX", default=None,
                            help="Start every name created with PREFIX (at most 12 characters; default pn-XXXX)")
    no_commands = cli.Flag(["-q", "--no-commands"], help="Show the explanations and results, not the commands")
    step = cli.Flag("--step", help="Pause before each step until Enter is pressed")

    def main(self) -> int:
        from .demo import check_prefix, walkthrough

        if self.prefix is not None:
            try:
                check_prefix(self.prefix)
            except PynetnsError as error:
                print(f"{self.PROGNAME}: {error}", file=sys.stderr)
                return USAGE
        return self.guard(lambda: walkthrough(
            out=_print, prefix=self.prefix, commands=not self.no_commands, pause=_wait_for_enter if self.step else None
        ))


def _print(line: str) -> None:
    print(line, flush=True)


def _wait_for_enter() -> None:
    print("# -- press Enter for the next step; Ctrl-C stops and cleans up --", flush=True)
    sys.stdin.readline()


class _Signals:
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


def _dispatch(argv: Sequence[str] | None) -> int:
    args = ["pynetns", *(sys.argv[1:] if argv is None else argv)]
    try:
        _, status = Pynetns.run(args, exit=False)
        return int(status)
    except KeyboardInterrupt:
        print("pynetns: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as stop:
        print(f"pynetns: {stop}", file=sys.stderr)
        return 128 + stop.signum


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    signals = _Signals()
    signals.install()
    try:
        return _dispatch(argv)
    finally:
        signals.restore()


def main() -> NoReturn:
    """The ``pynetns`` console script."""
    signals = _Signals()
    signals.install()
    status = _dispatch(None)
    signals.ignore()
    sys.exit(status)


if __name__ == "__main__":
    main()
