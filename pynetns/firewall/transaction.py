"""The firewall transaction: read the state (an explicit first phase), compute, write once.

:func:`create_all` and :func:`delete_all` change several objects of one host
and namespace, one transaction per table and family; :func:`remove_tagged`
removes what a dead owner left; :func:`preview` shows what :func:`create_all`
writes and runs nothing.

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

>>> from pynetns import Host, Namespace
>>> from pynetns.firewall import PortMap
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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence

from ..backends.base import Family, FirewallBackend, FirewallRule, FirewallState, ListedRule, Scope
from ..errors import AlreadyExists, BackendUnavailable, CommandError, InvalidValue, NotFound
from ..namespace import Namespace
from ..plan import attach_undo_errors
from ..runner import Call
from .base import FORWARDING, Declared, check_tag, owner_of
from .site import HostPath, Site, hairpin_key, localnet_key

__all__ = ["RECORD_PREFIX", "create_all", "delete_all", "preview", "remove_tagged"]

log = logging.getLogger(__name__)

RECORD_PREFIX = "pynetns saved "
_VALUE = re.compile(r"-?[0-9]{1,10}")


def _needed_keys(rules: Iterable[ListedRule]) -> set[str]:
    """The settings (besides forwarding) that the objects owning ``rules`` rely on, from their comments."""
    keys = set()
    for rule in rules:
        for word in rule.comment.split()[2:]:
            if word.startswith("lnet="):
                keys.add(localnet_key(word[5:]))
            elif word.startswith("hp="):
                keys.add(hairpin_key(word[3:]))
    return keys


def _one_site(objects: Sequence[Declared]) -> tuple[Site, FirewallBackend]:
    """The site all ``objects`` share (one host, one namespace), and its firewall backend."""
    site = objects[0]._site()
    for other in objects[1:]:
        if other.host is not site.host or other._site().where != site.where:
            raise InvalidValue("objects", other.object_id, f"is not on the same host and namespace as {objects[0]}")
    return site, site.host.firewall


def _families(objects: Sequence[Declared]) -> dict[Family, list[Declared]]:
    groups: dict[Family, list[Declared]] = {}
    for obj in objects:
        groups.setdefault(obj.family, []).append(obj)
    return groups


def create_all(objects: Sequence[Declared]) -> None:
    """Create ``objects`` (one host, one namespace) in one transaction per table and family.

    The reads, checks and writes run under the host lock of the namespace, so processes sharing
    it see each other's rules; a failure removes what was added, so nothing is left half made.
    """
    if not objects:
        return
    site, backend = _one_site(objects)
    # per family: a dual-stack port map is two objects of one id, one in each family's table
    ids = [(obj.owner_tag, obj.object_id, obj.family) for obj in objects]
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
            _forget_connections(site, backend, objects)
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
    site: Site, backend: FirewallBackend, family: Family, group: list[Declared], paths: list[HostPath]
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
    states = {
        scope: state if scope == "nat" else site.state(backend, family, scope) for scope in _by_scope(backend, rules)
    }
    # Tables the backend's tool makes on first use (iptables-nft's): recorded, so the last one out removes them.
    made = [
        scope
        for scope in states
        if _table_key(scope) not in records and not _table_exists(site, backend, family, scope)
    ]
    if made and "nat" not in states:  # the record itself goes into the nat table
        states["nat"] = state
        if _table_key("nat") not in records and not _table_exists(site, backend, family, "nat"):
            made.append("nat")
    rules += [
        FirewallRule("records", f"{RECORD_PREFIX}{_table_key(scope)}=0", family, action="record") for scope in made
    ]
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
    site: Site,
    backend: FirewallBackend,
    family: Family,
    scope: Scope,
    state: FirewallState,
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


def preview(objects: Sequence[Declared]) -> list[Call]:
    """The transactions :func:`create_all` writes for ``objects``, as on a firewall holding no pynetns rule
    yet (exact for a fresh namespace); the reads, checks and sysctls around them are left out.

    Runs nothing: the path to a container is not probed, so a :class:`PortMap` whose path only the
    kernel knows shows its rules without the ``route_localnet`` and hairpin parts (a lab's port maps
    know their path, so their preview is whole)."""
    if not objects:
        return []
    site, backend = _one_site(objects)
    site = Site(site.namespace, reads=False)  # a plan only: the path to a container is not probed
    calls = []
    for family, group in _families(objects).items():
        rules = [rule for obj in group for rule in obj._main_rules(obj._path(site))]
        for scope, scoped in _by_scope(backend, rules).items():
            lines = backend.script(family, scope, FirewallState(), add=scoped)
            calls.append(Call(site.batch_argv(backend, family), "\n".join(lines) + "\n"))
    return calls


def delete_all(objects: Sequence[Declared], *, missing_ok: bool = False) -> None:
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
        _forget_connections(site, backend, objects)


def _forget_connections(site: Site, backend: FirewallBackend, objects: Sequence[Declared]) -> None:
    """Drop the conntrack entries of the objects' UDP host ports (an old flow would bypass a new mapping)."""
    for obj in objects:
        for port, destination in obj._stale_ports():
            site.run(
                backend.conntrack_delete(obj.family, "udp", port, destination), check=False
            )  # exit 1 when nothing matched


def _owned_by(ids: set[tuple[str, str]]) -> Callable[[ListedRule], bool]:
    return lambda rule: owner_of(rule.comment) in ids


def remove_tagged(namespace: Namespace, tag: str) -> int:
    """Remove every firewall rule carrying ``tag`` in ``namespace`` (a lab's, after its owner died).

    Returns how many rules went; sysctls are restored as :func:`delete_all` does, under the same lock
    (several cleanups at once each remove what is still there).
    """
    check_tag(tag)
    site = Site(namespace)
    count = 0
    with site.lock():
        for family in (4, 6):
            found = _delete_rules(
                site, site.host.firewall, family, lambda rule: (owner_of(rule.comment) or ("", ""))[0] == tag
            )
            count += len(found)
    return count


def _delete_rules(
    site: Site, backend: FirewallBackend, family: Family, select: Callable[[ListedRule], bool]
) -> set[tuple[str, str]]:
    """Remove the selected rules of one family; returns the owners (tag, object id) whose rules were found.

    What is shared is derived from what remains: a setting is restored, and a table pynetns' tool
    made is removed, only when no remaining rule needs it. Call it under the site's lock.
    """
    states = {scope: site.state(backend, family, scope) for scope in backend.scopes}
    owned = [rule for state in states.values() for rule in state.owned()]
    found = {owner for rule in owned if select(rule) and (owner := owner_of(rule.comment)) is not None}
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
        lines = (
            backend.script(family, scope, state, remove=mine)
            if others or kept
            else backend.script(family, scope, state, teardown=True)
        )
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


def _table_exists(site: Site, backend: FirewallBackend, family: Family, scope: Scope) -> bool:
    """Whether the table of ``scope`` exists, for a backend whose tool makes it on first use (else True)."""
    commands = backend.table_commands(family, scope)
    if commands is None:
        return True
    try:
        return bool(site.run(commands[0], check=False).returncode == 0)
    except BackendUnavailable:  # iptables-nft without the nft program: the table will stay
        return True


def _drop_table(site: Site, backend: FirewallBackend, family: Family, scope: Scope) -> None:
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
