"""The backend roles: small abstract classes a backend implements.

Backends translate intent into argv lists and hold no state. The :class:`~pynetns.Host`
composes them and hands the commands to its runner.

- :class:`LinkBackend` — links, addresses, routes, named namespaces (iproute2).
- :class:`EnterBackend` — run a command inside a namespace given by pid or path (nsenter).
- :class:`FirewallBackend` — NAT and forwarding rules in pynetns' own table or chains
  (nftables, iptables), described tool-independently by :class:`FirewallRule`; the
  NFQUEUE rules feeding the userspace impairment engine (:meth:`FirewallBackend.queue_rule`).
- :class:`ShapingBackend` — queueing disciplines that impair an interface (tc).

A backend missing a method fails when it is instantiated (``TypeError``), not
half-way through building a network.
"""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from ..errors import BackendUnavailable, InvalidValue

if TYPE_CHECKING:
    from ..impairment import Impairment
    from ..runner import CompletedCommand

__all__ = [
    "EnterBackend",
    "FirewallBackend",
    "FirewallRule",
    "FirewallState",
    "LinkBackend",
    "ListedRule",
    "NetnsRef",
    "QueueHook",
    "SandboxBackend",
    "ShapingBackend",
    "canonical_address",
    "check_comment",
    "port_range",
]

Argv = tuple[str, ...]
#: where an NFQUEUE rule takes packets: leaving an interface, arriving on it, or arriving on a bridge port
QueueHook = Literal["egress", "ingress", "port"]


@attrs.frozen
class NetnsRef:
    """Where a network namespace is: the root one, a named one, a process's, or a file."""

    kind: Literal["root", "named", "pid", "path"]
    value: str = ""

    @classmethod
    def root(cls) -> NetnsRef:
        return cls("root")

    @classmethod
    def named(cls, name: str) -> NetnsRef:
        return cls("named", name)

    @classmethod
    def pid(cls, pid: int) -> NetnsRef:
        return cls("pid", str(pid))

    @classmethod
    def path(cls, path: str) -> NetnsRef:
        return cls("path", path)

    @property
    def name(self) -> str | None:
        """The ``ip -n`` name, for a named namespace."""
        return self.value if self.kind == "named" else None

    @property
    def netns_arg(self) -> str:
        """The argument of ``ip link ... netns X`` that moves an interface here, from another namespace.

        The root namespace has none: it is the Host's namespace (locally, the caller's), and a
        command working in another namespace (``ip -n NAME``, ``nsenter``) cannot name it —
        ``/proc/1/ns/net`` is PID 1's (the machine's, not the Host's, inside ``unshare -n`` or
        behind a runner that wraps ``nsenter``), and ``/proc/self/ns/net`` is the namespace the
        command switched to. Move an interface to the root namespace from the root side, as
        :class:`~pynetns.Veth` does: the root side is where an unwrapped command runs.
        """
        if self.kind == "root":
            raise InvalidValue(
                "netns",
                str(self),
                "the root namespace cannot be named from another namespace; "
                "run the command in the root namespace and name the other one",
            )
        return self.value

    def __str__(self) -> str:
        return {"root": "host", "named": self.value, "pid": f"pid {self.value}", "path": self.value}[self.kind]


class LinkBackend(ABC):
    """Builds the commands for links, addresses, routes and named namespaces."""

    #: the registry name
    name: ClassVar[str]
    #: the program a batch is sent to, for error messages
    program: ClassVar[str]

    @abstractmethod
    def command(self, netns: str | None, args: Sequence[str]) -> Argv:
        """One command run in the named namespace ``netns`` (``None``: the caller's)."""

    @abstractmethod
    def batch_command(self, netns: str | None) -> Argv:
        """The process that reads many commands from stdin in ``netns``."""

    @abstractmethod
    def exec_command(self, netns: str, argv: Sequence[str]) -> Argv:
        """Run any program inside the named namespace ``netns``."""

    # the following return the arguments of a command, for command() or a batch line:
    # a Host turns them into a command (``host.ip_argv(NetnsRef.root(), links.netns_add("web"))``)

    @abstractmethod
    def netns_add(self, name: str) -> Argv: ...

    @abstractmethod
    def netns_delete(self, name: str) -> Argv: ...

    @abstractmethod
    def netns_list(self) -> Argv: ...

    @abstractmethod
    def netns_pids(self, name: str) -> Argv: ...

    @abstractmethod
    def bridge_add(self, name: str, *, mtu: int | None) -> Argv: ...

    @abstractmethod
    def veth_add(
        self,
        name: str,
        peer: str,
        *,
        peer_netns: str | None,
        mtu: int | None,
        mac: str | None,
        peer_mac: str | None,
        master: str | None,
    ) -> Argv: ...

    @abstractmethod
    def link_set(
        self, name: str, *, up: bool | None = None, alias: str | None = None, master: str | None = None
    ) -> Argv: ...

    @abstractmethod
    def link_delete(self, name: str) -> Argv: ...

    @abstractmethod
    def vxlan_add(self, name: str, *, vni: int, local: str, port: int, mtu: int | None) -> Argv:
        """Arguments adding a VXLAN device ``name`` of ``vni`` sending from ``local`` to UDP ``port``, learning
        nothing (its peers are static forwarding entries: :meth:`fdb_append`)."""

    @abstractmethod
    def fdb_append(self, device: str, mac: str, destination: str) -> Argv:
        """Arguments (of :meth:`bridge_command`) sending frames for ``mac`` out VXLAN ``device`` to the machine
        ``destination`` (all zeros: every broadcast and unknown frame, once to each such machine)."""

    @abstractmethod
    def fdb_delete(self, device: str, mac: str, destination: str) -> Argv:
        """Arguments (of :meth:`bridge_command`) removing what :meth:`fdb_append` added."""

    @abstractmethod
    def bridge_command(self, netns: str | None, args: Sequence[str]) -> Argv:
        """The whole ``bridge`` command (forwarding database) running ``args`` in ``netns``."""

    @abstractmethod
    def bridge_batch_command(self, netns: str | None) -> Argv:
        """The whole command reading :meth:`bridge_command` arguments on stdin, a line each (``bridge -batch -``)."""

    @abstractmethod
    def bridge_port_set(self, name: str, *, hairpin: bool) -> Argv:
        """Arguments setting a bridge port's flags (``hairpin``: send frames back out the port they came in)."""

    @abstractmethod
    def addr_add(self, device: str, address: str, *, nodad: bool = False) -> Argv:
        """Arguments adding ``address``; ``nodad``: an IPv6 address usable at once (no duplicate address
        detection)."""

    @abstractmethod
    def addr_delete(self, device: str, address: str) -> Argv: ...

    @abstractmethod
    def route_add(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv: ...

    @abstractmethod
    def route_delete(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv: ...

    @abstractmethod
    def show_links(self, *, device: str | None = None, master: str | None = None) -> Argv:
        """Arguments listing links with their addresses as ``ip -j -d addr show`` JSON."""

    @abstractmethod
    def show_routes(self, *, family: int = 4, destination: str | None = None) -> Argv:
        """Arguments listing routes as ``ip -j route show`` JSON."""

    # the probes the firewall reads the host's path to a container with

    @abstractmethod
    def route_get(self, address: str) -> Argv:
        """Arguments showing the route the kernel picks toward ``address``, as ``ip -j route get`` JSON."""

    @abstractmethod
    def neigh_show(self, address: str, device: str) -> Argv:
        """Arguments listing the neighbour entries of ``address`` on ``device``, as ``ip -j neigh show`` JSON."""

    @abstractmethod
    def fdb_show(self, bridge: str) -> Argv:
        """The whole command listing ``bridge``'s forwarding database as ``bridge -j fdb show`` JSON."""

    @abstractmethod
    def listeners(self, protocol: str) -> Argv:
        """The whole command listing the listening sockets of ``protocol`` with their processes, as
        ``ss -H -l -n -p`` prints them (the firewall refuses to publish a port a process holds)."""

    @abstractmethod
    def ping(self, address: str, family: int) -> Argv:
        """The whole command sending one echo request to ``address`` (to fill the neighbour and fdb tables)."""

    # -- the namespace's plumbing around the links: not iproute2's, the same for every link backend --

    def sctp_probe(self) -> Argv:
        """The whole command succeeding only where the kernel has SCTP in the namespace it runs in: ``stat`` of
        ``/proc/net/sctp``, which exists once the ``sctp`` module is loaded (or built in). Reading it loads no
        module, as opening an SCTP socket would."""
        return ("stat", "-c", "%n", "/proc/net/sctp")

    def sysctl_read(self, key: str) -> Argv:
        """The whole command printing the value of the sysctl ``key`` (``net.ipv4.ip_forward``)."""
        return ("sysctl", "-n", key)

    def sysctl_write(self, settings: Sequence[str], *, quiet: bool = True) -> Argv:
        """The whole command setting each ``key=value`` of ``settings`` (``quiet``: printing nothing)."""
        return ("sysctl", "-q", "-w", *settings) if quiet else ("sysctl", "-w", *settings)

    def kill(self, pids: Sequence[str]) -> Argv:
        """The whole command ending the processes ``pids`` at once (SIGKILL)."""
        return ("kill", "-KILL", *pids)

    def netns_identity(self) -> Argv:
        """The whole command printing ``<dev>-<inode>`` of the network namespace it runs in."""
        return ("stat", "-L", "-c", "%d-%i", "/proc/self/ns/net")

    def noop(self) -> Argv:
        """The whole command that does nothing and succeeds (can a namespace be entered?)."""
        return ("true",)

    # -- the files ``ip netns exec NAME`` mounts over /etc (``/etc/netns/NAME/hosts``, ``resolv.conf``) --

    #: the folder whose ``NAME/`` subfolder holds the files ``ip netns exec NAME`` mounts over ``/etc``
    netns_etc: ClassVar[str] = "/etc/netns"
    #: the host's name service switch (a lab's members get a copy resolving hosts by files and DNS only)
    host_nsswitch: ClassVar[str] = "/etc/nsswitch.conf"

    def make_dirs(self, paths: Sequence[str], *, parents: bool = False) -> Argv:
        """The whole command making the folders ``paths``: each must not exist ("File exists"), unless ``parents``
        (then the missing folders above them are made too, and an existing one is no failure)."""
        return ("mkdir", *(("-p",) if parents else ()), "--", *paths)

    def list_dir(self, path: str) -> Argv:
        """The whole command printing the entries of folder ``path``, one a line, hidden ones too."""
        return ("ls", "-A1", "--", path)

    def read_file(self, path: str) -> Argv:
        """The whole command printing the file ``path``."""
        return ("cat", "--", path)

    def write_files(self, paths: Sequence[str]) -> Argv:
        """The whole command writing its standard input into each of ``paths``, in place (an existing file keeps
        its inode, so a program that has it mounted over ``/etc`` sees the new text)."""
        return ("tee", "--", *paths)

    def link_into(self, targets: Sequence[str], folder: str) -> Argv:
        """The whole command making, in ``folder``, a symbolic link to each of ``targets``, named as its last part
        (one that exists already: "File exists")."""
        return ("ln", "-s", "-t", folder, "--", *targets)

    def remove_files(self, paths: Sequence[str]) -> Argv:
        """The whole command removing the files ``paths``; one already gone is no failure."""
        return ("rm", "-f", "--", *paths)

    def remove_dir(self, path: str) -> Argv:
        """The whole command removing the folder ``path`` if it is empty ("Directory not empty" otherwise)."""
        return ("rmdir", "--", path)

    def remove_dirs(self, paths: Sequence[str]) -> Argv:
        """The whole command removing the folders ``paths`` that are empty (one holding something stays)."""
        return ("rmdir", "--ignore-fail-on-non-empty", "--", *paths)


class EnterBackend(ABC):
    """Runs commands inside a namespace given by a process id or a file."""

    name: ClassVar[str]

    @abstractmethod
    def wrap(self, where: NetnsRef, argv: Sequence[str]) -> Argv:
        """``argv`` run inside ``where`` (a ``pid`` or ``path`` reference)."""


class SandboxBackend(ABC):
    """Makes the commands of a rootless sandbox: an unprivileged user namespace with its own mount,
    network and PID namespaces, held by one small process, that plays the host."""

    name: ClassVar[str]

    @abstractmethod
    def holder_command(self) -> Argv:
        """The long-lived process that makes and holds the namespaces; it ends at EOF on its standard input
        (its owner's pipe), and every process in the sandbox ends with it."""

    def keeper_command(self) -> Argv:
        """The holder of a persistent sandbox (``pynetns up`` without root): it outlives its starter, in a
        session of its own, until its PID 1 is killed (SIGKILL from outside). A backend without one refuses."""
        raise BackendUnavailable(self.name, detail="this sandbox backend cannot make a persistent sandbox")

    @abstractmethod
    def enter_prefix(self, pid: int) -> Argv:
        """The prefix that runs a command inside the sandbox held by process ``pid`` (the PID namespace's init)."""

    @abstractmethod
    def spawn_prefix(self) -> Argv:
        """The prefix, inside the sandbox, of a long-running process: it dies when the entering process does."""

    @abstractmethod
    def setup_commands(self, runtime: str) -> list[Argv]:
        """Run once inside a new sandbox: a private tmpfs over ``/run`` with ``/run/netns`` (for
        ``ip netns add``) and ``runtime`` (pynetns' runtime files) on it; its loopback up."""

    def etc_commands(self, submounts: Sequence[str] = ()) -> list[Argv]:
        """Run once inside a new sandbox, after :meth:`setup_commands`: give it an ``/etc/netns`` of its own that it
        may write (the lab's names files, which ``ip netns exec`` mounts over ``/etc``), keeping the mounts
        ``submounts`` below ``/etc`` (``/etc/hosts`` in a container) in place. Their failure is no error: the
        sandbox's labs then have no names. None by default."""
        return []


# -- firewall ---------------------------------------------------------------

Family = Literal[4, 6]
#: "nat": the DNAT/POSTROUTING chains and the records; "filter": the FORWARD accept and isolation chains;
#: "raw": the guard, which sees packets before connection tracking and NAT
Scope = Literal["nat", "filter", "raw"]
#: "isolate" holds drops between networks; "forward" accepts pynetns' traffic where an xtables FORWARD drops;
#: "guard" drops what must never reach NAT (packets to 127.0.0.0/8 that did not arrive on ``lo``)
Chain = Literal["dnat", "postrouting", "forward", "isolate", "records", "guard"]

#: the prefix of every comment pynetns writes on a firewall rule
COMMENT_PREFIX = "pynetns"
#: comment of the jump rules from the built-in chains into pynetns' own
JUMP_COMMENT = "pynetns jump"
_COMMENT = re.compile(r"[A-Za-z0-9_.:/=,+* -]{1,128}")


def canonical_address(family: Family, value: str, *, network: bool = False) -> str:
    """An address (or CIDR) re-parsed, so only ipaddress' canonical text reaches a firewall script."""
    try:
        parsed = ipaddress.ip_network(value) if network else ipaddress.ip_address(value)
    except ValueError:
        raise InvalidValue("address", value, "must be an IP address") from None
    if parsed.version != family:
        raise InvalidValue("address", value, f"must be an IPv{family} address")
    if isinstance(parsed, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and parsed.prefixlen == parsed.max_prefixlen:
        return str(parsed.network_address)
    return str(parsed)


def port_range(value: tuple[int, int], separator: str) -> str:
    """``"80"`` or ``"80<separator>89"`` from a validated (low, high) pair."""
    low, high = (int(value[0]), int(value[1]))
    if not 1 <= low <= high <= 65535:
        raise InvalidValue("port", value, "must be a port range within 1-65535")
    return str(low) if low == high else f"{low}{separator}{high}"


def check_comment(value: str) -> str:
    """A rule comment: up to 128 characters from a small allowlist (no quotes, newlines, ``;``)."""
    if not isinstance(value, str) or not _COMMENT.fullmatch(value) or not value.startswith(COMMENT_PREFIX):
        raise InvalidValue("comment", value, "must start with 'pynetns' and use only [A-Za-z0-9_.:/=,+* -]")
    return value


@attrs.frozen
class FirewallRule:
    """One rule pynetns wants, independent of the tool that writes it.

    Every value is already validated (addresses come from :mod:`ipaddress`,
    names from :mod:`pynetns.validation`); backends check them again before
    putting them in a script.
    """

    chain: Chain
    comment: str = attrs.field(validator=lambda _i, _a, value: check_comment(value))
    family: Family = 4
    protocol: Literal["tcp", "udp", "sctp"] | None = None
    saddr: str | None = None
    daddr: str | None = None
    #: a destination the rule does not match (IPv6 published ports leave the host's ``::1`` to its proxy)
    not_daddr: str | None = None
    dport: tuple[int, int] | None = None
    sport: tuple[int, int] | None = None
    iif: str | None = None
    oif: str | None = None
    not_iif: str | None = None
    not_oif: str | None = None
    ct_dnat: bool = False
    #: match only connections that were *not* DNATed (isolation leaves published ports reachable)
    not_ct_dnat: bool = False
    ct_established: bool = False
    action: Literal["dnat", "masquerade", "accept", "drop", "record"] = "accept"
    to_address: str | None = None
    #: container ports for ``dnat``; with a ``dport`` range of the same size, mapped one to one
    to_port: tuple[int, int] | None = None
    counter: bool = False


@attrs.frozen
class ListedRule:
    """A rule found in pynetns' chains: where, its comment, how to delete it, its counters."""

    chain: Chain | Literal["jump"]
    comment: str
    #: nftables: ``"<chain> <handle>"``; iptables: the ``-A CHAIN …`` spec as saved
    ref: str
    packets: int = 0
    bytes: int = 0


@attrs.frozen
class FirewallState:
    """What pynetns finds of its own in one scope of one family: chains, rules, jumps."""

    #: pynetns' own chains that exist
    chains: frozenset[str] = frozenset()
    #: every rule in them, plus the jump rules (``chain == "jump"``)
    rules: tuple[ListedRule, ...] = ()
    #: built-in chains that hold rules other than pynetns' jumps
    busy: frozenset[str] = frozenset()

    @property
    def exists(self) -> bool:
        return bool(self.chains)

    @property
    def jumps(self) -> tuple[ListedRule, ...]:
        return tuple(rule for rule in self.rules if rule.chain == "jump")

    def owned(self) -> tuple[ListedRule, ...]:
        """The rules of pynetns objects (not jumps, not records)."""
        return tuple(rule for rule in self.rules if rule.chain not in ("jump", "records"))


Run = Callable[[Sequence[str]], "CompletedCommand"]


class FirewallBackend(ABC):
    """Builds the scripts that add and remove pynetns' firewall rules, and parses listings.

    Stateless: everything it needs to know about the kernel's current rules is
    passed in as a :class:`FirewallState` (parsed by :meth:`parse` from the
    output of :meth:`list_commands`). Scripts are applied in one transaction
    by :meth:`batch_command`.
    """

    name: ClassVar[str]
    #: the scopes this backend keeps rules in (each listed and scripted on its own)
    scopes: ClassVar[tuple[Scope, ...]] = ("nat",)

    def scope_of(self, chain: Chain) -> Scope:
        """The scope whose script writes rules of ``chain``."""
        return "nat"

    @classmethod
    def detect(cls, run: Run | None) -> FirewallBackend:
        """An instance suited to the machine ``run`` executes on (``None``: a dry run, no probing)."""
        return cls()

    def chunks(self, lines: Sequence[str]) -> list[list[str]] | None:
        """``lines`` (a script of :meth:`script`) cut into scripts that, applied in order, do the same; for a
        kernel that refuses the whole batch at once (in a user namespace nft cannot enlarge its netlink
        buffer: "Message too long"). ``None`` (the default): this backend's scripts cannot be cut."""
        return None

    @classmethod
    def usable_command(cls) -> Argv | None:
        """A command that succeeds where this backend can work (a Host choosing its firewall runs it);
        ``None``: no way to tell, assume it can."""
        return None

    def describe(self) -> str:
        """One line naming the backend and its mode, for logs and ``repr``."""
        return self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    @abstractmethod
    def list_commands(self, family: Family, scope: Scope) -> list[Argv]:
        """Commands whose outputs, in order, :meth:`parse` reads; a missing table lists as empty."""

    @abstractmethod
    def parse(self, family: Family, scope: Scope, outputs: Sequence[str]) -> FirewallState: ...

    @abstractmethod
    def batch_command(self, family: Family) -> Argv:
        """The process that applies a script atomically from stdin."""

    @abstractmethod
    def script(
        self,
        family: Family,
        scope: Scope,
        state: FirewallState,
        *,
        add: Sequence[FirewallRule] = (),
        remove: Sequence[ListedRule] = (),
        teardown: bool = False,
    ) -> list[str]:
        """Lines that create whatever of pynetns' chains and jumps ``state`` lacks, add ``add``,
        remove ``remove`` and, with ``teardown``, remove pynetns' chains and jumps altogether."""

    def table_commands(self, family: Family, scope: Scope) -> tuple[Argv, Argv] | None:
        """For a table this backend's tool creates on first use and that can be removed again
        (iptables-nft's ``nat`` and ``filter``): the command listing it as ``nft -j`` JSON (failing
        where it does not exist), and the one removing it. ``None`` (the default): nothing to remove
        (nftables' own table goes with its teardown; iptables-legacy's built-in tables cannot be removed)."""
        return None

    def table_vacant(self, family: Family, scope: Scope, listing: str) -> bool:
        """Whether the listing of :meth:`table_commands` shows a table holding only empty base
        chains with policy accept (so removing it changes nothing but the ruleset's text)."""
        return False

    def queue_rule(
        self, family: Family, hook: QueueHook, interface: str, queue: int, comment: str, *, delete: bool = False
    ) -> Argv:
        """The command sending what passes ``interface`` at ``hook`` to NFQUEUE ``queue`` (``--queue-bypass``:
        undelayed while no engine binds it), its rule commented ``comment`` (the owner tag first);
        ``delete``: the command removing that rule. Run it in the interface's namespace.

        :class:`~pynetns.errors.BackendUnavailable` where the backend has no queue rules (the default).
        """
        raise BackendUnavailable(
            self.name, detail=f"the {type(self).__name__} firewall backend makes no NFQUEUE rules, "
            "which the userspace impairment engine needs",
        )  # fmt: skip

    def forward_probe(self, family: Family) -> Argv | None:
        """For an xtables flavour: the command whose output shows whether its ``filter`` table (whose
        FORWARD chain may drop) exists; ``None`` (the default): this backend has no such table."""
        return None

    def forward_found(self, family: Family, output: str) -> bool:
        """Whether the output of :meth:`forward_probe` (exit 0) shows the ``filter`` table."""
        return False

    def conntrack_delete(self, family: Family, protocol: str, port: int, destination: str | None) -> Argv:
        """The command dropping the connection-tracking entries of ``protocol`` to ``port`` (and ``destination``),
        so a new NAT rule applies to a flow already seen. The same ``conntrack`` for every backend."""
        if protocol not in ("tcp", "udp"):
            raise InvalidValue("protocol", protocol, "must be 'tcp' or 'udp'")
        argv = [
            "conntrack",
            "-D",
            "-f",
            "ipv4" if family == 4 else "ipv6",
            "-p",
            protocol,
            "--orig-port-dst",
            port_range((port, port), "-"),
        ]
        if destination is not None:
            argv += ["--orig-dst", canonical_address(family, destination)]
        return tuple(argv)

    # -- partitions: a namespace's own input drops, outside pynetns' NAT table or chains --

    @abstractmethod
    def partition_block(self, addresses: Sequence[str], tag: str, *, first: bool = True) -> list[tuple[Argv, str]]:
        """The commands (argv, stdin) that make the namespace they run in drop everything arriving from
        ``addresses`` (canonical IP addresses of either version), their rules commented with the owner
        ``tag``. The whole rule set is replaced, so calling it again is how a partition changes;
        ``first=False`` says the namespace has it already (iptables: the jumps from INPUT are there)."""

    @abstractmethod
    def partition_unblock(self, tag: str) -> list[tuple[Argv, str | None]]:
        """The commands (argv, stdin) that remove the partition rules ``partition_block`` wrote."""


def partition_addresses(addresses: Sequence[str]) -> dict[int, list[str]]:
    """``addresses`` re-parsed (only canonical text reaches a script), per IP version; at least one."""
    if not addresses:
        raise InvalidValue("addresses", [], "a partition needs at least one address to drop")
    by_version: dict[int, list[str]] = {}
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(str(address))
        except ValueError:
            raise InvalidValue("address", str(address), "must be an IP address") from None
        found = by_version.setdefault(parsed.version, [])
        if str(parsed) not in found:
            found.append(str(parsed))
    return by_version


def partition_comment(tag: str) -> str:
    """The comment of a partition rule: the owner's tag, then ``partition``."""
    return check_comment(f"{tag} partition")


class ShapingBackend(ABC):
    """Builds the commands that put an :class:`~pynetns.impairment.Impairment` on an interface's queue
    (what the interface *sends*), take it off, and show it; a Host's ``shaping`` role."""

    name: ClassVar[str]

    @abstractmethod
    def command(self, args: Sequence[str], *, netns: str | None = None) -> Argv:
        """The tool with ``args``, run in the named namespace ``netns`` or the caller's."""

    @abstractmethod
    def batch_command(self, *, netns: str | None = None) -> Argv:
        """The process reading the tool's commands (``args``, one a line) on stdin, in ``netns``."""

    @abstractmethod
    def impair_args(self, device: str, impairment: Impairment) -> tuple[Argv, ...]:
        """The tool's arguments, in order, making ``device`` carry exactly ``impairment`` whatever it
        carried before (:meth:`clear_args` if the impairment is empty)."""

    @abstractmethod
    def clear_args(self, device: str) -> tuple[Argv, ...]:
        """The tool's arguments, in order, giving ``device`` back its default, whether or not it was impaired."""

    @abstractmethod
    def probe_args(self, device: str) -> tuple[Argv, Argv]:
        """Arguments that try the kernel's full impairment support on ``device`` (``lo`` of a namespace
        of ours), and the ones removing what the try left."""

    @abstractmethod
    def show_args(self, device: str) -> Argv:
        """Arguments listing what ``device`` carries (JSON)."""
