"""Typed views of what ``ip -j`` reports: interfaces with their addresses.

>>> data = {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "mtu": 65536,
...         "operstate": "UNKNOWN", "link_type": "loopback", "address": "00:00:00:00:00:00",
...         "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]}
>>> lo = Interface.from_ip_json(data)
>>> lo.kind, lo.up, [str(a) for a in lo.addresses]
('loopback', True, ['127.0.0.1/8'])
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import attrs

from .validation import IPInterface

__all__ = ["Interface"]


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
