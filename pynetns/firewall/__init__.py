"""Published ports, outbound NAT, isolation: firewall objects and their transactions.

:mod:`.objects` describes rules (no I/O), :mod:`.transaction` reads, computes
and writes them, :mod:`.site` is a namespace's firewall as a transaction sees
it (and the host's path to a container).

>>> from pynetns import Host
>>> PortMap(8080, "10.0.0.2", 80, host=Host(dry_run=True)).rules()[0].chain
'dnat'
"""

from .objects import (
    FORWARDING,
    Counters,
    Firewalled,
    ForwardDrops,
    Isolation,
    Masquerade,
    PortMap,
)
from .site import HostPath, Site
from .transaction import create_all, delete_all, preview, remove_tagged

__all__ = [
    "FORWARDING",
    "Counters",
    "Firewalled",
    "ForwardDrops",
    "HostPath",
    "Isolation",
    "Masquerade",
    "PortMap",
    "Site",
    "create_all",
    "delete_all",
    "preview",
    "remove_tagged",
]
