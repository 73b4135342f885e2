"""The state of a lab: what it declares, what it applied and what it owns on its host, and its journal.

:class:`LabState` is the data the lab's parts work on (:mod:`~pynetns.lab.compile`, :mod:`~pynetns.lab.subnets`,
:mod:`~pynetns.lab.partitions`); the :class:`~pynetns.Lab` facade owns one and shows it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import PermissionDenied
from ..firewall import Firewalled, ForwardDrops, PortMap
from ..host import Host
from ..namespace import Namespace
from ..runtime import JournalFile
from ..validation import IPNetwork, interface_name
from .ipam import taken_networks
from .journal import HOW_TO_PRIVILEGE
from .model import Endpoint, Impairments, Network
from .shapes import Partition

__all__ = ["LabState"]


class LabState:
    """A lab's data: its declaration (networks, namespaces, endpoints, published ports), what of it is applied,
    the firewall objects and partitions it owns, its impaired links, and its journal file."""

    def __init__(self, id: str, name: str, host: Host, isolated: bool) -> None:
        self.id = id
        self.name = name
        self.host = host
        self.tag = f"pynetns:{id}"
        self.isolated = isolated
        #: an isolated lab's private namespace playing the host
        self.host_namespace = Namespace(f"pn{id}-host", host=host) if isolated else None
        self.networks: dict[str, Network] = {}
        self.namespaces: dict[str, Namespace] = {}
        self.endpoints: list[Endpoint] = []
        #: published ports, in declaration order
        self.published: list[PortMap] = []
        #: (protocol, host port) → its mappings
        self.ports: dict[tuple[str, int], list[PortMap]] = {}
        #: the firewall objects applied (NAT, isolation, published ports)
        self.firewall: list[Firewalled] = []
        #: the partitions in force
        self.partitions: list[Partition] = []
        #: the namespaces holding partition drops
        self.blocked: set[str] = set()
        #: the partitions' drops of routed traffic on the lab's host
        self.drops: list[ForwardDrops] = []
        self.impairments = Impairments(host, self.tag, self.host_namespace, self.endpoints)
        #: the kernel names of the namespaces applied (the host namespace's included)
        self.applied_namespaces: set[str] = set()
        #: declared name → the other names it is resolved by (``lab.namespace("db", aliases=["postgres"])``)
        self.aliases: dict[str, tuple[str, ...]] = {}
        #: kernel name → the hosts file written for it (:mod:`pynetns.lab.names`): its folder is the lab's
        self.names: dict[str, str] = {}
        #: /etc/netns was missing when the names were first written: this lab may have made it (the journal says)
        self.etc_netns = False
        self.destroyed = False
        #: journaled as owned by no process (:meth:`Lab.detach <pynetns.Lab.detach>`)
        self.persistent = False
        self.journal_file: JournalFile | None = None
        self._counter = 0

    def kernel_name(self, kind: str) -> str:
        """A new kernel name of this lab: ``pn<id><kind><n>``."""
        self._counter += 1
        return interface_name("name", f"pn{self.id}{kind}{self._counter}")

    def name_of(self, namespace: Namespace) -> str:
        """The name ``namespace`` was declared with (``web`` for ``pn1a2b3c-web``; else its kernel name)."""
        return next((name for name, candidate in self.namespaces.items() if candidate is namespace), namespace.name)

    def taken_subnets(self) -> list[IPNetwork]:
        """The subnets a new network of this lab may not overlap: its own, and (on a shared host) the host's."""
        taken: list[IPNetwork] = [net.subnet for net in self.networks.values()]
        if self.isolated or self.host.dry_run:
            return taken
        return taken + taken_networks(self.host, other_than=self.id)

    # -- journal -----------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.host.runtime.journal_path(self.id)

    def write_journal(self, *, firewall: bool) -> None:
        """Journal what the lab is and will be, under the host lock; held by this process unless persistent.
        ``firewall``: it has, or will have, firewall rules on its host."""
        if self.host.dry_run:
            return
        with self.host.lock():
            if self.journal_file is None:
                self.journal_file = self.host.runtime.journal(self.id)
            try:
                self.journal_file.write(self.journal(firewall=firewall), owned=not self.persistent)
            except PermissionError as error:
                raise PermissionDenied(
                    f"cannot write the journal of lab {self.name} in {self.journal_path.parent} "
                    f"({error.strerror}): {HOW_TO_PRIVILEGE}"
                ) from error

    def remove_journal(self) -> None:
        if self.host.dry_run:
            return
        with self.host.lock():
            if self.journal_file is not None:
                self.journal_file.remove()
            else:
                self.host.runtime.remove(self.journal_path)

    def journal(self, *, firewall: bool) -> dict[str, Any]:
        """What the lab's journal says: what it is and will make, and who owns it (no process, if persistent);
        ``firewall``: it has, or will have, firewall rules on its host (cleanup removes those tagged)."""
        namespaces = [namespace.name for namespace in self.namespaces.values()]
        if self.host_namespace is not None:
            namespaces.append(self.host_namespace.name)
        return {
            "id": self.id,
            "name": self.name,
            "tag": self.tag,
            "owner_pid": None if self.persistent else os.getpid(),  # information: liveness is the journal's flock
            "persistent": self.persistent,
            "host_netns": self.host.netns_key,
            "isolated": self.isolated,
            "namespaces": namespaces,
            "members": {name: namespace.name for name, namespace in self.namespaces.items()},
            "aliases": {name: list(aliases) for name, aliases in self.aliases.items() if aliases},
            # the folders /etc/netns/NAME the lab makes for the names files (pynetns.lab.names)
            "names": [namespace.name for namespace in self.namespaces.values()],
            "etc_netns": self.etc_netns,
            "host_namespace": None if self.host_namespace is None else self.host_namespace.name,
            "endpoints": [
                {
                    "namespace": self.name_of(endpoint.namespace),
                    "interface": endpoint.interface,
                    "ip": str(endpoint.ip),
                    "network": endpoint.network.name,
                    "host_interface": endpoint.host_interface,
                }
                for endpoint in self.endpoints
            ],
            "published": [str(portmap) for portmap in self.published],
            "links": [] if self.isolated else [net.bridge for net in self.networks.values()],
            "veths": [] if self.isolated else [endpoint.host_interface for endpoint in self.endpoints],
            "firewall": not self.isolated and firewall,
            "networks": [
                {
                    "name": net.name,
                    "subnet": str(net.subnet),
                    "bridge": net.bridge,
                    "gateway": str(net.gateway),
                    "nat": net.nat,
                    "internal": net.internal,
                    "isolate": net.isolate,
                }
                for net in self.networks.values()
            ],
        }
