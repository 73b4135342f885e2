"""Labs: Docker-style networks declared in code or topology files, applied in a few batched processes,
journaled, and removed without a trace (also after their owner died: :func:`cleanup`)."""

from .cleanup import Cleaned, Orphans, cleanup, orphans, remove
from .ipam import taken_networks
from .journal import LabRecord, find, labs, runtime_dir
from .lab import Lab
from .model import Endpoint, LabLike, Network
from .shapes import SHAPES, Partition
from .topology import Topology

__all__ = [
    "SHAPES",
    "Cleaned",
    "Endpoint",
    "Lab",
    "LabLike",
    "LabRecord",
    "Network",
    "Orphans",
    "Partition",
    "Topology",
    "cleanup",
    "find",
    "labs",
    "orphans",
    "remove",
    "runtime_dir",
    "taken_networks",
]
