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
from importlib.metadata import PackageNotFoundError, version

from . import display  # noqa: F401  (it fills in the objects' rich displays: pynetns.views)
from .errors import (
    AlreadyExists,
    BackendUnavailable,
    CleanupError,
    CommandError,
    CommandTimeout,
    ConnectionLost,
    InvalidAddress,
    InvalidInput,
    InvalidName,
    InvalidValue,
    LabDestroyed,
    LockTimeout,
    NotFound,
    NotOwned,
    PermissionDenied,
    PortInUse,
    PynetnsError,
    ResourceBusy,
    SandboxRefused,
    SubnetOverlap,
    TopologyError,
    UnknownBackend,
    WaitTimeout,
)
from .firewall import Counters, Isolation, Masquerade, PortMap
from .host import Host, default_host
from .impairment import Impairment
from .lab import Endpoint, Lab, LabRecord, Network, Topology, cleanup, find, labs, remove
from .links import Bridge, Veth
from .namespace import Namespace
from .plan import Plan, Step
from .polling import wait_until
from .reports import Interface, RouteEntry
from .routes import Route
from .runner import Call, Commands, CompletedCommand, LocalRunner, Process, Runner

__all__ = [  # noqa: RUF022  (grouped by kind, each group sorted)
    # objects
    "Bridge",
    "Counters",
    "Impairment",
    "Interface",
    "Isolation",
    "Masquerade",
    "Namespace",
    "PortMap",
    "Route",
    "RouteEntry",
    "Veth",
    # labs
    "Endpoint",
    "Lab",
    "LabRecord",
    "Network",
    "Topology",
    "cleanup",
    "find",
    "labs",
    "remove",
    # hosts, plans and commands
    "Call",
    "Commands",
    "CompletedCommand",
    "Host",
    "LocalRunner",
    "Plan",
    "Process",
    "Runner",
    "Step",
    "default_host",
    "wait_until",
    # errors
    "AlreadyExists",
    "BackendUnavailable",
    "CleanupError",
    "CommandError",
    "CommandTimeout",
    "ConnectionLost",
    "InvalidAddress",
    "InvalidInput",
    "InvalidName",
    "InvalidValue",
    "LabDestroyed",
    "LockTimeout",
    "NotFound",
    "NotOwned",
    "PermissionDenied",
    "PortInUse",
    "PynetnsError",
    "ResourceBusy",
    "SandboxRefused",
    "SubnetOverlap",
    "TopologyError",
    "UnknownBackend",
    "WaitTimeout",
]

try:
    __version__ = version("pynetns")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())
