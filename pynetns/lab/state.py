"""The state of a lab: what it declares, what it applied and what it owns on its host, and its journal.

:class:`LabState` is the data the lab's parts work on (:mod:`~pynetns.lab.compile`, :mod:`~pynetns.lab.subnets`,
:mod:`~pynetns.lab.partitions`); the :class:`~pynetns.Lab` facade owns one and shows it.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from ..errors import PermissionDenied
from ..firewall import Firewalled, ForwardDrops, PortMap
from ..host import Host
from ..namespace import Namespace
from ..runner import Process
from ..runtime import Journal
from ..validation import IPNetwork, interface_name
from .ipam import host_ula, taken_networks
from .journal import HOW_TO_PRIVILEGE
from .machines import Overlay, vxlan_name
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
        self.impairments.changed = self.rewrite_journal
        #: the kernel names of the namespaces applied (the host namespace's included)
        self.applied_namespaces: set[str] = set()
        #: declared name → the other names it is resolved by (``lab.namespace("db", aliases=["postgres"])``)
        self.aliases: dict[str, tuple[str, ...]] = {}
        #: kernel name → the hosts file written for it (:mod:`pynetns.lab.names`): its folder is the lab's
        self.names: dict[str, str] = {}
        #: the Hosts where /etc/netns was missing when the names were first written: this lab may have made it
        #: there (their journals say; each machine has its own /etc)
        self.etc_netns: set[Host] = set()
        #: the members resolve each other by name (``Lab(names=False)``: no names files)
        self.resolve_names = True
        self.destroyed = False
        #: journaled as owned by no process (:meth:`Lab.detach <pynetns.Lab.detach>`)
        self.persistent = False
        self.journal_file: Journal | None = None
        #: the lab's machines when it spans Hosts, its networks' VNIs, their gateways on the other Hosts
        self.overlay = Overlay()
        #: what the last journal said of firewall rules on the host (:meth:`rewrite_journal` says it again)
        self.journaled_firewall = False
        #: the proxies answering published IPv6 ports on the host's [::1], per port map (:mod:`.loopback6`)
        self.proxies: dict[PortMap, Process] = {}
        self._counter = 0
        self._ula: ipaddress.IPv6Network | None = None

    def ula(self) -> ipaddress.IPv6Network:
        """The unique local /48 this lab's IPv6 default subnets come from: the host's (asked once)."""
        if self._ula is None:
            self._ula = host_ula(self.host)
        return self._ula

    def kernel_name(self, kind: str) -> str:
        """A new kernel name of this lab: ``pn<id><kind><n>``."""
        self._counter += 1
        return interface_name("name", f"pn{self.id}{kind}{self._counter}")

    def name_of(self, namespace: Namespace) -> str:
        """The name ``namespace`` was declared with (``web`` for ``pn1a2b3c-web``; else its kernel name)."""
        return next((name for name, candidate in self.namespaces.items() if candidate is namespace), namespace.name)

    def hosts(self) -> list[Host]:
        """The Hosts the lab uses: its own first, then those of its namespaces, in declaration order."""
        found = [self.host]
        for namespace in self.namespaces.values():
            if all(namespace.host is not host for host in found):
                found.append(namespace.host)
        return found

    def network_hosts(self, net: Network) -> list[Host]:
        """The Hosts ``net`` has a bridge on: the lab's own (its gateway's), then those of its members."""
        found = [self.host]
        for endpoint in self.endpoints:
            if endpoint.network is net and all(endpoint.namespace.host is not host for host in found):
                found.append(endpoint.namespace.host)
        return found

    def taken_subnets(self) -> list[IPNetwork]:
        """The subnets a new network of this lab may not overlap: its own, and (on a shared host) the host's."""
        taken: list[IPNetwork] = [subnet for net in self.networks.values() for subnet in net.subnets]
        if self.isolated or self.host.dry_run:
            return taken
        return taken + taken_networks(self.host, other_than=self.id)

    # -- journal -----------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.host.runtime.journal_path(self.id)

    def write_journal(self, *, firewall: bool, host: Host | None = None) -> None:
        """Journal what the lab is and will be, under the host lock; held by this process unless persistent.
        ``firewall``: it has, or will have, firewall rules on its host. ``host``: one of the lab's Hosts
        (default: its own), whose journal names what the lab has there."""
        host = self.host if host is None else host
        if host.dry_run:
            return
        with host.lock():
            file = self.journal_file if host is self.host else self.overlay.journals.get(host)
            if file is None:
                file = host.runtime.journal(self.id)
                if host is self.host:
                    self.journal_file = file
                else:
                    self.overlay.journals[host] = file
            try:
                file.write(self.journal(firewall=firewall, host=host), owned=not self.persistent)
                if host is self.host:
                    self.journaled_firewall = firewall
            except PermissionError as error:
                raise PermissionDenied(
                    f"cannot write the journal of lab {self.name} in {host.runtime.journal_path(self.id).parent} "
                    f"({error.strerror}): {HOW_TO_PRIVILEGE}"
                ) from error

    def rewrite_journal(self) -> None:
        """Journal the lab again (its partitions and impairments changed), if it has a journal."""
        if self.journal_file is not None:
            for host in self.hosts():  # a lab spanning Hosts is not isolated: rules on each of them
                self.write_journal(firewall=self.journaled_firewall if host is self.host else True, host=host)

    def faults(self) -> dict[str, Any]:
        """The partitions in force and the impaired links, as the journal keeps them (a process that attaches
        to the lab, ``pynetns heal``, finds them there)."""
        return {
            "partitions": [made.to_dict() for made in self.partitions],
            "impairments": [
                {
                    "namespace": self.name_of(endpoint.namespace),
                    "network": endpoint.network.name,
                    "interface": endpoint.interface,
                    **link.record(),
                }
                for endpoint, link in self.impairments.links.items()
            ],
        }

    def remove_journal(self) -> None:
        """Remove the lab's journal on each of its Hosts."""
        for host in [self.host, *self.overlay.journals]:
            if host.dry_run:
                continue
            with host.lock():
                file = self.journal_file if host is self.host else self.overlay.journals.get(host)
                if file is not None:
                    file.remove()
                else:
                    host.runtime.remove(host.runtime.journal_path(self.id))
        self.overlay.journals.clear()

    def journal(self, *, firewall: bool, host: Host | None = None) -> dict[str, Any]:
        """What the lab's journal says: what it is and will make, and who owns it (no process, if persistent);
        ``firewall``: it has, or will have, firewall rules on its host (cleanup removes those tagged).
        ``host``: of a lab spanning Hosts, the journal on that one, naming what the lab has there."""
        namespaces = [namespace.name for namespace in self.namespaces.values()]
        if self.host_namespace is not None:
            namespaces.append(self.host_namespace.name)
        data = {
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
            "etc_netns": (self.host if host is None else host) in self.etc_netns,
            "host_namespace": None if self.host_namespace is None else self.host_namespace.name,
            "endpoints": [
                {
                    "namespace": self.name_of(endpoint.namespace),
                    "interface": endpoint.interface,
                    "ip": str(endpoint.ip),
                    **({"ip6": str(endpoint.address6)} if endpoint.address6 is not None else {}),
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
                    **({"subnet6": str(net.subnet6)} if net.subnet6 is not None else {}),
                    "bridge": net.bridge,
                    "gateway": str(net.gateway),
                    **({"gateway6": str(net.gateways[1])} if len(net.gateways) > 1 else {}),
                    "nat": net.nat,
                    "internal": net.internal,
                    "isolate": net.isolate,
                }
                for net in self.networks.values()
            ],
            **self.faults(),
        }
        if len(self.hosts()) > 1:
            return self._part(data, self.host if host is None else host)
        return data

    def _part(self, data: dict[str, Any], host: Host) -> dict[str, Any]:
        """``data`` (the whole lab's journal) cut to what the lab has on ``host``, with its overlay: the
        VXLAN devices under ``vxlans``, each network's gateway there."""
        networks = [net for net in self.networks.values() if any(h is host for h in self.network_hosts(net))]
        mine = [name for name, namespace in self.namespaces.items() if namespace.host is host]
        veths = [endpoint.host_interface for endpoint in self.endpoints if endpoint.namespace.host is host]
        gateways = {net.name: str(self.overlay.gateways.get((net.name, host), net.gateway)) for net in networks}
        machine = self.overlay.machines.get(host)
        data.update(
            host_netns=host.netns_key,
            namespaces=[self.namespaces[name].name for name in mine]
            + ([self.host_namespace.name] if self.host_namespace is not None and host is self.host else []),
            members={name: self.namespaces[name].name for name in mine},
            names=[self.namespaces[name].name for name in mine],  # their names files are on this Host
            endpoints=[item for item in data["endpoints"] if item["host_interface"] in veths],
            published=[str(portmap) for portmap in self.published if portmap.host is host],
            links=[] if self.isolated else [net.bridge for net in networks],
            vxlans=[vxlan_name(net.bridge) for net in networks if len(self.network_hosts(net)) > 1],
            veths=[] if self.isolated else veths,
            networks=[
                dict(item, gateway=gateways[item["name"]]) for item in data["networks"] if item["name"] in gateways
            ],
            vnis={name: vni for name, vni in self.overlay.vnis.items() if name in gateways},
            machine=None if machine is None else {"name": machine.name, "underlay": str(machine.underlay)},
        )
        return data
