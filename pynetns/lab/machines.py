"""The machines of a lab that spans Hosts: each Host's underlay address, and what of each network is on it.

A :class:`Machine` is a Host a lab uses with the address its peers reach it on (the VXLAN underlay);
:class:`Overlay` is a lab's record of them, of the VNI of each network and of the gateways a
network has on the machines other than the lab's own Host. Data only: the commands are
:mod:`~pynetns.lab.span`'s.

>>> from pynetns import Host
>>> Machine(Host(dry_run=True), "10.99.0.1").overhead
50
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import attrs

from ..errors import InvalidValue
from ..host import Host
from ..runtime import Journal
from ..validation import IPAddress, IPInterface
from ..validation import ip_address as valid_ip_address
from ..validation import mtu as valid_mtu

__all__ = ["VNI_RANGE", "VXLAN_PORT", "Machine", "Overlay", "by_host", "vxlan_name"]

#: the IANA port of VXLAN, the kernel's default is 8472 (Linux's own, older one): given explicitly
VXLAN_PORT = 4789
#: the VNIs a lab chooses from (the 24-bit field; 0 and the lowest ones left to hand-made setups)
VNI_RANGE = (4096, 2**24 - 1)


def _underlay(value: object) -> IPAddress:
    address = valid_ip_address("underlay", value)
    if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local:
        raise InvalidValue("underlay", str(value), "must be a unicast address the other machines reach this one on")
    return address


def _underlay_mtu(value: object) -> int:
    number = valid_mtu("mtu", value)
    if number < 1280 + 70:
        raise InvalidValue("mtu", value, "an underlay needs room for a 1280-byte packet and the VXLAN header")
    return number


@attrs.frozen(eq=False)
class Machine:
    """A Host of a lab and its underlay: the address the other machines send its VXLAN packets to
    (``underlay``), the MTU of the link that address is on (``mtu``, 1500 by default) and a name for
    :meth:`Lab.explain <pynetns.Lab.explain>` (default: the underlay address)."""

    host: Host
    underlay: IPAddress = attrs.field(converter=_underlay)
    mtu: int = attrs.field(default=1500, converter=_underlay_mtu)
    name: str = attrs.field(default=attrs.Factory(lambda self: str(self.underlay), takes_self=True))

    @property
    def overhead(self) -> int:
        """What VXLAN adds to each frame: outer IP (20 or 40), UDP (8), VXLAN (8) and inner Ethernet (14)."""
        return 50 if self.underlay.version == 4 else 70


class Overlay:
    """A lab's machines, its networks' VNIs, and the gateways of its networks on its other machines."""

    def __init__(self) -> None:
        self.machines: dict[Host, Machine] = {}
        #: network name → VNI (chosen at declaration, lab-wide)
        self.vnis: dict[str, int] = {}
        #: (network name, Host) → that network's gateway on that Host (not the lab's own: the network's gateway)
        self.gateways: dict[tuple[str, Host], IPInterface] = {}
        #: (network name, Host): the parts of networks applied on Hosts other than the lab's
        self.parts: set[tuple[str, Host]] = set()
        #: the networks applied as spanning Hosts (a network applied on one Host cannot span later)
        self.spanned: set[str] = set()
        #: the lab's journal on each Host other than its own
        self.journals: dict[Host, Journal] = {}

    def rebase(self, network: str, old: Any, new: Any) -> None:
        """A network moved from subnet ``old`` to ``new`` before its first apply: its gateways keep their place."""
        for key, gateway in list(self.gateways.items()):
            if key[0] == network:
                offset = int(gateway.ip) - int(old.network_address)
                address = ipaddress.ip_address(int(new.network_address) + offset)
                self.gateways[key] = ipaddress.ip_interface(f"{address}/{new.prefixlen}")


def vxlan_name(bridge: str) -> str:
    """The kernel name of a network's VXLAN device, next to its bridge (``pn1a2b3cb1`` → ``pn1a2b3cb1x``)."""
    return f"{bridge}x"


T = TypeVar("T")


def by_host(objects: Iterable[T]) -> list[Sequence[T]]:
    """``objects`` (anything with a ``host``) grouped by their Host, in first-seen order."""
    groups: dict[int, list[T]] = {}
    for obj in objects:
        groups.setdefault(id(obj.host), []).append(obj)  # type: ignore[attr-defined]
    return list(groups.values())
