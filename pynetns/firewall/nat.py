"""Published ports and outbound NAT, the way Docker's bridge driver does them.

:class:`PortMap` is ``docker run -p 8080:80``: a DNAT rule for local
destinations, reachable from other namespaces, from the host at its own
addresses and at ``127.0.0.1``, and from the container itself (hairpin).
``127.0.0.0/8`` stays the host's own: where a mapping needs ``route_localnet``
it also drops, before NAT, packets to it that did not arrive on ``lo``.
:class:`Isolation` keeps networks apart, one IP version per object.
:class:`Masquerade` lets a bridge's subnet reach the outside with the host's
address. Both write only pynetns' own table (nftables) or chains (iptables),
chosen by ``Host(firewall=...)``, and live in ``namespace`` (``None``: the
root namespace), so a throwaway namespace can play the host.

>>> from pynetns import Host, Namespace
>>> host = Host(dry_run=True, firewall="nftables")
>>> PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host)).create()
>>> print(next(call for call in host.history if call.input))  # doctest: +ELLIPSIS
ip netns exec gw nft -f - <<'EOF'
add table ip pynetns
...
add rule ip pynetns published tcp dport 8080 counter dnat to 10.0.0.2:80 comment "pynetns:dry-run portmap/tcp/any/...
add rule ip pynetns postrouting ip saddr 10.0.0.2 ip daddr 10.0.0.2 tcp dport 80 ct status dnat masquerade ...
...
EOF

How shared state is kept, without any file: pynetns' rules carry comments
``"<tag> <object id> [lnet=<device>] [hp=<port>]"``; the settings pynetns
changed (``net.ipv4.ip_forward``, a device's ``route_localnet``, a bridge
port's ``hairpin`` flag) are kept as rules ``"pynetns saved <key>=<value>"``
in a chain nothing jumps to. When the last
object needing a sysctl is deleted, its saved value is written back; when the
last object is deleted, the table (or the chains and their jumps) goes too, and
so does a table iptables-nft made on pynetns' first rule (``table.nat=0``).
Every transaction reads, decides and writes under the host lock of its
namespace (:meth:`Host.lock <pynetns.Host.lock>`), so processes sharing a host
never remove each other's rules or jumps, nor restore a setting still in use.

Forwarding under a ``DROP`` policy: an accept in nftables cannot overrule a
drop in another base chain, so wherever an iptables ``filter FORWARD`` chain
exists in the namespace (iptables-nft or legacy, e.g. Docker's), pynetns adds
its accept rules in a ``PYNETNS-FORWARD`` chain jumped to first from there —
with either backend. A pure-nftables host dropping forwarded packets in
another table still needs its own rule; pynetns never edits other tables.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from ..backends.base import Family, FirewallBackend, FirewallRule, FirewallState, ListedRule, Scope
from ..backends.iptables import Iptables
from ..errors import AlreadyExists, BackendUnavailable, CommandError, InvalidValue, NotFound, PortInUse, from_command
from ..host import Host
from ..links import Bridge
from ..namespace import Namespace
from ..placement import Placed, to_namespace
from ..plan import attach_undo_errors
from ..runner import Call
from ..validation import (
    IPAddress,
    IPNetwork,
    converter,
    interface_name,
    ip_address,
    namespace_name,
    network,
    optional,
)
from ..validation import port as valid_port
from ..validation import protocol as valid_protocol

__all__ = ["PortMap", "Masquerade", "Isolation", "ForwardDrops", "Counters", "FORWARDING", "create_all", "delete_all",
           "preview", "remove_tagged"]

log = logging.getLogger(__name__)

#: the sysctl that turns on forwarding, per IP version
FORWARDING = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
RECORD_PREFIX = "pynetns saved "
_TAG = re.compile(r"pynetns:[A-Za-z0-9_.-]{1,40}")
_VALUE = re.compile(r"-?[0-9]{1,10}")
#: what ``ip netns exec`` and ``nsenter`` say when the program is not installed
_NOT_EXECUTED = re.compile(r"exec of .* failed: No such file|failed to execute .*: No such file")
#: UDP conntrack entries are flushed port by port; longer ranges are left to expire
CONNTRACK_FLUSH_LIMIT = 256


@attrs.frozen
class Counters:
    """Packets and bytes a rule has matched (what ``iptables -t nat -nvL`` shows)."""

    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.packets + other.packets, self.bytes + other.bytes)


def _owner(comment: str) -> tuple[str, str] | None:
    words = comment.split()
    return (words[0], words[1]) if len(words) >= 2 and _TAG.fullmatch(words[0]) else None


def _localnet_key(device: str) -> str:
    return f"net.ipv4.conf.{device}.route_localnet"


def _hairpin_key(port: str) -> str:
    return f"hairpin.{port}"


def _needed_keys(rules: Iterable[ListedRule]) -> set[str]:
    """The settings (besides forwarding) that the objects owning ``rules`` rely on, from their comments."""
    keys = set()
    for rule in rules:
        for word in rule.comment.split()[2:]:
            if word.startswith("lnet="):
                keys.add(_localnet_key(word[5:]))
            elif word.startswith("hp="):
                keys.add(_hairpin_key(word[3:]))
    return keys


@attrs.frozen
class _Path:
    """How the host reaches a mapping's container: the device (for route_localnet), the bridge port (hairpin)."""

    localnet: str | None = None
    hairpin_port: str | None = None
    #: the settings are the caller's to make (a Lab sets them on devices it owns, so nothing is recorded)
    managed: bool = False

    def keys(self) -> list[str]:
        if self.managed:
            return []
        return ([_localnet_key(self.localnet)] if self.localnet else []) + (
            [_hairpin_key(self.hairpin_port)] if self.hairpin_port else []
        )


class _Site:
    """The firewall of one namespace of one host, as pynetns reads and changes it."""

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        self.host: Host = namespace.host
        self.where = namespace.ref
        self._listeners: dict[str, tuple[Sequence[str], str]] = {}

    def listeners(self, protocol: str) -> tuple[Sequence[str], str]:
        """``ss``'s listening sockets of ``protocol`` here (argv and output), read once per transaction."""
        if protocol not in self._listeners:
            argv = ["ss", "-H", "-l", "-n", "-p", "-t" if protocol == "tcp" else "-u"]
            try:  # a failed ss must not pass for "no process listens"
                listing = self.run(argv).stdout
            except CommandError as error:
                if _NOT_EXECUTED.search(error.stderr):  # ip netns exec / nsenter found no ss
                    detail = f"in {self.namespace.name}: {error.stderr.strip()}"
                    raise BackendUnavailable("ss", detail=detail) from error
                raise
            self._listeners[protocol] = (argv, listing)
        return self._listeners[protocol]

    def run(self, argv: Sequence[str], *, check: bool = True) -> Any:
        return self.namespace.run(argv, check=check)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The host lock of this namespace: every read-modify-write of its firewall and settings runs under it."""
        return self.host.lock(site=self.where)

    def state(self, backend: FirewallBackend, family: Family, scope: Scope) -> FirewallState:
        outputs = []
        for argv in backend.list_commands(family, scope):
            result = self.namespace.run(argv, check=False)
            if result.returncode != 0:
                error = from_command(result.argv, result.returncode, result.stdout, result.stderr)
                if not isinstance(error, NotFound):
                    raise error
            outputs.append(result.stdout if result.returncode == 0 else "")
        return backend.parse(family, scope, outputs)

    def batch_argv(self, backend: FirewallBackend, family: Family) -> tuple[str, ...]:
        """The process that applies a script of ``backend`` here, atomically, from stdin."""
        return self.host.exec_argv(self.where, backend.batch_command(family))

    def apply(self, backend: FirewallBackend, family: Family, lines: Sequence[str]) -> None:
        if lines:
            self.host.runner.run_batch(self.batch_argv(backend, family), lines, atomic=True)

    def setting(self, key: str, value: str | None = None) -> str:
        """Read a setting (a sysctl, or ``hairpin.<port>``); with ``value``, write it."""
        if key.startswith("hairpin."):
            port = interface_name("port", key.removeprefix("hairpin."))
            if value is None:
                data = self.host.ip(self.where, ("-j", "-d", "link", "show", "dev", port)).json()
                slave = (data[0].get("linkinfo") or {}).get("info_slave_data") or {} if data else {}
                return "1" if slave.get("hairpin") else "0"
            state = "on" if value == "1" else "off"
            self.host.ip(self.where, ("link", "set", "dev", port, "type", "bridge_slave", "hairpin", state))
            return value
        return self.namespace.sysctl(key, value).strip()

    def forward_backends(self, family: Family) -> list[Iptables]:
        """The xtables flavours whose ``filter`` table exists here, so whose FORWARD may drop."""
        found = []
        try:
            listing = self.run(["nft", "-j", "list", "chain", "ip" if family == 4 else "ip6", "filter", "FORWARD"],
                               check=False)
            if listing.returncode == 0 and '"chain"' in listing.stdout:
                found.append(Iptables("nft"))
        except BackendUnavailable:
            pass
        names = "/proc/net/ip_tables_names" if family == 4 else "/proc/net/ip6_tables_names"
        tables = self.run(["cat", names], check=False)
        if tables.returncode == 0 and "filter" in tables.stdout.split():
            found.append(Iptables("legacy"))
        return found


class _Firewalled(Placed):
    """Base of the firewall objects: create, delete, exists, built from the rules each object declares.

    Several objects of one host and namespace can be created or deleted in one
    transaction per table with :func:`create_all` and :func:`delete_all`.
    """

    namespace: Namespace | None
    host: Host
    tag: str | None
    #: whether the object's traffic is forwarded (so ``ip_forward`` must be on)
    forwards = True

    # -- what each object declares -----------------------------------------

    @property
    def family(self) -> Family:
        raise NotImplementedError

    @property
    def object_id(self) -> str:
        """The identity written in every rule's comment (after the host's tag)."""
        raise NotImplementedError

    def _main_rules(self, path: _Path) -> list[FirewallRule]:
        """The rules for the host's firewall backend (NAT, isolation)."""
        raise NotImplementedError

    def _forward_rules(self) -> list[FirewallRule]:
        """Accepts for an xtables FORWARD chain that may drop (see the module docstring)."""
        return []

    def _check(self, site: _Site, state: FirewallState) -> None:
        """Refuse to create (raise) if something already holds what this object needs."""

    def _path(self, site: _Site) -> _Path:
        return _Path()

    def _changed(self, site: _Site) -> None:
        """Called after create and delete (flush conntrack entries)."""

    # -- shared -------------------------------------------------------------

    @property
    def owner_tag(self) -> str:
        tag = self._tag(self.tag)
        if not _TAG.fullmatch(tag):
            raise InvalidValue("tag", tag, "a firewall tag must be 'pynetns:' and 1-40 of [A-Za-z0-9_.-]")
        return tag

    def _comment(self, extra: str = "") -> str:
        return f"{self.owner_tag} {self.object_id}{extra}"

    def _site(self) -> _Site:
        return _Site(self._in(self.namespace))

    def _mine(self, state: FirewallState) -> list[ListedRule]:
        me = (self.owner_tag, self.object_id)
        return [rule for rule in state.owned() if _owner(rule.comment) == me]

    def rules(self) -> list[FirewallRule]:
        """The rules :meth:`create` adds (the backend's, then forwarding), without running anything."""
        return self._main_rules(_Path()) + self._forward_rules()

    def create(self) -> None:
        """Add this object's rules in one transaction; enable forwarding (recording the old value)."""
        create_all([self])

    def delete(self) -> None:
        """Remove exactly this object's rules; the last one out restores sysctls and removes the chains."""
        delete_all([self])

    def exists(self) -> bool:
        """True if this object's rules are in the firewall.

        Not under the host lock: each listing is atomic, and no other transaction touches this object's rules.
        """
        site, backend = self._site(), self.host.firewall
        return any(self._mine(site.state(backend, self.family, scope)) for scope in backend.scopes)


def _one_site(objects: Sequence[_Firewalled]) -> tuple[_Site, FirewallBackend]:
    """The site all ``objects`` share (one host, one namespace), and its firewall backend."""
    site = objects[0]._site()
    for other in objects[1:]:
        if other.host is not site.host or other._site().where != site.where:
            raise InvalidValue("objects", other.object_id, f"is not on the same host and namespace as {objects[0]}")
    return site, site.host.firewall


def _families(objects: Sequence[_Firewalled]) -> dict[Family, list[_Firewalled]]:
    groups: dict[Family, list[_Firewalled]] = {}
    for obj in objects:
        groups.setdefault(obj.family, []).append(obj)
    return groups


def create_all(objects: Sequence[_Firewalled]) -> None:
    """Create ``objects`` (one host, one namespace) in one transaction per table and family.

    The reads, checks and writes run under the host lock of the namespace, so processes sharing
    it see each other's rules; a failure removes what was added, so nothing is left half made.
    """
    if not objects:
        return
    site, backend = _one_site(objects)
    ids = [(obj.owner_tag, obj.object_id) for obj in objects]
    if len(set(ids)) != len(ids):
        raise InvalidValue("objects", sorted(ids), "the same object twice")
    families = _families(objects)
    # how the host reaches each object's address depends on routes, not on the firewall: found before the lock
    paths = {family: [obj._path(site) for obj in group] for family, group in families.items()}
    with site.lock():
        # Read and check everything first: a refusal (PortInUse, AlreadyExists) must not undo anything.
        steps = [_prepare(site, backend, family, group, paths[family]) for family, group in families.items()]
        try:
            for step in steps:
                step()
            for obj in objects:
                obj._changed(site)
        except BaseException as error:
            log.debug("create of %s failed; removing what was added", [obj.object_id for obj in objects])
            try:
                delete_all(objects, missing_ok=True)
            except Exception as failure:  # the original error stays the one raised; this one rides on it
                attach_undo_errors(error, [failure])
            raise


def _table_key(scope: Scope) -> str:
    return f"table.{scope}"


def _prepare(
    site: _Site, backend: FirewallBackend, family: Family, group: list[_Firewalled], paths: list[_Path]
) -> Callable[[], None]:
    """Check ``group`` against the firewall and return the function that adds its rules (call both under
    the site's lock: the function writes what the reads here found missing)."""
    state = site.state(backend, family, "nat")
    for obj in group:
        obj._check(site, state)
        if obj._mine(state):
            raise AlreadyExists(f"{obj.owner_tag} {obj.object_id} already exists")
    needs = [FORWARDING[family]] if any(obj.forwards for obj in group) else []
    needs = list(dict.fromkeys(needs + [key for path in paths for key in path.keys()]))  # noqa: SIM118
    records = _records(state)
    current = {key: site.setting(key) for key in needs}
    rules = [rule for obj, path in zip(group, paths, strict=True) for rule in obj._main_rules(path)]
    rules += [
        FirewallRule("records", f"{RECORD_PREFIX}{key}={value}", family, action="record")
        for key, value in current.items()
        if key not in records and _VALUE.fullmatch(value)
    ]
    states = {scope: state if scope == "nat" else site.state(backend, family, scope)
              for scope in _by_scope(backend, rules)}
    # Tables the backend's tool makes on first use (iptables-nft's): recorded, so the last one out removes them.
    made = [scope for scope in states if _table_key(scope) not in records and not _table_exists(site, backend,
                                                                                                  family, scope)]
    if made and "nat" not in states:  # the record itself goes into the nat table
        states["nat"] = state
        if _table_key("nat") not in records and not _table_exists(site, backend, family, "nat"):
            made.append("nat")
    rules += [FirewallRule("records", f"{RECORD_PREFIX}{_table_key(scope)}=0", family, action="record")
              for scope in made]
    scopes = _by_scope(backend, rules)
    forward = [rule for obj in group for rule in obj._forward_rules()]

    def add() -> None:
        # the raw table first: the loopback guard is in place before any DNAT that needs it
        for scope, scoped in sorted(scopes.items(), key=lambda item: item[0] != "raw"):
            _write(site, backend, family, scope, states[scope], scoped)
        for key, value in current.items():
            if value != "1":
                site.setting(key, "1")
        for target in site.forward_backends(family) if forward else ():
            _write(site, target, family, "filter", site.state(target, family, "filter"), forward)

    return add


def _write(
    site: _Site, backend: FirewallBackend, family: Family, scope: Scope, state: FirewallState,
    add: Sequence[FirewallRule],
) -> None:
    """Add ``add`` to what ``state`` shows; once more from a fresh read if a chain or jump appeared meanwhile
    (a process not taking the lock, e.g. an older pynetns)."""
    try:
        site.apply(backend, family, backend.script(family, scope, state, add=add))
    except AlreadyExists:
        log.debug("%s %s changed under this transaction; writing again from a fresh read", backend.name, scope)
        site.apply(backend, family, backend.script(family, scope, site.state(backend, family, scope), add=add))


def _by_scope(backend: FirewallBackend, rules: Iterable[FirewallRule]) -> dict[Scope, list[FirewallRule]]:
    scopes: dict[Scope, list[FirewallRule]] = {}
    for rule in rules:
        scopes.setdefault(backend.scope_of(rule.chain), []).append(rule)
    return scopes


def preview(objects: Sequence[_Firewalled]) -> list[Call]:
    """The transactions :func:`create_all` writes for ``objects``, as on a firewall holding no pynetns rule
    yet (exact for a fresh namespace); the reads, checks and sysctls around them are left out."""
    if not objects:
        return []
    site, backend = _one_site(objects)
    calls = []
    for family, group in _families(objects).items():
        rules = [rule for obj in group for rule in obj._main_rules(obj._path(site))]
        for scope, scoped in _by_scope(backend, rules).items():
            lines = backend.script(family, scope, FirewallState(), add=scoped)
            calls.append(Call(site.batch_argv(backend, family), "\n".join(lines) + "\n"))
    return calls


def delete_all(objects: Sequence[_Firewalled], *, missing_ok: bool = False) -> None:
    """Remove exactly the rules of ``objects``; the last one out restores sysctls and removes the chains.

    Under the host lock of the namespace, like :func:`create_all`.
    """
    if not objects:
        return
    site, backend = _one_site(objects)
    with site.lock():
        for family, group in _families(objects).items():
            ids = {(obj.owner_tag, obj.object_id) for obj in group}
            found = _delete_rules(site, backend, family, _owned_by(ids))
            missing = sorted(ids - found)
            if missing and not missing_ok:
                raise NotFound(f"{' '.join(missing[0])} does not exist")
        for obj in objects:
            obj._changed(site)


def _owned_by(ids: set[tuple[str, str]]) -> Callable[[ListedRule], bool]:
    return lambda rule: _owner(rule.comment) in ids


def remove_tagged(namespace: Namespace, tag: str) -> int:
    """Remove every firewall rule carrying ``tag`` in ``namespace`` (a lab's, after its owner died).

    Returns how many rules went; sysctls are restored as :func:`delete_all` does, under the same lock
    (several cleanups at once each remove what is still there).
    """
    if not _TAG.fullmatch(tag):
        raise InvalidValue("tag", tag, "a firewall tag must be 'pynetns:' and 1-40 of [A-Za-z0-9_.-]")
    site = _Site(namespace)
    count = 0
    with site.lock():
        for family in (4, 6):
            found = _delete_rules(site, site.host.firewall, family,
                                  lambda rule: (_owner(rule.comment) or ("", ""))[0] == tag)
            count += len(found)
    return count


def _delete_rules(
    site: _Site, backend: FirewallBackend, family: Family, select: Callable[[ListedRule], bool]
) -> set[tuple[str, str]]:
    """Remove the selected rules of one family; returns the owners (tag, object id) whose rules were found.

    What is shared is derived from what remains: a setting is restored, and a table pynetns' tool
    made is removed, only when no remaining rule needs it. Call it under the site's lock.
    """
    states = {scope: site.state(backend, family, scope) for scope in backend.scopes}
    owned = [rule for state in states.values() for rule in state.owned()]
    found = {owner for rule in owned if select(rule) and (owner := _owner(rule.comment)) is not None}
    remaining = [rule for rule in owned if not select(rule)]
    needed = _needed_keys(remaining)
    if any(rule.chain != "isolate" for rule in remaining):
        needed.add(FORWARDING[family])
    records = _records(states["nat"])
    if remaining:  # a table goes with the family's last rule
        needed.update(key for key in records if key.startswith("table."))
    restore = {key: value for key, (value, _) in records.items() if key not in needed}
    # settings first: route_localnet goes off before the loopback guard that made it safe
    for key, value in restore.items():
        if key.startswith("table."):
            continue
        try:
            site.setting(key, value)
        except CommandError as error:  # e.g. the device is gone, with its setting
            log.debug("could not restore %s=%s: %s", key, value, error)
    for scope, state in states.items():
        if not state.exists:
            continue
        mine = [rule for rule in state.owned() if select(rule)]
        others = [rule for rule in state.owned() if not select(rule)]
        kept = False  # records still needed (a table's, while only filter rules remain) keep the nat chains
        if scope == "nat":
            mine += [records[key][1] for key in restore]
            kept = len(restore) < len(records)
        lines = backend.script(family, scope, state, remove=mine) if others or kept else backend.script(
            family, scope, state, teardown=True)
        site.apply(backend, family, lines)
    for target in site.forward_backends(family):
        filter_state = site.state(target, family, "filter")
        if not filter_state.exists:
            continue
        mine = [rule for rule in filter_state.owned() if select(rule)]
        others = [rule for rule in filter_state.owned() if not select(rule)]
        lines = target.script(family, "filter", filter_state, remove=mine if others else (), teardown=not others)
        site.apply(target, family, lines)
    for scope in backend.scopes:
        if _table_key(scope) in restore:
            _drop_table(site, backend, family, scope)
    return found


def _table_exists(site: _Site, backend: FirewallBackend, family: Family, scope: Scope) -> bool:
    """Whether the table of ``scope`` exists, for a backend whose tool makes it on first use (else True)."""
    commands = backend.table_commands(family, scope)
    if commands is None:
        return True
    try:
        return bool(site.run(commands[0], check=False).returncode == 0)
    except BackendUnavailable:  # iptables-nft without the nft program: the table will stay
        return True


def _drop_table(site: _Site, backend: FirewallBackend, family: Family, scope: Scope) -> None:
    """Remove a table the backend's tool made for pynetns, if it holds nothing (else someone uses it now)."""
    commands = backend.table_commands(family, scope)
    if commands is None:
        return
    listing, remove = commands
    try:
        result = site.run(listing, check=False)
        if result.returncode == 0 and backend.table_vacant(family, scope, result.stdout):
            site.run(remove)
        else:
            log.debug("leaving the %s table of IPv%d: not empty, or gone", scope, family)
    except (BackendUnavailable, CommandError) as error:  # e.g. iptables-nft without the nft program
        log.info("could not remove the %s table pynetns' iptables made: %s", scope, error)


def _records(state: FirewallState) -> dict[str, tuple[str, ListedRule]]:
    found = {}
    for rule in state.rules:
        if rule.chain == "records" and rule.comment.startswith(RECORD_PREFIX):
            key, _, value = rule.comment[len(RECORD_PREFIX) :].partition("=")
            if _VALUE.fullmatch(value):
                found[key] = (value, rule)
    return found


def _range(low: int, high: int) -> str:
    return f"{low}-{high}"


@attrs.define(eq=False)
class PortMap(_Firewalled):
    """Publish ``host_port`` (to ``host_port_end``) of the host on ``address``:``port``, like ``docker run -p``.

    A range is one rule: host ports ``host_port..host_port_end`` map one to one
    onto ``port..port + (host_port_end - host_port)``. With ``host_ip`` only
    that address answers; ``127.0.0.1`` answers only on the host itself; ``0.0.0.0`` and ``::``
    mean every address (of the family of ``address``), like no ``host_ip``.
    """

    host_port: int = attrs.field(converter=converter(valid_port))  # type: ignore[misc]
    address: IPAddress = attrs.field(converter=converter(ip_address))  # type: ignore[misc]
    port: int = attrs.field(converter=converter(valid_port))  # type: ignore[misc]
    protocol: str = attrs.field(default="tcp", converter=converter(valid_protocol))  # type: ignore[misc]
    host_ip: IPAddress | None = attrs.field(default=None, converter=converter(optional(ip_address)))  # type: ignore[misc]
    host_port_end: int | None = attrs.field(default=None, converter=converter(optional(valid_port)))  # type: ignore[misc]
    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    host: Host = attrs.field(default=None)
    tag: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.host_port_end is not None and self.host_port_end < self.host_port:
            raise InvalidValue("host_port_end", self.host_port_end, f"must not be below host_port={self.host_port}")
        if self.port + (self.last_host_port - self.host_port) > 65535:
            raise InvalidValue("port", self.port, "the container range would end above 65535")
        if self.host_ip is not None and self.host_ip.version != self.address.version:
            wildcard = "0.0.0.0" if self.address.version == 4 else "::"
            rule = f"must be IPv{self.address.version} like the address (every address: {wildcard} or None)"
            raise InvalidValue("host_ip", str(self.host_ip), rule)
        if self.host_ip is not None and self.host_ip.is_unspecified:
            self.host_ip = None  # 0.0.0.0 / "::": every address of the address's family, as Docker reads it
        if self.host_ip is not None and (self.host_ip.is_multicast or (self.host_ip.version == 4
                                                                       and self.host_ip.is_reserved)):
            rule = "must be a unicast address of the host (or 0.0.0.0 / :: / None: every address)"
            raise InvalidValue("host_ip", str(self.host_ip), rule)
        if self.address.is_loopback or self.address.is_unspecified or self.address.is_multicast:
            raise InvalidValue("address", str(self.address), "must be a unicast address of another namespace")
        self._place()

    @property
    def last_host_port(self) -> int:
        return self.host_port if self.host_port_end is None else self.host_port_end

    @property
    def host_ports(self) -> tuple[int, int]:
        return (self.host_port, self.last_host_port)

    @property
    def ports(self) -> tuple[int, int]:
        """The container's ports."""
        return (self.port, self.port + self.last_host_port - self.host_port)

    @property
    def family(self) -> Family:
        return 4 if self.address.version == 4 else 6

    @property
    def object_id(self) -> str:
        where = "any" if self.host_ip is None else str(self.host_ip)
        return f"portmap/{self.protocol}/{where}/{_range(*self.host_ports)}"

    def __str__(self) -> str:
        ports = self.host_port if self.host_port_end is None else _range(*self.host_ports)
        inner = self.port if self.host_port_end is None else _range(*self.ports)
        where = "" if self.host_ip is None else f"{self.host_ip}:"
        return f"{where}{ports}->{self.address}:{inner}/{self.protocol}"

    # -- rules --------------------------------------------------------------

    def _main_rules(self, path: _Path) -> list[FirewallRule]:
        family, proto, address = self.family, self.protocol, str(self.address)
        hairpin = "" if path.hairpin_port is None else f" hp={path.hairpin_port}"
        rules = []
        if family == 4 and (path.localnet is not None or (self.host_ip is not None and self.host_ip.is_loopback)):
            rules.append(_loopback_guard(self._comment()))  # first: no moment with DNAT but without the guard
        rules += [
            FirewallRule("dnat", self._comment(), family, proto,  # type: ignore[arg-type]
                         daddr=None if self.host_ip is None else str(self.host_ip), dport=self.host_ports,
                         action="dnat", to_address=address, to_port=self.ports, counter=True),
            # hairpin: the container reaching its own published port through a host address
            FirewallRule("postrouting", self._comment(hairpin), family, proto,  # type: ignore[arg-type]
                         saddr=address, daddr=address, dport=self.ports, ct_dnat=True, action="masquerade"),
        ]
        if path.localnet is not None:
            # 127.0.0.1 → container: the source must not stay loopback (route_localnet lets it leave).
            rules.append(FirewallRule("postrouting", self._comment(f" lnet={path.localnet}"), family,
                                      proto, saddr="127.0.0.0/8", daddr=address,  # type: ignore[arg-type]
                                      dport=self.ports, ct_dnat=True, action="masquerade"))
        return rules

    def _forward_rules(self) -> list[FirewallRule]:
        family, proto, address = self.family, self.protocol, str(self.address)
        return [
            FirewallRule("forward", self._comment(), family, proto,  # type: ignore[arg-type]
                         daddr=address, dport=self.ports, ct_dnat=True, action="accept"),
            FirewallRule("forward", self._comment(), family, proto,  # type: ignore[arg-type]
                         saddr=address, sport=self.ports, ct_dnat=True, action="accept"),
        ]

    def _path(self, site: _Site) -> _Path:
        """The device toward the container (``route_localnet`` for 127.0.0.1) and, on a bridge, its port.

        With ``br_netfilter`` loaded (as on Docker hosts) a DNATed packet
        whose new destination is on the bridge it came from is *bridged*
        back, so hairpin needs the container's bridge port in hairpin mode,
        as Docker sets it when it runs without the userland proxy.
        """
        address = str(self.address)
        routes = self.host.ip(self.where, ("-j", "route", "get", address)).json()
        device = routes[0].get("dev") if routes else None
        if not device or device == "lo":
            return _Path()
        device = interface_name("device", device)
        localnet = device if self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback) else None
        return _Path(localnet, self._bridge_port(site, device))

    def _bridge_port(self, site: _Site, device: str) -> str | None:
        links = self.host.ip(self.where, ("-j", "-d", "link", "show", "dev", device)).json()
        if not links or (links[0].get("linkinfo") or {}).get("info_kind") != "bridge":
            return None
        address = str(self.address)
        ping = ["ping", "-c1", "-W1", address] if self.family == 4 else ["ping", "-6", "-c1", "-W1", address]
        site.run(ping, check=False)  # learn the container's MAC, and its port in the bridge's table
        neighbours = self.host.ip(self.where, ("-j", "neigh", "show", "to", address, "dev", device)).json()
        mac = next((item.get("lladdr") for item in neighbours if item.get("lladdr")), None)
        if mac is None:
            log.debug("no neighbour entry for %s on %s; hairpin mode not set", address, device)
            return None
        fdb = site.run(["bridge", "-j", "fdb", "show", "br", device]).json()
        port = next((item.get("ifname") for item in fdb if item.get("mac") == mac and item.get("ifname") != device),
                    None)
        return None if port is None else interface_name("port", port)

    # -- conflicts ----------------------------------------------------------

    def _overlaps(self, low: int, high: int, address: str) -> bool:
        mine_low, mine_high = self.host_ports
        if high < mine_low or low > mine_high:
            return False
        return self.host_ip is None or address in ("any", "*", "0.0.0.0", "::") or address == str(self.host_ip)

    def _check(self, site: _Site, state: FirewallState) -> None:
        for rule in state.owned():
            owner = _owner(rule.comment)
            if owner is None or not owner[1].startswith("portmap/"):
                continue
            try:
                _, proto, address, ports = owner[1].split("/")
                low, high = (int(part) for part in ports.split("-"))
            except ValueError:
                continue
            if proto == self.protocol and self._overlaps(low, high, address):
                raise PortInUse.held(self._what(), f"{owner[0]} ({owner[1]})")
        argv, listing = site.listeners(self.protocol)
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            address, _, number = fields[3].rpartition(":")
            address = address.strip("[]").split("%")[0]
            if not number.isdigit():
                continue
            wildcard = address in ("*", "0.0.0.0", "::")
            if not wildcard and ":" in address and self.family == 4:
                continue
            if not wildcard and "." in address and self.family == 6:
                continue
            if self._overlaps(int(number), int(number), address):
                users = next((field for field in fields[5:] if field.startswith("users:")), fields[3])
                raise PortInUse.held(self._what(), f"a process listening on {fields[3]} {users}".strip(),
                                     site.host.exec_argv(site.where, argv), line)


    def _what(self) -> str:
        where = "every address" if self.host_ip is None else str(self.host_ip)
        ports = f"port {self.host_port}" if self.host_port_end is None else f"ports {_range(*self.host_ports)}"
        return f"{self.protocol} {ports} on {where}"

    # -- inspection ---------------------------------------------------------

    def counters(self) -> Counters:
        """Packets and bytes DNATed by this mapping so far (from every direction)."""
        state = self._site().state(self.host.firewall, self.family, "nat")
        total = Counters()
        for rule in self._mine(state):
            if rule.chain == "dnat":
                total += Counters(rule.packets, rule.bytes)
        return total

    def _changed(self, site: _Site) -> None:
        """UDP: drop conntrack entries of the host ports, so a new mapping applies at once."""
        if self.protocol != "udp":
            return
        low, high = self.host_ports
        if high - low >= CONNTRACK_FLUSH_LIMIT:
            log.warning("not flushing conntrack for %d UDP ports of %s; old entries expire on their own",
                        high - low + 1, self)
            return
        for number in range(low, high + 1):
            argv = ["conntrack", "-D", "-f", "ipv4" if self.family == 4 else "ipv6", "-p", "udp",
                    "--orig-port-dst", str(number)]
            if self.host_ip is not None:
                argv += ["--orig-dst", str(self.host_ip)]
            site.run(argv, check=False)  # exit 1 when nothing matched


def _loopback_guard(comment: str) -> FirewallRule:
    """Drop packets to 127.0.0.0/8 that did not arrive on ``lo``, before NAT (CVE-2020-8558).

    ``route_localnet`` lets 127.0.0.0/8 cross a device, and a DNAT rule for
    127.0.0.1 matches in prerouting whatever the device: without this, a lab
    namespace reaches the host's loopback-bound ports and listeners by sending
    to 127.0.0.1 through its gateway. The host's own replies are not caught:
    before NAT they are still addressed to the device's address.
    """
    return FirewallRule("guard", comment, 4, daddr="127.0.0.0/8", not_iif="lo", action="drop",
                        counter=True)


def _bridge_name(value: Any) -> str:
    if isinstance(value, Bridge):
        return value.name
    return interface_name("bridge", value)


@attrs.define(eq=False)
class Masquerade(_Firewalled):
    """Outbound NAT for a bridge's subnet, like Docker's ``-s 172.17.0.0/16 ! -o docker0 -j MASQUERADE``.

    Also masquerades traffic between two addresses of the subnet that was
    DNATed (one container reaching another's published port through the
    host), and accepts the bridge's forwarded traffic where iptables' FORWARD
    chain could drop it.
    """

    subnet: IPNetwork = attrs.field(converter=converter(network))  # type: ignore[misc]
    bridge: str = attrs.field(converter=_bridge_name)
    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    host: Host = attrs.field(default=None)
    tag: str | None = None

    def __attrs_post_init__(self) -> None:
        self._place()

    @classmethod
    def for_bridge(cls, bridge: Bridge, **kwargs: Any) -> Masquerade:
        """Masquerade the subnet of ``bridge``'s address, in the bridge's namespace."""
        if bridge.address is None:
            raise InvalidValue("bridge", bridge.name, "has no address, so no subnet")
        kwargs.setdefault("namespace", bridge.namespace)
        kwargs.setdefault("host", bridge.host)
        return cls(bridge.address.network, bridge, **kwargs)

    @property
    def family(self) -> Family:
        return 4 if self.subnet.version == 4 else 6

    @property
    def object_id(self) -> str:
        return f"masq/{self.bridge}/{self.subnet}"

    def __str__(self) -> str:
        return f"masquerade {self.subnet} ! -o {self.bridge}"


    def _main_rules(self, path: _Path) -> list[FirewallRule]:
        subnet, family = str(self.subnet), self.family
        return [
            FirewallRule("postrouting", self._comment(), family, saddr=subnet, not_oif=self.bridge,
                         action="masquerade"),
            FirewallRule("postrouting", self._comment(), family, saddr=subnet, daddr=subnet, ct_dnat=True,
                         action="masquerade"),
        ]

    def _forward_rules(self) -> list[FirewallRule]:
        family = self.family
        return [
            FirewallRule("forward", self._comment(), family, iif=self.bridge, action="accept"),
            FirewallRule("forward", self._comment(), family, oif=self.bridge, ct_established=True, action="accept"),
        ]



def _family(value: Any) -> Family:
    if value not in (4, 6) or isinstance(value, bool):
        raise InvalidValue("family", value, "must be 4 or 6")
    return 4 if value == 4 else 6


@attrs.define(eq=False)
class _Drops(_Firewalled):
    """Base of the objects that only drop forwarded traffic (the firewall's isolation chain), one IP version each."""

    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace, kw_only=True)
    host: Host = attrs.field(default=None, kw_only=True)
    tag: str | None = attrs.field(default=None, kw_only=True)
    forwards = False

    def __attrs_post_init__(self) -> None:
        self._place()

    def _id(self, kind: str, name: str) -> str:
        """``kind/name`` for IPv4 (as ever), ``kind6/name`` for IPv6: both versions can live side by side."""
        return f"{kind}{'' if self.family == 4 else '6'}/{name}"


def _bridge_names(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_bridge_name(value) for value in values)


@attrs.define(eq=False)
class Isolation(_Drops):
    """Docker's network isolation for one bridge: no forwarding to or from ``others``.

    Like Docker's ``DOCKER-ISOLATION`` chains: two networks cannot reach each
    other, but a published port stays reachable from any network (DNATed
    connections are let through). With ``internal=True`` the bridge's traffic
    may not leave it at all, like ``docker network create --internal``.
    One object covers one IP version (``family``); :meth:`both` gives the
    pair a bridge needs, since interfaces forward IPv6 as readily as IPv4.
    """

    bridge: str = attrs.field(converter=_bridge_name)
    others: tuple[str, ...] = attrs.field(default=(), converter=_bridge_names)
    internal: bool = False
    #: the IP version whose forwarding this covers; :meth:`both` makes one of each
    family: Family = attrs.field(default=4, converter=_family, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if self.bridge in self.others:
            raise InvalidValue("others", list(self.others), f"must not contain the bridge {self.bridge} itself")
        super().__attrs_post_init__()

    @classmethod
    def both(cls, bridge: Any, others: Iterable[Any] = (), internal: bool = False, **kwargs: Any) -> list[Isolation]:
        """The isolation of ``bridge`` for IPv4 and for IPv6: a network is isolated only if both are."""
        return [cls(bridge, tuple(others), internal, family=family, **kwargs) for family in (4, 6)]

    @property
    def object_id(self) -> str:
        return self._id("isolate", self.bridge)

    def __str__(self) -> str:
        return (f"isolate {self.bridge} from {', '.join(self.others) or 'nothing'}" + (" (internal)" * self.internal)
                + (" (IPv6)" * (self.family == 6)))

    def _main_rules(self, path: _Path) -> list[FirewallRule]:
        comment, family = self._comment(), self.family
        rules = []
        for other in self.others:
            rules += [
                FirewallRule("isolate", comment, family, iif=self.bridge, oif=other, not_ct_dnat=True, action="drop"),
                FirewallRule("isolate", comment, family, iif=other, oif=self.bridge, not_ct_dnat=True, action="drop"),
            ]
        if self.internal:
            rules += [
                FirewallRule("isolate", comment, family, iif=self.bridge, not_oif=self.bridge, action="drop"),
                FirewallRule("isolate", comment, family, not_iif=self.bridge, oif=self.bridge, action="drop"),
            ]
        return rules


def _address_pairs(pairs: Iterable[tuple[Any, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(ip_address("source", source)), str(ip_address("destination", destination)))
                 for source, destination in pairs)


@attrs.define(eq=False)
class ForwardDrops(_Drops):
    """Drop forwarded traffic between pairs of addresses (a lab's partitions, on its host side).

    Forwarding sees a connection after DNAT and before masquerade, so this
    also cuts the way round through a published port.
    """

    name: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    pairs: tuple[tuple[str, str], ...] = attrs.field(converter=_address_pairs)

    def __attrs_post_init__(self) -> None:
        versions = {ipaddress.ip_address(address).version for pair in self.pairs for address in pair}
        if len(versions) > 1:
            raise InvalidValue("pairs", [list(pair) for pair in self.pairs],
                               "must be all IPv4 or all IPv6 (make one ForwardDrops per version)")
        super().__attrs_post_init__()

    @property
    def family(self) -> Family:
        """The pairs' IP version (IPv4 when there is none)."""
        return 6 if self.pairs and ipaddress.ip_address(self.pairs[0][0]).version == 6 else 4

    @property
    def object_id(self) -> str:
        return self._id("drop", self.name)

    def _main_rules(self, path: _Path) -> list[FirewallRule]:
        comment = self._comment()
        return [FirewallRule("isolate", comment, self.family, saddr=source, daddr=destination, action="drop")
                for source, destination in self.pairs]
