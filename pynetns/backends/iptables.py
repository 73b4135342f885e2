"""The iptables firewall backend: pynetns' own chains, changed by ``iptables-restore --noflush -w`` transactions.

Rules live in chains of pynetns' own, reached by jump rules it adds once and
removes with its last rule:

- ``nat``: ``PREROUTING``/``OUTPUT`` → ``PYNETNS-DNAT`` (local destinations),
  ``POSTROUTING`` → ``PYNETNS-POSTROUTING``; ``PYNETNS-RECORDS`` is never
  jumped to and keeps the sysctl values pynetns changed.
- ``filter``: ``FORWARD`` (first rules) → ``PYNETNS-ISOLATION``, which drops
  traffic between networks, then → ``PYNETNS-FORWARD``, which accepts
  pynetns' forwarded traffic even under a ``DROP`` policy.
- ``raw``: ``PREROUTING`` (first rule) → ``PYNETNS-GUARD``, which drops
  packets to 127.0.0.0/8 that did not arrive on ``lo`` before NAT sees them.

Every rule carries ``-m comment --comment "pynetns:<id> …"``. Works with
``iptables-nft`` and ``iptables-legacy``; :meth:`Iptables.detect` finds
which one ``iptables`` is and says so. A ``nat`` or ``filter`` table that
iptables-nft made for pynetns' first rule is removed (with ``nft``) after its
last one, if nothing else uses it; iptables-legacy's built-in tables, once
instantiated in a namespace, stay for its lifetime (empty, policy ACCEPT).

>>> from pynetns.backends.base import FirewallRule, FirewallState
>>> rule = FirewallRule("dnat", "pynetns:doc portmap/tcp/any/8080-8089", protocol="tcp",
...                     dport=(8080, 8089), action="dnat", to_address="10.0.0.2", to_port=(80, 89))
>>> for line in Iptables().script(4, "nat", FirewallState(), add=[rule]):
...     print(line)
*nat
-N PYNETNS-DNAT
-N PYNETNS-POSTROUTING
-N PYNETNS-RECORDS
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "pynetns jump" -j PYNETNS-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "pynetns jump" -j PYNETNS-DNAT
-A POSTROUTING -m comment --comment "pynetns jump" -j PYNETNS-POSTROUTING
-A PYNETNS-DNAT -p tcp -m tcp --dport 8080:8089 -m comment --comment "pynetns:doc portmap/tcp/any/8080-8089" \
-j DNAT --to-destination 10.0.0.2:80-89/8080
COMMIT
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Sequence
from typing import Literal

from ..errors import InvalidValue
from ..validation import interface_name
from .base import (
    JUMP_COMMENT,
    Argv,
    Chain,
    Family,
    FirewallBackend,
    FirewallRule,
    FirewallState,
    ListedRule,
    QueueHook,
    Run,
    Scope,
    canonical_address,
    check_comment,
    partition_addresses,
    partition_comment,
    port_range,
)

__all__ = ["CHAINS", "PARTITION_CHAIN", "Iptables"]

log = logging.getLogger(__name__)

Variant = Literal["nft", "legacy"]

CHAINS = {
    "dnat": "PYNETNS-DNAT",
    "postrouting": "PYNETNS-POSTROUTING",
    "records": "PYNETNS-RECORDS",
    "forward": "PYNETNS-FORWARD",
    "isolate": "PYNETNS-ISOLATION",
    "guard": "PYNETNS-GUARD",
}
_SCOPE_CHAINS: dict[Scope, tuple[Chain, ...]] = {
    "nat": ("dnat", "postrouting", "records"),
    "filter": ("forward", "isolate"),
    "raw": ("guard",),
}
# (built-in chain, match, target, insert first?) of every jump rule, per scope
_JUMPS = {
    "nat": (
        ("PREROUTING", "-m addrtype --dst-type LOCAL", "PYNETNS-DNAT", False),
        ("OUTPUT", "-m addrtype --dst-type LOCAL", "PYNETNS-DNAT", False),
        ("POSTROUTING", "", "PYNETNS-POSTROUTING", False),
    ),
    # inserted in this order, so FORWARD checks the isolation drops before the accepts
    "filter": (("FORWARD", "", "PYNETNS-FORWARD", True), ("FORWARD", "", "PYNETNS-ISOLATION", True)),
    # first, before anything else of the raw table can accept (NOTRACK, …)
    "raw": (("PREROUTING", "", "PYNETNS-GUARD", True),),
}
#: the chain of a namespace's partition drops, jumped to first from INPUT
PARTITION_CHAIN = "PYNETNS-PARTITION"
_REVERSE = {name: chain for chain, name in CHAINS.items()}
_COUNTERS = re.compile(r"^\[(\d+):(\d+)\]\s+")
_VERSION = re.compile(r"\((nf_tables|legacy)\)")


class Iptables(FirewallBackend):
    """``iptables``/``ip6tables`` and their ``-save``/``-restore``.

    ``variant`` picks ``iptables-nft`` or ``iptables-legacy`` explicitly;
    ``None`` runs plain ``iptables`` (whatever the alternatives system chose).
    """

    name = "iptables"
    scopes = ("nat", "filter", "raw")

    def scope_of(self, chain: Chain) -> Scope:
        return next((scope for scope, chains in _SCOPE_CHAINS.items() if chain in chains), "nat")

    def __init__(self, variant: Variant | None = None, version: str = "") -> None:
        if variant not in (None, "nft", "legacy"):
            raise InvalidValue("variant", variant, "must be 'nft', 'legacy' or None")
        self.variant: Variant | None = variant
        self.version = version

    @classmethod
    def detect(cls, run: Run | None) -> Iptables:
        """Ask ``iptables --version`` whether it is the nf_tables or the legacy flavour."""
        if run is None:
            return cls()
        text = run(["iptables", "--version"]).stdout.strip()
        match = _VERSION.search(text)
        variant: Variant = "nft" if match is not None and match.group(1) == "nf_tables" else "legacy"
        backend = cls(variant, text)
        log.info("firewall: %s", backend.describe())
        return backend

    def describe(self) -> str:
        mode = {"nft": "nf_tables", "legacy": "legacy", None: "as installed"}[self.variant]
        return f"iptables ({mode}){f': {self.version}' if self.version else ''}"

    def program(self, family: Family, suffix: str = "") -> str:
        base = "iptables" if family == 4 else "ip6tables"
        return base + (f"-{self.variant}" if self.variant else "") + suffix

    # -- reading -------------------------------------------------------------

    def list_commands(self, family: Family, scope: Scope) -> list[Argv]:
        if scope == "raw":
            # every table that exists, not "-t raw": listing a legacy table makes it, and a legacy table stays
            return [(self.program(family, "-save"), "-c")]
        return [(self.program(family, "-save"), "-c", "-t", scope)]

    def parse(self, family: Family, scope: Scope, outputs: Sequence[str]) -> FirewallState:
        chains: set[str] = set()
        busy: set[str] = set()
        rules: list[ListedRule] = []
        ours = {CHAINS[name] for name in _SCOPE_CHAINS[scope]}
        table: str = scope
        for raw in (outputs[0] if outputs else "").splitlines():
            line = raw.strip()
            if line.startswith("*"):
                table = line[1:]
            if table != scope:
                continue
            if line.startswith(":"):
                name = line[1:].split()[0]
                if name in ours:
                    chains.add(name)
                continue
            packets = size = 0
            match = _COUNTERS.match(line)
            if match is not None:
                packets, size = int(match.group(1)), int(match.group(2))
                line = line[match.end() :]
            if not line.startswith("-A "):
                continue
            words = shlex.split(line)
            chain, comment = words[1], _comment(words)
            if chain in ours:
                kind = _REVERSE[chain]
            elif comment == JUMP_COMMENT:
                kind = "jump"
            else:
                busy.add(chain)
                continue
            spec = _join(words[1:])
            rules.append(ListedRule(kind, comment, spec, packets, size))  # type: ignore[arg-type]
        return FirewallState(frozenset(chains), tuple(rules), frozenset(busy))

    def table_commands(self, family: Family, scope: Scope) -> tuple[Argv, Argv] | None:
        # iptables-nft creates `table ip nat` (or `ip filter`) on first use and never removes it, and its
        # save lists a table named with -t whether it exists or not: only nft can tell. iptables-legacy's
        # built-in tables stay instantiated in a namespace for its lifetime.
        if self.variant != "nft":
            return None
        name = "ip" if family == 4 else "ip6"
        return ("nft", "-j", "list", "table", name, scope), ("nft", "delete", "table", name, scope)

    def table_vacant(self, family: Family, scope: Scope, listing: str) -> bool:
        try:
            items = json.loads(listing).get("nftables", [])
        except (ValueError, AttributeError):
            return False
        for item in items:
            if "metainfo" in item or "table" in item:
                continue
            chain = item.get("chain")
            if chain is None or "hook" not in chain or chain.get("policy", "accept") != "accept":
                return False  # a rule, set, map, object, regular chain, or a base chain that drops
        return True

    def forward_probe(self, family: Family) -> Argv | None:
        if self.variant == "nft":
            return ("nft", "-j", "list", "chain", "ip" if family == 4 else "ip6", "filter", "FORWARD")
        if self.variant == "legacy":
            return ("cat", "/proc/net/ip_tables_names" if family == 4 else "/proc/net/ip6_tables_names")
        return None

    def forward_found(self, family: Family, output: str) -> bool:
        if self.variant == "nft":
            return '"chain"' in output
        return self.variant == "legacy" and "filter" in output.split()

    # -- partitions ------------------------------------------------------------

    def partition_block(self, addresses: Sequence[str], tag: str, *, first: bool = True) -> list[tuple[Argv, str]]:
        # both versions always: the chains and jumps exist together, so unblocking removes both
        by_version = partition_addresses(addresses)
        comment = partition_comment(tag)
        commands = []
        for version in (4, 6):
            lines = ["*filter", f":{PARTITION_CHAIN} - [0:0]"]  # with --noflush: created, or emptied if it exists
            lines += [f"-I {self._partition_jump(tag)}"] if first else []
            lines += [
                f'-A {PARTITION_CHAIN} -s {address} -m comment --comment "{comment}" -j DROP'
                for address in by_version.get(version, [])
            ]
            commands.append((self.batch_command(version), "\n".join([*lines, "COMMIT"]) + "\n"))
        return commands

    def partition_unblock(self, tag: str) -> list[tuple[Argv, str | None]]:
        lines = [
            "*filter",
            f"-D {self._partition_jump(tag)}",
            f"-F {PARTITION_CHAIN}",
            f"-X {PARTITION_CHAIN}",
            "COMMIT",
        ]
        return [(self.batch_command(version), "\n".join(lines) + "\n") for version in (4, 6)]

    @staticmethod
    def _partition_jump(tag: str) -> str:
        return f'INPUT -m comment --comment "{partition_comment(tag)}" -j {PARTITION_CHAIN}'

    # -- writing -------------------------------------------------------------

    # -- queue rules (the userspace impairment engine) ---------------------------

    def queue_rule(
        self, family: Family, hook: QueueHook, interface: str, queue: int, comment: str, *, delete: bool = False
    ) -> Argv:
        """``iptables -t mangle -A|-D`` a rule to NFQUEUE ``queue``, with this backend's program (its variant).

        >>> " ".join(Iptables("legacy").queue_rule(4, "egress", "eth0", 100, "pynetns:doc impair eth0"))
        'iptables-legacy -w -t mangle -A POSTROUTING -o eth0 -m comment --comment pynetns:doc impair eth0 \
-j NFQUEUE --queue-num 100 --queue-bypass'
        """
        if family not in (4, 6):
            raise InvalidValue("family", family, "must be 4 or 6")
        interface_name("interface", interface)
        if isinstance(queue, bool) or not isinstance(queue, int) or not 0 <= queue <= 65535:
            raise InvalidValue("queue", queue, "must be an integer queue number from 0 to 65535")
        chain, match = {
            "egress": ("POSTROUTING", ("-o", interface)),
            "ingress": ("PREROUTING", ("-i", interface)),
            "port": ("PREROUTING", ("-m", "physdev", "--physdev-in", interface)),
        }[hook]
        return (
            self.program(family), "-w", "-t", "mangle", "-D" if delete else "-A", chain, *match,
            "-m", "comment", "--comment", check_comment(comment), "-j", "NFQUEUE", "--queue-num", str(queue),
            "--queue-bypass",
        )  # fmt: skip

    def batch_command(self, family: Family) -> Argv:
        return (self.program(family, "-restore"), "--noflush", "-w")

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
        lines = [f"*{scope}"]
        names = [CHAINS[chain] for chain in _SCOPE_CHAINS[scope]]
        jumps = {rule.ref for rule in state.jumps}
        if add:
            # "-N", not ":CHAIN": with --noflush a ":CHAIN" line empties a chain that exists.
            lines.extend(f"-N {name}" for name in names if name not in state.chains)
            for builtin, match, target, first in _JUMPS[scope]:
                spec = self._jump_spec(builtin, match, target)
                if spec not in jumps:
                    lines.append(("-I " if first else "-A ") + spec)
        for listed in remove:
            lines.append("-D " + self._checked_spec(listed.ref))
        for rule in add:
            if rule.chain not in _SCOPE_CHAINS[scope]:
                raise InvalidValue("chain", rule.chain, f"not in the {scope} table")
            lines.append(f"-A {CHAINS[rule.chain]} {self.rule_text(family, rule)}")
        if teardown:
            emptied = []
            copies = [rule.ref for rule in state.jumps]
            for builtin, match, target, _ in _JUMPS[scope]:
                spec = self._jump_spec(builtin, match, target)
                if spec in jumps:
                    # every copy (a race of an older pynetns may have left two), or the chain cannot go
                    lines.extend(["-D " + spec] * copies.count(spec))
                    emptied.append(builtin)
            if self.variant == "nft" and scope in ("nat", "raw"):
                # iptables-nft made these base chains on demand for our jumps; empty nat and raw chains
                # (always policy ACCEPT) do nothing, so leave nft's view as it was.
                lines.extend(f"-X {name}" for name in dict.fromkeys(emptied) if name not in state.busy)
            for name in names:
                if name in state.chains:
                    lines += [f"-F {name}", f"-X {name}"]
        if len(lines) == 1:
            return []
        lines.append("COMMIT")
        return lines

    @staticmethod
    def _jump_spec(builtin: str, match: str, target: str) -> str:
        # The form iptables-save prints, so a saved jump compares equal to the one we would add.
        words = [builtin, *match.split(), "-m", "comment", "--comment", JUMP_COMMENT, "-j", target]
        return _join(words)

    @staticmethod
    def _checked_spec(spec: str) -> str:
        words = shlex.split(spec)
        if not words or (words[0] not in CHAINS.values() and _comment(["", *words]) != JUMP_COMMENT):
            raise InvalidValue("rule", spec, "is not a pynetns rule")
        return _join(words)

    def rule_text(self, family: Family, rule: FirewallRule) -> str:
        """The arguments after ``-A CHAIN`` for one rule, in the order ``iptables-save`` prints them."""
        if rule.family != family:
            raise InvalidValue("family", rule.family, f"a rule for IPv{rule.family} in an IPv{family} table")
        parts: list[str] = []
        if rule.saddr is not None:
            parts += ["-s", canonical_address(family, rule.saddr, network=True)]
        if rule.daddr is not None:
            parts += ["-d", canonical_address(family, rule.daddr, network=True)]
        if rule.not_daddr is not None:
            parts += ["!", "-d", canonical_address(family, rule.not_daddr, network=True)]
        if rule.iif is not None:
            parts += ["-i", interface_name("interface", rule.iif)]
        if rule.not_iif is not None:
            parts += ["!", "-i", interface_name("interface", rule.not_iif)]
        if rule.oif is not None:
            parts += ["-o", interface_name("interface", rule.oif)]
        if rule.not_oif is not None:
            parts += ["!", "-o", interface_name("interface", rule.not_oif)]
        if rule.protocol is not None:
            if rule.protocol not in ("tcp", "udp", "sctp"):
                raise InvalidValue("protocol", rule.protocol, "must be 'tcp', 'udp' or 'sctp'")
            parts += ["-p", rule.protocol]
            if rule.sport is not None or rule.dport is not None:
                parts += ["-m", rule.protocol]
            if rule.sport is not None:
                parts += ["--sport", port_range(rule.sport, ":")]
            if rule.dport is not None:
                parts += ["--dport", port_range(rule.dport, ":")]
        if rule.ct_dnat:
            parts += ["-m", "conntrack", "--ctstate", "DNAT"]
        if rule.not_ct_dnat:
            parts += ["-m", "conntrack", "!", "--ctstate", "DNAT"]
        if rule.ct_established:
            parts += ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
        parts += ["-m", "comment", "--comment", f'"{check_comment(rule.comment)}"']
        if rule.action == "dnat":
            parts += ["-j", "DNAT", "--to-destination", self._dnat_target(family, rule)]
        elif rule.action == "masquerade":
            parts += ["-j", "MASQUERADE"]
        elif rule.action == "accept":
            parts += ["-j", "ACCEPT"]
        elif rule.action == "drop":
            parts += ["-j", "DROP"]
        else:
            parts += ["-j", "RETURN"]
        return " ".join(parts)

    @staticmethod
    def _dnat_target(family: Family, rule: FirewallRule) -> str:
        if rule.to_address is None:
            raise InvalidValue("to_address", None, "a dnat rule needs an address")
        address = canonical_address(family, rule.to_address)
        if rule.to_port is None:
            return address
        low, high = rule.to_port
        if rule.dport is None or rule.dport[1] - rule.dport[0] != high - low:
            raise InvalidValue("to_port", rule.to_port, "must be as long as the published range")
        host = f"[{address}]" if family == 6 else address
        if low == high:
            return f"{host}:{low}"
        if low == rule.dport[0]:
            return address  # same numbers: keep the destination port
        # One rule for the whole range: a shifted port map (kernel 4.19+, iptables 1.8.6+).
        return f"{host}:{port_range(rule.to_port, '-')}/{int(rule.dport[0])}"


def _join(words: Sequence[str]) -> str:
    """Words as iptables-restore reads them: only double quotes, and only around words with spaces."""
    out = []
    for word in words:
        if any(c in word for c in "\"'\\\n\r\x00"):
            raise InvalidValue("rule", word, "must not contain quotes, backslashes or line breaks")
        out.append(f'"{word}"' if (" " in word or not word) else word)
    return " ".join(out)


def _comment(words: Sequence[str]) -> str:
    for index, word in enumerate(words[:-1]):
        if word == "--comment":
            return words[index + 1]
    return ""
