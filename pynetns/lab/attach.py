"""Attaching to a running lab from its journal (:meth:`Lab.attach <pynetns.Lab.attach>`): another process's
persistent lab (``pynetns up``), rebuilt as far as partitions and impairment need, so ``pynetns partition``,
``impair`` and ``heal`` work on it and journal what they change.

The journal names the lab's networks, namespaces and endpoints, the partitions in force and the impaired links
(their engines by pid and identity); :func:`restore` makes a :class:`~pynetns.lab.state.LabState` of them, every
part applied. Its journal is rewritten from what the file said, with only the partitions and impairments
replaced, so what this pynetns does not rebuild (published ports, and whatever a newer one journals) stays.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..errors import InvalidValue
from ..host import Host
from ..namespace import Namespace
from .ipam import Allocator
from .journal import LabRecord
from .model import Endpoint, LabLike, Network
from .partitions import restore as restore_partitions
from .shapes import Partition
from .state import LabState

__all__ = ["AttachedState", "restore"]


class AttachedState(LabState):
    """A lab's state rebuilt from its journal (:func:`restore`); its journal keeps what the file said."""

    def __init__(self, record: LabRecord, host: Host) -> None:
        super().__init__(record.id, record.name, host, bool(record.data.get("isolated")))
        self.record = dict(record.data)
        self.persistent = True
        self.journal_file = host.runtime.journal(record.id)
        self.journaled_firewall = bool(record.data.get("firewall"))

    def journal(self, *, firewall: bool, host: Host | None = None) -> dict[str, Any]:
        # an attached lab is on one Host (its journal's): ``host`` is that one
        data = {**self.record, **self.faults()}
        data["firewall"] = bool(self.record.get("firewall")) or (not self.isolated and firewall)
        self.record = data
        return data


def restore(record: LabRecord, host: Host, lab: LabLike) -> AttachedState:
    """The state of ``record``'s lab, on ``host``, its networks belonging to ``lab``.

    Refused (:class:`~pynetns.errors.InvalidValue`) unless the lab is persistent: a lab whose owner runs is
    changed through its owner's :class:`~pynetns.Lab` (which would not know of another process's rules), and
    one whose owner died is for :func:`~pynetns.cleanup`.
    """
    if not record.persistent:
        why = (
            f"is owned by a running process (pid {record.owner_pid}): change it through that process's Lab"
            if record.alive
            else "was left by a process that died: 'pynetns cleanup' removes it"
        )
        raise InvalidValue("lab", f"{record.name} ({record.id})", why)
    data = record.data
    state = AttachedState(record, host)
    try:
        for name, kernel in data.get("members", {}).items():
            state.namespaces[name] = Namespace(kernel, host=host)
        for net in data.get("networks", ()):
            subnet = ipaddress.ip_network(net["subnet"])
            gateway = str(ipaddress.ip_interface(net["gateway"]).ip)
            state.networks[net["name"]] = Network(
                lab,
                net["name"],
                subnet,
                net["bridge"],
                Allocator(subnet, gateway),
                nat=bool(net.get("nat")),
                internal=bool(net.get("internal")),
                isolate=net.get("isolate", True),
                applied=True,
                impairments=state.impairments,
            )
        for item in data.get("endpoints", ()):
            network = state.networks[item["network"]]
            address = network.allocator.allocate(str(ipaddress.ip_interface(item["ip"]).ip))
            endpoint = Endpoint(
                network,
                state.namespaces[item["namespace"]],
                item["interface"],
                address,
                item["host_interface"],
                applied=True,
            )
            state.endpoints.append(endpoint)
        state.applied_namespaces.update(namespace.name for namespace in state.namespaces.values())
        if state.host_namespace is not None:
            state.applied_namespaces.add(state.host_namespace.name)
        state.partitions.extend(Partition.from_dict(item) for item in data.get("partitions", ()))
        restore_partitions(state)
        for item in data.get("impairments", ()):
            found = [
                endpoint
                for endpoint in state.endpoints
                if state.name_of(endpoint.namespace) == item["namespace"] and endpoint.network.name == item["network"]
            ]
            if found:
                state.impairments.adopt(found[0], item)
    except (KeyError, TypeError, ValueError) as error:
        rule = f"its journal {record.path} is not one this pynetns can attach to ({type(error).__name__}: {error})"
        raise InvalidValue("lab", f"{record.name} ({record.id})", rule) from None
    return state
