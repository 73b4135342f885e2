"""Checks applied to every user value before any command is built.

Each checker takes the field name (for the error message) and the value, and
returns the value in canonical form or raises an :class:`~pynetns.errors.InvalidInput`
subclass naming the field and the rule. They double as attrs validators through
:func:`attrs_validator`.

>>> interface_name("name", "eth0")
'eth0'
>>> interface_name("name", "a;b")
Traceback (most recent call last):
pynetns.errors.InvalidName: name='a;b': ...
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from .errors import InvalidAddress, InvalidName, InvalidValue

__all__ = [
    "IPAddress",
    "IPInterface",
    "IPNetwork",
    "IsolateMode",
    "argv",
    "attrs_validator",
    "batch_token",
    "converter",
    "gateway_address",
    "hostname",
    "interface_address",
    "interface_name",
    "ip_address",
    "isolate",
    "mac_address",
    "mtu",
    "namespace_name",
    "network",
    "optional",
    "owner_tag",
    "port",
    "protocol",
    "route_destination",
    "subnet",
    "sysctl_key",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SAFE = re.compile(r"[A-Za-z0-9_.-]+")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_SYSCTL = re.compile(r"[A-Za-z0-9_]+([./][A-Za-z0-9_-]+)*")
_SAFE_RULE = "only letters, digits, '_', '.' and '-', not starting with '-', not '.' or '..'"
_TAG = re.compile(r"pynetns:[A-Za-z0-9_.-]{1,40}")

#: the ranges no network of hosts may overlap, per IP version: (range, what it is)
_NOT_FOR_HOSTS: dict[int, tuple[tuple[IPNetwork, str], ...]] = {
    4: tuple(
        (ipaddress.IPv4Network(net), what)
        for net, what in (
            ("0.0.0.0/8", "'this network', and the default route"),
            ("127.0.0.0/8", "loopback"),
            ("169.254.0.0/16", "link-local"),
            ("224.0.0.0/4", "multicast"),
            ("240.0.0.0/4", "reserved, with the broadcast address"),
        )
    ),
    6: tuple(
        (ipaddress.IPv6Network(net), what)
        for net, what in (
            ("::/128", "the unspecified address, and the default route"),
            ("::1/128", "loopback"),
            ("::ffff:0:0/96", "IPv4-mapped"),
            ("fe80::/10", "link-local"),
            ("ff00::/8", "multicast"),
        )
    ),
}
_FOR_HOSTS = (
    "must be a unicast subnet, e.g. a private one (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, "
    "IPv6 fd00::/8) or a public one you route"
)

T = TypeVar("T")


def _safe_component(field: str, value: object, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidName(field, value, "must be a string")
    if not 1 <= len(value.encode()) <= max_bytes:
        raise InvalidName(field, value, f"must be 1 to {max_bytes} bytes long")
    if not _SAFE.fullmatch(value) or value.startswith("-") or value in (".", ".."):
        raise InvalidName(field, value, _SAFE_RULE)
    return value


def interface_name(field: str, value: object) -> str:
    """A Linux interface name: 1 to 15 bytes from ``[A-Za-z0-9_.-]``."""
    return _safe_component(field, value, 15)


def namespace_name(field: str, value: object) -> str:
    """A network namespace name: one safe path component under /run/netns."""
    return _safe_component(field, value, 64)


def hostname(field: str, value: object) -> str:
    """A name other namespaces resolve (an alias, like ``postgres``): 1 to 253 bytes from ``[A-Za-z0-9_.-]``,
    not starting or ending with ``-`` or ``.``, and not an IP address (it would read as one).

    >>> hostname("alias", "db.internal")
    'db.internal'
    """
    name = _safe_component(field, value, 253)
    if name[-1] in "-." or name[0] == ".":
        raise InvalidName(field, value, "must not start with '.' or end with '-' or '.'")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    raise InvalidName(field, value, "must be a name, not an IP address")


def interface_address(field: str, value: object) -> IPInterface:
    """An address with its prefix length, as ``ip addr add`` takes it (``172.17.0.1/16``)."""
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise InvalidAddress(field, value, "must be an address with a prefix length, e.g. '172.17.0.2/16'")
    try:
        return ipaddress.ip_interface(value)
    except ValueError as error:
        raise InvalidAddress(field, value, str(error)) from None


def ip_address(field: str, value: object) -> IPAddress:
    """A single IPv4 or IPv6 address, without prefix."""
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if not isinstance(value, str):
        raise InvalidAddress(field, value, "must be an IPv4 or IPv6 address string")
    try:
        return ipaddress.ip_address(value)
    except ValueError as error:
        raise InvalidAddress(field, value, str(error)) from None


def network(field: str, value: object) -> IPNetwork:
    """A network in CIDR form with no host bits set (``172.17.0.0/16``)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if not isinstance(value, str):
        raise InvalidAddress(field, value, "must be a CIDR string such as '172.17.0.0/16'")
    try:
        return ipaddress.ip_network(value)
    except ValueError as error:
        raise InvalidAddress(field, value, str(error)) from None


def subnet(field: str, value: object) -> IPNetwork:
    """A network of hosts (a lab's network, a topology's subnet): :func:`network`, and unicast —
    not overlapping loopback, link-local, multicast, reserved ranges or the whole address space."""
    net = network(field, value)
    for forbidden, what in _NOT_FOR_HOSTS[net.version]:
        if net.overlaps(forbidden):
            raise InvalidAddress(field, str(net), f"overlaps {forbidden} ({what}); a subnet {_FOR_HOSTS}")
    return net


def gateway_address(field: str, value: object) -> IPInterface:
    """:func:`interface_address` of a gateway (a bridge's): a unicast address — link-local is fine,
    loopback, multicast, unspecified and reserved are not."""
    address = interface_address(field, value)
    ip = address.ip
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified or (ip.version == 4 and ip.is_reserved):
        rule = (
            "must be a unicast address, e.g. '172.17.0.1/16' or 'fd00::1/64' "
            "(not loopback, multicast, unspecified or reserved)"
        )
        raise InvalidAddress(field, str(address), rule)
    return address


def route_destination(field: str, value: object) -> str:
    """``"default"`` or a CIDR; returned in the form ``ip route`` prints."""
    if value == "default":
        return "default"
    net = network(field, value)
    return str(net) if net.prefixlen != net.max_prefixlen else str(net.network_address)


def mtu(field: str, value: object) -> int:
    """An MTU between 68 (the IPv4 minimum) and 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 65535:
        raise InvalidValue(field, value, "must be an integer from 68 to 65535")
    return value


#: a network's isolation from the others: Docker's (True), none (False, netavark's default), or "strict"
IsolateMode = Literal[True, False, "strict"]


def isolate(field: str, value: object) -> IsolateMode:
    """``True``, ``False`` or ``"strict"`` (a network's isolation, as netavark's ``isolate`` option)."""
    if value is True or value is False or value == "strict":
        return value
    raise InvalidValue(field, value, 'must be true, false or "strict"')


def mac_address(field: str, value: object) -> str:
    """A unicast MAC address ``aa:bb:cc:dd:ee:ff``; returned lower-case."""
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        raise InvalidAddress(field, value, "must be a MAC address like '02:42:ac:11:00:02'")
    if int(value[:2], 16) & 1:
        raise InvalidAddress(field, value, "must be unicast (lowest bit of the first byte clear)")
    return value.lower()


def port(field: str, value: object) -> int:
    """A TCP/UDP port number, 1 to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidValue(field, value, "must be an integer port from 1 to 65535")
    return value


#: the transport protocols a port can be published on
PROTOCOLS = ("tcp", "udp", "sctp")


def protocol(field: str, value: object) -> str:
    """A transport protocol a port can be published on: ``"tcp"``, ``"udp"`` or ``"sctp"`` (any case; SCTP where
    the kernel has it, which publishing checks before any command)."""
    if not isinstance(value, str) or value.lower() not in PROTOCOLS:
        raise InvalidValue(field, value, "must be 'tcp', 'udp' or 'sctp'")
    return value.lower()


def sysctl_key(field: str, value: object) -> str:
    """A sysctl key such as ``net.ipv4.ip_forward`` (dots or slashes, no spaces)."""
    if not isinstance(value, str) or not _SYSCTL.fullmatch(value) or ".." in value:
        raise InvalidValue(field, value, "must be a sysctl key like 'net.ipv4.ip_forward'")
    return value


def batch_token(field: str, value: str) -> str:
    """A word safe to place in an ``ip -batch`` or ``nft -f`` line."""
    if not value or re.search(r"[\s\"'#;\\{}\x00]", value):
        raise InvalidValue(field, value, "must be one word with no quotes, spaces, '#', ';' or braces")
    return value


def owner_tag(field: str, value: object) -> str:
    """The tag pynetns marks what it creates with: ``pynetns:`` and 1 to 40 of ``[A-Za-z0-9_.-]``
    (it goes into ``ip -batch`` lines and firewall comments, one word)."""
    if not isinstance(value, str) or not _TAG.fullmatch(value):
        raise InvalidValue(field, value, "must be 'pynetns:' followed by 1 to 40 letters, digits, '_', '.' or '-'")
    return value


def argv(field: str, value: object) -> tuple[str, ...]:
    """A command as a list of arguments, never a shell string: at least the program, each a string."""
    if isinstance(value, (str, bytes, bytearray)):
        rule = "must be a list of arguments such as ['ping', '-c1', '10.0.0.2'], not a string (no shell runs it)"
        raise InvalidValue(field, value, rule)
    if not isinstance(value, Iterable):
        raise InvalidValue(field, value, "must be a list of arguments such as ['ping', '-c1', '10.0.0.2']")
    items = tuple(value)
    if not items:
        raise InvalidValue(field, [], "must not be empty: it names the program to run, then its arguments")
    for item in items:
        if not isinstance(item, str) or "\x00" in item:
            raise InvalidValue(field, list(items), f"every argument must be a string without NUL bytes, not {item!r}")
    return items


def attrs_validator(check: Callable[[str, Any], Any]) -> Callable[[Any, Any, Any], None]:
    """Wrap a checker as an attrs validator that names the attribute in its error."""

    def validate(instance: Any, attribute: Any, value: Any) -> None:
        check(attribute.name, value)

    return validate


def optional(check: Callable[[str, Any], T]) -> Callable[[str, Any], T | None]:
    """A checker that also accepts ``None``."""

    def checked(field: str, value: Any) -> T | None:
        return None if value is None else check(field, value)

    return checked


def converter(check: Callable[[str, Any], T]) -> Any:
    """Use a checker as an attrs field converter: validated *and* normalised, named by the field."""
    import attrs

    def convert(value: Any, field: Any) -> T:
        return check(field.name.lstrip("_"), value)

    return attrs.Converter(convert, takes_field=True)
