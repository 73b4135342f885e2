"""Network namespaces: create, enter, run programs in, inspect, delete.

>>> from pynetns import Host
>>> host = Host(dry_run=True)
>>> with Namespace("web", host=host) as web:
...     _ = web.run(["ping", "-c1", "127.0.0.1"])
>>> [str(call) for call in host.history]  # doctest: +NORMALIZE_WHITESPACE
['ip netns add web', 'ip -n web link set lo alias pynetns:dry-run up',
 'ip netns exec web ping -c1 127.0.0.1', 'ip netns pids web', 'ip netns delete web']
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from typing import Any, overload

import attrs

from .backends.base import NetnsRef
from .errors import InvalidName, InvalidValue, NotFound, NotOwned
from .host import Host, default_host
from .plan import Plan
from .polling import wait_until
from .reports import Interface, RouteEntry
from .runner import CompletedCommand, Process
from .validation import IPInterface, converter, interface_name, namespace_name, sysctl_key
from .validation import argv as valid_argv
from .validation import port as valid_port
from .validation import protocol as valid_protocol
from .views import Viewable

__all__ = ["Namespace", "kill_processes_in", "listening_ports", "resolve_host"]

log = logging.getLogger(__name__)


def resolve_host(host: Host | None) -> Host:
    """``host``, or the default local host."""
    return default_host() if host is None else host


def kill_processes_in(host: Host, names: Sequence[str]) -> None:
    """Kill every process inside these named namespaces (it would keep a namespace, and its links, alive).

    ``ip netns pids`` finds them — one process for all the namespaces, ``ip -force -batch`` going on
    past any that is already gone — and one ``kill`` ends them.
    """
    if not names:
        return
    links = host.links
    if len(names) == 1:
        listing = host.run(host.ip_argv(NetnsRef.root(), links.netns_pids(names[0])), check=False)
    else:
        program, *batch = links.batch_command(None)  # ip -batch -, told to go on past a namespace already gone
        lines = "".join(" ".join(links.netns_pids(name)) + "\n" for name in names)
        listing = host.run((program, "-force", *batch), input=lines, check=False)
    pids = sorted(set(listing.stdout.split()), key=int)
    if pids:
        log.debug("killing processes left in namespaces %s: %s", ", ".join(names), pids)
        host.run(links.kill(pids), check=False)


def listening_ports(listing: str) -> set[int]:
    """The local port numbers of ``ss -H -l -n`` output (the fourth column, ``addr:port``, ``[::]:port``,
    ``*:port``, ``addr%dev:port``)."""
    ports: set[int] = set()
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            number = fields[3].rpartition(":")[2]
            if number.isdigit():
                ports.add(int(number))
    return ports


def _netns_list(host: Host) -> list[dict[str, Any]]:
    """What ``ip -j netns list`` reports on ``host``: ``[{"name": ..., "id": ...}]``."""
    return list(host.ip(NetnsRef.root(), host.links.netns_list()).json())


class _HostOrRoot:
    """``Namespace.host()`` on the class is the root namespace; ``ns.host`` on an instance is its Host."""

    @overload
    def __get__(self, instance: None, owner: type[Namespace]) -> Callable[..., Namespace]: ...

    @overload
    def __get__(self, instance: Namespace, owner: type[Namespace]) -> Host: ...

    def __get__(self, instance: Namespace | None, owner: type[Namespace]) -> Any:
        if instance is None:
            return functools.partial(owner._root)
        return instance._host


@attrs.define(eq=False, repr=False)
class Namespace(Viewable):
    """A Linux network namespace.

    ``Namespace("web")`` names one under ``/run/netns`` (what ``ip netns add``
    makes); nothing happens until :meth:`create`. ``with Namespace("web") as
    web:`` creates it and always deletes it. :meth:`from_pid`,
    :meth:`from_path` and :meth:`host` wrap namespaces pynetns did not create:
    they can be inspected and entered, never deleted.
    """

    name: str = attrs.field(converter=converter(namespace_name))  # type: ignore[misc]
    _host: Host = attrs.field(default=None, converter=resolve_host, alias="host")
    _ref: NetnsRef = attrs.field(init=False)
    _owned: bool = attrs.field(init=False, default=True)
    _processes: list[Process] = attrs.field(init=False, factory=list)

    host = _HostOrRoot()

    def __attrs_post_init__(self) -> None:
        self._ref = NetnsRef.named(self.name)

    # -- other namespaces -------------------------------------------------

    @classmethod
    def _wrap(cls, name: str, ref: NetnsRef, host: Host | None) -> Namespace:
        namespace = cls(name, host=host)
        namespace._ref = ref
        namespace._owned = False
        return namespace

    @classmethod
    def _root(cls, host: Host | None = None) -> Namespace:
        return cls._wrap("host", NetnsRef.root(), host)

    @classmethod
    def from_pid(cls, pid: int, host: Host | None = None) -> Namespace:
        """The network namespace of process ``pid`` (``nsenter -t PID -n``), e.g. a container's."""
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidValue("pid", pid, "must be a positive integer")
        return cls._wrap(f"pid-{pid}", NetnsRef.pid(pid), host)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], host: Host | None = None) -> Namespace:
        """The namespace bound at ``path`` (``/proc/PID/ns/net``, ``/var/run/docker/netns/…``)."""
        text = os.fspath(path)
        if not text.startswith("/") or any(c in text for c in "\x00\n"):
            raise InvalidName("path", text, "must be an absolute path")
        base = os.path.basename(text.rstrip("/")) or "path"
        try:
            name = namespace_name("path", base)
        except InvalidName:
            name = "path"
        return cls._wrap(name, NetnsRef.path(text), host)

    @classmethod
    def all(cls, host: Host | None = None) -> list[Namespace]:
        """Every named namespace (``ip netns list``)."""
        host = resolve_host(host)
        return [cls(item["name"], host=host) for item in _netns_list(host)]

    # -- identity ---------------------------------------------------------

    @property
    def ref(self) -> NetnsRef:
        """Where this namespace is, for backends."""
        return self._ref

    @property
    def owned(self) -> bool:
        """True for a named namespace pynetns may create and delete."""
        return self._owned

    @property
    def is_root(self) -> bool:
        return self._ref.kind == "root"

    def __repr__(self) -> str:
        return f"Namespace({self.name!r}, {self._ref.kind})"

    # -- lifecycle --------------------------------------------------------

    def _require_owned(self, action: str) -> None:
        if not self._owned:
            raise NotOwned(f"{self!r} was not created by pynetns; refusing to {action} it")

    def create(self) -> None:
        """``ip netns add`` and bring ``lo`` up (tagged as pynetns')."""
        self._require_owned("create")
        links = self._host.links
        plan = Plan()
        plan.add(self._host.ip_step(NetnsRef.root(), links.netns_add(self.name), links.netns_delete(self.name)))
        plan.add(self._host.ip_step(self._ref, links.link_set("lo", alias=self._host.tag, up=True)))
        self._host.apply(plan)

    def delete(self) -> None:
        """End the processes inside, then ``ip netns delete``.

        Processes started with :meth:`popen` are stopped first; any other
        process still inside this (pynetns-created) namespace is killed, since
        it would keep the namespace — and its interfaces — alive.
        """
        self._require_owned("delete")
        try:
            self.stop_processes()
        finally:  # whatever stopping them met, nothing may keep the namespace alive
            kill_processes_in(self._host, [self.name])
            self._host.ip(NetnsRef.root(), self._host.links.netns_delete(self.name))

    def exists(self) -> bool:
        if self._ref.kind == "root":
            return True
        if self._ref.kind == "named":
            return any(item["name"] == self.name for item in _netns_list(self._host))
        return self.run(self._host.links.noop(), check=False).returncode == 0

    def netnsid(self) -> int | None:
        """The id the host's namespace knows this named namespace by (``ip netns list``), if it has one.

        It is what ``link_netnsid`` of a host-side veth reports when the peer is in here;
        the kernel assigns it on first need (e.g. when a veth links the two).
        """
        if self._ref.kind != "named":
            return None
        for item in _netns_list(self._host):
            if item["name"] == self.name and "id" in item:
                return int(item["id"])
        return None

    def __enter__(self) -> Namespace:
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.delete()

    # -- running programs -------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout: float | None = None,
    ) -> CompletedCommand:
        """Run ``argv`` (a list: ``["ping", "-c1", "10.0.0.2"]``) inside and wait for it; ``CommandError``
        if it fails and ``check``. A string is refused (``InvalidValue``): no shell runs it."""
        command = self._host.exec_argv(self._ref, valid_argv("argv", argv))
        return self._host.run(command, check=check, input=input, timeout=timeout)

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
    ) -> Process:
        """Start a long-running program (an argv list, as :meth:`run` takes) inside; it is stopped before
        the namespace is deleted."""
        argv = self._host.exec_argv(self._ref, valid_argv("argv", argv))
        process = self._host.popen(argv, stdin=stdin, stdout=stdout, stderr=stderr)
        self._processes.append(process)
        return process

    @property
    def processes(self) -> list[Process]:
        """Programs started with :meth:`popen` that are still tracked."""
        return list(self._processes)

    def stop_processes(self, grace: float = 3.0) -> None:
        """Stop every program started with :meth:`popen`."""
        while self._processes:
            self._processes.pop().stop(grace)

    def wait_for_port(self, port: int, protocol: str = "tcp", timeout: float = 10.0) -> None:
        """Wait until a socket inside listens on ``port`` (``"tcp"``, or ``"udp"``: bound), polling the
        listening sockets (``ss``) for up to ``timeout`` seconds; :class:`~pynetns.errors.WaitTimeout` then::

            web.popen(["python3", "-m", "http.server", "8000"])
            web.wait_for_port(8000)
        """
        number = valid_port("port", port)
        proto = valid_protocol("protocol", protocol)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidValue("timeout", timeout, "must be a positive number of seconds")
        argv = self._host.links.listeners(proto)

        def listening() -> bool:
            listing = self.run(argv).stdout
            return self._host.dry_run or number in listening_ports(listing)

        wait_until(listening, timeout=timeout, interval=0.05, what=f"{proto} port {number} to listen in {self.name}")

    # -- inspection -------------------------------------------------------

    def _links_json(self, **selector: str | None) -> list[dict[str, Any]]:
        result = self._host.ip(self._ref, self._host.links.show_links(**selector))
        return list(result.json())

    def interfaces(self) -> list[Interface]:
        """Every interface inside, with its addresses (``ip -j -d addr show``)."""
        return [Interface.from_ip_json(item) for item in self._links_json()]

    def interface(self, name: str) -> Interface:
        """One interface by name; :class:`~pynetns.errors.NotFound` if it is not here."""
        interface_name("name", name)
        items = self._links_json(device=name)
        if not items:
            raise NotFound(
                self._host.ip_argv(self._ref, self._host.links.show_links(device=name)),
                1,
                stderr=f'Device "{name}" does not exist.',
            )
        return Interface.from_ip_json(items[0])

    def find_interface(self, index: int) -> Interface | None:
        """The interface with ifindex ``index`` here, if any (to follow a veth to its peer)."""
        return next((item for item in self.interfaces() if item.index == index), None)

    def addresses(self) -> list[IPInterface]:
        """Every address on every interface inside."""
        return [address for item in self.interfaces() for address in item.addresses]

    def routes(self, family: int = 4) -> list[RouteEntry]:
        """The main routing table as the kernel reports it (``ip -j route show``), IPv4 by default.

        Each entry is a report; ``Route.from_entry(entry, namespace)`` makes the creatable route.
        """
        if family not in (4, 6):
            raise InvalidValue("family", family, "must be 4 or 6")
        result = self._host.ip(self._ref, self._host.links.show_routes(family=family))
        return [RouteEntry.from_ip_json(item, family=family) for item in result.json()]

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read ``key``; with ``value``, write it and return the previous value."""
        sysctl_key("key", key)
        links = self._host.links
        current = self.run(links.sysctl_read(key)).stdout.strip()
        if value is not None:
            text = str(value)
            if any(c in text for c in "\n\x00="):
                raise InvalidValue("value", value, "must be one line without '='")
            self.run(links.sysctl_write([f"{key}={text}"], quiet=False))
        return current
