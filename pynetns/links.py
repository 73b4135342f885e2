"""Bridges and veth pairs: the wiring of Docker's default network.

>>> from pynetns import Host, Namespace
>>> host = Host(dry_run=True)
>>> Bridge("docker0", address="172.17.0.1/16", host=host).create()
>>> Veth("veth1", "eth0", peer_namespace=Namespace("c1", host=host), master="docker0",
...      peer_address="172.17.0.2/16", host=host).create()
>>> for call in host.history:
...     print(call)
ip -batch - <<'EOF'
link add docker0 type bridge
link set docker0 alias pynetns:dry-run up
addr add 172.17.0.1/16 dev docker0
EOF
ip -batch - <<'EOF'
link add veth1 master docker0 up type veth peer name eth0 netns c1
link set veth1 alias pynetns:dry-run
EOF
ip -n c1 -batch - <<'EOF'
link set eth0 alias pynetns:dry-run up
addr add 172.17.0.2/16 dev eth0
EOF
"""

from __future__ import annotations

from typing import Any

import attrs

from .backends.base import NetnsRef
from .errors import InvalidValue, NotFound
from .host import Host
from .namespace import Namespace
from .placement import Placed, to_namespace
from .plan import Plan
from .reports import Interface
from .validation import (
    IPInterface,
    converter,
    gateway_address,
    interface_address,
    interface_name,
    mac_address,
    mtu,
    optional,
)

__all__ = ["Bridge", "Veth"]


def _master_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Bridge):
        return value.name
    return interface_name("master", value)


class _Link(Placed):
    """An interface pynetns creates: delete, exists, inspect."""

    name: str

    def plan(self) -> Plan:
        raise NotImplementedError

    def create(self) -> None:
        """Create it in one batch per namespace touched; a failure half-way undoes the rest."""
        self.host.apply(self.plan())

    def interface(self) -> Interface:
        """The kernel's view of this interface; :class:`~pynetns.errors.NotFound` if it is gone."""
        return self._in(self.namespace).interface(self.name)

    def exists(self) -> bool:
        try:
            self.interface()
        except NotFound:
            return False
        return True

    def delete(self) -> None:
        """``ip link delete``: a bridge's ports are released; a veth takes its peer with it."""
        self.host.ip(self.where, self.host.links.link_delete(self.name))


@attrs.define(eq=False)
class Bridge(_Link):
    """A Linux bridge, like ``docker0``, optionally with a gateway address."""

    name: str = attrs.field(converter=converter(interface_name))  # type: ignore[misc]
    address: IPInterface | None = attrs.field(default=None, converter=converter(optional(gateway_address)))  # type: ignore[misc]
    mtu: int | None = attrs.field(default=None, converter=converter(optional(mtu)))  # type: ignore[misc]
    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    host: Host = attrs.field(default=None)
    tag: str | None = None

    def __attrs_post_init__(self) -> None:
        self._place()

    def plan(self) -> Plan:
        """The steps that create, tag, raise and address the bridge (one ``ip -batch``)."""
        links, step = self.host.links, self.host.ip_step
        plan = Plan([step(self.where, links.bridge_add(self.name, mtu=self.mtu), links.link_delete(self.name))])
        plan.add(step(self.where, links.link_set(self.name, alias=self._tag(self.tag), up=True)))
        if self.address is not None:
            plan.add(step(self.where, links.addr_add(self.name, str(self.address))))
        return plan

    def ports(self) -> list[Interface]:
        """The interfaces enslaved to this bridge (``ip link show master NAME``)."""
        result = self.host.ip(self.where, self.host.links.show_links(master=self.name))
        return [Interface.from_ip_json(item) for item in result.json()]


@attrs.define(eq=False)
class Veth(_Link):
    """A veth pair: ``name`` in ``namespace``, ``peer`` in ``peer_namespace``.

    One command creates the pair with the peer already in its namespace under
    its final name; the ``name`` end joins ``master`` (a bridge); addresses are
    set and both ends brought up. Deleting either end removes both.
    """

    name: str = attrs.field(converter=converter(interface_name))  # type: ignore[misc]
    peer: str = attrs.field(converter=converter(interface_name))  # type: ignore[misc]
    namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    peer_namespace: Namespace | None = attrs.field(default=None, converter=to_namespace)
    master: str | None = attrs.field(default=None, converter=_master_name)
    address: IPInterface | None = attrs.field(default=None, converter=converter(optional(interface_address)))  # type: ignore[misc]
    peer_address: IPInterface | None = attrs.field(default=None, converter=converter(optional(interface_address)))  # type: ignore[misc]
    mtu: int | None = attrs.field(default=None, converter=converter(optional(mtu)))  # type: ignore[misc]
    mac: str | None = attrs.field(default=None, converter=converter(optional(mac_address)))  # type: ignore[misc]
    peer_mac: str | None = attrs.field(default=None, converter=converter(optional(mac_address)))  # type: ignore[misc]
    host: Host = attrs.field(default=None)
    tag: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.name == self.peer and self.where == self._ref(self.peer_namespace):
            raise InvalidValue("peer", self.peer, "must differ from name when both ends share a namespace")
        self._place()

    @property
    def peer_where(self) -> NetnsRef:
        return self._ref(self.peer_namespace)

    def plan(self) -> Plan:
        """One batch where ``name`` lives (create, tag, address), one where ``peer`` lives (tag, up, address)."""
        links, step, tag = self.host.links, self.host.ip_step, self._tag(self.tag)
        moves = self.peer_where != self.where
        if moves and self.peer_where.kind == "root":
            return self._plan_from_root()
        add = links.veth_add(
            self.name,
            self.peer,
            peer_netns=self.peer_where.netns_arg if moves else None,
            mtu=self.mtu,
            mac=self.mac,
            peer_mac=self.peer_mac,
            master=self.master,
        )
        plan = Plan([step(self.where, add, links.link_delete(self.name))])
        plan.add(step(self.where, links.link_set(self.name, alias=tag)))
        if self.address is not None:
            plan.add(step(self.where, links.addr_add(self.name, str(self.address))))
        plan.add(step(self.peer_where, links.link_set(self.peer, alias=tag, up=True)))
        if self.peer_address is not None:
            plan.add(step(self.peer_where, links.addr_add(self.peer, str(self.peer_address))))
        return plan

    def _plan_from_root(self) -> Plan:
        """The pair made from the root namespace (the Host's), ``name`` sent to its own namespace.

        Another namespace cannot name the root one (see :attr:`NetnsRef.netns_arg`), so the end that
        stays is created where the command runs, and the other end is the one that moves.
        """
        links, step, tag = self.host.links, self.host.ip_step, self._tag(self.tag)
        root = self.peer_where
        add = links.veth_add(
            self.peer,
            self.name,
            peer_netns=self.where.netns_arg,
            mtu=self.mtu,
            mac=self.peer_mac,
            peer_mac=self.mac,
            master=None,
        )
        plan = Plan([step(root, add, links.link_delete(self.peer))])
        plan.add(step(root, links.link_set(self.peer, alias=tag, up=True)))
        if self.peer_address is not None:
            plan.add(step(root, links.addr_add(self.peer, str(self.peer_address))))
        plan.add(step(self.where, links.link_set(self.name, master=self.master, alias=tag, up=True)))
        if self.address is not None:
            plan.add(step(self.where, links.addr_add(self.name, str(self.address))))
        return plan

    def peer_interface(self) -> Interface:
        """The kernel's view of the peer end, in its namespace."""
        return self._in(self.peer_namespace).interface(self.peer)
