"""pynetns: Docker-style Linux network topologies as plain Python objects.

Namespaces, bridges, veth pairs and routes are made by the standard tools
(``ip``, ``nsenter``), so everything pynetns does is a list of commands a
person could have typed — and can print::

    from pynetns import Bridge, Namespace, Route, Veth

    with Bridge("br0", address="10.0.0.1/24") as br, Namespace("c1") as c1:
        Veth("veth-c1", "eth0", peer_namespace=c1, master=br, peer_address="10.0.0.2/24").create()
        Route("default", via="10.0.0.1", namespace=c1).create()
        c1.run(["ping", "-c1", "10.0.0.1"])
"""

from __future__ import annotations

import logging

from .errors import (
    AlreadyExists,
    BackendUnavailable,
    CleanupError,
    CommandError,
    CommandTimeout,
    InvalidAddress,
    InvalidInput,
    InvalidName,
    InvalidValue,
    NotFound,
    NotOwned,
    PermissionDenied,
    PortInUse,
    PynetnsError,
    ResourceBusy,
    SubnetOverlap,
    UnknownBackend,
    WaitTimeout,
)
from .firewall.nat import Counters, Isolation, Masquerade, PortMap
from .host import Host, default_host
from .impairment import Impairment
from .lab.lab import Endpoint, Lab, Network, cleanup, labs
from .lab.topology import Topology, TopologyError
from .links import Bridge, Veth
from .namespace import Namespace
from .plan import Plan, Step
from .polling import wait_until
from .reports import Interface
from .routes import Route
from .runner import Call, CompletedCommand, LocalRunner, Process, Runner

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "Bridge",
    "Call",
    "CleanupError",
    "Endpoint",
    "CommandError",
    "CommandTimeout",
    "CompletedCommand",
    "Counters",
    "Host",
    "Impairment",
    "Interface",
    "Lab",
    "Network",
    "InvalidAddress",
    "InvalidInput",
    "InvalidName",
    "InvalidValue",
    "Isolation",
    "LocalRunner",
    "Masquerade",
    "Namespace",
    "NotFound",
    "NotOwned",
    "PermissionDenied",
    "Plan",
    "PortInUse",
    "PortMap",
    "Process",
    "PynetnsError",
    "ResourceBusy",
    "Route",
    "Runner",
    "Step",
    "Topology",
    "TopologyError",
    "SubnetOverlap",
    "UnknownBackend",
    "Veth",
    "WaitTimeout",
    "cleanup",
    "default_host",
    "labs",
    "wait_until",
]

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
