"""The nsenter backend: run commands in a namespace given by a process id or a file.

This is how pynetns reaches namespaces it did not create — a Docker
container's (``nsenter -t PID -n``, ``/var/run/docker/netns/…``).

>>> from pynetns.backends.base import NetnsRef
>>> Nsenter().wrap(NetnsRef.pid(4242), ["ip", "addr"])
('nsenter', '-t', '4242', '-n', '--', 'ip', 'addr')
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Argv, EnterBackend, NetnsRef

__all__ = ["Nsenter"]


class Nsenter(EnterBackend):
    """util-linux ``nsenter``: enters only the network namespace."""

    name = "nsenter"

    def wrap(self, where: NetnsRef, argv: Sequence[str]) -> Argv:
        if where.kind == "pid":
            return ("nsenter", "-t", where.value, "-n", "--", *argv)
        if where.kind == "path":
            return ("nsenter", f"--net={where.value}", "--", *argv)
        if where.kind == "named":
            return ("nsenter", f"--net=/run/netns/{where.value}", "--", *argv)
        return tuple(argv)
