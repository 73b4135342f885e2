"""Slow, lossy links: an :class:`ImpairedLink` puts an :class:`~pynetns.Impairment` on a veth pair,
through ``tc`` where the kernel has netem, else through the userspace engine (:mod:`.nfqueue`)."""

from .link import ImpairedLink, netem_available

__all__ = ["ImpairedLink", "netem_available"]
