"""Published ports, outbound NAT, isolation: firewall objects and their transactions.

>>> from pynetns import Host
>>> PortMap(8080, "10.0.0.2", 80, host=Host(dry_run=True)).rules()[0].chain
'dnat'
"""

from .nat import (
    FORWARDING,
    Counters,
    ForwardDrops,
    Isolation,
    Masquerade,
    PortMap,
    create_all,
    delete_all,
    preview,
    remove_tagged,
)

__all__ = [
    "FORWARDING",
    "Counters",
    "ForwardDrops",
    "Isolation",
    "Masquerade",
    "PortMap",
    "create_all",
    "delete_all",
    "preview",
    "remove_tagged",
]
