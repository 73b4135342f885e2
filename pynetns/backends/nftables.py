"""The nftables firewall backend: one table of pynetns' own, changed by atomic ``nft -f -`` transactions.

Everything lives in ``table ip pynetns`` (``ip6`` for IPv6): the NAT base
chains ``prerouting`` and ``output`` jump to ``published`` for local
destinations (``fib daddr type local``), ``postrouting`` masquerades,
``isolation`` (a filter chain on the forward hook) drops traffic between
networks, ``guard`` (on the prerouting hook at raw priority, before NAT) drops
packets to 127.0.0.0/8 that did not arrive on ``lo``, and ``records`` keeps the
sysctl values pynetns changed. Deleting the table undoes everything; no other
table is ever written.

Scripts are built only from validated values, and every token is checked
again here (a newline or ``;`` cannot reach ``nft``):

>>> from pynetns.backends.base import FirewallRule, FirewallState
>>> rule = FirewallRule("dnat", "pynetns:doc portmap/tcp/any/8080-8080", protocol="tcp",
...                     dport=(8080, 8080), action="dnat", to_address="10.0.0.2", to_port=(80, 80), counter=True)
>>> for line in Nftables().script(4, "nat", FirewallState(), add=[rule])[-1:]:
...     print(line)
add rule ip pynetns published tcp dport 8080 counter dnat to 10.0.0.2:80 comment "pynetns:doc portmap/tcp/any/8080-8080"
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidValue
from ..validation import batch_token, interface_name
from .base import (
    JUMP_COMMENT,
    Argv,
    Family,
    FirewallBackend,
    FirewallRule,
    FirewallState,
    ListedRule,
    QueueHook,
    Scope,
    canonical_address,
    check_comment,
    partition_addresses,
    partition_comment,
    port_range,
)
from .iptables import Iptables

__all__ = ["PARTITION_TABLE", "TABLE", "Nftables"]

TABLE = "pynetns"
#: the table of a namespace's partition drops (``inet``: both IP versions)
PARTITION_TABLE = "pynetns_partition"

# pynetns' chain name for each rule chain, and the base chains with their hooks.
_CHAINS = {
    "dnat": "published",
    "postrouting": "postrouting",
    "isolate": "isolation",
    "records": "records",
    "guard": "guard",
}
_BASE = {
    "prerouting": "type nat hook prerouting priority -100; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority 100; policy accept;",
    # a drop in any base chain is final, so isolation holds even where another table accepts
    "isolation": "type filter hook forward priority 0; policy accept;",
    # before conntrack and NAT (raw), so a dropped packet is never DNATed and never counted
    "guard": "type filter hook prerouting priority -300; policy accept;",
}
_JUMPS = ("prerouting", "output")
_REVERSE = {name: chain for chain, name in _CHAINS.items()}


def _family(family: Family) -> str:
    return "ip" if family == 4 else "ip6"


def _name(value: str) -> str:
    return '"' + interface_name("interface", value) + '"'


class Nftables(FirewallBackend):
    """nftables through ``nft`` (1.0 or later): text scripts from validated tokens, ``nft -j`` listings."""

    name = "nftables"

    @classmethod
    def usable_command(cls) -> Argv:
        return ("nft", "-j", "list", "tables")

    def describe(self) -> str:
        return f"nftables (table {TABLE})"

    # -- reading -------------------------------------------------------------

    def list_commands(self, family: Family, scope: Scope) -> list[Argv]:
        self._nat_only(scope)
        return [("nft", "-j", "-a", "list", "table", _family(family), TABLE)]

    def parse(self, family: Family, scope: Scope, outputs: Sequence[str]) -> FirewallState:
        self._nat_only(scope)
        text = outputs[0].strip() if outputs else ""
        if not text:
            return FirewallState()
        chains: set[str] = set()
        rules: list[ListedRule] = []
        for item in json.loads(text).get("nftables", []):
            if "chain" in item:
                chains.add(item["chain"]["name"])
            rule: dict[str, Any] | None = item.get("rule")
            if rule is None:
                continue
            name = rule["chain"]
            counter: dict[str, int] = next((expr["counter"] for expr in rule.get("expr", []) if "counter" in expr), {})
            kind = "jump" if name in _JUMPS else _REVERSE.get(name)
            if kind is None:
                continue
            rules.append(
                ListedRule(
                    kind,  # type: ignore[arg-type]
                    rule.get("comment", ""),
                    f"{name} {int(rule['handle'])}",
                    int(counter.get("packets", 0)),
                    int(counter.get("bytes", 0)),
                )
            )
        return FirewallState(frozenset(chains), tuple(rules))

    # -- partitions ------------------------------------------------------------

    def partition_block(self, addresses: Sequence[str], tag: str, *, first: bool = True) -> list[tuple[Argv, str]]:
        by_version = partition_addresses(addresses)
        comment = partition_comment(tag)
        lines = [
            f"add table inet {PARTITION_TABLE}",
            f"flush table inet {PARTITION_TABLE}",
            f"add chain inet {PARTITION_TABLE} input {{ type filter hook input priority -10; policy accept; }}",
        ]
        for version, found in sorted(by_version.items()):
            family = "ip" if version == 4 else "ip6"
            lines.append(
                f"add rule inet {PARTITION_TABLE} input {family} saddr {{ {', '.join(found)} }} counter drop "
                f'comment "{comment}"'
            )
        return [(("nft", "-f", "-"), "\n".join(lines) + "\n")]  # one inet table: both versions

    def partition_unblock(self, tag: str) -> list[tuple[Argv, str | None]]:
        return [(("nft", "delete", "table", "inet", PARTITION_TABLE), None)]

    # -- writing -------------------------------------------------------------

    def batch_command(self, family: Family) -> Argv:
        return ("nft", "-f", "-")

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
        self._nat_only(scope)
        table = f"{_family(family)} {TABLE}"
        lines: list[str] = []
        if teardown:
            # The table is pynetns' alone: deleting it removes exactly what pynetns added.
            return [f"delete table {table}"] if state.exists else []
        if add:
            lines.append(f"add table {table}")
            for chain in _CHAINS.values():
                hook = _BASE.get(chain)
                lines.append(f"add chain {table} {chain}" + (f" {{ {hook} }}" if hook else ""))
            for chain in _JUMPS:
                lines.append(f"add chain {table} {chain} {{ {_BASE[chain]} }}")
                if not any(rule.ref.split()[0] == chain for rule in state.jumps):
                    jump = f'fib daddr type local jump published comment "{JUMP_COMMENT}"'
                    lines.append(f"add rule {table} {chain} {jump}")
        for listed in remove:
            chain, handle = listed.ref.split()
            lines.append(f"delete rule {table} {batch_token('chain', chain)} handle {int(handle)}")
        lines.extend(f"add rule {table} {_CHAINS[rule.chain]} {self.rule_text(family, rule)}" for rule in add)
        return lines

    #: lines per script when a batch must be cut (a rootless sandbox took 400 rules, not 404)
    CHUNK = 250

    def chunks(self, lines: Sequence[str]) -> list[list[str]]:
        # every line is a command of its own; in order, the tables and chains come before their rules
        return [list(lines[start : start + self.CHUNK]) for start in range(0, len(lines), self.CHUNK)]

    def rule_text(self, family: Family, rule: FirewallRule) -> str:
        """The body of one ``add rule`` line: matches, statements, comment."""
        if rule.family != family:
            raise InvalidValue("family", rule.family, f"a rule for IPv{rule.family} in an IPv{family} table")
        if rule.chain not in _CHAINS:
            raise InvalidValue("chain", rule.chain, f"the nftables backend writes only {sorted(_CHAINS)}")
        ip = _family(family)
        parts: list[str] = []
        if rule.iif is not None:
            parts += ["iifname", _name(rule.iif)]
        if rule.oif is not None:
            parts += ["oifname", _name(rule.oif)]
        if rule.not_iif is not None:
            parts += ["iifname", "!=", _name(rule.not_iif)]
        if rule.not_oif is not None:
            parts += ["oifname", "!=", _name(rule.not_oif)]
        if rule.saddr is not None:
            parts += [ip, "saddr", canonical_address(family, rule.saddr, network=True)]
        if rule.daddr is not None:
            parts += [ip, "daddr", canonical_address(family, rule.daddr, network=True)]
        if rule.not_daddr is not None:
            parts += [ip, "daddr", "!=", canonical_address(family, rule.not_daddr, network=True)]
        if rule.protocol is not None:
            if rule.protocol not in ("tcp", "udp", "sctp"):
                raise InvalidValue("protocol", rule.protocol, "must be 'tcp', 'udp' or 'sctp'")
            if rule.dport is None and rule.sport is None:
                parts += ["meta", "l4proto", rule.protocol]
            if rule.sport is not None:
                parts += [rule.protocol, "sport", port_range(rule.sport, "-")]
            if rule.dport is not None:
                parts += [rule.protocol, "dport", port_range(rule.dport, "-")]
        if rule.ct_dnat:
            parts += ["ct", "status", "dnat"]
        if rule.not_ct_dnat:
            parts += ["ct", "status", "&", "dnat", "==", "0"]
        if rule.ct_established:
            parts += ["ct", "state", "established,related"]
        if rule.counter or rule.action == "record":
            parts.append("counter")
        if rule.action == "dnat":
            parts += ["dnat", "to", self._dnat_target(family, rule)]
        elif rule.action == "masquerade":
            parts.append("masquerade")
        elif rule.action == "accept":
            parts.append("accept")
        elif rule.action == "drop":
            parts.append("drop")
        parts += ["comment", f'"{check_comment(rule.comment)}"']
        return " ".join(parts)

    @staticmethod
    def _dnat_target(family: Family, rule: FirewallRule) -> str:
        if rule.to_address is None:
            raise InvalidValue("to_address", None, "a dnat rule needs an address")
        address = canonical_address(family, rule.to_address)
        if rule.to_port is None:
            return address
        host = f"[{address}]" if family == 6 else address
        low, high = rule.to_port
        port_range(rule.to_port, "-")
        if rule.dport is None or rule.dport[1] - rule.dport[0] != high - low:
            raise InvalidValue("to_port", rule.to_port, "must be as long as the published range")
        first = rule.dport[0]
        if low == high:
            return f"{host}:{low}"
        if low == first:
            return address  # same numbers: keep the destination port
        # One rule for the whole range: an anonymous map from each host port to its container port.
        pairs = ", ".join(f"{first + offset} : {address} . {low + offset}" for offset in range(high - low + 1))
        assert rule.protocol is not None
        return f"{rule.protocol} dport map {{ {pairs} }}"

    def queue_rule(
        self, family: Family, hook: QueueHook, interface: str, queue: int, comment: str, *, delete: bool = False
    ) -> Argv:
        """The rule written with ``iptables-nft``: the xtables ``NFQUEUE`` target through nf_tables' compat layer.

        nft's own ``queue`` statement has no match for a bridge port in the ``ip`` family (the ``port``
        hook needs xtables' ``physdev``), so every queue rule takes the xtables path, into the
        ``mangle`` table iptables-nft keeps in the same nf_tables ruleset (never in :data:`TABLE`).
        """
        return Iptables("nft").queue_rule(family, hook, interface, queue, comment, delete=delete)

    @staticmethod
    def _nat_only(scope: Scope) -> None:
        if scope != "nat":
            raise InvalidValue("scope", scope, "the nftables backend keeps only NAT rules; forwarding goes to xtables")
