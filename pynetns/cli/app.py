"""The ``pynetns`` command line: the plumbum application and its subcommands.

::

    sudo pynetns up shop.toml             # create the lab a topology file declares; it stays up
    pynetns ls                            # labs: state (persistent, alive, stale), owner, namespaces, networks
    pynetns show shop [--json]            # one lab: networks, namespaces, addresses, published ports
    sudo pynetns exec web ping -c1 10.30.0.3   # a command in a lab's namespace (``shop:web`` names the lab;
                                          # ``shop:host``: an isolated lab's host side)
    pynetns graph shop [--format dot|mermaid|svg]   # the lab as a picture
    pynetns explain shop.toml [--id ID]   # the commands ``up`` would run (no root needed; ``up --id ID``: these)
    sudo pynetns partition shop web db    # cut groups (web,db cache) from each other; --shape halves, --one-way
    sudo pynetns heal shop                # end every partition (those the topology file declared too)
    sudo pynetns impair shop web --delay 50ms --loss 1%   # a link made slow or lossy; --clear ends it
    sudo pynetns down shop                # remove a lab (or: down shop.toml, the lab the file describes)
    sudo pynetns cleanup [--all] [--orphans]  # remove the labs whose owner died (every lab with --all;
                                          # --orphans: also tagged objects whose journal is gone)
    pynetns cleanup --host root@lab-2     # the same on another machine, over ssh
    pynetns demo [--step]                 # the Docker networking walkthrough (no root needed)
    pynetns --help; pynetns up --help

Without root, ``up`` builds the lab in a persistent rootless sandbox of its own
(:meth:`Sandbox.start(persistent=True) <pynetns.sandbox.Sandbox.start>`), which outlives
the command; its record (PID 1 and that process's identity) is kept under
``$XDG_RUNTIME_DIR/pynetns/sandboxes/`` (``~/.cache/pynetns/sandboxes/`` without it).
``ls``, ``show`` and ``exec`` find labs in the user's sandboxes too; ``down`` ends the
lab's sandbox; ``cleanup`` forgets sandboxes that are gone and ends those with no lab left.
As root, nothing of this applies.

Exit status: 0 success; 1 failure, told in one line (``--debug``, before or
after the subcommand, logs every command and shows the traceback); 2 usage error; 130 / 143 / 129 after
SIGINT / SIGTERM / SIGHUP, once everything created was removed. ``exec``
exits with the command's status (128 + N if signal N ended it).

A subcommand is a :class:`Command` registered with ``@Pynetns.subcommand(name)``
(or lazily, ``Pynetns.subcommand(name, "module:Class")``); its ``main`` wraps
its work in :meth:`Command.guard`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
from plumbum import cli

from .. import __version__
from ..errors import InvalidValue, PynetnsError
from ..impairment import DIRECTIONS
from ..lab.shapes import SHAPES
from .records import (
    GRAPH_FORMATS,
    SandboxEntry,
    describe,
    dot_graph,
    every_lab,
    find_member,
    host_of,
    lab_named_by,
    locate,
    member_or_host_side,
    mermaid_graph,
    name_lock,
    sandbox_entries,
    split_target,
    summary,
    table,
    which_exist,
)
from .signals import Forwarding, Signals, Terminated

if TYPE_CHECKING:
    from ..host import Host
    from ..impairment import Impairment
    from ..lab.lab import Lab
    from ..lab.shapes import Partition
    from ..lab.topology import Topology

__all__ = ["Command", "Pynetns", "Terminated", "main", "run"]

log = logging.getLogger(__name__)

#: exit status for a usage error
USAGE = 2

#: the switches of ``impair``: the fields of an Impairment
IMPAIRMENT_FIELDS = ("delay", "jitter", "loss", "rate", "duplicate", "corrupt")

#: ``up`` reports the progress of labs with more namespaces than this (of every lab with ``--verbose``)
LARGE_LAB = 20


@cli.Predicate
def hex_id(text: str) -> str:
    """``--id``: six hex digits (a ValueError is plumbum's usage error)."""
    from ..lab.topology import lab_id

    try:
        return lab_id("id", text)
    except PynetnsError as error:
        raise ValueError(str(error)) from None


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
            _debug_logging()
        return 0


class Command(cli.Application):
    """Base of the subcommands."""

    _debug_here = False

    @cli.switch("--debug", help="Log every command on stderr and show tracebacks (as 'pynetns --debug')")
    def debug_here(self) -> None:
        self._debug_here = True
        _debug_logging()

    @property
    def debug(self) -> bool:
        """``--debug`` was given, before the subcommand (``pynetns --debug``) or after it."""
        return self._debug_here or (isinstance(self.parent, Pynetns) and bool(self.parent.debug))

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

    isolated = cli.Flag(
        "--isolated",
        excludes=["--no-isolated"],
        help="Build the lab inside a private namespace that plays the host, whatever the file says",
    )
    shared = cli.Flag(
        "--no-isolated",
        excludes=["--isolated"],
        help="Build the lab on the machine itself (its bridges, its firewall), whatever the file says",
    )
    rename = cli.SwitchAttr(
        "--name",
        argtype=str,
        argname="NAME",
        default=None,
        help="Call the lab NAME instead of the name the file gives it",
    )

    chosen_id = cli.SwitchAttr(
        "--id",
        argtype=hex_id,
        argname="ID",
        default=None,
        help="Give the lab this short id (six hex digits), which its kernel names carry (pn<ID>-web): "
        "'explain FILE --id ID' shows the very commands 'up FILE --id ID' runs",
    )

    def topology(self, path: str) -> Topology:
        """The topology the file at ``path`` declares, renamed by ``--name``."""
        from ..lab.topology import Topology

        try:
            topology = Topology.from_file(path)
        except OSError as error:
            raise PynetnsError(f"{path}: cannot read it: {error.strerror or error}") from error
        if self.rename is not None:
            topology = attrs.evolve(topology, name=self.rename)
        return topology

    def lab(self, path: str | Topology, host: Host | None = None, id: str | None = None) -> Lab:
        """The lab the file at ``path`` (or a topology read already) declares, with the overrides; nothing is
        created yet."""
        from ..lab.lab import Lab

        isolated = True if self.isolated else False if self.shared else None
        topology = self.topology(path) if isinstance(path, str) else path
        return Lab.from_topology(topology, host=host, isolated=isolated, id=self.chosen_id if id is None else id)


@Pynetns.subcommand("up")
class Up(_TopologyCommand):
    """Create the lab a topology file (TOML, JSON, YAML) declares and leave it up (without root: in a sandbox)"""

    DESCRIPTION_MORE = (
        "The lab is persistent: owned by no process, so 'pynetns cleanup' leaves it alone until "
        "'pynetns down NAME' (or 'pynetns cleanup --all') removes it. If creating it fails, "
        "whatever was made is removed again.\n"
    )

    verbose = cli.Flag(
        "--verbose", help=f"Report each stage on stderr (always done for labs of over {LARGE_LAB} namespaces)"
    )
    as_json = cli.Flag("--json", help="Print the lab as 'pynetns ls --json' does (one object) instead of text")

    def main(self, file: str) -> int:
        return self.guard(lambda: self._up(file))

    def _up(self, file: str) -> int:
        from ..host import Host

        topology = self.topology(file)
        # the name and id the lab will have, declared on a dry run: nothing of the machine is asked or changed yet
        planned = self.lab(topology, host=Host(dry_run=True))
        with name_lock(planned.name):  # two 'up's of one name at once: the second sees the first's lab and stops
            return self._up_alone(topology, planned)

    def _up_alone(self, topology: Topology, lab: Lab) -> int:
        from ..sandbox import Sandbox, privileged

        clash = [record for record, _ in every_lab() if record.name == lab.name or record.id == lab.id]
        if self.chosen_id is not None and any(record.id == lab.id for record in clash):
            raise InvalidValue("id", lab.id, "a lab with that id exists; pass another --id, or none")
        if clash:
            ids = ", ".join(f"{record.id} ({record.state})" for record in clash)
            hint = "run 'pynetns cleanup'" if all(record.state == "stale" for record in clash) else "'pynetns down' it"
            raise InvalidValue("name", lab.name, f"a lab of that name exists: {ids}; {hint} or pass --name")
        sandbox = None
        if not privileged():  # without root: the lab gets a persistent sandbox of its own, which 'down' ends
            sandbox = Sandbox.start(persistent=True)
        try:
            lab = self.lab(topology, host=None if sandbox is None else host_of(sandbox), id=lab.id)
        except BaseException:
            if sandbox is not None:
                sandbox.close()
            raise
        progress = None
        if self.verbose or len(lab.namespaces) > LARGE_LAB:
            progress = _progress
            _progress(
                f"creating lab {lab.name} ({lab.id}): {len(lab.namespaces)} namespaces, "
                f"{len(lab.networks)} networks, {len(lab.endpoints)} endpoints"
            )
        try:
            lab.apply(progress=progress)
            if topology.impair or topology.partition:
                if progress is not None:
                    progress(f"impairing {len(topology.impair)} links, {len(topology.partition)} partitions")
                topology.apply_faults(lab)
            record = lab.detach()
            if sandbox is not None:
                SandboxEntry.save(record.name, sandbox)
        except BaseException:
            try:
                lab.destroy()  # apply removed what it made; this also removes the journal it wrote
            except Exception as error:  # the first error is the one to tell
                log.warning("while removing lab %s after a failure: %s", lab.name, error)
            finally:
                if sandbox is not None:
                    sandbox.close()
            raise
        if self.as_json:
            sandbox_pid = None if sandbox is None else sandbox.pid
            print(json.dumps({**summary(record), "sandbox_pid": sandbox_pid}, indent=2))
            return 0
        for line in describe(record):
            print(line)
        if sandbox is not None:
            print(f"# without root: in a sandbox of its own (PID 1 {sandbox.pid}), which 'pynetns down' ends")
        name = record.name
        print(f"# next: pynetns show {name} | pynetns exec {name}:NAMESPACE -- CMD | pynetns down {name}")
        return 0


@Pynetns.subcommand("down")
class Down(Command):
    """Remove a lab (by name or id, or the lab a topology file describes), whoever owns it (without root: a lab
    of the user's sandboxes, and its sandbox)"""

    USAGE = "    {progname} [SWITCHES] LAB|FILE\n"

    as_json = cli.Flag("--json", help="Print what was removed as a JSON object instead of text")

    def main(self, name: str) -> int:
        return self.guard(lambda: self._down(name))

    def _down(self, target: str) -> int:
        from ..lab.cleanup import remove

        record, host = locate(lab_named_by(target))
        if host is None:
            self.need_root()
        removed: list[str] = []
        sandbox_pid: int | None = None
        try:
            removed = [str(item) for item in remove(record.id, host)]
        finally:
            if host is not None and host.sandbox is not None:  # ending it removes whatever was left in it
                _end_sandbox(host)
                sandbox_pid = host.sandbox.pid
            if not self.as_json:
                for item in removed:
                    print(f"removed {item}")
                if sandbox_pid is not None:
                    print(f"ended its sandbox (PID 1 {sandbox_pid})")
        if self.as_json:
            data = {"name": record.name, "id": record.id, "removed": removed, "sandbox_pid": sandbox_pid}
            print(json.dumps(data, indent=2))
            return 0
        print(f"lab {record.name} ({record.id}) is down")
        return 0


@Pynetns.subcommand("ls")
class Ls(Command):
    """List the labs on this machine: persistent (made by 'up'), alive (its owner runs) or stale (its owner died)"""

    as_json = cli.Flag("--json", help="Print a JSON list instead of a table")

    def main(self) -> int:
        return self.guard(self._ls)

    def _ls(self) -> int:
        records = [record for record, _ in every_lab()]
        if self.as_json:
            print(json.dumps([summary(record) for record in records], indent=2))
            return 0
        rows = [
            [
                record.name,
                record.id,
                record.state,
                "-" if record.owner_pid is None else str(record.owner_pid),
                str(len(record.data.get("members", {}))),
                " ".join(f"{net['name']}={net['subnet']}" for net in record.data.get("networks", ())) or "-",
            ]
            for record in records
        ]
        for line in table(["NAME", "ID", "STATE", "OWNER", "NAMESPACES", "NETWORKS"], rows):
            print(line)
        return 0


@Pynetns.subcommand("show")
class Show(Command):
    """Describe a lab (by name or id): networks, namespaces and their addresses, published ports"""

    as_json = cli.Flag("--json", help="Print the lab's journal, its state and which namespaces exist, as JSON")

    def main(self, name: str) -> int:
        return self.guard(lambda: self._show(name))

    def _show(self, name: str) -> int:
        record, host = locate(name)
        live = which_exist(record, host)
        if self.as_json:
            data = {
                **record.data,
                "state": record.state,
                "alive": record.alive,
                "journal": str(record.path),
                "live": live,
            }
            print(json.dumps(data, indent=2))
            return 0
        for line in describe(record, live):
            print(line)
        return 0


@Pynetns.subcommand("exec")
class Exec(Command):
    """Run a command inside a lab's namespace, by the name the topology gives it (without root: in a sandbox)"""

    DESCRIPTION_MORE = (
        "NAMESPACE is a name like 'web'; 'shop:web' (or 'shop/web', or --lab shop) says which lab's, "
        "when more than one lab has a 'web'; 'shop:host' is an isolated lab's host side (the namespace "
        "that plays the host). Everything after NAMESPACE is the command, switches too ('--' before it "
        "is optional). Standard input and output are the command's own; the exit status is the command's.\n"
    )

    USAGE = "    {progname} [SWITCHES] [LAB:]NAMESPACE -- COMMAND [ARG...]\n"

    lab_name = cli.SwitchAttr(
        "--lab", argtype=str, argname="LAB", default=None, help="The lab (name or id) whose namespace it is"
    )

    def main(self, namespace: str, *command: str) -> int:
        if not command:
            return self.usage_error("give the command to run after the namespace: NAMESPACE -- COMMAND [ARG...]")
        lab_name, separator, name = split_target(namespace)
        if separator and self.lab_name is not None and lab_name != self.lab_name:
            return self.usage_error(f"{namespace!r} names lab {lab_name}, but --lab says {self.lab_name}")
        return self.guard(lambda: self._exec(lab_name or self.lab_name, name, command))

    def _exec(self, lab_name: str | None, name: str, command: Sequence[str]) -> int:
        record, host = find_member(lab_name, name)
        if host is None:
            self.need_root()
        namespace = member_or_host_side(record, name, host)
        if not namespace.exists():
            raise PynetnsError(
                f"namespace {name} of lab {record.name} ({namespace.name}) does not exist "
                f"(the lab is {record.state}; 'pynetns down {record.id}' removes what is left)"
            )
        with Forwarding() as forwarding:
            return forwarding.run(lambda: namespace.popen(list(command), stdin=None, stdout=None, stderr=None))


@Pynetns.subcommand("graph")
class Graph(Command):
    """Draw a lab (by name or id, or the lab a topology file describes): its networks, namespaces, addresses
    and published ports, as Graphviz DOT, Mermaid or SVG"""

    USAGE = "    {progname} [SWITCHES] LAB|FILE\n"

    output_format = cli.SwitchAttr(
        "--format",
        cli.Set(*GRAPH_FORMATS),
        argname="FORMAT",
        default="dot",
        help="dot (Graphviz source), mermaid (a flowchart for Markdown), or svg (drawn by Graphviz's dot)",
    )

    def main(self, name: str) -> int:
        return self.guard(lambda: self._graph(name))

    def _graph(self, target: str) -> int:
        from ..display.diagrams import Diagram

        record, _ = locate(lab_named_by(target))
        if self.output_format == "mermaid":
            sys.stdout.write(mermaid_graph(record))
            return 0
        dot = dot_graph(record)
        if self.output_format == "dot":
            sys.stdout.write(dot)
            return 0
        svg = Diagram(record.name, dot).svg()
        if svg is None:
            raise PynetnsError(
                "Graphviz's dot is not installed (apt-get install graphviz); --format dot prints the source"
            )
        sys.stdout.write(svg)
        return 0


@Pynetns.subcommand("explain")
class Explain(_TopologyCommand):
    """Print the commands 'up' would run for a topology file, as copy-pasteable shell; runs nothing"""

    def main(self, file: str) -> int:
        return self.guard(lambda: self._explain(file))

    def _explain(self, file: str) -> int:
        from ..host import Host

        topology = self.topology(file)
        lab = self.lab(topology, host=Host(dry_run=True))
        for line in names_of(lab, topology, chosen=self.chosen_id is not None):
            print(f"# {line}")
        sys.stdout.write(lab.explain())
        return 0


class _RunningLabCommand(Command):
    """A command changing a running persistent lab (made by 'pynetns up'), attached from its journal."""

    as_json = cli.Flag("--json", help="Print the result as a JSON object instead of text")

    def change(self, target: str, work: Callable[[Lab], dict[str, Any]]) -> dict[str, Any]:
        """Attach to the lab ``target`` names (name, id or topology file) and run ``work`` on it, under the host
        lock (another 'pynetns partition' on the same lab waits its turn); returns what ``work`` returned."""
        from ..lab.lab import Lab
        from ..namespace import resolve_host

        record, host = locate(lab_named_by(target))
        if host is None:
            self.need_root()
        with resolve_host(host).lock():
            lab = Lab.attach(record.id, host)
            return {"name": lab.name, "id": lab.id, **work(lab)}


@Pynetns.subcommand("impair")
class Impair(_RunningLabCommand):
    """Make a namespace's link of a running lab slow or lossy (delay, jitter, loss, rate...), or --clear it"""

    DESCRIPTION_MORE = (
        "Values as Endpoint.impair takes them: durations like 50ms or 0.05 (seconds), fractions like 1% or "
        "0.01, rates like 1mbit. Replaces any impairment the link had; 'pynetns down' removes it with the "
        "lab. Where the kernel has no netem, delay and loss go through pynetns' userspace engine (told).\n"
    )

    USAGE = "    {progname} [SWITCHES] LAB NAMESPACE\n"

    network = cli.SwitchAttr(
        "--network", argtype=str, argname="NETWORK", default=None, help="The link to this network (default: first)"
    )
    delay = cli.SwitchAttr("--delay", argtype=str, argname="TIME", default=None, help="Delay every packet (50ms)")
    jitter = cli.SwitchAttr("--jitter", argtype=str, argname="TIME", default=None, help="Vary the delay by ± TIME")
    loss = cli.SwitchAttr("--loss", argtype=str, argname="FRACTION", default=None, help="Drop packets (1%%)")
    rate = cli.SwitchAttr("--rate", argtype=str, argname="RATE", default=None, help="Pace the link (1mbit)")
    duplicate = cli.SwitchAttr("--duplicate", argtype=str, argname="FRACTION", default=None, help="Duplicate packets")
    corrupt = cli.SwitchAttr("--corrupt", argtype=str, argname="FRACTION", default=None, help="Corrupt packets")
    direction = cli.SwitchAttr(
        "--direction",
        cli.Set(*DIRECTIONS),
        argname="DIRECTION",
        default="both",
        help="egress (what the namespace sends), ingress (what it receives) or both (each way)",
    )
    clear = cli.Flag("--clear", help="Remove the link's impairment: it is as fast as it was made")

    def main(self, lab: str, namespace: str) -> int:
        from ..impairment import Impairment

        values = {name: getattr(self, name) for name in IMPAIRMENT_FIELDS}
        given = [f"--{name}" for name, value in values.items() if value is not None]
        if self.clear and given:
            return self.usage_error(f"--clear takes no impairment, but {' '.join(given)} given")
        if not self.clear and not given:
            return self.usage_error("say what to do to the link (--delay, --loss, --rate, ...) or --clear it")
        try:
            impairment = Impairment(**values)
        except PynetnsError as error:
            return self.usage_error(" ".join(str(error).split()))
        return self.guard(lambda: self._impair(lab, namespace, impairment))

    def _impair(self, target: str, name: str, impairment: Impairment) -> int:
        def work(lab: Lab) -> dict[str, Any]:
            endpoint = lab.endpoint(name, self.network)
            if impairment:
                endpoint.impair(**attrs.asdict(impairment), direction=str(self.direction))
            else:
                endpoint.clear_impairment()
            return {
                "namespace": name,
                "network": endpoint.network.name,
                "interface": endpoint.interface,
                "impairment": {key: value for key, value in attrs.asdict(impairment).items() if value is not None},
                "direction": self.direction if impairment else None,
                "mode": endpoint.impairment_mode,
            }

        done = self.change(target, work)
        if self.as_json:
            print(json.dumps(done, indent=2))
            return 0
        where = f"lab {done['name']}: {name} {done['interface']} ({done['network']})"
        if not impairment:
            print(f"{where}: impairment cleared")
            return 0
        ways = {"both": "each way", "egress": "what it sends", "ingress": "what it receives"}[str(self.direction)]
        print(f"{where}: {impairment}, {ways} (through {done['mode']})")
        return 0


@Pynetns.subcommand("partition")
class PartitionCommand(_RunningLabCommand):
    """Cut a running lab's namespaces from each other: two groups (a,b c), one way, or a Jepsen shape"""

    DESCRIPTION_MORE = (
        "GROUP_A GROUP_B are comma-separated namespace names: 'pynetns partition shop web,db cache' cuts web "
        "and db from cache, both ways (--one-way: only what web and db send to cache). --shape draws one of "
        "Jepsen's shapes over every namespace of the lab (or --among). Partitions add up; 'pynetns heal LAB' "
        "ends them all, 'pynetns down' removes them with the lab.\n"
    )

    USAGE = "    {progname} [SWITCHES] LAB [GROUP_A GROUP_B]\n"

    shape = cli.SwitchAttr(
        "--shape", cli.Set(*SHAPES), argname="SHAPE", default=None, help="A named shape instead of two groups"
    )
    one_way = cli.Flag("--one-way", help="Drop only what GROUP_A sends to GROUP_B")
    seed = cli.SwitchAttr(
        "--seed", argtype=int, argname="N", default=None, help="Draw a random shape with this seed (to replay one)"
    )
    among = cli.SwitchAttr(
        "--among", argtype=str, argname="A,B,...", default=None, help="The namespaces a shape is drawn over"
    )
    node = cli.SwitchAttr("--node", argtype=str, argname="NAME", default=None, help="The one --shape isolate cuts off")

    def main(self, lab: str, *groups: str) -> int:
        if self.shape is None:
            if len(groups) != 2:
                return self.usage_error(f"give two groups (like a,b c) or --shape; {len(groups)} groups given")
            extra = [name for name, value in (("--seed", self.seed), ("--among", self.among),
                                              ("--node", self.node)) if value is not None]  # fmt: skip
            if extra:
                return self.usage_error(f"{' '.join(extra)} go with --shape, not with two groups")
        else:
            if groups:
                return self.usage_error(f"--shape {self.shape} takes no groups (use --among to choose namespaces)")
            if self.one_way:
                return self.usage_error("--one-way goes with two groups, not with --shape")
            if self.node is not None and self.shape != "isolate":
                return self.usage_error("--node goes with --shape isolate")
        sides = [_names(group) for group in groups]
        among = None if self.among is None else _names(self.among)
        if any(not side for side in sides) or among == []:
            return self.usage_error("a group is a comma-separated list of namespace names, like web,db")
        return self.guard(lambda: self._partition(lab, sides, among))

    def _partition(self, target: str, sides: list[list[str]], among: list[str] | None) -> int:
        from .. import display  # noqa: F401  (registers the Partition's text)
        from ..views import render

        made: list[Partition] = []

        def work(lab: Lab) -> dict[str, Any]:
            if self.shape is None:
                made.append(lab.partition(sides[0], sides[1], one_way=self.one_way))
            else:
                made.append(lab.partition(shape=str(self.shape), seed=self.seed, among=among, node=self.node))
            return {**made[0].to_dict(), "groups": made[0].groups, "cut": made[0].cut, "in_force": len(lab.partitions)}

        done = self.change(target, work)
        if self.as_json:
            print(json.dumps(done, indent=2))
            return 0
        print(f"lab {done['name']}: {render(made[0], 'text')}")
        replay = "" if made[0].seed is None or self.seed is not None else f" (--seed {made[0].seed} draws it again)"
        print(f"# {done['in_force']} partition(s) in force{replay}; 'pynetns heal {done['name']}' ends them")
        return 0


@Pynetns.subcommand("heal")
class Heal(_RunningLabCommand):
    """End every partition of a running lab (made by 'pynetns partition', or declared in its topology file)"""

    USAGE = "    {progname} [SWITCHES] LAB\n"

    def main(self, lab: str) -> int:
        return self.guard(lambda: self._heal(lab))

    def _heal(self, target: str) -> int:
        def work(lab: Lab) -> dict[str, Any]:
            ended = [partition.to_dict() for partition in lab.partitions]
            lab.heal()
            return {"healed": ended}

        done = self.change(target, work)
        if self.as_json:
            print(json.dumps(done, indent=2))
            return 0
        count = len(done["healed"])
        if count:
            print(f"lab {done['name']}: healed {count} partition{'' if count == 1 else 's'}")
        else:
            print(f"lab {done['name']}: no partition was in force")
        return 0


@Pynetns.subcommand("cleanup")
class Cleanup(Command):
    """Remove the labs whose owner process died (with --all, every lab, persistent ones too); needs root"""

    everything = cli.Flag("--all", help="Remove every lab, also persistent ones and those whose owner still runs")
    orphaned = cli.Flag(
        "--orphans",
        help="Also remove the namespaces and links tagged by a lab that no journal names (its journal is gone); "
        "a lab whose journal is in another runtime directory (PYNETNS_RUNTIME_DIR) looks orphaned",
    )

    remote = cli.SwitchAttr(
        "--host",
        argtype=str,
        argname="[USER@]MACHINE",
        help="Clean up another machine, over ssh (your ssh configuration and keys apply)",
    )
    ssh_port = cli.SwitchAttr("--ssh-port", argtype=int, argname="PORT", help="With --host: the ssh port")
    ssh_key = cli.SwitchAttr("--ssh-key", argtype=str, argname="FILE", help="With --host: the ssh key file")
    ssh_options = cli.SwitchAttr(
        "--ssh-option",
        argtype=str,
        list=True,
        argname="OPTION",
        help="With --host: an ssh option (as ssh -o OPTION), repeatable",
    )

    def main(self) -> int:
        return self.guard(self._cleanup)

    def _cleanup(self) -> int:
        from ..host import Host
        from ..sandbox import privileged

        if self.remote is not None:
            options = [item for option in self.ssh_options for item in ("-o", option)]
            with Host.ssh(self.remote, port=self.ssh_port, keyfile=self.ssh_key, ssh_opts=options) as host:
                return self._cleanup_host(host)
        if self.ssh_port is not None or self.ssh_key is not None or self.ssh_options:
            raise InvalidValue("--ssh-port/--ssh-key/--ssh-option", "", "go with --host")
        if not privileged():
            return self._cleanup_sandboxes()
        return self._cleanup_host(None)

    def _cleanup_host(self, host: Host | None) -> int:
        from ..lab.cleanup import cleanup
        from ..lab.journal import labs

        before = labs(host)
        removed = cleanup(host, all=self.everything, orphans=self.orphaned)
        left = {record.id for record in labs(host)}
        for item in removed:
            print(f"removed {item}")
        gone = [record for record in before if record.id not in left]
        for record in gone:
            print(f"removed lab {record.name} ({record.id})")
        names = {record.id: f"{record.name} ({record.id})" for record in before}
        for lab_id, why in removed.skipped.items():
            print(f"{self.PROGNAME}: left lab {names.get(lab_id, lab_id)} alone: {why}", file=sys.stderr)
        for lab_id, remaining in removed.remaining.items():
            print(
                f"{self.PROGNAME}: lab {names.get(lab_id, lab_id)}: could not remove {', '.join(remaining)}; "
                "its journal stays",
                file=sys.stderr,
            )
        if not removed and not gone and not removed.skipped and not removed.remaining:
            print(f"{self.PROGNAME}: nothing to remove", file=sys.stderr)
        return 1 if removed.remaining else 0

    def _cleanup_sandboxes(self) -> int:
        """Without root: the user's sandboxes. Records of sandboxes that are gone are removed; in a running
        one, labs are cleaned up as root's are; a sandbox whose lab is gone is ended."""
        from ..lab.cleanup import cleanup
        from ..lab.journal import labs

        entries = sandbox_entries()
        failed = False
        for entry in entries:
            sandbox = entry.attach()
            if sandbox is None:
                entry.forget()
                print(f"removed the record of sandbox {entry.pid} (lab {entry.lab}): it is gone")
                continue
            host = host_of(sandbox)
            before = labs(host)
            removed = cleanup(host, all=self.everything, orphans=self.orphaned)
            for item in removed:
                print(f"removed {item}")
            left = labs(host)
            for record in before:
                if record.id not in {kept.id for kept in left}:
                    print(f"removed lab {record.name} ({record.id})")
            failed = failed or bool(removed.remaining)
            if not left:
                _end_sandbox(host)
                entry.forget()
                print(f"ended sandbox {entry.pid} (lab {entry.lab}): no lab is left in it")
        if not entries:
            print(f"{self.PROGNAME}: nothing to remove (no sandbox of this user)", file=sys.stderr)
        return 1 if failed else 0


@Pynetns.subcommand("demo")
class Demo(Command):
    """Walk through Docker's networking (none, host, the default bridge), printing every command; no root needed"""

    prefix = cli.SwitchAttr(
        "--prefix",
        argtype=str,
        argname="PREFIX",
        default=None,
        help="Start every name created with PREFIX (at most 12 characters; default pn-XXXX)",
    )
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
        return self.guard(
            lambda: walkthrough(
                out=_print,
                prefix=self.prefix,
                commands=not self.no_commands,
                pause=_wait_for_enter if self.step else None,
            )
        )


# -- helpers ----------------------------------------------------------------


def _end_sandbox(host: Host) -> None:
    """End the persistent sandbox playing ``host`` and forget its record."""
    if host.sandbox is None:
        return
    host.sandbox.close()
    for entry in sandbox_entries():
        if entry.pid == host.sandbox.pid and entry.identity == host.sandbox.identity:
            entry.forget()


def _debug_logging() -> None:
    """``--debug``: every command pynetns runs, logged on stderr."""
    logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("pynetns").setLevel(logging.DEBUG)


def command_separated(args: Sequence[str]) -> list[str]:
    """``exec NAMESPACE COMMAND...`` without ``--``: insert it before COMMAND, so the command's own switches
    (``ip -br a``) are the command's, not taken for exec's. exec's own switches may come before or right
    after NAMESPACE.

    >>> command_separated(["--debug", "exec", "--lab", "shop", "web", "ip", "-br", "a"])
    ['--debug', 'exec', '--lab', 'shop', 'web', '--', 'ip', '-br', 'a']
    >>> command_separated(["exec", "web", "--lab=shop", "--debug", "ip", "-br", "a"])
    ['exec', 'web', '--lab=shop', '--debug', '--', 'ip', '-br', 'a']
    >>> command_separated(["exec", "web", "--", "ip", "-br", "a"])
    ['exec', 'web', '--', 'ip', '-br', 'a']
    """
    args = list(args)
    start = next((index for index, arg in enumerate(args) if not arg.startswith("-")), None)
    if start is None or args[start] != "exec":
        return args
    index, target = start + 1, False
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return args
        if arg == "--lab":
            index += 2  # the switch and its value
        elif arg.startswith("--lab=") or arg in ("--debug", "--help", "-h", "--help-all", "-v", "--version"):
            index += 1
        elif not target and not arg.startswith("-"):
            index, target = index + 1, True  # NAMESPACE
        else:
            if target:
                args.insert(index, "--")
            return args
    return args


def names_of(lab: Lab, topology: Topology, *, chosen: bool) -> list[str]:
    """What ``explain`` says first: the kernel names the commands use, and how ``up`` uses the same ones; then the
    impairments and partitions ``up`` applies after these commands."""
    how = (
        f"'pynetns up FILE --id {lab.id}' runs exactly these commands"
        if chosen
        else f"'pynetns up' draws a fresh id; 'pynetns up FILE --id {lab.id}' runs exactly these commands"
    )
    lines = [f"lab {lab.name}, id {lab.id}: {how}"]
    isolated = "" if lab.host_namespace is None else f"; host side {lab.host_namespace.name}"
    lines.append("namespaces: " + ", ".join(f"{name}={ns.name}" for name, ns in lab.namespaces.items()) + isolated)
    if lab.networks:
        lines.append("bridges: " + ", ".join(f"{name}={net.bridge}" for name, net in lab.networks.items()))
    for spec in topology.impair:
        network = f" ({spec.network})" if spec.network else ""
        lines.append(f"then: impair {spec.namespace}{network}: {spec.impairment}, {spec.direction}")
    for part in topology.partition:
        if part.shape is None:
            arrow = "->" if part.one_way else "|"
            lines.append(f"then: partition {','.join(part.groups[0])} {arrow} {','.join(part.groups[1])}")
        else:
            seed = "" if part.seed is None else f" seed {part.seed}"
            lines.append(f"then: partition --shape {part.shape}{seed}")
    return lines


def _names(group: str) -> list[str]:
    """``"web,db"`` → ``["web", "db"]``."""
    return [name.strip() for name in group.split(",") if name.strip()]


def _print(line: str) -> None:
    print(line, flush=True)


def _progress(line: str) -> None:
    print(f"pynetns: {line}", file=sys.stderr, flush=True)


def _wait_for_enter() -> None:
    print("# -- press Enter for the next step; Ctrl-C stops and cleans up --", flush=True)
    sys.stdin.readline()


def _dispatch(argv: Sequence[str] | None) -> int:
    args = ["pynetns", *command_separated(sys.argv[1:] if argv is None else argv)]
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
    signals = Signals()
    signals.install()
    try:
        return _dispatch(argv)
    finally:
        signals.restore()


def main() -> NoReturn:
    """The ``pynetns`` console script."""
    signals = Signals()
    signals.install()
    status = _dispatch(None)
    signals.ignore()
    sys.exit(status)
