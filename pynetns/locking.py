"""One lock per host network namespace, shared by every process on the machine that drives it.

Processes that change state shared through one network namespace — the firewall
table and its jump rules, the sysctl records, the choice of default subnets, lab
journals, cleanup — do it under :func:`host_lock`. The lock is an abstract unix
socket (``\\0pynetns/lock/<key>``): bound while held, released by the kernel the
moment its holder dies (even by SIGKILL), no file left behind, the same for
processes in other PID namespaces that share the network namespace (xdist
workers, CI jobs, containers with ``--network host``).

For a Host that drives another machine, the lock is taken there: the same socket name, bound by a process on
that machine (``remote``, a :class:`Locker` such as :class:`~pynetns.runtime.RemoteRuntime`), so local
pynetns processes there and remote Hosts exclude one another.

It is re-entrant within a thread, shared by every :class:`~pynetns.Host` of the
process that drives the same namespace (so a process never waits for itself),
and exclusive between threads. Never hold it while waiting for another thread
that takes it.

>>> with host_lock("example"):
...     with host_lock("example"):  # re-entrant
...         held("example")
True
>>> held("example")
False
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from .agent import LOCK_PREFIX
from .errors import LockTimeout

__all__ = ["DEFAULT_TIMEOUT", "Locker", "held", "host_lock"]

log = logging.getLogger(__name__)

#: how long to wait for another process's transaction, in seconds
DEFAULT_TIMEOUT = 120.0
#: the same name a remote Host's agent binds on its machine (:mod:`pynetns.agent`)
_PREFIX = LOCK_PREFIX


class Locker(Protocol):
    """Takes host locks on another machine (the one a remote Host drives)."""

    #: the machine, as a lock's name in this process and errors say it
    machine: str

    def acquire(self, key: str, timeout: float) -> None:
        """Bind ``\\0pynetns/lock/<key>`` there, waiting up to ``timeout`` s; else raise :class:`LockTimeout`."""

    def release(self, key: str) -> None:
        """Let it go."""


class _Lock:
    """The process's share of one host lock: a thread lock, and the socket bound while a thread holds it
    (or the :class:`Locker` that holds it on another machine)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.remote: Locker | None = None
        self.address = _PREFIX + key
        self.thread_lock = threading.RLock()
        self.depth = 0
        self.socket: socket.socket | None = None

    def acquire(self, timeout: float, remote: Locker | None = None) -> None:
        deadline = time.monotonic() + timeout
        if not self.thread_lock.acquire(timeout=max(timeout, 0.001)):
            raise LockTimeout(self.key, timeout, "another thread of this process")
        try:
            if self.depth == 0 and remote is not None:
                remote.acquire(self.key, max(deadline - time.monotonic(), 0.0))
                self.remote = remote
            elif self.depth == 0:
                self.socket = self._bind(deadline, timeout)
            self.depth += 1
        except BaseException:
            self.thread_lock.release()
            raise

    def release(self) -> None:
        self.depth -= 1
        try:
            if self.depth == 0 and self.socket is not None:
                self.socket.close()
                self.socket = None
            if self.depth == 0 and self.remote is not None:
                remote, self.remote = self.remote, None
                remote.release(self.key)  # a broken connection raises: the lock went with it there
        finally:
            self.thread_lock.release()

    def _bind(self, deadline: float, timeout: float) -> socket.socket:
        interval = 0.002
        waited = False
        while True:
            candidate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                candidate.bind(self.address)
                candidate.listen(16)  # a waiter may connect to learn who holds it
            except OSError:
                candidate.close()
            else:
                if waited:
                    log.debug("host lock %s acquired after waiting", self.key)
                return candidate
            if time.monotonic() >= deadline:
                raise LockTimeout(self.key, timeout, _holder(self.address))
            waited = True
            time.sleep(interval)
            interval = min(interval * 1.5, 0.05)

    def forget(self) -> None:
        """In a forked child: the parent's hold is not the child's; close the inherited socket."""
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        self.remote = None  # its agent there is the parent's
        self.depth = 0
        self.thread_lock = threading.RLock()


_locks: dict[str, _Lock] = {}
_registry = threading.Lock()


def _lock(key: str, machine: str | None = None) -> _Lock:
    name = key if machine is None else f"{machine}|{key}"
    with _registry:
        lock = _locks.get(name)
        if lock is None:
            lock = _locks[name] = _Lock(key)
        return lock


def _after_fork() -> None:
    global _registry
    _registry = threading.Lock()
    for lock in _locks.values():
        lock.forget()


os.register_at_fork(after_in_child=_after_fork)


def _holder(address: str) -> str:
    """Who holds the lock, as the kernel says (the peer's pid), for the timeout message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(address)
            pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except OSError:
            return "another process"
    return f"process {pid}" if pid > 0 else "a process in another PID namespace"


@contextlib.contextmanager
def host_lock(key: str, timeout: float = DEFAULT_TIMEOUT, *, remote: Locker | None = None) -> Iterator[None]:
    """Hold the lock of the host network namespace ``key`` inside the ``with`` block; ``remote``: of the
    machine a remote Host drives, taken there by that locker."""
    lock = _lock(key, None if remote is None else remote.machine)
    lock.acquire(timeout, remote)
    try:
        yield
    finally:
        lock.release()


def held(key: str, machine: str | None = None) -> bool:
    """Whether this process holds the lock ``key`` (in any thread); ``machine``: that of a remote Host."""
    lock = _locks.get(key if machine is None else f"{machine}|{key}")
    return lock is not None and lock.depth > 0
