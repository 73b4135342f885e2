"""Address management: free subnets from Docker-like default pools, and addresses within a subnet.

>>> allocator = Allocator(ipaddress.ip_network("10.5.0.0/24"))
>>> str(allocator.gateway), str(allocator.allocate()), str(allocator.allocate("10.5.0.9"))
('10.5.0.1/24', '10.5.0.2/24', '10.5.0.9/24')
>>> str(pick_subnet([ipaddress.ip_network("172.17.0.0/16")]))
'172.18.0.0/16'
>>> str(pick_subnet6([ipaddress.ip_network("fd12:3456:789a::/64")], ipaddress.ip_network("fd12:3456:789a::/48")))
'fd12:3456:789a:1::/64'
>>> moved = allocator.moved_to(ipaddress.ip_network("10.6.0.0/24"))  # the same places in another subnet
>>> str(moved.gateway), str(moved.allocate())
('10.6.0.1/24', '10.6.0.3/24')
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import InvalidAddress, InvalidValue, SubnetOverlap
from ..host import Host
from ..namespace import Namespace, resolve_host
from ..runtime import Runtime
from ..validation import IPAddress, IPInterface, IPNetwork, ip_address
from ..validation import subnet as valid_subnet
from .journal import labs

__all__ = [
    "DEFAULT_POOLS",
    "ULA_FILE",
    "Allocator",
    "default_subnets",
    "dual_stack",
    "host_ula",
    "pick_subnet",
    "pick_subnet6",
    "random_ula",
    "rebase",
    "taken_networks",
]

log = logging.getLogger(__name__)

#: the file, beside the host's lab journals, naming the unique local /48 its IPv6 default subnets come from
ULA_FILE = "ipv6-ula"

#: (pool, prefix length of each subnet taken from it), as Docker's default address pools
DEFAULT_POOLS: tuple[tuple[str, int], ...] = (
    *((f"172.{second}.0.0/16", 16) for second in range(17, 32)),
    ("192.168.0.0/16", 20),
)


def default_subnets(pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> Iterator[ipaddress.IPv4Network]:
    """Every candidate subnet, in order."""
    for pool, prefix in pools:
        yield from ipaddress.IPv4Network(pool).subnets(new_prefix=prefix)


def pick_subnet(taken: Iterable[IPNetwork], pools: Iterable[tuple[str, int]] = DEFAULT_POOLS) -> IPNetwork:
    """The first default subnet overlapping none of ``taken``."""
    used = list(taken)
    for candidate in default_subnets(pools):
        if not any(candidate.overlaps(other) for other in used if other.version == 4):
            return candidate
    raise SubnetOverlap("subnet", None, "every subnet of the default pools is in use")


def pick_subnet6(taken: Iterable[IPNetwork], ula: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    """The first /64 of the unique local ``ula`` (a /48) overlapping none of ``taken``."""
    used = [other for other in taken if other.version == 6]
    for candidate in ula.subnets(new_prefix=64):
        if not any(candidate.overlaps(other) for other in used):
            return candidate
    raise SubnetOverlap("subnet6", None, f"every /64 of {ula} is in use")


def dual_stack(
    chosen: IPNetwork,
    subnet6: str | None,
    ipv6: bool,
    gateway6: str | None,
    taken: list[IPNetwork],
    ula: Callable[[], ipaddress.IPv6Network],
) -> Allocator | None:
    """The IPv6 side of a network whose subnet is ``chosen`` (``None``: the network has one family): ``subnet6``,
    or with ``ipv6`` the first /64 of ``ula()`` (the host's unique local /48) overlapping none of ``taken``."""
    if chosen.version == 6 and subnet6 is not None:
        raise InvalidValue("subnet6", subnet6, f"goes beside an IPv4 subnet; {chosen} is IPv6 already")
    if subnet6 is None and not (ipv6 and chosen.version == 4):
        if gateway6 is not None:
            raise InvalidValue("gateway6", gateway6, "needs an IPv6 subnet beside the IPv4 one (subnet6 or ipv6=True)")
        return None
    if subnet6 is None:
        six: IPNetwork = pick_subnet6(taken, ula())
    else:
        six = valid_subnet("subnet6", subnet6)
        if six.version != 6:
            raise InvalidValue("subnet6", subnet6, "must be an IPv6 subnet, like 'fd00:30::/64'")
    clash = next((other for other in taken if other.overlaps(six)), None)
    if clash is not None:
        raise SubnetOverlap("subnet6", str(six), f"overlaps {clash}, already in use")
    return Allocator(six, gateway6)


def random_ula() -> ipaddress.IPv6Network:
    """A unique local /48 as RFC 4193 draws one: ``fd`` and 40 random bits."""
    return ipaddress.IPv6Network(((0xFD << 120) | (secrets.randbits(40) << 80), 48))


def host_ula(host: Host) -> ipaddress.IPv6Network:
    """The unique local /48 of ``host``'s IPv6 default subnets, drawn once and kept beside its lab journals
    (as Docker 27 keeps one per daemon), so every process on the host agrees on it. Written under the host
    lock, read by every later caller; a dry run reads it and writes nothing (a fresh one if there is none)."""
    runtime = host.runtime
    path = runtime.folder.parent / ULA_FILE
    found = _read_ula(runtime, path)
    if found is not None or host.dry_run:
        return found or random_ula()
    with host.lock():
        found = _read_ula(runtime, path)
        if found is not None:
            return found
        ula = random_ula()
        runtime.replace_file(path, f"{ula}\n")  # on the machine the Host drives
        log.info("IPv6 default subnets of this host come from %s (%s)", ula, path)
        return ula


def _read_ula(runtime: Runtime, path: Path) -> ipaddress.IPv6Network | None:
    try:
        text = (runtime.read_file(path) or "").strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        ula = ipaddress.IPv6Network(text)
    except ValueError:
        log.warning("ignoring %s: %r is no IPv6 network", path, text)
        return None
    return ula if ula.prefixlen <= 64 and ula.subnet_of(ipaddress.IPv6Network("fc00::/7")) else None


def rebase(address: IPAddress, old: IPNetwork, new: IPNetwork) -> IPAddress:
    """The address at the same place in ``new`` as ``address`` has in ``old``."""
    offset = int(address) - int(old.network_address)
    if not 0 < offset < new.num_addresses - 1:
        raise InvalidAddress("ip", str(address), f"has no place in {new} (it is host {offset} of {old})")
    return ipaddress.ip_address(int(new.network_address) + offset)


class Allocator:
    """Hands out the addresses of one subnet: the gateway first (``.1`` by default), then the next free."""

    def __init__(self, subnet: IPNetwork, gateway: IPAddress | str | None = None) -> None:
        self.subnet = subnet
        if subnet.num_addresses < 4:  # /31, /32 (/127, /128): no room for a gateway and an endpoint
            raise InvalidAddress("subnet", str(subnet), "is too small: a network needs /30 (IPv6: /126) or larger")
        first: IPAddress = next(iter(subnet.hosts()))  # type: ignore[assignment]
        gateway_ip = first if gateway is None else ip_address("gateway", gateway)
        self._used: set[IPAddress] = set()
        self._cursor = int(first)  # every host address below it is taken: allocation stays O(1) per address
        self.gateway: IPInterface = self._take("gateway", gateway_ip)

    def _take(self, field: str, address: IPAddress) -> IPInterface:
        subnet = self.subnet
        if address not in subnet or address in (subnet.network_address, subnet.broadcast_address):
            raise InvalidAddress(field, str(address), f"is not a host address of {subnet}")
        if address in self._used:
            raise InvalidAddress(field, str(address), f"is already taken in {subnet}")
        self._used.add(address)
        return ipaddress.ip_interface(f"{address}/{subnet.prefixlen}")

    def allocate(self, ip: IPAddress | str | None = None) -> IPInterface:
        """``ip`` if given and free, else the next free host address."""
        if ip is not None:
            return self._take("ip", ip_address("ip", ip))
        last = int(self.subnet.broadcast_address) - 1
        while self._cursor <= last:
            candidate = ipaddress.ip_address(self._cursor)
            if candidate not in self._used:
                return self._take("ip", candidate)
            self._cursor += 1
        raise InvalidAddress("ip", None, f"no free address left in {self.subnet}")

    def release(self, address: IPInterface) -> None:
        self._used.discard(address.ip)
        self._cursor = min(self._cursor, int(address.ip))

    def moved_to(self, subnet: IPNetwork) -> Allocator:
        """An allocator of ``subnet`` whose taken addresses sit where this one's sit in its subnet."""
        moved = Allocator(subnet, rebase(self.gateway.ip, self.subnet, subnet))
        for address in sorted(self._used):
            if address != self.gateway.ip:
                moved._take("ip", rebase(address, self.subnet, subnet))
        moved._cursor = int(subnet.network_address) + (self._cursor - int(self.subnet.network_address))
        return moved


def taken_networks(host: Host | None = None, *, other_than: str | None = None) -> list[IPNetwork]:
    """The IPv4/IPv6 networks in use on the host: its routes (the default aside), its addresses, and the
    subnets of live labs (but ``other_than``), those their journals reserve before they exist included."""
    host = resolve_host(host)
    root = Namespace.host(host)
    taken: list[IPNetwork] = [
        ipaddress.ip_network(route.destination, strict=False)
        for family in (4, 6)
        for route in root.routes(family)
        if route.destination != "default"
    ]
    taken += [address.network for address in root.addresses()]
    for record in labs(host):
        if (record.alive or record.persistent) and record.id != other_than:
            for item in record.data.get("networks", ()):
                taken += [ipaddress.ip_network(item[key]) for key in ("subnet", "subnet6") if item.get(key)]
    return taken
