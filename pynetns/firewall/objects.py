"""Published ports, outbound NAT, isolation: objects that describe firewall rules, the way Docker's bridge driver does.

:class:`PortMap` is ``docker run -p 8080:80``: a DNAT rule for local
destinations, reachable from other namespaces, from the host at its own
addresses and at ``127.0.0.1``, and from the container itself (hairpin).
``127.0.0.0/8`` stays the host's own: where a mapping needs ``route_localnet``
it also drops, before NAT, packets to it that did not arrive on ``lo``.
:class:`Isolation` keeps networks apart, one IP version per object.
:class:`Masquerade` lets a bridge's subnet reach the outside with the host's
address. They write only pynetns' own table (nftables) or chains (iptables),
chosen by ``Host(firewall=...)``, and live in ``namespace`` (``None``: the
root namespace), so a throwaway namespace can play the host.

An object declares its rules (:meth:`Firewalled.rules`), validates its
values and knows its id; no command runs here. :mod:`.transaction` reads the
firewall, computes and writes (``create()`` and ``delete()`` go there).

>>> from pynetns import Host
>>> PortMap(8080, "10.0.0.2", 80, host=Host(dry_run=True)).rules()[0].chain
'dnat'
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import Any

import attrs

from ..backends.base import Family, FirewallRule, FirewallState
from ..errors import InvalidValue, PortInUse
from ..host import Host
from ..links import Bridge
from ..namespace import Namespace
from ..placement import to_namespace
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
from .base import FORWARDING, Declared, check_tag, owner_of
from .site import HostPath, Site
from .transaction import create_all, delete_all

__all__ = [
    "FORWARDING",
    "Counters",
    "Firewalled",
    "ForwardDrops",
    "Isolation",
    "Masquerade",
    "PortMap",
    "check_tag",
    "owner_of",
]

log = logging.getLogger(__name__)

#: UDP conntrack entries are flushed port by port; longer ranges are left to expire
CONNTRACK_FLUSH_LIMIT = 256


@attrs.frozen
class Counters:
    """Packets and bytes a rule has matched (what ``iptables -t nat -nvL`` shows)."""

    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.packets + other.packets, self.bytes + other.bytes)


class Firewalled(Declared):
    """Base of the firewall objects: create, delete, exists, built from the rules each object declares.

    Several objects of one host and namespace can be created or deleted in one
    transaction per table with :func:`create_all` and :func:`delete_all`.
    """

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


def _range(low: int, high: int) -> str:
    return f"{low}-{high}"


@attrs.define(eq=False)
class PortMap(Firewalled):
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
        if self.host_ip is not None and (
            self.host_ip.is_multicast or (self.host_ip.version == 4 and self.host_ip.is_reserved)
        ):
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

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        family, proto, address = self.family, self.protocol, str(self.address)
        hairpin = "" if path.hairpin_port is None else f" hp={path.hairpin_port}"
        rules = []
        if family == 4 and (path.localnet is not None or (self.host_ip is not None and self.host_ip.is_loopback)):
            rules.append(_loopback_guard(self._comment()))  # first: no moment with DNAT but without the guard
        # IPv6 has no route_localnet: a DNAT of the host's [::1] would send ::1 out, and the kernel drops the
        # answer (see pynetns.lab.loopback6), so the host's ::1 is left alone (a lab's proxy answers there)
        loopback6 = family == 6 and self.host_ip is not None and self.host_ip.is_loopback
        rules += [
            FirewallRule(
                "dnat",
                self._comment(),
                family,
                proto,  # type: ignore[arg-type]
                daddr=None if self.host_ip is None else str(self.host_ip),
                not_daddr="::1" if family == 6 and self.host_ip is None else None,
                dport=self.host_ports,
                action="dnat",
                to_address=address,
                to_port=self.ports,
                counter=True,
            )
        ] * (not loopback6)
        rules += [
            # hairpin: the container reaching its own published port through a host address
            FirewallRule(
                "postrouting",
                self._comment(hairpin),
                family,
                proto,  # type: ignore[arg-type]
                saddr=address,
                daddr=address,
                dport=self.ports,
                ct_dnat=True,
                action="masquerade",
            ),
        ]
        if path.localnet is not None:
            # 127.0.0.1 → container: the source must not stay loopback (route_localnet lets it leave).
            rules.append(
                FirewallRule(
                    "postrouting",
                    self._comment(f" lnet={path.localnet}"),
                    family,
                    proto,  # type: ignore[arg-type]
                    saddr="127.0.0.0/8",
                    daddr=address,
                    dport=self.ports,
                    ct_dnat=True,
                    action="masquerade",
                )
            )
        return rules

    def _forward_rules(self) -> list[FirewallRule]:
        family, proto, address = self.family, self.protocol, str(self.address)
        return [
            FirewallRule(
                "forward",
                self._comment(),
                family,
                proto,  # type: ignore[arg-type]
                daddr=address,
                dport=self.ports,
                ct_dnat=True,
                action="accept",
            ),
            FirewallRule(
                "forward",
                self._comment(),
                family,
                proto,  # type: ignore[arg-type]
                saddr=address,
                sport=self.ports,
                ct_dnat=True,
                action="accept",
            ),
        ]

    def _path(self, site: Site) -> HostPath:
        """The device toward the container (``route_localnet`` for 127.0.0.1) and, on a bridge, its port:
        read by the site in a transaction's read phase (a preview's site reads nothing)."""
        localnet = self.family == 4 and (self.host_ip is None or self.host_ip.is_loopback)
        return site.path_to(str(self.address), self.family, localnet=localnet)

    # -- conflicts ----------------------------------------------------------

    def _overlaps(self, low: int, high: int, address: str) -> bool:
        mine_low, mine_high = self.host_ports
        if high < mine_low or low > mine_high:
            return False
        return self.host_ip is None or address in ("any", "*", "0.0.0.0", "::") or address == str(self.host_ip)

    def _check(self, site: Site, state: FirewallState) -> None:
        if self.protocol == "sctp":
            site.refuse_without_sctp(f"publishing {self._what()}")
        for rule in state.owned():
            owner = owner_of(rule.comment)
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
                raise PortInUse.held(
                    self._what(),
                    f"a process listening on {fields[3]} {users}".strip(),
                    site.host.exec_argv(site.where, argv),
                    line,
                )

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

    def _stale_ports(self) -> list[tuple[int, str | None]]:
        """UDP: the host ports whose conntrack entries go after a change, so a new mapping applies at once."""
        if self.protocol != "udp":
            return []
        low, high = self.host_ports
        if high - low >= CONNTRACK_FLUSH_LIMIT:
            log.warning(
                "not flushing conntrack for %d UDP ports of %s; old entries expire on their own", high - low + 1, self
            )
            return []
        address = None if self.host_ip is None else str(self.host_ip)
        return [(number, address) for number in range(low, high + 1)]


def _loopback_guard(comment: str) -> FirewallRule:
    """Drop packets to 127.0.0.0/8 that did not arrive on ``lo``, before NAT (CVE-2020-8558).

    ``route_localnet`` lets 127.0.0.0/8 cross a device, and a DNAT rule for
    127.0.0.1 matches in prerouting whatever the device: without this, a lab
    namespace reaches the host's loopback-bound ports and listeners by sending
    to 127.0.0.1 through its gateway. The host's own replies are not caught:
    before NAT they are still addressed to the device's address.
    """
    return FirewallRule("guard", comment, 4, daddr="127.0.0.0/8", not_iif="lo", action="drop", counter=True)


def _bridge_name(value: Any) -> str:
    if isinstance(value, Bridge):
        return value.name
    return interface_name("bridge", value)


@attrs.define(eq=False)
class Masquerade(Firewalled):
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

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        subnet, family = str(self.subnet), self.family
        return [
            FirewallRule(
                "postrouting", self._comment(), family, saddr=subnet, not_oif=self.bridge, action="masquerade"
            ),
            FirewallRule(
                "postrouting", self._comment(), family, saddr=subnet, daddr=subnet, ct_dnat=True, action="masquerade"
            ),
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
class _Drops(Firewalled):
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
    connections are let through). From the bridges of ``strict`` not even
    that: nothing is forwarded either way (netavark's ``isolate=strict``).
    With ``internal=True`` the bridge's traffic may not leave it at all, like
    ``docker network create --internal``.
    One object covers one IP version (``family``); :meth:`both` gives the
    pair a bridge needs, since interfaces forward IPv6 as readily as IPv4.
    """

    bridge: str = attrs.field(converter=_bridge_name)
    others: tuple[str, ...] = attrs.field(default=(), converter=_bridge_names)
    internal: bool = False
    #: the IP version whose forwarding this covers; :meth:`both` makes one of each
    family: Family = attrs.field(default=4, converter=_family, kw_only=True)
    #: bridges cut off even from the published ports behind this one, and this one from theirs
    strict: tuple[str, ...] = attrs.field(default=(), converter=_bridge_names, kw_only=True)

    def __attrs_post_init__(self) -> None:
        for field, bridges in (("others", self.others), ("strict", self.strict)):
            if self.bridge in bridges:
                raise InvalidValue(field, list(bridges), f"must not contain the bridge {self.bridge} itself")
        super().__attrs_post_init__()

    @classmethod
    def both(cls, bridge: Any, others: Iterable[Any] = (), internal: bool = False, **kwargs: Any) -> list[Isolation]:
        """The isolation of ``bridge`` for IPv4 and for IPv6: a network is isolated only if both are."""
        return [cls(bridge, tuple(others), internal, family=family, **kwargs) for family in (4, 6)]

    @property
    def object_id(self) -> str:
        return self._id("isolate", self.bridge)

    def __str__(self) -> str:
        froms = [", ".join(self.others)] * bool(self.others) + [f"strictly {', '.join(self.strict)}"] * bool(
            self.strict
        )
        return (
            f"isolate {self.bridge} from {' and '.join(froms) or 'nothing'}"
            + (" (internal)" * self.internal)
            + (" (IPv6)" * (self.family == 6))
        )

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        comment, family = self._comment(), self.family
        rules = []
        for other in self.others:
            rules += [
                FirewallRule("isolate", comment, family, iif=self.bridge, oif=other, not_ct_dnat=True, action="drop"),
                FirewallRule("isolate", comment, family, iif=other, oif=self.bridge, not_ct_dnat=True, action="drop"),
            ]
        for other in self.strict:  # published ports too: no exception for DNATed connections
            rules += [
                FirewallRule("isolate", comment, family, iif=self.bridge, oif=other, action="drop"),
                FirewallRule("isolate", comment, family, iif=other, oif=self.bridge, action="drop"),
            ]
        if self.internal:
            rules += [
                FirewallRule("isolate", comment, family, iif=self.bridge, not_oif=self.bridge, action="drop"),
                FirewallRule("isolate", comment, family, not_iif=self.bridge, oif=self.bridge, action="drop"),
            ]
        return rules


def _address_pairs(pairs: Iterable[tuple[Any, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (str(ip_address("source", source)), str(ip_address("destination", destination)))
        for source, destination in pairs
    )


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
            raise InvalidValue(
                "pairs",
                [list(pair) for pair in self.pairs],
                "must be all IPv4 or all IPv6 (make one ForwardDrops per version)",
            )
        super().__attrs_post_init__()

    @property
    def family(self) -> Family:
        """The pairs' IP version (IPv4 when there is none)."""
        return 6 if self.pairs and ipaddress.ip_address(self.pairs[0][0]).version == 6 else 4

    @property
    def object_id(self) -> str:
        return self._id("drop", self.name)

    def _main_rules(self, path: HostPath) -> list[FirewallRule]:
        comment = self._comment()
        return [
            FirewallRule("isolate", comment, self.family, saddr=source, daddr=destination, action="drop")
            for source, destination in self.pairs
        ]
