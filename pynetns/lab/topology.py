"""Topology files: a whole lab — networks, namespaces, links, published ports — in TOML, JSON or YAML.

::

    name = "shop"
    isolated = true

    [networks.front]
    subnet = "10.30.0.0/24"
    subnet6 = "fd00:30::/64"   # dual stack (or: ipv6 = true, a /64 the lab picks)

    [networks.back]
    subnet = "10.31.0.0/24"

    [namespaces.web]
    networks = ["front", "back"]

    [namespaces.db]
    networks = [{ network = "back", ip = "10.31.0.10" }]
    aliases = ["postgres"]        # web resolves db and postgres (pynetns.lab.names)

    [[publish]]
    namespace = "web"
    host_port = 8080
    port = 80

    [[impair]]                      # also: impair = { ... } in a network's table of a namespace, or a link
    namespace = "db"
    delay = "50ms"
    loss = "1%"

    [[partition]]                   # two groups (one_way = true: what the first sends), or a shape
    groups = [["web"], ["db"]]

``Lab.from_file("shop.toml")`` (or :meth:`Lab.from_topology <pynetns.Lab.from_topology>`) returns a
:class:`~pynetns.Lab` with all of it declared (:meth:`Topology.declare` declares it into a lab it is
given); ``lab.apply()`` creates it, and then :meth:`Topology.apply_faults` impairs the links and cuts the
partitions it declares (``pynetns up`` does both). JSON and YAML files have the same structure (YAML needs PyYAML).
The whole file is checked before anything is declared, and every error names the file, the field and the rule:

>>> from pynetns import Host, Lab
>>> topology = Topology.from_dict({
...     "networks": {"back": {"subnet": "10.31.0.0/24"}},
...     "namespaces": {"db": {"networks": [{"network": "back", "ip": "10.31.0.2"}]}, "web": {"networks": ["back"]}},
... })
>>> lab = Lab.from_topology(topology, host=Host(dry_run=True))
>>> [(endpoint.interface, str(endpoint.ip)) for endpoint in lab.endpoints]
[('eth0', '10.31.0.2/24'), ('eth0', '10.31.0.3/24')]
>>> Topology.from_dict({
...     "networks": {"back": {"subnet": "10.31.0.0/24"}},
...     "namespaces": {"db": {"networks": [{"network": "back", "ip": "10.99.0.1"}]}},
... }, source="shop.toml")
Traceback (most recent call last):
pynetns.errors.TopologyError: shop.toml: namespaces.db.networks[0].ip:
    10.99.0.1 is not in subnet 10.31.0.0/24 of network back

Fixed addresses (``ip``) are reserved first, so the addresses handed out in
order never take them; networks with a ``subnet`` are declared before those
whose subnet the lab picks, so a picked subnet never takes a fixed one.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import ipaddress
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import attrs

from ..errors import BackendUnavailable, InvalidAddress, InvalidInput, InvalidValue, TopologyError
from ..impairment import Direction, Impairment, parse_direction
from ..validation import (
    IPAddress,
    IPNetwork,
    IsolateMode,
    converter,
    hostname,
    interface_name,
    ip_address,
    namespace_name,
    optional,
)
from ..validation import isolate as valid_isolate
from ..validation import mtu as valid_mtu
from ..validation import port as valid_port
from ..validation import protocol as valid_protocol
from ..validation import subnet as valid_subnet
from .ipam import Allocator
from .shapes import SHAPES, grudge

if TYPE_CHECKING:
    from .model import Endpoint, Network

__all__ = [
    "FORMATS",
    "Declarable",
    "ImpairSpec",
    "LinkSpec",
    "NamespaceSpec",
    "NetworkSpec",
    "PartitionSpec",
    "PublishSpec",
    "Topology",
    "TopologyError",
]


class Declarable(Protocol):
    """What :meth:`Topology.declare` declares into: a :class:`~pynetns.Lab` (topology does not import it)."""

    @property
    def name(self) -> str: ...

    @property
    def networks(self) -> Mapping[str, Network]: ...

    @property
    def namespaces(self) -> Mapping[str, Any]: ...

    def network(
        self,
        name: str,
        subnet: str | None = ...,
        gateway: str | None = ...,
        nat: bool = ...,
        mtu: int | None = ...,
        internal: bool = ...,
        isolate: IsolateMode = ...,
        *,
        subnet6: str | None = ...,
        ipv6: bool = ...,
    ) -> Any: ...

    def namespace(self, name: str, networks: Sequence[Any] = ..., aliases: Sequence[str] = ...) -> Any: ...

    def connect(self, net: str, namespace: str, ip: str | None = ..., ifname: str | None = ...) -> Endpoint: ...

    def publish(
        self,
        target: Endpoint | str,
        host_port: int,
        port: int,
        protocol: str = ...,
        host_ip: str | None = ...,
        host_port_end: int | None = ...,
    ) -> Any: ...

    def endpoint(self, namespace: Any, network: Any = ...) -> Endpoint: ...

    def partition(
        self,
        group_a: Any = ...,
        group_b: Any = ...,
        *,
        shape: str | None = ...,
        one_way: bool = ...,
        seed: int | None = ...,
        among: Any = ...,
        node: Any = ...,
    ) -> Any: ...


_Lab = TypeVar("_Lab", bound=Declarable)

log = logging.getLogger(__name__)

#: file suffix (without the dot) → format name
FORMATS = {"toml": "toml", "json": "json", "yaml": "yaml", "yml": "yaml"}

T = TypeVar("T")


def _same_addresses(one: IPAddress | None, other: IPAddress | None) -> bool:
    """Whether two published ports' host addresses may share an address (None, 0.0.0.0, ::: every address)."""
    if one is None or other is None:
        return True  # every address of the endpoint's family, which may be either
    if one.version != other.version:
        return False
    return one.is_unspecified or other.is_unspecified or one == other


def lab_id(field: str, value: object) -> str:
    """A lab's short id: six lowercase hex digits (``1a2b3c``), as its kernel names carry it."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{6}", value):
        raise InvalidValue(field, value, "must be six lowercase hex digits, like 1a2b3c")
    return value


def flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue(field, value, "must be true or false")
    return value


def _host_address_problem(address: IPAddress, subnet: IPNetwork) -> str | None:
    """Why ``address`` cannot be given to an interface on ``subnet`` (as the lab's allocator judges), or None."""
    if address.version != subnet.version or address not in subnet:
        return f"is not in subnet {subnet}"
    if address == subnet.network_address:
        return f"is the network address of subnet {subnet}"
    if address == subnet.broadcast_address:
        return f"is the broadcast address of subnet {subnet}"
    return None


@attrs.frozen
class NetworkSpec:
    """A network of a topology: the arguments of :meth:`Lab.network <pynetns.Lab.network>`."""

    name: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    subnet: IPNetwork | None = attrs.field(default=None, converter=converter(optional(valid_subnet)))  # type: ignore[misc]
    gateway: IPAddress | None = attrs.field(default=None, converter=converter(optional(ip_address)))  # type: ignore[misc]
    nat: bool = attrs.field(default=True, converter=converter(flag))  # type: ignore[misc]
    internal: bool = attrs.field(default=False, converter=converter(flag))  # type: ignore[misc]
    mtu: int | None = attrs.field(default=None, converter=converter(optional(valid_mtu)))  # type: ignore[misc]
    isolate: IsolateMode = attrs.field(default=True, converter=converter(valid_isolate))  # type: ignore[misc]
    #: dual stack: the IPv6 subnet beside an IPv4 one, or ``ipv6 = true`` for a /64 the lab picks
    subnet6: IPNetwork | None = attrs.field(default=None, converter=converter(optional(valid_subnet)))  # type: ignore[misc]
    ipv6: bool | None = attrs.field(default=None, converter=converter(optional(flag)))  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        if self.subnet6 is not None:
            if self.subnet6.version != 6:
                raise InvalidAddress("subnet6", str(self.subnet6), "must be an IPv6 subnet, like 'fd00:30::/64'")
            if self.subnet is not None and self.subnet.version == 6:
                rule = f"goes beside an IPv4 subnet; {self.subnet} is IPv6 already"
                raise InvalidAddress("subnet6", str(self.subnet6), rule)
            Allocator(self.subnet6)  # large enough for a gateway and an address
        if self.subnet is None:
            if self.gateway is not None:
                rule = f"{self.gateway} is a gateway without a subnet; set the network's subnet too"
                raise InvalidAddress("gateway", str(self.gateway), rule)
            return
        smallest = self.subnet.max_prefixlen - 2
        if self.subnet.prefixlen > smallest:
            rule = f"{self.subnet} is too small: a network needs a /{smallest} or larger (a gateway and one address)"
            raise InvalidAddress("subnet", str(self.subnet), rule)
        if self.gateway is not None:
            problem = _host_address_problem(self.gateway, self.subnet)
            if problem is not None:
                raise InvalidAddress("gateway", str(self.gateway), f"{self.gateway} {problem}")
        try:
            Allocator(self.subnet, self.gateway)  # exactly what the lab will do with them
        except InvalidAddress as error:
            raise InvalidAddress(error.field, error.value, f"{error.value} {error.rule}") from None

    @property
    def gateway_ip(self) -> IPAddress | None:
        """The gateway's address: the one given, else the subnet's first host (None without a subnet)."""
        return None if self.subnet is None else Allocator(self.subnet, self.gateway).gateway.ip


@attrs.frozen
class LinkSpec:
    """``namespace`` joined to ``network``, with a fixed ``ip`` and interface name ``ifname`` if given."""

    namespace: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    network: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    ip: IPAddress | None = attrs.field(default=None, converter=converter(optional(ip_address)))  # type: ignore[misc]
    ifname: str | None = attrs.field(default=None, converter=converter(optional(interface_name)))  # type: ignore[misc]


def _hostnames(names: Sequence[object]) -> tuple[str, ...]:
    return tuple(hostname("aliases", name) for name in names)


@attrs.frozen
class NamespaceSpec:
    """A namespace (a "container") of a topology, the networks it joins, in order (eth0, eth1, …), and the other
    names its networks' members resolve it by (``aliases``)."""

    name: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    networks: tuple[LinkSpec, ...] = attrs.field(default=(), converter=tuple)
    aliases: tuple[str, ...] = attrs.field(default=(), converter=_hostnames)

    def __attrs_post_init__(self) -> None:
        for link in self.networks:
            if link.namespace != self.name:
                raise InvalidValue("networks", link, f"joins namespace {link.namespace}, not {self.name}")


@attrs.frozen
class PublishSpec:
    """A published port: ``host_port`` of the host to ``port`` of ``namespace`` (on ``network``, if given).

    With ``host_port_end``, host ports ``host_port..host_port_end`` map one to one onto ``port``, ``port + 1``, …
    """

    namespace: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    host_port: int = attrs.field(converter=converter(valid_port))  # type: ignore[misc]
    port: int = attrs.field(converter=converter(valid_port))  # type: ignore[misc]
    protocol: str = attrs.field(default="tcp", converter=converter(valid_protocol))  # type: ignore[misc]
    host_ip: IPAddress | None = attrs.field(default=None, converter=converter(optional(ip_address)))  # type: ignore[misc]
    network: str | None = attrs.field(default=None, converter=converter(optional(namespace_name)))  # type: ignore[misc]
    host_port_end: int | None = attrs.field(default=None, converter=converter(optional(valid_port)))  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        if self.host_port_end is not None and self.host_port_end < self.host_port:
            rule = f"{self.host_port_end} is below host_port {self.host_port}"
            raise InvalidValue("host_port_end", self.host_port_end, rule)
        if self.port + self.last_host_port - self.host_port > 65535:
            rule = f"{self.port} would make the range of ports end above 65535"
            raise InvalidValue("port", self.port, rule)

    @property
    def last_host_port(self) -> int:
        return self.host_port if self.host_port_end is None else self.host_port_end


def _impairment(value: object) -> Impairment:
    if isinstance(value, Impairment):
        return value
    if not isinstance(value, Mapping):
        raise InvalidValue("impairment", value, "must be a table of delay, jitter, loss, rate, duplicate, corrupt")
    impairment = Impairment(**value)
    if not impairment:
        rule = "gives no impairment: set delay, jitter, loss, rate, duplicate or corrupt"
        raise InvalidValue("impairment", None, rule)
    return impairment


@attrs.frozen
class ImpairSpec:
    """An impaired link: ``namespace``'s link to ``network`` (default: its first), as :meth:`Lab.impair
    <pynetns.Lab.impair>` takes it; applied by ``pynetns up`` once the lab is up (:meth:`Topology.apply_faults`)."""

    namespace: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    network: str | None = attrs.field(default=None, converter=converter(optional(namespace_name)))  # type: ignore[misc]
    impairment: Impairment = attrs.field(default=None, converter=_impairment)
    direction: Direction = attrs.field(default="both", converter=converter(parse_direction))  # type: ignore[misc]
    #: where the file declares it (``impair[0]``, ``namespaces.web.networks[0].impair``)
    at: str = attrs.field(default="", eq=False, repr=False, kw_only=True)


def _names_list(field: str, value: object) -> tuple[str, ...]:
    """A list of namespace names (or one string of them, comma-separated: ``"web,db"``)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidValue(field, value, 'must be a list of namespace names, like ["web", "db"] or "web,db"')
    return tuple(namespace_name(field, item.strip() if isinstance(item, str) else item) for item in items)


def _shape(field: str, value: object) -> str:
    if value not in SHAPES:
        raise InvalidValue(field, value, f"is not a partition shape; the shapes: {', '.join(SHAPES)}")
    return str(value)


def _groups(value: object) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InvalidValue("groups", value, 'must be two groups of namespaces, like [["web"], ["db", "cache"]]')
    return tuple(_names_list("groups", group) for group in value)


def _seed(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue(field, value, "must be an integer")
    return value


@attrs.frozen
class PartitionSpec:
    """A partition in force once the lab is up: two ``groups`` (cut both ways, or ``one_way``: only what the first
    sends to the second), or a named ``shape`` (:data:`~pynetns.lab.shapes.SHAPES`) over ``among`` (default:
    every namespace), drawn with ``seed``; ``node``: the one ``isolate`` cuts off. As :meth:`Lab.partition
    <pynetns.Lab.partition>` takes them."""

    groups: tuple[tuple[str, ...], ...] = attrs.field(default=None, converter=_groups)
    shape: str | None = attrs.field(default=None, converter=converter(optional(_shape)))  # type: ignore[misc]
    one_way: bool = attrs.field(default=False, converter=converter(flag))  # type: ignore[misc]
    seed: int | None = attrs.field(default=None, converter=converter(optional(_seed)))  # type: ignore[misc]
    among: tuple[str, ...] | None = attrs.field(default=None, converter=converter(optional(_names_list)))  # type: ignore[misc]
    node: str | None = attrs.field(default=None, converter=converter(optional(namespace_name)))  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        if self.shape is None:
            if not self.groups:
                raise InvalidValue("groups", None, "is required (two groups of namespaces), or a shape")
            for field in ("seed", "among", "node"):
                if getattr(self, field) is not None:
                    raise InvalidValue(field, getattr(self, field), "goes with a shape, not with two groups")
            both = [name for name in self.groups[0] if name in self.groups[1]]
            if both:
                raise InvalidValue("groups", both, "a namespace cannot be on both sides of a partition")
            return
        if self.groups:
            raise InvalidValue(
                "groups", [list(group) for group in self.groups], f"a {self.shape} partition takes no groups"
            )
        if self.one_way:
            raise InvalidValue("one_way", True, "goes with two groups, not with a shape")
        if self.node is not None and self.shape != "isolate":
            raise InvalidValue("node", self.node, "only the isolate shape takes a node")

    @property
    def members(self) -> tuple[str, ...]:
        """Every namespace it names."""
        named = [*(name for group in self.groups for name in group), *(self.among or ())]
        return tuple(dict.fromkeys([*named, *([self.node] if self.node else [])]))


class _Wire(NamedTuple):
    """A link as it will be declared: where it came from, its interface name and its address."""

    path: str
    link: LinkSpec
    ifname: str
    ip: IPAddress | None  # None: the lab picks the subnet, and so the address


@attrs.frozen
class Topology:
    """A lab described as data: build it with :meth:`from_file` or :meth:`from_dict`, then :meth:`lab`.

    Constructing one checks it as a whole (references, duplicates, addresses);
    errors are :class:`TopologyError` naming :attr:`source`.
    """

    name: str | None = attrs.field(default=None, converter=converter(optional(namespace_name)))  # type: ignore[misc]
    isolated: bool = attrs.field(default=False, converter=converter(flag))  # type: ignore[misc]
    #: ``names = false``: the members do not resolve each other by name (``Lab(names=False)``)
    names: bool = attrs.field(default=True, converter=converter(flag))  # type: ignore[misc]
    networks: tuple[NetworkSpec, ...] = attrs.field(default=(), converter=tuple)
    namespaces: tuple[NamespaceSpec, ...] = attrs.field(default=(), converter=tuple)
    links: tuple[LinkSpec, ...] = attrs.field(default=(), converter=tuple)
    publish: tuple[PublishSpec, ...] = attrs.field(default=(), converter=tuple)
    #: impaired links and partitions: applied once the lab is up (:meth:`apply_faults`; ``pynetns up`` does it)
    impair: tuple[ImpairSpec, ...] = attrs.field(default=(), converter=tuple)
    partition: tuple[PartitionSpec, ...] = attrs.field(default=(), converter=tuple)
    source: str = attrs.field(default="<Topology>", eq=False, repr=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        self._check_networks()
        self._check_namespaces()
        wires = self._wiring()
        self._check_publish(wires)
        self._check_impair(wires)
        self._check_partitions()

    # -- reading ----------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, format: str | None = None) -> Topology:
        """Read a ``.toml``, ``.json``, ``.yaml`` or ``.yml`` file (``format`` overrides the suffix)."""
        source = os.fspath(path)
        kind = format if format is not None else Path(source).suffix.lstrip(".")
        if kind.lower() not in FORMATS:
            raise TopologyError(source, "format", kind, f"{kind!r} is not a topology format; use {_formats()}")
        data = Path(source).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TopologyError(source, f"byte {error.start}", None, "is not UTF-8 text") from None
        return cls.from_text(text, kind, source=source)

    @classmethod
    def from_text(cls, text: str, format: str, *, source: str = "<text>") -> Topology:
        """Parse ``text`` as ``format`` (``"toml"``, ``"json"``, ``"yaml"``); errors name ``source``."""
        kind = FORMATS.get(format.lower())
        if kind is None:
            raise TopologyError(source, "format", format, f"{format!r} is not a topology format; use {_formats()}")
        parse = {"toml": _load_toml, "json": _load_json, "yaml": _load_yaml}[kind]
        with _not_too_deep(source):
            return cls.from_dict(parse(text, source), source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Topology:
        """Build from the parsed structure of a topology file; errors name ``source``."""
        with _not_too_deep(source):
            return cls._from_dict(data, source)

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], source: str) -> Topology:
        top = _table(source, "", data, _TOP)
        networks = [_network(source, name, value) for name, value in _names(source, "networks", top).items()]
        namespaces = [_namespace(source, name, value) for name, value in _names(source, "namespaces", top).items()]
        links = [_link(source, index, item) for index, item in enumerate(_list(source, "links", top.get("links", ())))]
        publish = [
            _publish(source, index, item) for index, item in enumerate(_list(source, "publish", top.get("publish", ())))
        ]
        impair = [
            _impair(source, index, item) for index, item in enumerate(_list(source, "impair", top.get("impair", ())))
        ]
        # an impair table on a namespace's network or on a link: the same, after the top-level ones
        for name, value in _names(source, "namespaces", top).items():
            for index, item in enumerate(value.get("networks", ()) if isinstance(value, Mapping) else ()):
                if isinstance(item, Mapping) and item.get("impair") is not None:
                    where = f"{_join('namespaces', name)}.networks[{index}].impair"
                    impair.append(_inline_impair(source, where, name, item["network"], item["impair"]))
        for index, item in enumerate(top.get("links", ())):
            if isinstance(item, Mapping) and item.get("impair") is not None:
                where = f"links[{index}].impair"
                impair.append(_inline_impair(source, where, item["namespace"], item["network"], item["impair"]))
        partition = [
            _partition(source, index, item)
            for index, item in enumerate(_list(source, "partition", top.get("partition", ())))
        ]
        return _build(
            cls,
            source,
            "",
            {},
            name=top.get("name"),
            isolated=top.get("isolated", False),
            names=top.get("names", True),
            networks=networks,
            namespaces=namespaces,
            links=links,
            publish=publish,
            impair=impair,
            partition=partition,
            source=source,
        )

    def to_dict(self) -> dict[str, Any]:
        """The canonical long form, as :meth:`from_dict` reads it (and ``json.dumps`` writes it)."""

        def link(spec: LinkSpec, *keys: str) -> dict[str, Any]:
            return _present({key: getattr(spec, key) for key in (*keys, "network", "ip", "ifname")})

        data: dict[str, Any] = _present({"name": self.name})
        data["isolated"] = self.isolated
        if not self.names:
            data["names"] = False
        data["networks"] = {
            spec.name: _present({key: getattr(spec, key) for key in _NETWORK}) for spec in self.networks
        }
        data["namespaces"] = {
            spec.name: {
                "networks": [link(item) for item in spec.networks],
                **({"aliases": list(spec.aliases)} if spec.aliases else {}),
            }
            for spec in self.namespaces
        }
        data["links"] = [link(spec, "namespace") for spec in self.links]
        data["publish"] = [_present({key: getattr(spec, key) for key in _PUBLISH}) for spec in self.publish]
        data["impair"] = [
            _present(
                {
                    "namespace": spec.namespace,
                    "network": spec.network,
                    **attrs.asdict(spec.impairment),
                    "direction": spec.direction,
                }
            )
            for spec in self.impair
        ]
        data["partition"] = [
            _present(
                {
                    "groups": [list(group) for group in spec.groups] or None,
                    "shape": spec.shape,
                    "one_way": spec.one_way or None,
                    "seed": spec.seed,
                    "among": None if spec.among is None else list(spec.among),
                    "node": spec.node,
                }
            )
            for spec in self.partition
        ]
        return data

    # -- checking ---------------------------------------------------------

    def _error(self, field: str, value: object, rule: str) -> TopologyError:
        return TopologyError(self.source, field, value, rule)

    def _check_networks(self) -> None:
        seen: dict[str, NetworkSpec] = {}
        for spec in self.networks:
            path = f"networks.{_key(spec.name)}"
            if spec.name in seen:
                raise self._error(path, spec.name, f"network {spec.name} is declared twice")
            for other in seen.values():
                if spec.subnet is not None and other.subnet is not None and spec.subnet.overlaps(other.subnet):
                    rule = f"{spec.subnet} overlaps subnet {other.subnet} of network {other.name}"
                    raise self._error(f"{path}.subnet", str(spec.subnet), rule)
                theirs = [subnet for subnet in (other.subnet, other.subnet6) if subnet is not None]
                clash = next((subnet for subnet in theirs if spec.subnet6 and spec.subnet6.overlaps(subnet)), None)
                if spec.subnet6 is not None and clash is not None:
                    rule = f"{spec.subnet6} overlaps subnet {clash} of network {other.name}"
                    raise self._error(f"{path}.subnet6", str(spec.subnet6), rule)
            seen[spec.name] = spec

    def _check_namespaces(self) -> None:
        seen: set[str] = set()
        for spec in self.namespaces:
            if spec.name in seen:
                rule = f"namespace {spec.name} is declared twice"
                raise self._error(f"namespaces.{_key(spec.name)}", spec.name, rule)
            seen.add(spec.name)
        names = {spec.name: spec.name for spec in self.namespaces}
        for spec in self.namespaces:
            for index, alias in enumerate(spec.aliases):
                if alias in names:
                    owner = names[alias]
                    rule = "is its own name" if owner == spec.name else f"already names namespace {owner}"
                    raise self._error(f"namespaces.{_key(spec.name)}.aliases[{index}]", alias, rule)
                names[alias] = spec.name

    def _wiring(self) -> list[_Wire]:
        """Every link in the order it is declared, with its interface name and address; checked."""
        networks = {spec.name: spec for spec in self.networks}
        namespaces = [spec.name for spec in self.namespaces]
        items: list[tuple[str, str, LinkSpec]] = []  # (path of the item, path naming its network, link)
        for spec in self.namespaces:
            for index, link in enumerate(spec.networks):
                path = f"namespaces.{_key(spec.name)}.networks[{index}]"
                items.append((path, path, link))
        for index, link in enumerate(self.links):
            path = f"links[{index}]"
            if link.namespace not in namespaces:
                rule = _unknown("namespace", link.namespace, namespaces)
                raise self._error(f"{path}.namespace", link.namespace, rule)
            items.append((path, f"{path}.network", link))
        joined: dict[tuple[str, str], str] = {}
        counts: dict[str, int] = {}
        interfaces: dict[tuple[str, str], str] = {}
        addresses: dict[tuple[str, IPAddress], str] = {}
        wires: list[_Wire] = []
        for path, network_path, link in items:
            net = networks.get(link.network)
            if net is None:
                raise self._error(network_path, link.network, _unknown("network", link.network, list(networks)))
            where = joined.setdefault((link.namespace, link.network), path)
            if where != path:
                rule = f"namespace {link.namespace} is already connected to network {link.network} by {where}"
                raise self._error(network_path, link.network, rule)
            count = counts[link.namespace] = counts.get(link.namespace, -1) + 1
            ifname = link.ifname if link.ifname is not None else f"eth{count}"
            where = interfaces.setdefault((link.namespace, ifname), path)
            if where != path:
                field, what = (f"{path}.ifname", ifname) if link.ifname is not None else (path, f"its default {ifname}")
                rule = f"{what} is already used in namespace {link.namespace} by {where}"
                raise self._error(field, ifname, rule if link.ifname is not None else f"{rule}; give it an ifname")
            if link.ip is not None:
                self._check_ip(f"{path}.ip", link.ip, net, addresses)
            wires.append(_Wire(path, link, ifname, link.ip))
        return self._allocate(wires)

    def _check_ip(self, field: str, ip: IPAddress, net: NetworkSpec, taken: dict[tuple[str, IPAddress], str]) -> None:
        if net.subnet is None:
            raise self._error(field, str(ip), f"network {net.name} has no subnet; a fixed ip needs one")
        problem = _host_address_problem(ip, net.subnet)
        if problem is not None:
            raise self._error(field, str(ip), f"{ip} {problem} of network {net.name}")
        if ip == net.gateway_ip:
            raise self._error(field, str(ip), f"{ip} is the gateway of network {net.name}")
        where = taken.setdefault((net.name, ip), field)
        if where != field:
            raise self._error(field, str(ip), f"{ip} is already taken in network {net.name} by {where}")

    def _allocate(self, wires: list[_Wire]) -> list[_Wire]:
        """Give every link to a network with a subnet its address: fixed ones first, then the next free."""
        allocators = {spec.name: Allocator(spec.subnet, spec.gateway) for spec in self.networks if spec.subnet}
        for wire in wires:
            if wire.ip is not None:
                allocators[wire.link.network].allocate(wire.ip)
        done = []
        for wire in wires:
            allocator = allocators.get(wire.link.network)
            if wire.ip is not None or allocator is None:
                done.append(wire)
                continue
            try:
                done.append(wire._replace(ip=allocator.allocate().ip))
            except InvalidAddress:
                rule = f"no free address left in subnet {allocator.subnet} of network {wire.link.network}"
                raise self._error(wire.path, wire.link.network, rule) from None
        return done

    def _check_publish(self, wires: list[_Wire]) -> None:
        namespaces = [spec.name for spec in self.namespaces]
        joined = {(wire.link.namespace, wire.link.network) for wire in wires}
        internal = {spec.name: spec.internal for spec in self.networks}
        published: list[tuple[str, PublishSpec]] = []
        for index, spec in enumerate(self.publish):
            path = f"publish[{index}]"
            if spec.namespace not in namespaces:
                rule = _unknown("namespace", spec.namespace, namespaces)
                raise self._error(f"{path}.namespace", spec.namespace, rule)
            if spec.network is not None and (spec.namespace, spec.network) not in joined:
                rule = f"namespace {spec.namespace} is not connected to network {spec.network}"
                raise self._error(f"{path}.network", spec.network, rule)
            if not any(namespace == spec.namespace for namespace, _ in joined):
                rule = f"namespace {spec.namespace} is not connected to any network, so it has no address to publish"
                raise self._error(f"{path}.namespace", spec.namespace, rule)
            if spec.network is not None and internal[spec.network]:
                rule = f"network {spec.network} is internal: nothing is forwarded to or from it, nor published"
                raise self._error(f"{path}.network", spec.network, rule)
            if all(internal[network] for namespace, network in joined if namespace == spec.namespace):
                rule = (
                    f"namespace {spec.namespace} is only on internal networks: nothing is forwarded to or from "
                    "them, so nothing is published"
                )
                raise self._error(f"{path}.namespace", spec.namespace, rule)
            for where, other in published:
                same_ip = _same_addresses(spec.host_ip, other.host_ip)
                overlap = spec.host_port <= other.last_host_port and other.host_port <= spec.last_host_port
                if overlap and same_ip and spec.protocol == other.protocol:
                    ports = f"{spec.host_port}"
                    if spec.host_port_end is not None:
                        ports += f"-{spec.host_port_end}"
                    rule = f"{ports}/{spec.protocol} overlaps host ports already published by {where}"
                    raise self._error(f"{path}.host_port", spec.host_port, rule)
            published.append((path, spec))

    def _check_impair(self, wires: list[_Wire]) -> None:
        namespaces = [spec.name for spec in self.namespaces]
        joined = [(wire.link.namespace, wire.link.network) for wire in wires]
        impaired: dict[tuple[str, str], str] = {}
        for index, spec in enumerate(self.impair):
            path = spec.at or f"impair[{index}]"
            if spec.namespace not in namespaces:
                raise self._error(
                    f"{path}.namespace", spec.namespace, _unknown("namespace", spec.namespace, namespaces)
                )
            mine = [network for namespace, network in joined if namespace == spec.namespace]
            if not mine:
                rule = f"namespace {spec.namespace} is connected to no network, so it has no link to impair"
                raise self._error(f"{path}.namespace", spec.namespace, rule)
            if spec.network is not None and spec.network not in mine:
                rule = f"namespace {spec.namespace} is not connected to network {spec.network} (its networks: "
                raise self._error(f"{path}.network", spec.network, rule + ", ".join(mine) + ")")
            link = (spec.namespace, spec.network or mine[0])
            where = impaired.setdefault(link, path)
            if where != path:
                rule = f"the link of {link[0]} to network {link[1]} is already impaired by {where}"
                raise self._error(path, spec.namespace, rule)

    def _check_partitions(self) -> None:
        namespaces = [spec.name for spec in self.namespaces]
        for index, spec in enumerate(self.partition):
            path = f"partition[{index}]"
            for field, names in (("groups", [n for group in spec.groups for n in group]), ("among", spec.among or ()),
                                 ("node", [spec.node] if spec.node else [])):  # fmt: skip
                for name in names:
                    if name not in namespaces:
                        raise self._error(f"{path}.{field}", name, _unknown("namespace", name, namespaces))
            if spec.shape is not None:
                members = list(spec.among) if spec.among is not None else namespaces
                if spec.node is not None and spec.node not in members:
                    raise self._error(f"{path}.node", spec.node, f"{spec.node} is not among {', '.join(members)}")
                try:
                    grudge(spec.shape, members, seed=0 if spec.seed is None else spec.seed, node=spec.node)
                except InvalidInput as error:
                    raise self._error(f"{path}.{'among' if spec.among is not None else 'shape'}", error.value,
                                      error.rule) from None  # fmt: skip

    # -- declaring --------------------------------------------------------

    def declare(self, lab: _Lab) -> _Lab:
        """Declare everything on ``lab`` (an existing one: names must be new to it) and return it.

        Clashes with what ``lab`` already holds are :class:`TopologyError` raised before anything is declared.
        What the lab itself refuses (a subnet in use on the host) is raised as it is, with a note naming the
        field; what was declared before it stays declared (nothing is created until ``lab.apply()``).
        """
        wires = self._wiring()
        self._check_lab(lab)
        log.debug("declaring %s on %r", self.source, lab)
        # Fixed subnets first: a subnet the lab picks for another network must not take one of them.
        for spec in sorted(self.networks, key=lambda spec: spec.subnet is None):
            with self._declaring(f"networks.{_key(spec.name)}"):
                lab.network(
                    spec.name,
                    subnet=_text(spec.subnet),
                    gateway=_text(spec.gateway),
                    nat=spec.nat,
                    mtu=spec.mtu,
                    internal=spec.internal,
                    isolate=spec.isolate,
                    **_dual_stack(spec),
                )
        for namespace in self.namespaces:
            with self._declaring(f"namespaces.{_key(namespace.name)}"):
                lab.namespace(namespace.name, aliases=namespace.aliases)
        endpoints: dict[tuple[str, str], Endpoint] = {}
        for wire in wires:
            with self._declaring(wire.path):
                endpoint = lab.connect(wire.link.network, wire.link.namespace, ip=_text(wire.ip), ifname=wire.ifname)
            endpoints[(wire.link.namespace, wire.link.network)] = endpoint
        for index, port in enumerate(self.publish):
            target: Endpoint | str = port.namespace
            if port.network is not None:
                target = endpoints[(port.namespace, port.network)]
            with self._declaring(f"publish[{index}]"):
                lab.publish(
                    target,
                    port.host_port,
                    port.port,
                    protocol=port.protocol,
                    host_ip=_text(port.host_ip),
                    host_port_end=port.host_port_end,
                )
        return lab

    def apply_faults(self, lab: Declarable) -> list[Any]:
        """Impair the links and cut the partitions the topology declares, on ``lab`` once it is applied (``pynetns
        up`` does it after ``lab.apply()``); returns the impairments and partitions made, in order."""
        made: list[Any] = []
        for index, spec in enumerate(self.impair):
            with self._declaring(f"impair[{index}]"):
                endpoint = lab.endpoint(spec.namespace, spec.network)
                made.append(endpoint.impair(**attrs.asdict(spec.impairment), direction=spec.direction))
        for index, part in enumerate(self.partition):
            with self._declaring(f"partition[{index}]"):
                if part.shape is None:
                    made.append(lab.partition(list(part.groups[0]), list(part.groups[1]), one_way=part.one_way))
                else:
                    among = None if part.among is None else list(part.among)
                    made.append(lab.partition(shape=part.shape, seed=part.seed, among=among, node=part.node))
        return made

    def _check_lab(self, lab: Declarable) -> None:
        for spec in self.networks:
            path = f"networks.{_key(spec.name)}"
            if spec.name in lab.networks:
                raise self._error(path, spec.name, f"network {spec.name} is already declared in lab {lab.name}")
            for other in lab.networks.values():
                if spec.subnet is not None and spec.subnet.overlaps(other.subnet):
                    rule = f"{spec.subnet} overlaps subnet {other.subnet} of network {other.name} of lab {lab.name}"
                    raise self._error(f"{path}.subnet", str(spec.subnet), rule)
        for namespace in self.namespaces:
            if namespace.name in lab.namespaces:
                rule = f"namespace {namespace.name} is already declared in lab {lab.name}"
                raise self._error(f"namespaces.{_key(namespace.name)}", namespace.name, rule)

    @contextlib.contextmanager
    def _declaring(self, field: str) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            if sys.version_info >= (3, 11):
                error.add_note(f"while declaring {field} from {self.source}")
            raise


# -- parsing --------------------------------------------------------------

_TOP = ("name", "isolated", "names", "networks", "namespaces", "links", "publish", "impair", "partition")
_NETWORK = ("subnet", "gateway", "nat", "internal", "mtu", "isolate", "subnet6", "ipv6")
_NAMESPACE = ("networks", "aliases")
_ATTACH = ("network", "ip", "ifname", "impair")
_LINK = ("namespace", "network", "ip", "ifname", "impair")
_IMPAIRMENT = ("delay", "jitter", "loss", "rate", "duplicate", "corrupt", "direction")
_IMPAIR = ("namespace", "network", *_IMPAIRMENT)
_PARTITION = ("groups", "shape", "one_way", "seed", "among", "node")
_PUBLISH = ("namespace", "host_port", "port", "protocol", "host_ip", "network", "host_port_end")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_IP = (ipaddress.IPv4Address, ipaddress.IPv6Address, ipaddress.IPv4Network, ipaddress.IPv6Network)


class _Table(dict[Any, Any]):
    """A parsed mapping that remembers the keys its file gave more than once (JSON and YAML allow it)."""

    duplicates: tuple[Any, ...] = ()


def _formats() -> str:
    return ", ".join(f".{suffix}" for suffix in FORMATS)


def _key(name: object) -> str:
    """A key as it appears in a dotted path: quoted when it is not a bare word (``networks."a.b"``)."""
    return name if isinstance(name, str) and _BARE_KEY.fullmatch(name) else json.dumps(str(name))


def _join(path: str, key: object) -> str:
    return _key(key) if not path else f"{path}.{_key(key)}"


def _kind(value: object) -> str:
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (Mapping, "a table"),
        ((list, tuple), "a list"),
    )
    if value is None:
        return "null"
    return next((name for kind, name in kinds if isinstance(value, kind)), f"a {type(value).__name__}")


def _show(value: object) -> str:
    """A value as the file wrote it (JSON spelling: ``true``, ``"eth0"``)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _sentence(value: object, rule: str) -> str:
    """A validator's rule as a sentence about ``value``."""
    if rule.startswith((f"{value!r} ", f"{value} ")):
        return rule  # the rule already quotes the value (``ipaddress``' messages)
    if rule.startswith(("must ", "is ", "has ")):
        return f"{_show(value)} {rule}"
    return f"{_show(value)}: {rule}"


def _suggest(word: object, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(kind: str, name: str, choices: Sequence[str]) -> str:
    hint = _suggest(name, choices)
    if not hint:
        hint = f"; declared: {', '.join(choices)}" if choices else f"; no {kind}s are declared"
    return f"unknown {kind} {name!r}{hint}"


def _present(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without its None values, addresses and networks as strings."""
    return {key: str(value) if isinstance(value, _IP) else value for key, value in data.items() if value is not None}


def _dual_stack(spec: NetworkSpec) -> dict[str, Any]:
    """The dual-stack arguments of ``spec`` for ``lab.network()`` (none for a network of one family)."""
    found: dict[str, Any] = {}
    if spec.subnet6 is not None:
        found["subnet6"] = str(spec.subnet6)
    if spec.ipv6:
        found["ipv6"] = True
    return found


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _table(source: str, path: str, value: object, keys: Sequence[str], required: Sequence[str] = ()) -> dict[str, Any]:
    """``value`` checked to be a mapping with only ``keys`` (and all of ``required``); null values dropped."""
    if not isinstance(value, Mapping):
        rule = f"must be a table of keys and values, not {_kind(value)}"
        raise TopologyError(source, path or "(top level)", value, rule)
    for key in getattr(value, "duplicates", ()):
        raise TopologyError(source, _join(path, key), None, "is given twice")
    for key in value:
        if key not in keys:
            hint = _suggest(key, keys) or f"; expected one of: {', '.join(keys)}"
            raise TopologyError(source, _join(path, key), None, f"unknown key{hint}")
    found = {key: item for key, item in value.items() if item is not None}
    for key in required:
        if key not in found:
            raise TopologyError(source, _join(path, key), None, "is required")
    return found


def _names(source: str, key: str, top: Mapping[str, Any]) -> Mapping[Any, Any]:
    """The table of named networks or namespaces (any key is a name)."""
    value = top.get(key, {})
    if not isinstance(value, Mapping):
        raise TopologyError(source, key, value, f"must be a table of {key} by name, not {_kind(value)}")
    for name in getattr(value, "duplicates", ()):
        raise TopologyError(source, _join(key, name), None, "is given twice")
    return value


def _list(source: str, path: str, value: object) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise TopologyError(source, path, value, f"must be a list, not {_kind(value)}")
    return value


def _build(make: Callable[..., T], source: str, path: str, fields: Mapping[str, str], /, **kwargs: Any) -> T:
    """``make(**kwargs)``, its validators' errors turned into TopologyErrors at ``fields[field]`` or ``path.field``."""
    try:
        return make(**kwargs)
    except TopologyError:
        raise
    except InvalidInput as error:
        where = fields.get(error.field) or _join(path, error.field)
        raise TopologyError(source, where, error.value, _sentence(error.value, error.rule)) from None


def _network(source: str, name: Any, value: object) -> NetworkSpec:
    path = _join("networks", name)
    fields = _table(source, path, {} if value is None else value, _NETWORK)
    return _build(NetworkSpec, source, path, {"name": path}, name=name, **fields)


def _namespace(source: str, name: Any, value: object) -> NamespaceSpec:
    path = _join("namespaces", name)
    fields = _table(source, path, {} if value is None else value, _NAMESPACE)
    _build(namespace_name, source, path, {"name": path}, field="name", value=name)
    links = []
    for index, item in enumerate(_list(source, f"{path}.networks", fields.get("networks", ()))):
        where = f"{path}.networks[{index}]"
        if isinstance(item, str):
            links.append(_build(LinkSpec, source, where, {"network": where}, namespace=name, network=item))
        elif isinstance(item, Mapping):
            attach = _table(source, where, item, _ATTACH, required=("network",))
            attach.pop("impair", None)  # read by _inline_impair
            links.append(_build(LinkSpec, source, where, {}, namespace=name, **attach))
        else:
            rule = f"must be a network name or a table with 'network', not {_kind(item)}"
            raise TopologyError(source, where, item, rule)
    aliases = _list(source, f"{path}.aliases", fields.get("aliases", ()))
    fields = {"name": path, "aliases": f"{path}.aliases"}
    return _build(NamespaceSpec, source, path, fields, name=name, networks=links, aliases=aliases)


def _link(source: str, index: int, item: object) -> LinkSpec:
    path = f"links[{index}]"
    fields = _table(source, path, item, _LINK, required=("namespace", "network"))
    fields.pop("impair", None)  # read by _inline_impair
    return _build(LinkSpec, source, path, {}, **fields)


def _impair_spec(source: str, path: str, fields: dict[str, Any]) -> ImpairSpec:
    where = {"namespace": f"{path}.namespace", "network": f"{path}.network", "direction": f"{path}.direction"}
    settings = {key: fields.pop(key) for key in _IMPAIRMENT[:-1] if key in fields}
    try:
        impairment = _impairment(settings)
    except InvalidInput as error:
        if error.field == "impairment":
            raise TopologyError(source, path, None, error.rule) from None
        raise TopologyError(source, _join(path, error.field), error.value, _sentence(error.value, error.rule)) from None
    return _build(ImpairSpec, source, path, where, impairment=impairment, at=path, **fields)


def _impair(source: str, index: int, item: object) -> ImpairSpec:
    path = f"impair[{index}]"
    return _impair_spec(source, path, _table(source, path, item, _IMPAIR, required=("namespace",)))


def _inline_impair(source: str, path: str, namespace: object, network: object, item: object) -> ImpairSpec:
    fields = _table(source, path, item, _IMPAIRMENT)
    return _impair_spec(source, path, {"namespace": namespace, "network": network, **fields})


def _partition(source: str, index: int, item: object) -> PartitionSpec:
    path = f"partition[{index}]"
    fields = _table(source, path, item, _PARTITION)
    if "groups" not in fields and "shape" not in fields:
        raise TopologyError(source, f"{path}.groups", None, "is required: two groups of namespaces, or a shape")
    return _build(PartitionSpec, source, path, {}, **fields)


def _publish(source: str, index: int, item: object) -> PublishSpec:
    path = f"publish[{index}]"
    fields = _table(source, path, item, _PUBLISH, required=("namespace", "host_port", "port"))
    return _build(PublishSpec, source, path, {}, **fields)


@contextlib.contextmanager
def _not_too_deep(source: str) -> Iterator[None]:
    """A structure nested past Python's recursion limit (the parsers recurse) is an error naming the file."""
    try:
        yield
    except RecursionError:
        rule = "is nested too deeply to read; a topology needs only a few levels of tables and lists"
        raise TopologyError(source, "(top level)", None, rule) from None


def _syntax(source: str, language: str, message: str, line: int | None, column: int | None) -> TopologyError:
    where = "end of document" if line is None else f"line {line}" if column is None else f"line {line}, column {column}"
    return TopologyError(source, where, None, f"invalid {language}: {message}", line=line, column=column)


def _load_toml(text: str, source: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib as toml
    else:  # pragma: no cover - Python 3.10
        try:
            toml = importlib.import_module("tomli")
        except ImportError:
            hint = f"needed to read {source} on Python 3.10: pip install tomli"
            raise BackendUnavailable("tomli", detail=hint) from None
    try:
        return toml.loads(text)
    except toml.TOMLDecodeError as error:
        message = str(error)
        found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        if found is not None:
            syntax = _syntax(source, "TOML", found[1], int(found[2]), int(found[3]))
        else:
            syntax = _syntax(source, "TOML", message.removesuffix(" (at end of document)"), None, None)
    raise syntax from None


def _load_json(text: str, source: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> _Table:
        table = _Table(items)
        if len(table) != len(items):
            keys = [key for key, _ in items]
            table.duplicates = tuple(dict.fromkeys(key for key in keys if keys.count(key) > 1))
        return table

    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        raise _syntax(source, "JSON", error.msg, error.lineno, error.colno) from None


def _load_yaml(text: str, source: str) -> Any:
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        raise BackendUnavailable("PyYAML", detail=f"needed to read {source}: pip install pyyaml") from None

    def mapping(loader: Any, node: Any) -> _Table:
        keys = [loader.construct_object(key, deep=True) for key, _ in node.value if key.tag != _YAML_MERGE]
        table = _Table(loader.construct_mapping(node, deep=True))
        with contextlib.suppress(TypeError):  # an unhashable key: construct_mapping has refused it already
            table.duplicates = tuple(dict.fromkeys(key for key in keys if keys.count(key) > 1))
        return table

    loader: Any = type("TopologyLoader", (yaml.SafeLoader,), {})
    loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        data = yaml.load(text, Loader=loader)  # a SafeLoader: plain data only
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        line, column = (None, None) if mark is None else (mark.line + 1, mark.column + 1)
        raise _syntax(source, "YAML", problem, line, column) from None
    return {} if data is None else data  # an empty file, as an empty TOML file


_YAML_MERGE = "tag:yaml.org,2002:merge"
