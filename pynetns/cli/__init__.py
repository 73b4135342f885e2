"""The ``pynetns`` command line.

::

    sudo pynetns up shop.toml             # create the lab a topology file declares; it stays up
    pynetns ls                            # labs: state (persistent, alive, stale), owner, namespaces, networks
    pynetns show shop [--json]            # one lab: networks, namespaces, addresses, published ports
    sudo pynetns exec web -- ping -c1 10.30.0.3   # a command in a lab's namespace (``shop:web`` names the lab)
    pynetns explain shop.toml             # the commands ``up`` would run (no root needed)
    sudo pynetns down shop                # remove a lab
    sudo pynetns cleanup [--all]          # remove the labs whose owner died (every lab with --all)
    sudo pynetns demo [--step]            # the Docker networking walkthrough
    pynetns --help; pynetns up --help

Exit status: 0 success; 1 failure, told in one line (``--debug`` logs every
command and shows the traceback); 2 usage error; 130 / 143 / 129 after
SIGINT / SIGTERM / SIGHUP, once everything created was removed. ``exec``
exits with the command's status (128 + N if signal N ended it).

A subcommand is a :class:`Command` registered with ``@Pynetns.subcommand(name)``
(or lazily, ``Pynetns.subcommand(name, "module:Class")``); its ``main`` wraps
its work in :meth:`Command.guard`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from plumbum import cli

from .. import __version__
from ..errors import InvalidValue, PynetnsError
from ..lab.journal import find

if TYPE_CHECKING:
    from ..host import Host
    from ..lab.journal import LabRecord
    from ..lab.lab import Lab
    from ..runner import Process

__all__ = ["Command", "Pynetns", "Terminated", "main", "run"]

log = logging.getLogger(__name__)

#: exit status for a usage error
USAGE = 2

#: ``up`` reports the progress of labs with more namespaces than this (of every lab with ``--verbose``)
LARGE_LAB = 20


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
            message = " ".join(str(error).split())  # one line, whatever the error's text holds
            print(f"{self.PROGNAME}: error: {kind}{message}", file=sys.stderr)
            return 1

    def need_root(self) -> None:
        """Refuse to go on without root: the command enters or changes network namespaces."""
        if os.geteuid() != 0:
            raise PynetnsError(f"{self.PROGNAME} needs root, to enter and change network namespaces (try sudo)")

    def usage_error(self, message: str) -> int:
        """Say what is wrong with the command line and return the usage status (2)."""
        print(f"{self.PROGNAME}: {message} (see '{self.PROGNAME} --help')", file=sys.stderr)
        return USAGE


class _TopologyCommand(Command):
    """A command reading a topology file: ``--isolated`` / ``--no-isolated`` / ``--name`` override it."""

    isolated = cli.Flag("--isolated", excludes=["--no-isolated"],
                        help="Build the lab inside a private namespace that plays the host, whatever the file says")
    shared = cli.Flag("--no-isolated", excludes=["--isolated"],
                      help="Build the lab on the machine itself (its bridges, its firewall), whatever the file says")
    rename = cli.SwitchAttr("--name", argtype=str, argname="NAME", default=None,
                            help="Call the lab NAME instead of the name the file gives it")

    def lab(self, path: str, host: Host | None = None) -> Lab:
        """The lab the file at ``path`` declares, with the overrides; nothing is created yet."""
        from ..lab.lab import Lab
        from ..lab.topology import Topology

        isolated = True if self.isolated else False if self.shared else None
        try:
            topology = Topology.from_file(path)
        except OSError as error:
            raise PynetnsError(f"{path}: cannot read it: {error.strerror or error}") from error
        if self.rename is not None:
            import attrs

            topology = attrs.evolve(topology, name=self.rename)
        return Lab.from_topology(topology, host=host, isolated=isolated)


@Pynetns.subcommand("up")
class Up(_TopologyCommand):
    """Create the lab a topology file (TOML, JSON, YAML) declares and leave it up; needs root"""

    DESCRIPTION_MORE = (
        "The lab is persistent: owned by no process, so 'pynetns cleanup' leaves it alone until "
        "'pynetns down NAME' (or 'pynetns cleanup --all') removes it. If creating it fails, "
        "whatever was made is removed again.\n"
    )

    verbose = cli.Flag("--verbose", help=f"Report each stage on stderr (always done for labs of over {LARGE_LAB} "
                                         "namespaces)")

    def main(self, file: str) -> int:
        return self.guard(lambda: self._up(file))

    def _up(self, file: str) -> int:
        from ..lab.journal import labs

        lab = self.lab(file)
        self.need_root()
        clash = [record for record in labs(lab.host) if record.name == lab.name]
        if clash:
            ids = ", ".join(f"{record.id} ({record.state})" for record in clash)
            hint = "run 'pynetns cleanup'" if all(record.state == "stale" for record in clash) else "'pynetns down' it"
            raise InvalidValue("name", lab.name, f"a lab of that name exists: {ids}; {hint} or pass --name")
        progress = None
        if self.verbose or len(lab.namespaces) > LARGE_LAB:
            progress = _progress
            _progress(f"creating lab {lab.name} ({lab.id}): {len(lab.namespaces)} namespaces, "
                      f"{len(lab.networks)} networks, {len(lab.endpoints)} endpoints")
        try:
            lab.apply(progress=progress)
            record = lab.detach()
        except BaseException:
            try:
                lab.destroy()  # apply removed what it made; this also removes the journal it wrote
            except Exception as error:  # the first error is the one to tell
                log.warning("while removing lab %s after a failure: %s", lab.name, error)
            raise
        for line in _describe(record):
            print(line)
        name = record.name
        print(f"# next: pynetns show {name} | pynetns exec {name}:NAMESPACE -- CMD | pynetns down {name}")
        return 0


@Pynetns.subcommand("down")
class Down(Command):
    """Remove a lab (by name or id), whoever owns it; needs root"""

    def main(self, name: str) -> int:
        return self.guard(lambda: self._down(name))

    def _down(self, name: str) -> int:
        from ..lab.cleanup import remove

        self.need_root()
        record = find(name)
        for item in remove(record.id):
            print(f"removed {item}")
        print(f"lab {record.name} ({record.id}) is down")
        return 0


@Pynetns.subcommand("ls")
class Ls(Command):
    """List the labs on this machine: persistent (made by 'up'), alive (its owner runs) or stale (its owner died)"""

    as_json = cli.Flag("--json", help="Print a JSON list instead of a table")

    def main(self) -> int:
        return self.guard(self._ls)

    def _ls(self) -> int:
        from ..lab.journal import labs

        records = labs()
        if self.as_json:
            print(json.dumps([_summary(record) for record in records], indent=2))
            return 0
        rows = [[record.name, record.id, record.state, "-" if record.owner_pid is None else str(record.owner_pid),
                 str(len(record.data.get("members", {}))),
                 " ".join(f"{net['name']}={net['subnet']}" for net in record.data.get("networks", ())) or "-"]
                for record in records]
        for line in _table(["NAME", "ID", "STATE", "OWNER", "NAMESPACES", "NETWORKS"], rows):
            print(line)
        return 0


@Pynetns.subcommand("show")
class Show(Command):
    """Describe a lab (by name or id): networks, namespaces and their addresses, published ports"""

    as_json = cli.Flag("--json", help="Print the lab's journal, its state and which namespaces exist, as JSON")

    def main(self, name: str) -> int:
        return self.guard(lambda: self._show(name))

    def _show(self, name: str) -> int:
        record = find(name)
        live = _live(record)
        if self.as_json:
            data = {**record.data, "state": record.state, "alive": record.alive, "journal": str(record.path),
                    "live": live}
            print(json.dumps(data, indent=2))
            return 0
        for line in _describe(record, live):
            print(line)
        return 0


@Pynetns.subcommand("exec")
class Exec(Command):
    """Run a command inside a lab's namespace, by the name the topology gives it; needs root"""

    DESCRIPTION_MORE = (
        "NAMESPACE is a name like 'web'; 'shop:web' (or 'shop/web', or --lab shop) says which lab's, "
        "when more than one lab has a 'web'. Put '--' before the command. Standard input and output "
        "are the command's own; the exit status is the command's.\n"
    )

    USAGE = "    {progname} [SWITCHES] [LAB:]NAMESPACE -- COMMAND [ARG...]\n"

    lab_name = cli.SwitchAttr("--lab", argtype=str, argname="LAB", default=None,
                              help="The lab (name or id) whose namespace it is")

    def main(self, namespace: str, *command: str) -> int:
        if not command:
            return self.usage_error("give the command to run after the namespace: NAMESPACE -- COMMAND [ARG...]")
        lab_name, separator, name = _split_target(namespace)
        if separator and self.lab_name is not None and lab_name != self.lab_name:
            return self.usage_error(f"{namespace!r} names lab {lab_name}, but --lab says {self.lab_name}")
        return self.guard(lambda: self._exec(lab_name or self.lab_name, name, command))

    def _exec(self, lab_name: str | None, name: str, command: Sequence[str]) -> int:
        self.need_root()
        record = _find_member(lab_name, name)
        namespace = record.namespace(name)
        if not namespace.exists():
            raise PynetnsError(f"namespace {name} of lab {record.name} ({namespace.name}) does not exist "
                               f"(the lab is {record.state}; 'pynetns down {record.id}' removes what is left)")
        with _Forwarding() as forwarding:
            return forwarding.run(lambda: namespace.popen(list(command), stdin=None, stdout=None, stderr=None))


@Pynetns.subcommand("explain")
class Explain(_TopologyCommand):
    """Print the commands 'up' would run for a topology file, as copy-pasteable shell; runs nothing"""

    def main(self, file: str) -> int:
        return self.guard(lambda: self._explain(file))

    def _explain(self, file: str) -> int:
        from ..host import Host

        sys.stdout.write(self.lab(file, host=Host(dry_run=True)).explain())
        return 0


@Pynetns.subcommand("cleanup")
class Cleanup(Command):
    """Remove the labs whose owner process died (with --all, every lab, persistent ones too); needs root"""

    everything = cli.Flag("--all", help="Remove every lab, also persistent ones and those whose owner still runs")

    def main(self) -> int:
        return self.guard(self._cleanup)

    def _cleanup(self) -> int:
        from ..lab.cleanup import cleanup
        from ..lab.journal import labs

        self.need_root()
        before = labs()
        removed = cleanup(all=self.everything)
        left = {record.id for record in labs()}
        for item in removed:
            print(f"removed {item}")
        gone = [record for record in before if record.id not in left]
        for record in gone:
            print(f"removed lab {record.name} ({record.id})")
        names = {record.id: f"{record.name} ({record.id})" for record in before}
        for lab_id, why in removed.skipped.items():
            print(f"{self.PROGNAME}: left lab {names.get(lab_id, lab_id)} alone: {why}", file=sys.stderr)
        for lab_id, remaining in removed.remaining.items():
            print(f"{self.PROGNAME}: lab {names.get(lab_id, lab_id)}: could not remove {', '.join(remaining)}; "
                  "its journal stays", file=sys.stderr)
        if not removed and not gone and not removed.skipped and not removed.remaining:
            print(f"{self.PROGNAME}: nothing to remove", file=sys.stderr)
        return 1 if removed.remaining else 0


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


# -- helpers ----------------------------------------------------------------


def _print(line: str) -> None:
    print(line, flush=True)


def _progress(line: str) -> None:
    print(f"pynetns: {line}", file=sys.stderr, flush=True)


def _wait_for_enter() -> None:
    print("# -- press Enter for the next step; Ctrl-C stops and cleans up --", flush=True)
    sys.stdin.readline()


def _known(records: Iterable[LabRecord]) -> str:
    return ", ".join(f"{record.name} ({record.id})" for record in records) or "none"


def _split_target(target: str) -> tuple[str | None, str, str]:
    """``"shop:web"`` or ``"shop/web"`` → ``("shop", ":", "web")``; ``"web"`` → ``(None, "", "web")``."""
    for separator in (":", "/"):
        lab, found, name = target.partition(separator)
        if found:
            return lab, found, name
    return None, "", target


def _find_member(lab_name: str | None, name: str) -> LabRecord:
    """The lab that has a namespace called ``name`` (and is ``lab_name``, if given)."""
    from ..lab.journal import labs

    if lab_name is not None:
        return find(lab_name)
    records = labs()
    found = [record for record in records if name in record.data.get("members", {})]
    if not found:
        have = [f"{record.name}:{member}" for record in records for member in record.data.get("members", {})]
        raise InvalidValue("namespace", name, f"no lab has a namespace of that name (namespaces: "
                                              f"{', '.join(have) or 'none'})")
    if len(found) > 1:
        raise InvalidValue("namespace", name, f"is in {len(found)} labs: {_known(found)}; say which, "
                                              f"as LAB:{name} or with --lab")
    return found[0]


class _Forwarding:
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

    def __enter__(self) -> _Forwarding:
        self._previous = {signum: signal.signal(signum, self._handle) for signum in self.NUMBERS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, action in self._previous.items():
            signal.signal(signum, action)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_foreground():
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


def _terminal_foreground() -> bool:
    """This process group is the foreground of its terminal (so the terminal's Ctrl-C reaches all of it)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def _live(record: LabRecord) -> dict[str, Any]:
    """Which of the lab's namespaces exist now (one ``ip netns list``); ``None`` values if that cannot be told."""
    from ..host import Host
    from ..namespace import Namespace

    members: dict[str, str] = record.data.get("members", {})
    host_namespace: str | None = record.data.get("host_namespace")
    try:
        existing: set[str] | None = {namespace.name for namespace in Namespace.list(Host())}
    except PynetnsError as error:
        log.debug("cannot list namespaces: %s", error)
        existing = None
    return {
        "namespaces": {name: None if existing is None else kernel in existing for name, kernel in members.items()},
        "host_namespace": None if existing is None or host_namespace is None else host_namespace in existing,
    }


def _summary(record: LabRecord) -> dict[str, Any]:
    """One lab in ``ls --json``."""
    return {
        "name": record.name,
        "id": record.id,
        "state": record.state,
        "owner_pid": record.owner_pid,
        "persistent": record.persistent,
        "alive": record.alive,
        "isolated": record.data.get("isolated"),
        "namespaces": sorted(record.data.get("members", {})),
        "networks": {net["name"]: net["subnet"] for net in record.data.get("networks", ())},
        "journal": str(record.path),
    }


def _describe(record: LabRecord, live: dict[str, Any] | None = None) -> list[str]:
    """A lab as ``up`` and ``show`` print it, from its journal (and ``live``: which namespaces exist)."""
    data = record.data
    owner = "" if record.owner_pid is None else f", owner pid {record.owner_pid}"
    where = f"isolated (host namespace {data.get('host_namespace')})" if data.get("isolated") else "on this host"
    lines = [f"lab {record.name} ({record.id}): {record.state}{owner}, {where}"]
    if live is not None and live.get("host_namespace") is False:
        lines[0] += " -- its host namespace is gone"
    networks = [[net["name"], net["subnet"], f"gateway {net['gateway'].split('/')[0]}", f"bridge {net['bridge']}",
                 "internal" if net.get("internal") else "nat" if net.get("nat") else "no nat"]
                for net in data.get("networks", ())]
    lines += ["networks:", *_table(None, networks, indent="  ")] if networks else ["networks: none"]
    endpoints: dict[str, list[str]] = {}
    for endpoint in data.get("endpoints", ()):
        endpoints.setdefault(endpoint["namespace"], []).append(
            f"{endpoint['interface']} {endpoint['ip']} ({endpoint['network']})")
    members: dict[str, str] = data.get("members", {})
    rows = []
    for name, kernel in members.items():
        row = [name, kernel]
        if live is not None:
            exists = live.get("namespaces", {}).get(name)
            row.append("?" if exists is None else "up" if exists else "missing")
        rows.append([*row, ", ".join(endpoints.get(name, ())) or "no network"])
    lines += ["namespaces:", *_table(None, rows, indent="  ")] if rows else ["namespaces: none"]
    published = data.get("published", ())
    if published:
        lines += ["published:", *(f"  {item}" for item in published)]
    return lines


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns two spaces apart (with ``header`` first, if given)."""
    everything = [list(header), *rows] if header is not None else [list(row) for row in rows]
    if not everything:
        return []
    widths = [max(len(row[column]) for row in everything if column < len(row)) for column in
              range(max(len(row) for row in everything))]
    return [indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
            for row in everything]


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

