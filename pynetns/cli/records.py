"""How the command line finds lab records and shows them (``ls``, ``show``, ``up``): from their journal.

>>> split_target("shop:web")
('shop', ':', 'web')
>>> table(["NAME", "ID"], [["shop", "1a2b"]])
['NAME  ID', 'shop  1a2b']
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import InvalidValue, PynetnsError
from ..locking import host_lock

if TYPE_CHECKING:
    from ..host import Host
    from ..lab.journal import LabRecord
    from ..namespace import Namespace
    from ..sandbox import Sandbox

__all__ = [
    "GRAPH_FORMATS",
    "SandboxEntry",
    "describe",
    "dot_graph",
    "every_lab",
    "faults",
    "find_member",
    "host_of",
    "known",
    "lab_named_by",
    "locate",
    "member_or_host_side",
    "mermaid_graph",
    "name_lock",
    "sandbox_entries",
    "sandbox_folder",
    "split_target",
    "summary",
    "table",
    "which_exist",
]

log = logging.getLogger(__name__)


def known(records: Iterable[LabRecord]) -> str:
    return ", ".join(f"{record.name} ({record.id})" for record in records) or "none"


def name_lock(name: str) -> contextlib.AbstractContextManager[None]:
    """What ``up`` holds from its check that no lab is called ``name`` until the new lab is recorded: one
    lock per user and name, over the machine's journals and every sandbox of the user (an abstract socket
    of the machine's network namespace, where the CLI runs with or without root)."""
    return host_lock(f"cli-up/{os.getuid()}/{hashlib.sha256(name.encode()).hexdigest()[:16]}")


def split_target(target: str) -> tuple[str | None, str, str]:
    """``"shop:web"`` or ``"shop/web"`` → ``("shop", ":", "web")``; ``"web"`` → ``(None, "", "web")``."""
    for separator in (":", "/"):
        lab, found, name = target.partition(separator)
        if found:
            return lab, found, name
    return None, "", target


def find_member(lab_name: str | None, name: str) -> tuple[LabRecord, Host | None]:
    """The lab that has a namespace called ``name`` (and is ``lab_name``, if given), and the Host of the
    user's sandbox it is in (None: this machine)."""
    if lab_name is not None:
        return locate(lab_name)
    every = every_lab()
    records = [record for record, _ in every]
    matches = [item for item in every if name in item[0].data.get("members", {})]
    found = [record for record, _ in matches]
    if not found:
        have = [f"{record.name}:{member}" for record in records for member in record.data.get("members", {})]
        hint = "; an isolated lab's host side is LAB:host" if name == HOST_SIDE else ""
        raise InvalidValue(
            "namespace", name, f"no lab has a namespace of that name (namespaces: {', '.join(have) or 'none'}){hint}"
        )
    if len(found) > 1:
        raise InvalidValue(
            "namespace", name, f"is in {len(found)} labs: {known(found)}; say which, as LAB:{name} or with --lab"
        )
    return matches[0]


def which_exist(record: LabRecord, host: Host | None = None) -> dict[str, Any]:
    """Which of the lab's namespaces exist now (one ``ip netns list``); ``None`` values if that cannot be told."""
    from ..host import Host
    from ..namespace import Namespace

    members: dict[str, str] = record.data.get("members", {})
    host_namespace: str | None = record.data.get("host_namespace")
    try:
        existing: set[str] | None = {namespace.name for namespace in Namespace.all(host or Host())}
    except PynetnsError as error:
        log.debug("cannot list namespaces: %s", error)
        existing = None
    return {
        "namespaces": {name: None if existing is None else kernel in existing for name, kernel in members.items()},
        "host_namespace": None if existing is None or host_namespace is None else host_namespace in existing,
    }


def summary(record: LabRecord) -> dict[str, Any]:
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
        "networks6": {net["name"]: net["subnet6"] for net in record.data.get("networks", ()) if "subnet6" in net},
        "journal": str(record.path),
    }


def describe(record: LabRecord, live: dict[str, Any] | None = None) -> list[str]:
    """A lab as ``up`` and ``show`` print it, from its journal (and ``live``: which namespaces exist)."""
    data = record.data
    owner = "" if record.owner_pid is None else f", owner pid {record.owner_pid}"
    where = f"isolated (host namespace {data.get('host_namespace')})" if data.get("isolated") else "on this host"
    lines = [f"lab {record.name} ({record.id}): {record.state}{owner}, {where}"]
    if live is not None and live.get("host_namespace") is False:
        lines[0] += " -- its host namespace is gone"
    networks = [
        [
            net["name"],
            " ".join([net["subnet"], *([net["subnet6"]] if "subnet6" in net else [])]),
            "gateway "
            + " ".join(gateway.split("/")[0] for gateway in (net["gateway"], net.get("gateway6")) if gateway),
            f"bridge {net['bridge']}",
            "internal" if net.get("internal") else "nat" if net.get("nat") else "no nat",
        ]
        for net in data.get("networks", ())
    ]
    lines += ["networks:", *table(None, networks, indent="  ")] if networks else ["networks: none"]
    endpoints: dict[str, list[str]] = {}
    for endpoint in data.get("endpoints", ()):
        endpoints.setdefault(endpoint["namespace"], []).append(
            " ".join([endpoint["interface"], endpoint["ip"], *([endpoint["ip6"]] if endpoint.get("ip6") else [])])
            + f" ({endpoint['network']})"
        )
    members: dict[str, str] = data.get("members", {})
    rows = []
    for name, kernel in members.items():
        row = [name, kernel]
        if live is not None:
            exists = live.get("namespaces", {}).get(name)
            row.append("?" if exists is None else "up" if exists else "missing")
        rows.append([*row, ", ".join(endpoints.get(name, ())) or "no network"])
    lines += ["namespaces:", *table(None, rows, indent="  ")] if rows else ["namespaces: none"]
    published = data.get("published", ())
    if published:
        lines += ["published:", *(f"  {item}" for item in published)]
    return lines + faults(data)


def faults(data: dict[str, Any]) -> list[str]:
    """The impaired links and the partitions in force a journal names (``pynetns impair``, ``partition``).

    >>> faults({"impairments": [{"namespace": "web", "interface": "eth0", "network": "front", "direction": "both",
    ...                          "impairment": {"delay": 0.05}, "mode": "netem"}],
    ...         "partitions": [{"shape": "groups", "drops": {"a": ["b"], "b": ["a"]}, "seed": None}]})
    ['impaired:', '  web eth0 (front): delay 50ms, both (netem)', 'partitions:', '  groups: a | b (2 directions cut)']
    """
    from ..impairment import Impairment
    from ..lab.shapes import Partition

    lines: list[str] = []
    impaired = data.get("impairments") or ()
    if impaired:
        lines.append("impaired:")
    for item in impaired:
        try:
            what = str(Impairment(**item.get("impairment", {})))
        except (PynetnsError, TypeError):
            what = str(item.get("impairment"))
        where = f"{item.get('namespace')} {item.get('interface')} ({item.get('network')})"
        lines.append(f"  {where}: {what}, {item.get('direction')} ({item.get('mode')})")
    partitions = data.get("partitions") or ()
    if partitions:
        lines.append("partitions:")
    for item in partitions:
        try:
            made = Partition.from_dict(item)
        except PynetnsError:
            lines.append(f"  {item}")
            continue
        seed = "" if made.seed is None else f", seed {made.seed}"
        groups = " | ".join(" ".join(group) for group in made.groups)
        lines.append(f"  {made.shape}: {groups} ({len(made.cut)} directions cut{seed})")
    return lines


def table(header: Sequence[str] | None, rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Rows as left-aligned columns two spaces apart (with ``header`` first, if given)."""
    everything = [list(header), *rows] if header is not None else [list(row) for row in rows]
    if not everything:
        return []
    widths = [
        max(len(row[column]) for row in everything if column < len(row))
        for column in range(max(len(row) for row in everything))
    ]
    return [
        indent + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in everything
    ]


# -- the user's persistent sandboxes (``pynetns up`` without root) ---------------------------------


def sandbox_folder() -> Path:
    """Where the records of this user's persistent sandboxes live: ``$XDG_RUNTIME_DIR/pynetns/sandboxes``
    (``~/.cache/pynetns/sandboxes`` where XDG_RUNTIME_DIR is unset)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "pynetns" if base else Path.home() / ".cache" / "pynetns"
    return root / "sandboxes"


@attrs.frozen
class SandboxEntry:
    """The record of a persistent sandbox holding lab ``lab``: what :meth:`Sandbox.attach` needs."""

    lab: str
    pid: int
    identity: str
    backend: str
    path: Path

    @classmethod
    def load(cls, path: Path) -> SandboxEntry:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["lab"]), int(data["pid"]), str(data["identity"]), str(data["backend"]), path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PynetnsError(f"{path}: not a sandbox record: {error}") from error

    @classmethod
    def save(cls, lab: str, sandbox: Sandbox) -> SandboxEntry:
        if sandbox.identity is None:
            raise PynetnsError(f"sandbox {sandbox.pid} is gone; nothing to record")
        folder = sandbox_folder()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = cls(lab, sandbox.pid, sandbox.identity, sandbox.backend.name, folder / f"{lab}.json")
        data = {"lab": lab, "pid": entry.pid, "identity": entry.identity, "backend": entry.backend}
        partial = entry.path.with_suffix(".tmp")
        partial.write_text(json.dumps(data))
        partial.replace(entry.path)
        return entry

    def attach(self) -> Sandbox | None:
        """The sandbox, still running; None if it is gone (its PID 1 ended, or the pid is another process's)."""
        from ..sandbox import Sandbox

        try:
            return Sandbox.attach(self.pid, self.identity, backend=self.backend)
        except PynetnsError as error:
            log.debug("%s: %s", self.path, error)
            return None

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def sandbox_entries() -> list[SandboxEntry]:
    """Every sandbox record of this user (an unreadable one is skipped, saying why with ``--debug``)."""
    found = []
    for path in sorted(sandbox_folder().glob("*.json")):
        try:
            found.append(SandboxEntry.load(path))
        except PynetnsError as error:
            log.debug("%s", error)
    return found


def host_of(sandbox: Sandbox) -> Host:
    """A Host played by ``sandbox`` (its runner and runtime), as :meth:`Host.rootless` makes one."""
    from ..host import Host

    host = Host(runner=sandbox.runner, runtime=sandbox.runtime)
    host.sandbox = sandbox
    return host


def every_lab(sandboxes: bool | None = None) -> list[tuple[LabRecord, Host | None]]:
    """The labs of this machine (host None), and, without root (or with ``sandboxes=True``), those in the
    user's running persistent sandboxes (with the Host each is in)."""
    from ..lab.journal import labs
    from ..sandbox import privileged

    found: list[tuple[LabRecord, Host | None]] = []
    try:
        found += [(record, None) for record in labs()]
    except OSError as error:  # a runtime folder this user may not read
        log.debug("cannot list the machine's labs: %s", error)
    if sandboxes is None:
        sandboxes = not privileged()
    if sandboxes:
        for entry in sandbox_entries():
            sandbox = entry.attach()
            if sandbox is not None:
                host = host_of(sandbox)
                found += [(record, host) for record in labs(host)]
    return found


def locate(name: str) -> tuple[LabRecord, Host | None]:
    """The lab called (or whose id is) ``name``, and the Host of the sandbox it is in (None: this machine)."""
    every = every_lab()
    found = [item for item in every if item[0].id == name] or [item for item in every if item[0].name == name]
    if not found:
        raise InvalidValue("lab", name, f"no such lab (labs: {known(record for record, _ in every)})")
    if len(found) > 1:
        ids = ", ".join(record.id for record, _ in found)
        raise InvalidValue("lab", name, f"names {len(found)} labs; use an id: {ids}")
    return found[0]


#: the file names read as a topology file where a lab's name is expected (``down FILE``, ``graph FILE``)
TOPOLOGY_SUFFIXES = (".toml", ".json", ".yaml", ".yml")

#: what ``graph --format`` draws
GRAPH_FORMATS = ("dot", "mermaid", "svg")

#: the name ``exec LAB:host`` gives an isolated lab's host side
HOST_SIDE = "host"


def lab_named_by(target: str) -> str:
    """The lab's name or id ``target`` is, or, if it is a topology file (``.toml``, ``.json``, ``.yaml``, or a
    path with a ``/``), the name that file gives its lab."""
    path = Path(target)
    if not (path.suffix in TOPOLOGY_SUFFIXES or "/" in target):
        return target
    from ..lab.topology import Topology

    try:
        name = Topology.from_file(path).name
    except OSError as error:
        raise PynetnsError(f"{target}: cannot read it: {error.strerror or error}") from error
    if name is None:
        raise PynetnsError(f"{target} gives its lab no name: name the lab by its id instead (see 'pynetns ls')")
    return name


def member_or_host_side(record: LabRecord, name: str, host: Host | None = None) -> Namespace:
    """The lab's namespace ``name``; ``host`` (if no member has that name): an isolated lab's host side."""
    from ..namespace import Namespace

    members: dict[str, str] = record.data.get("members", {})
    if name != HOST_SIDE or name in members:
        return record.namespace(name, host)
    host_namespace: str | None = record.data.get("host_namespace")
    if host_namespace is None:
        raise InvalidValue(
            "namespace", name, f"lab {record.name} is not isolated: its host side is this machine's own namespace"
        )
    return Namespace(host_namespace, host=host)


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_graph(record: LabRecord) -> str:
    """The lab in Graphviz DOT, from its journal: networks (bridges), namespaces, endpoints, published ports.

    >>> from pynetns.lab.journal import LabRecord
    >>> data = {"networks": [{"name": "front", "subnet": "10.1.0.0/24", "bridge": "br", "gateway": "10.1.0.1"}],
    ...         "members": {"web": "pn-web"}, "published": ["8080->10.1.0.2:80/tcp"],
    ...         "endpoints": [{"namespace": "web", "interface": "eth0", "ip": "10.1.0.2/24", "network": "front"}]}
    >>> print(dot_graph(LabRecord("1a2b", "shop", None, False, Path("x"), data)))  # doctest: +ELLIPSIS
    graph "shop" {
    ...
      "net:front" -- "ns:web" [label="eth0 10.1.0.2/24"];
    ...
    """
    data = record.data
    host_side = data.get("host_namespace") or "this machine's namespace"
    lines = [
        f"graph {_dot_id(record.name)} {{",
        "  graph [rankdir=LR];",
        "  node [shape=box, style=rounded];",
        f"  host [label={_dot_id(f'host: {host_side}')}, shape=box3d];",
    ]
    for net in data.get("networks", ()):
        label = f"{net['name']} {net['subnet']}\\ngateway {net.get('gateway', '?')}"
        if net.get("internal"):
            label += "\\ninternal"
        lines.append(f'  {_dot_id("net:" + net["name"])} [label="{label}", shape=ellipse];')
        lines.append(f"  host -- {_dot_id('net:' + net['name'])} [label={_dot_id(net.get('bridge', ''))}];")
    for name, kernel in data.get("members", {}).items():
        lines.append(f"  {_dot_id('ns:' + name)} [label={_dot_id(name + ' (' + kernel + ')')}];")
    for endpoint in data.get("endpoints", ()):
        label = _dot_id(f"{endpoint['interface']} {endpoint['ip']}")
        lines.append(
            f"  {_dot_id('net:' + endpoint['network'])} -- {_dot_id('ns:' + endpoint['namespace'])} [label={label}];"
        )
    for number, port in enumerate(data.get("published", ())):
        lines.append(f"  port{number} [label={_dot_id('-p ' + port)}, shape=note];")
        lines.append(f"  port{number} -- host [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def mermaid_graph(record: LabRecord) -> str:
    """The lab as a Mermaid flowchart (for Markdown), from its journal: the same picture as :func:`dot_graph`."""
    data = record.data
    host_side = data.get("host_namespace") or "this machine's namespace"
    lines = ["flowchart LR", f"  host[[{_mermaid_text('host: ' + host_side)}]]"]
    networks = {net["name"]: f"net{index}" for index, net in enumerate(data.get("networks", ()))}
    members = {name: f"ns{index}" for index, name in enumerate(data.get("members", {}))}
    for net in data.get("networks", ()):
        label = f"{net['name']} {net['subnet']}<br>gateway {net.get('gateway', '?')}"
        lines.append(f"  {networks[net['name']]}({_mermaid_text(label)})")
        lines.append(f"  host ---|{_mermaid_text(net.get('bridge', ''))}| {networks[net['name']]}")
    for name, kernel in data.get("members", {}).items():
        lines.append(f"  {members[name]}[{_mermaid_text(name + ' (' + kernel + ')')}]")
    for endpoint in data.get("endpoints", ()):
        if endpoint["network"] in networks and endpoint["namespace"] in members:
            label = _mermaid_text(f"{endpoint['interface']} {endpoint['ip']}")
            lines.append(f"  {networks[endpoint['network']]} ---|{label}| {members[endpoint['namespace']]}")
    for number, port in enumerate(data.get("published", ())):
        lines.append(f"  port{number}>{_mermaid_text('-p ' + port)}] -.- host")
    return "\n".join(lines) + "\n"
