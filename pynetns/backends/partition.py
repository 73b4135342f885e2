"""Network partitions: namespaces that cannot hear each other, as if a switch between them died.

A partition drops, silently, every IP packet arriving in a namespace from
the addresses of the other side — so a client times out, as on a real split
network, instead of failing at once. The rules live in the partitioned
namespaces themselves (``table inet pynetns_partition`` with nftables, chain
``PYNETNS-PARTITION`` with iptables), never in the host's firewall, and are
rewritten whole on every change; :func:`unblock` removes them.

>>> import ipaddress
>>> argv, script = block_commands("nftables", [ipaddress.ip_address("10.0.0.3")])
>>> argv
('nft', '-f', '-')
>>> print(script)
add table inet pynetns_partition
flush table inet pynetns_partition
add chain inet pynetns_partition input { type filter hook input priority -10; policy accept; }
add rule inet pynetns_partition input ip saddr { 10.0.0.3 } counter drop comment "pynetns partition"
<BLANKLINE>
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import InvalidValue
from ..validation import IPAddress
from .base import Argv

__all__ = ["TABLE", "CHAIN", "block_commands", "unblock_commands"]

TABLE = "pynetns_partition"
CHAIN = "PYNETNS-PARTITION"
_COMMENT = "pynetns partition"
_JUMP = f'INPUT -m comment --comment "{_COMMENT}" -j {CHAIN}'
_RESTORE = ("iptables-restore", "--noflush", "-w")


def _addresses(addresses: Iterable[IPAddress]) -> dict[int, list[str]]:
    by_version: dict[int, list[str]] = {}
    for address in addresses:
        parsed = ipaddress.ip_address(address)  # re-parsed: only canonical text reaches a script
        by_version.setdefault(parsed.version, []).append(str(parsed))
    return by_version


def block_commands(firewall: str, addresses: Sequence[IPAddress], *, first: bool = True) -> tuple[Argv, str]:
    """The command (argv, stdin) that makes a namespace drop everything arriving from ``addresses``.

    ``firewall`` is the host's firewall backend name (``"nftables"`` or ``"iptables"``): the same
    tool is used inside the namespace. The whole rule set is replaced, so calling it again with a
    new list is how a partition changes; ``first=False`` says the namespace has it already (iptables:
    the jump from INPUT is there).
    """
    if not addresses:
        raise InvalidValue("addresses", [], "a partition needs at least one address to drop")
    by_version = _addresses(addresses)
    if firewall == "nftables":
        lines = [
            f"add table inet {TABLE}",
            f"flush table inet {TABLE}",
            f"add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}",
        ]
        for version, found in sorted(by_version.items()):
            family = "ip" if version == 4 else "ip6"
            lines.append(f"add rule inet {TABLE} input {family} saddr {{ {', '.join(found)} }} counter drop "
                         f'comment "{_COMMENT}"')
        return ("nft", "-f", "-"), "\n".join(lines) + "\n"
    if firewall == "iptables":
        if set(by_version) != {4}:
            raise InvalidValue("addresses", [str(a) for a in addresses], "iptables partitions are IPv4 only")
        lines = ["*filter", f":{CHAIN} - [0:0]"]  # with --noflush: created, or emptied if it exists
        lines += [f"-I {_JUMP}"] if first else []
        lines += [f'-A {CHAIN} -s {address} -m comment --comment "{_COMMENT}" -j DROP' for address in by_version[4]]
        return _RESTORE, "\n".join([*lines, "COMMIT"]) + "\n"
    raise InvalidValue("firewall", firewall, "must be 'nftables' or 'iptables'")


def unblock_commands(firewall: str) -> tuple[Argv, str | None]:
    """The command (argv, stdin) that removes a namespace's partition rules altogether."""
    if firewall == "nftables":
        return ("nft", "delete", "table", "inet", TABLE), None
    if firewall == "iptables":
        return _RESTORE, "\n".join(["*filter", f"-D {_JUMP}", f"-F {CHAIN}", f"-X {CHAIN}", "COMMIT"]) + "\n"
    raise InvalidValue("firewall", firewall, "must be 'nftables' or 'iptables'")
