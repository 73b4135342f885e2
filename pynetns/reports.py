"""Typed views of what ``ip -j`` reports: interfaces with their addresses, routes.

>>> data = {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536,
...         "operstate": "UNKNOWN", "link_type": "loopback", "address": "00:00:00:00:00:00",
...         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}
>>> lo = Interface.from_ip_json(data)
>>> lo.kind, lo.up, [str(a) for a in lo.addresses]
('loopback', True, ['127.0.0.1/8'])
>>> str(RouteEntry.from_ip_json({"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"}))
'default via 10.0.0.1 dev eth0'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from .validation import IPAddress, IPInterface, interface_name, ip_address, optional

__all__ = ["Interface", "RouteEntry", "route_line"]


def route_line(type: str, destination: str, via: object | None, device: str | None) -> str:
    """A route as ``ip route`` prints it: ``default via 10.0.0.1 dev eth0``, ``blackhole 10.9.0.0/16``."""
    parts = [destination] if type == "unicast" else [type, destination]
    if via is not None:
        parts += ["via", str(via)]
    if device is not None:
        parts += ["dev", device]
    return " ".join(parts)


@attrs.frozen
class Interface:
    """One network interface as the kernel reports it."""

    name: str
    index: int
    kind: str
    mac: str | None
    mtu: int
    state: str
    flags: tuple[str, ...] = ()
    addresses: tuple[IPInterface, ...] = ()
    master: str | None = None
    alias: str | None = None
    #: for a veth: the peer's ifindex, in the namespace given by ``link_netnsid``
    peer_index: int | None = None
    link_netnsid: int | None = None

    @classmethod
    def from_ip_json(cls, data: Mapping[str, Any]) -> Interface:
        """Build from one element of ``ip -j -d addr show``."""
        addresses = tuple(
            ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
            for info in data.get("addr_info", ())
            if "local" in info
        )
        kind = (data.get("linkinfo") or {}).get("info_kind") or data.get("link_type") or "unknown"
        return cls(
            name=data["ifname"],
            index=int(data["ifindex"]),
            kind=kind,
            mac=data.get("address"),
            mtu=int(data.get("mtu", 0)),
            state=data.get("operstate", "UNKNOWN"),
            flags=tuple(data.get("flags", ())),
            addresses=addresses,
            master=data.get("master"),
            alias=data.get("ifalias"),
            peer_index=data.get("link_index"),
            link_netnsid=data.get("link_netnsid"),
        )

    @property
    def up(self) -> bool:
        """Administratively up (the ``UP`` flag)."""
        return "UP" in self.flags

    def __str__(self) -> str:
        """One line, like ``ip -br addr``."""
        name = self.name if self.peer_index is None else f"{self.name}@if{self.peer_index}"
        addresses = " ".join(str(address) for address in self.addresses)
        return f"{name:<16} {self.state:<8} {self.mac or '':<17} {addresses}".rstrip()


@attrs.frozen
class RouteEntry:
    """One route of a routing table as the kernel reports it (``ip -j route show``).

    A report, not an object to create: :class:`~pynetns.Route` is the creatable one
    (``Route.from_entry(entry, namespace)`` makes one from this).
    """

    #: ``default`` or a network in CIDR notation (``10.0.0.0/24``), as ``ip`` prints it
    destination: str
    via: IPAddress | None = None
    device: str | None = None
    metric: int | None = None
    #: 4 or 6
    family: int = 4
    #: ``unicast``, ``blackhole``, ``unreachable``, ``local``...
    type: str = "unicast"
    #: who made it: ``kernel``, ``boot``, ``static``, ``dhcp``...
    protocol: str | None = None
    scope: str | None = None
    #: the preferred source address (``src``)
    source: IPAddress | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def from_ip_json(cls, data: Mapping[str, Any], family: int = 4) -> RouteEntry:
        """Build from one element of ``ip -j route show`` (of that address ``family``).

        The gateway and device are checked as :class:`~pynetns.Route` checks them (a device name
        pynetns could not have made raises :class:`~pynetns.errors.InvalidName`): what it reports
        can be handed back to commands.
        """
        hop = (data.get("nexthops") or [{}])[0]  # a multipath route: its first next hop
        via = data.get("gateway", hop.get("gateway"))
        source = data.get("prefsrc")
        metric = data.get("metric")
        return cls(
            destination=data["dst"],
            via=optional(ip_address)("via", via),
            device=optional(interface_name)("device", data.get("dev", hop.get("dev"))),
            metric=None if metric is None else int(metric),
            family=family,
            type=data.get("type", "unicast"),
            protocol=data.get("protocol"),
            scope=data.get("scope"),
            source=optional(ip_address)("source", source),
            flags=tuple(data.get("flags", ())),
        )

    def __str__(self) -> str:
        """One line, like ``ip route``: ``default via 10.0.0.1 dev eth0``."""
        return route_line(self.type, self.destination, self.via, self.device)
