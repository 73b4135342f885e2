"""Routes, such as a container's default route via its bridge's gateway.

>>> from pynetns import Host, Namespace
>>> host = Host(dry_run=True)
>>> Route("default", via="172.17.0.1", namespace=Namespace("c1", host=host)).create()
>>> [str(call) for call in host.history]
['ip -n c1 route add default via 172.17.0.1']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .errors import InvalidValue
from .host import Host
from .namespace import Namespace
from .placement import Placed, to_namespace
from .reports import RouteEntry, route_line
from .validation import IPAddress, converter, interface_name, ip_address, optional, route_destination

__all__ = ["Route"]


#: the route types ``ip route`` reports; pynetns creates only ``unicast`` ones
ROUTE_TYPES = frozenset(
    {"unicast", "local", "broadcast", "multicast", "anycast", "blackhole", "unreachable", "prohibit", "throw", "nat"}
)


def _route_type(field: str, value: object) -> str:
    if value not in ROUTE_TYPES:
        raise InvalidValue(field, value, f"must be one of {', '.join(sorted(ROUTE_TYPES))}")
    return str(value)


def _metric(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidValue(field, value, "must be an integer from 0 to 4294967295")
    return value


@attrs.define(eq=False)
class Route(Placed):
    """A route in ``namespace`` (``None``: the root namespace) to ``destination`` via a gateway and/or a device."""

    destination: str = attrs.field(converter=converter(route_destination))  # type: ignore[misc]
    via: IPAddress | None = attrs.field(default=None, converter=converter(optional(ip_address)))  # type: ignore[misc]
    device: str | None = attrs.field(default=None, converter=converter(optional(interface_name)))  # type: ignore[misc]
    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    metric: int | None = attrs.field(default=None, converter=converter(optional(_metric)))  # type: ignore[misc]
    host: Host = attrs.field(default=None)
    #: as ``ip -j route`` reports it: a blackhole, unreachable or prohibit route has neither gateway nor device
    type: str = attrs.field(default="unicast", kw_only=True, converter=converter(_route_type))  # type: ignore[misc]

    def __attrs_post_init__(self) -> None:
        if self.type == "unicast" and self.via is None and self.device is None:
            raise InvalidValue("via", None, "a route needs a gateway (via) or a device")
        self._place()

    @classmethod
    def from_entry(cls, entry: RouteEntry, namespace: Namespace | None = None) -> Route:
        """The creatable route matching one the kernel reported (see :meth:`Namespace.routes`)."""
        placement: dict[str, Any] = {} if namespace is None else {"namespace": namespace, "host": namespace.host}
        return cls(
            entry.destination, via=entry.via, device=entry.device, metric=entry.metric, type=entry.type, **placement
        )

    @classmethod
    def from_ip_json(cls, data: Mapping[str, Any], namespace: Namespace | None = None) -> Route:
        """Build from one element of ``ip -j route show``."""
        return cls.from_entry(RouteEntry.from_ip_json(data), namespace)

    def _args(self) -> dict[str, Any]:
        return {"via": None if self.via is None else str(self.via), "device": self.device, "metric": self.metric}

    def _require_unicast(self, action: str) -> None:
        if self.type != "unicast":
            raise InvalidValue("type", self.type, f"pynetns can {action} only unicast routes")

    def create(self) -> None:
        self._require_unicast("create")
        self.host.ip(self.where, self.host.links.route_add(self.destination, **self._args()))

    def delete(self) -> None:
        self._require_unicast("delete")
        self.host.ip(self.where, self.host.links.route_delete(self.destination, **self._args()))

    def exists(self) -> bool:
        family = 6 if ":" in self.destination or (self.via is not None and self.via.version == 6) else 4
        return any(
            route.destination == self.destination
            and (self.via is None or route.via == self.via)
            and (self.device is None or route.device == self.device)
            for route in self._in(self.namespace).routes(family)
        )

    def __str__(self) -> str:
        return route_line(self.type, self.destination, self.via, self.device)
