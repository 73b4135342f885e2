"""The backend roles: small abstract classes a backend implements.

Backends translate intent into argv lists and hold no state. The :class:`~pynetns.Host`
composes them and hands the commands to its runner.

- :class:`LinkBackend` — links, addresses, routes, named namespaces (iproute2).
- :class:`EnterBackend` — run a command inside a namespace given by pid or path (nsenter).

A backend missing a method fails when it is instantiated (``TypeError``), not
half-way through building a network.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import attrs

__all__ = ["NetnsRef", "LinkBackend", "EnterBackend"]

Argv = tuple[str, ...]


@attrs.frozen
class NetnsRef:
    """Where a network namespace is: the root one, a named one, a process's, or a file."""

    kind: Literal["root", "named", "pid", "path"]
    value: str = ""

    @classmethod
    def root(cls) -> NetnsRef:
        return cls("root")

    @classmethod
    def named(cls, name: str) -> NetnsRef:
        return cls("named", name)

    @classmethod
    def pid(cls, pid: int) -> NetnsRef:
        return cls("pid", str(pid))

    @classmethod
    def path(cls, path: str) -> NetnsRef:
        return cls("path", path)

    @property
    def name(self) -> str | None:
        """The ``ip -n`` name, for a named namespace."""
        return self.value if self.kind == "named" else None

    @property
    def netns_arg(self) -> str:
        """The argument of ``ip link ... netns X`` that moves an interface here."""
        if self.kind == "root":
            return "/proc/1/ns/net"
        return self.value

    def __str__(self) -> str:
        return {"root": "host", "named": self.value, "pid": f"pid {self.value}", "path": self.value}[self.kind]


class LinkBackend(ABC):
    """Builds the commands for links, addresses, routes and named namespaces."""

    #: the registry name
    name: ClassVar[str]
    #: the program a batch is sent to, for error messages
    program: ClassVar[str]

    @abstractmethod
    def command(self, netns: str | None, args: Sequence[str]) -> Argv:
        """One command run in the named namespace ``netns`` (``None``: the caller's)."""

    @abstractmethod
    def batch_command(self, netns: str | None) -> Argv:
        """The process that reads many commands from stdin in ``netns``."""

    @abstractmethod
    def exec_command(self, netns: str, argv: Sequence[str]) -> Argv:
        """Run any program inside the named namespace ``netns``."""

    @abstractmethod
    def netns_add(self, name: str) -> Argv: ...

    @abstractmethod
    def netns_delete(self, name: str) -> Argv: ...

    @abstractmethod
    def netns_list(self) -> Argv: ...

    @abstractmethod
    def netns_pids(self, name: str) -> Argv: ...

    # the following return the arguments of a command, for command() or a batch line

    @abstractmethod
    def bridge_add(self, name: str, *, mtu: int | None) -> Argv: ...

    @abstractmethod
    def veth_add(
        self,
        name: str,
        peer: str,
        *,
        peer_netns: str | None,
        mtu: int | None,
        mac: str | None,
        peer_mac: str | None,
        master: str | None,
    ) -> Argv: ...

    @abstractmethod
    def link_set(
        self, name: str, *, up: bool | None = None, alias: str | None = None, master: str | None = None
    ) -> Argv: ...

    @abstractmethod
    def link_delete(self, name: str) -> Argv: ...

    @abstractmethod
    def addr_add(self, device: str, address: str) -> Argv: ...

    @abstractmethod
    def addr_delete(self, device: str, address: str) -> Argv: ...

    @abstractmethod
    def route_add(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv: ...

    @abstractmethod
    def route_delete(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv: ...

    @abstractmethod
    def show_links(self, *, device: str | None = None, master: str | None = None) -> Argv:
        """Arguments listing links with their addresses as ``ip -j -d addr show`` JSON."""

    @abstractmethod
    def show_routes(self, *, family: int = 4, destination: str | None = None) -> Argv:
        """Arguments listing routes as ``ip -j route show`` JSON."""


class EnterBackend(ABC):
    """Runs commands inside a namespace given by a process id or a file."""

    name: ClassVar[str]

    @abstractmethod
    def wrap(self, where: NetnsRef, argv: Sequence[str]) -> Argv:
        """``argv`` run inside ``where`` (a ``pid`` or ``path`` reference)."""
