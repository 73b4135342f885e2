"""The Host: how commands run (a runner) and which backends build them.

>>> host = Host(dry_run=True)
>>> from pynetns import Namespace
>>> Namespace("web", host=host).create()
>>> [str(call) for call in host.history]
['ip netns add web', 'ip -n web link set lo alias pynetns:dry-run up']
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import secrets
import threading
from collections.abc import Sequence
from typing import Any

from .backends import available, get_backend
from .backends.base import EnterBackend, FirewallBackend, LinkBackend, NetnsRef, SandboxBackend, ShapingBackend
from .backends.recording import RecordingRunner
from .errors import BackendUnavailable, InvalidValue, PynetnsError, UnknownBackend
from .locking import host_lock
from .plan import Plan, Step
from .runner import Call, CompletedCommand, LocalRunner, Process, Runner, SshRunner
from .runtime import LocalRuntime, RemoteRuntime, Runtime
from .sandbox import Sandbox, privileged
from .validation import owner_tag

__all__ = ["Host", "default_host"]

log = logging.getLogger(__name__)

TAG_PREFIX = "pynetns:"


class Host:
    """A machine pynetns works on, and the tools it uses there.

    ``Host()`` runs commands locally; ``Host(sudo=True)`` through ``sudo -n``;
    ``Host(machine=plumbum_machine)`` on another plumbum machine;
    ``Host(dry_run=True)`` records the commands in :attr:`history` instead of
    running them. ``Host.rootless()`` needs no root: a sandbox (an unprivileged user
    namespace with its own mount, network and PID namespaces) plays the host, and
    ``Host.auto()`` is ``Host()`` as root, else ``Host.rootless()``. Backends are
    chosen by registry name or passed as objects, one per role: ``links``, ``enter``,
    ``firewall``, ``shaping``.

    Every kernel object created through this host is tagged with :attr:`tag`
    (``pynetns:<id>``), so cleanup can find exactly what is ours.
    """

    def __init__(
        self,
        machine: Any = None,
        *,
        dry_run: bool = False,
        sudo: bool = False,
        runner: Runner | None = None,
        links: str | LinkBackend = "iproute2",
        enter: str | EnterBackend = "nsenter",
        tag: str | None = None,
        firewall: str | FirewallBackend | None = None,
        shaping: str | ShapingBackend = "tc",
        runtime: Runtime | None = None,
    ) -> None:
        # every choice checked here, before anything runs: a wrong one fails now, naming what fits
        if runner is None:
            runner = RecordingRunner() if dry_run else LocalRunner(machine, sudo=sudo)
        elif not isinstance(runner, Runner):
            raise InvalidValue("runner", runner, "must be a pynetns.runner.Runner (or None: run locally)")
        self.runner = runner
        self.dry_run = isinstance(runner, RecordingRunner)
        self.links: LinkBackend = _backend("links", links, LinkBackend)()
        self.enter: EnterBackend = _backend("enter", enter, EnterBackend)()
        #: the queueing disciplines that impair links (``tc``)
        self.shaping: ShapingBackend = _backend("shaping", shaping, ShapingBackend)()
        if tag is None:
            tag = TAG_PREFIX + ("dry-run" if self.dry_run else f"{os.getpid()}-{secrets.token_hex(2)}")
        self.tag = owner_tag("tag", tag)
        if firewall is not None:
            _backend("firewall", firewall, FirewallBackend)  # which flavour is detected on first use
        self._firewall_choice = firewall
        #: where this Host's runtime files (lab journals) live, and how they are written, locked and listed
        self.runtime = LocalRuntime() if runtime is None else runtime
        self._firewall: FirewallBackend | None = firewall if isinstance(firewall, FirewallBackend) else None
        self._firewall_lock = threading.Lock()
        self._netns_key: str | None = None
        #: the rootless sandbox playing this host (:meth:`rootless`), ended by :meth:`close`
        self.sandbox: Sandbox | None = None
        #: the connection to the machine this Host drives (:meth:`ssh`), ended by :meth:`close`
        self.remote: SshRunner | None = runner if isinstance(runner, SshRunner) else None

    @classmethod
    def rootless(cls, *, sandbox: str | SandboxBackend = "unshare", **options: Any) -> Host:
        """A Host played by a new rootless sandbox (:mod:`pynetns.sandbox`): an unprivileged user namespace
        with its own mount, network and PID namespaces. Needs no root, sudo or setuid helper.

        Every command enters the sandbox; its ``/run/netns`` and the lab journals live on its own tmpfs.
        :meth:`close` (or the end of a ``with`` block, or this process's death) ends it and everything in
        it. ``options``: as for ``Host()`` (``tag``, ``firewall``, backends), but not ``runner``/``runtime``.
        :class:`~pynetns.errors.SandboxRefused` says how to allow user namespaces where the machine forbids them.

        Example (as any user)::

            with Host.rootless() as host, Lab("shop", host=host) as lab:
                web = lab.namespace("web", networks=[lab.network("front")])
                lab.publish(web, 8080, 80)
                lab.apply()
                host.run(["curl", "-s", "http://127.0.0.1:8080/"])   # from the sandbox's host namespace
        """
        for taken in ("runner", "runtime", "machine", "sudo", "dry_run"):
            if taken in options:
                raise InvalidValue(taken, options[taken], "is chosen by Host.rootless() itself")
        box = Sandbox.start(backend=sandbox)
        try:
            host = cls(runner=box.runner, runtime=box.runtime, **options)
        except BaseException:
            box.close()
            raise
        host.sandbox = box
        return host

    @classmethod
    def ssh(
        cls,
        destination: str,
        *,
        port: int | None = None,
        keyfile: str | None = None,
        ssh_opts: Sequence[str] = (),
        sudo: bool = False,
        path: Sequence[str] | None = None,
        runtime_dir: str = "/run/pynetns",
        connect_timeout: float = 10.0,
        paramiko: bool = False,
        **options: Any,
    ) -> Host:
        """A Host driving another machine over ssh (``destination``: ``[user@]machine``), with the same
        objects and backends as a local one: ``Namespace("web", host=remote)``, ``Lab(host=remote)``, ``explain()``.

        One connection is opened now and kept (a ControlMaster; commands are sessions over it, a batch one
        remote process: :class:`~pynetns.runner.SshRunner`); the user's ssh configuration and keys apply,
        ``port``, ``keyfile`` and ``ssh_opts`` add to them; ``sudo``: every command through ``sudo -n`` there;
        ``path``: where to look for programs there. The lab journals (under ``runtime_dir``/labs there) and the host
        lock live on that machine, held by a small ``python3`` process there that ends with the connection
        (:class:`~pynetns.runtime.RemoteRuntime`): local pynetns processes there see them as their own. A broken
        connection raises :class:`~pynetns.errors.ConnectionLost` naming the machine; ``pynetns cleanup --host
        MACHINE`` (``cleanup(host=Host.ssh(MACHINE))``) removes what was left. :meth:`close` (or the end of a
        ``with`` block) closes the connection. ``paramiko=True``: through plumbum's ``ParamikoMachine``
        instead of the ``ssh`` program (only if paramiko is installed; ``port`` and ``keyfile`` only).
        ``options``: as for ``Host()`` (``tag``, ``firewall``, backends).

        Example::

            with Host.ssh("root@lab-2") as remote, Lab("shop", host=remote) as lab:
                web = lab.namespace("web", networks=[lab.network("front")])
                lab.publish(web, 8080, 80)
                lab.apply()
        """
        for taken in ("runner", "runtime", "machine", "dry_run"):
            if taken in options:
                raise InvalidValue(taken, options[taken], "is chosen by Host.ssh() itself")
        runner: Runner
        if paramiko:
            runner = _paramiko_runner(destination, port=port, keyfile=keyfile, sudo=sudo, path=path)
        else:
            runner = SshRunner(
                destination,
                port=port,
                keyfile=keyfile,
                ssh_opts=ssh_opts,
                sudo=sudo,
                path=path,
                connect_timeout=connect_timeout,
            )
        try:
            host = cls(runner=runner, runtime=RemoteRuntime(runner, destination, runtime_dir), **options)
        except BaseException:
            getattr(runner, "close", lambda: None)()
            raise
        return host

    @classmethod
    def auto(cls, **options: Any) -> Host:
        """The Host this process can drive: ``Host()`` as root (CAP_NET_ADMIN and CAP_SYS_ADMIN), else
        :meth:`rootless`. ``options``: as for either."""
        if privileged():
            return cls(**options)
        return cls.rootless(**options)

    def close(self) -> None:
        """End this Host's sandbox (a rootless Host) and everything in it; a no-op for other Hosts."""
        if self.sandbox is not None:
            self.sandbox.close()
        if self.remote is not None:
            self.runtime.close()
            self.remote.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def firewall(self) -> FirewallBackend:
        """The firewall backend (NAT, published ports), chosen on first use.

        ``Host(firewall="nftables" | "iptables")`` or a backend object; by
        default nftables where ``nft`` works, else iptables.
        """
        with self._firewall_lock:
            if self._firewall is None:
                self._firewall = self._choose_firewall()
            return self._firewall

    def _choose_firewall(self) -> FirewallBackend:
        choice = self._firewall_choice
        probe = None if self.dry_run else (lambda argv: self.run(argv))
        if choice is None:
            choice = "nftables"
            nftables: type[FirewallBackend] = get_backend("nftables")
            usable = nftables.usable_command()
            if not self.dry_run and usable is not None:
                try:
                    works = self.run(usable, check=False).returncode == 0
                except BackendUnavailable:
                    works = False
                choice = "nftables" if works else "iptables"
        backend = get_backend(choice) if isinstance(choice, str) else None
        if backend is None or not issubclass(backend, FirewallBackend):
            raise PynetnsError(f"{choice!r} is not a firewall backend")
        return backend.detect(probe)

    # -- the namespace that plays the host, and its lock ----------------------

    @property
    def netns_key(self) -> str:
        """The identity of the network namespace this Host treats as the root one (``<dev>-<inode>``).

        Locally and unwrapped it is the caller's namespace; a runner that wraps its commands
        (``nsenter --net=…``) or drives another machine reports the namespace its commands run in.
        """
        if self._netns_key is None:
            if self.dry_run:
                self._netns_key = "dry-run"
            elif self.runner.in_caller_namespace:
                info = os.stat("/proc/self/ns/net")
                self._netns_key = f"{info.st_dev}-{info.st_ino}"
            else:
                text = self.run(self.links.netns_identity()).stdout.strip()
                self._netns_key = text
        return self._netns_key

    def lock(
        self, timeout: float | None = None, *, site: NetnsRef | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """The lock every process driving this Host's namespace takes to change shared state
        (firewall transactions, subnet choice, journals, cleanup): see :mod:`pynetns.locking`.

        ``site``: another namespace of this Host (a named one playing the host, say), whose
        firewall is its own, so it has a lock of its own. Re-entrant; a dry-run Host's lock is a no-op.
        """
        if self.dry_run:
            return contextlib.nullcontext()
        key = self.netns_key
        if site is not None and site.kind != "root":
            value = site.value
            if site.kind != "named" or len(value) > 32:  # an abstract socket's name holds 107 bytes
                value = hashlib.sha256(value.encode()).hexdigest()[:16]
            key = f"{key}/{site.kind}/{value}"
        remote = self.runtime.locker
        return host_lock(key, remote=remote) if timeout is None else host_lock(key, timeout, remote=remote)

    def __repr__(self) -> str:
        kind = "rootless, " if self.sandbox is not None else ""
        if self.remote is not None:
            kind = f"ssh {self.remote.destination}, "
        return f"Host({kind}runner={type(self.runner).__name__}, links={self.links.name}, enter={self.enter.name})"

    # -- what ran ---------------------------------------------------------

    @property
    def history(self) -> list[Call]:
        """Every command recorded so far (``dry_run=True`` only)."""
        if not isinstance(self.runner, RecordingRunner):
            raise PynetnsError("history is kept only by Host(dry_run=True); use host.capture() to watch a real host")
        return self.runner.history

    def capture(self) -> contextlib.AbstractContextManager[list[Call]]:
        """Collect the commands run inside the ``with`` block."""
        return self.runner.capture()

    # -- commands ---------------------------------------------------------

    def ip_argv(self, where: NetnsRef, args: Sequence[str]) -> tuple[str, ...]:
        """An ``ip`` command run in ``where``."""
        if where.kind in ("root", "named"):
            return self.links.command(where.name, args)
        return self.enter.wrap(where, self.links.command(None, args))

    def ip_batch_argv(self, where: NetnsRef) -> tuple[str, ...]:
        if where.kind in ("root", "named"):
            return self.links.batch_command(where.name)
        return self.enter.wrap(where, self.links.batch_command(None))

    def exec_argv(self, where: NetnsRef, argv: Sequence[str]) -> tuple[str, ...]:
        """Any program run in ``where``."""
        if where.kind == "root":
            return tuple(argv)
        if where.kind == "named":
            return self.links.exec_command(where.value, argv)
        return self.enter.wrap(where, argv)

    def ip_step(self, where: NetnsRef, args: Sequence[str], undo: Sequence[str] | None = None) -> Step:
        """A plan step for one ``ip`` command, batchable with its neighbours in ``where``."""
        batch = self.ip_batch_argv(where)
        undo_step = None
        if undo is not None:
            undo_step = Step(self.ip_argv(where, undo), batch=batch, line=" ".join(undo))
        return Step(self.ip_argv(where, args), undo=undo_step, batch=batch, line=" ".join(args))

    def ip(self, where: NetnsRef, args: Sequence[str], *, check: bool = True) -> CompletedCommand:
        return self.runner.run(self.ip_argv(where, args), check=check)

    def run(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float | None = None
    ) -> CompletedCommand:
        return self.runner.run(argv, input=input, check=check, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> Process:
        return self.runner.popen(argv, **kwargs)

    def apply(self, plan: Plan) -> None:
        """Run ``plan`` in as few processes as possible, rolling back on failure."""
        plan.apply(self.runner)


def _paramiko_runner(
    destination: str, *, port: int | None, keyfile: str | None, sudo: bool, path: Sequence[str] | None
) -> Runner:
    """A runner over plumbum's ``ParamikoMachine`` (one transport, a channel per command), if paramiko is there."""
    if importlib.util.find_spec("paramiko") is None:
        raise BackendUnavailable("paramiko", detail="Host.ssh(paramiko=True) needs it; or use paramiko=False")
    from plumbum.machines.paramiko_machine import ParamikoMachine

    user, _, machine = destination.rpartition("@")
    return LocalRunner(ParamikoMachine(machine, user=user or None, port=port, keyfile=keyfile), sudo=sudo, path=path)


def _backend(field: str, choice: object, role: type[Any]) -> Any:
    """The backend class a registry name stands for, or a factory returning a backend object;
    :class:`InvalidValue` (or :class:`UnknownBackend`) naming ``role`` and its registered choices."""
    if isinstance(choice, role):
        return lambda: choice
    if isinstance(choice, str):
        try:
            found = get_backend(choice)
        except UnknownBackend:
            raise UnknownBackend(f"{field}={choice!r}: no backend of that name; {_choices(role)}") from None
        if isinstance(found, type) and issubclass(found, role):
            return found
        rule = f"{choice!r} is a {getattr(found, '__name__', found)}, not a {role.__name__}; {_choices(role)}"
        raise InvalidValue(field, choice, rule)
    raise InvalidValue(field, choice, f"must be a {role.__name__} object or a registered name; {_choices(role)}")


def _choices(role: type[Any]) -> str:
    names = []
    for name in available():
        try:
            found = get_backend(name)
        except Exception as error:  # a third party's backend that does not import: not a choice
            log.debug("backend %s is not importable: %s", name, error)
            continue
        if isinstance(found, type) and issubclass(found, role):
            names.append(name)
    return f"the {role.__name__}s registered: {', '.join(names) or 'none'}"


_default: Host | None = None
_default_lock = threading.Lock()


def default_host() -> Host:
    """The local host, created on first use and shared by objects built without ``host=``."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Host()
        return _default
