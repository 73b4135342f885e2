"""A rootless sandbox: an unprivileged user namespace, with its own mount, network and PID namespaces,
that plays the host for a :meth:`Host.rootless() <pynetns.Host.rootless>`.

One small process (``cat`` reading its owner's pipe, PID 1 of the sandbox) holds the namespaces. Every
command enters them through a :class:`~pynetns.runner.SandboxRunner`; a tmpfs over the sandbox's
``/run`` holds ``/run/netns`` and pynetns' runtime files, so a kill leaves no file behind. The sandbox
ends, with everything in it, at :meth:`Sandbox.close` or when its owner dies (the pipe closes).

>>> print(refusal(read=lambda key: {"user.max_user_namespaces": "0"}.get(key)))
unprivileged user namespaces are disabled: user.max_user_namespaces is 0; allow them with `sudo sysctl -w ...=15000`
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

from .backends import get_backend
from .backends.base import SandboxBackend
from .errors import BackendUnavailable, InvalidValue, PynetnsError, SandboxRefused
from .polling import wait_until
from .runner import LocalRunner, Process, Runner, SandboxRunner
from .runtime import SandboxRuntime

__all__ = ["RUNTIME", "Sandbox", "identity", "privileged", "refusal"]

log = logging.getLogger(__name__)

#: where, inside the sandbox, pynetns keeps its runtime files (on the sandbox's tmpfs)
RUNTIME = "/run/pynetns"

Read = Callable[[str], "str | None"]


def read_sysctl(key: str) -> str | None:
    """The value of sysctl ``key`` (``kernel.unprivileged_userns_clone``), or None where the kernel has no such key."""
    try:
        return Path("/proc/sys", *key.split(".")).read_text().strip()
    except OSError:
        return None


def privileged() -> bool:
    """This process has CAP_NET_ADMIN and CAP_SYS_ADMIN (``ip netns add`` needs both; no sandbox needed)."""
    try:
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return os.geteuid() == 0
    effective = int(line.split()[1], 16)
    return all(effective >> bit & 1 for bit in (12, 21))


def refusal(read: Read = read_sysctl) -> str | None:
    """Why this machine forbids unprivileged user namespaces, and how to allow them (None: it allows them).

    ``read`` gives a sysctl's value (None: no such key); tests pass a fake one. (A setting written with
    ``sysctl -w`` lasts until a reboot; a file in ``/etc/sysctl.d/`` keeps it.)
    """
    if read("kernel.unprivileged_userns_clone") == "0":
        return (
            "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone is 0; "
            "allow them with `sudo sysctl -w kernel.unprivileged_userns_clone=1`"
        )
    if read("user.max_user_namespaces") == "0":
        return (
            "unprivileged user namespaces are disabled: user.max_user_namespaces is 0; "
            "allow them with `sudo sysctl -w user.max_user_namespaces=15000`"
        )
    if read("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return (
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns is 1, "
            "as on Ubuntu 24.04); allow them with `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, "
            "or give the Python interpreter an AppArmor profile with the `userns` permission"
        )
    return None


class Sandbox:
    """A running rootless sandbox: its holder process, the runner that enters it, and its runtime files.

    ``Sandbox.start()`` makes one; ``close()`` ends it and everything in it. ``backend``: the registry
    name (or object) of the :class:`~pynetns.backends.base.SandboxBackend` making its commands;
    ``launcher``: the runner that starts the holder (the local machine, as this user).
    """

    def __init__(
        self,
        holder: Process | None,
        pipe: int | None,
        backend: SandboxBackend,
        pid: int,
        runner: SandboxRunner,
        *,
        persistent: bool = False,
    ) -> None:
        #: the process that started the sandbox (None for a sandbox :meth:`attach` found)
        self.holder = holder
        self._pipe = pipe
        self.backend = backend
        #: the sandbox's PID 1 (the process commands enter), as this machine numbers it
        self.pid = pid
        #: PID 1's start time and user namespace (:func:`identity`): a reused pid is never taken for it
        self.identity = identity(pid)
        #: it outlives this process (``start(persistent=True)`` or :meth:`attach`); only :meth:`close` ends it
        self.persistent = persistent
        self.runner = runner
        self.runtime = SandboxRuntime(Path(f"/proc/{pid}/root{RUNTIME}"))
        self._closed = False
        self._lock = threading.Lock()
        # dropped without close(): a sandbox held by a pipe ends when this object is collected (or at exit)
        self._finalizer = None if persistent or holder is None else weakref.finalize(self, _end, holder, pipe)
        _open.add(self)

    @classmethod
    def start(
        cls,
        *,
        backend: str | SandboxBackend = "unshare",
        launcher: Runner | None = None,
        read: Read = read_sysctl,
        timeout: float = 10.0,
        persistent: bool = False,
    ) -> Sandbox:
        """Start a sandbox; :class:`SandboxRefused` (saying how to allow it) where the machine forbids it.

        ``persistent``: it outlives this process (``pynetns up``): held by the backend's
        :meth:`~pynetns.backends.base.SandboxBackend.keeper_command` instead of this process's pipe, until
        :meth:`close` (here, or on a Sandbox :meth:`attach` made) kills its PID 1.
        """
        maker = _backend(backend)
        why = None if privileged() else refusal(read)  # those settings hold back unprivileged users only
        if why is not None:
            raise SandboxRefused(why)
        launcher = LocalRunner() if launcher is None else launcher
        if persistent:
            return cls._persistent(maker, launcher, timeout)
        # the holder reads this pipe; only this process holds its writing end (not inherited: O_CLOEXEC)
        reading, writing = os.pipe()
        try:
            holder = launcher.popen(
                maker.holder_command(), stdin=reading, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except BaseException:
            os.close(writing)
            raise
        finally:
            os.close(reading)
        try:
            pid = wait_until(lambda: _init_of(holder), timeout=timeout, what="the sandbox's holder to start")
        except BaseException:
            _end(holder, writing)
            raise
        sandbox = cls(holder, writing, maker, pid, SandboxRunner(maker.enter_prefix(pid), maker.spawn_prefix()))
        sandbox._set_up()
        log.debug("sandbox started: holder %s, PID 1 %s", holder.pid, pid)
        return sandbox

    @classmethod
    def _persistent(cls, maker: SandboxBackend, launcher: Runner, timeout: float) -> Sandbox:
        holder = launcher.popen(
            maker.keeper_command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            pid = wait_until(lambda: _init_of(holder), timeout=timeout, what="the sandbox's holder to start")
        except BaseException:
            holder.stop()
            raise
        runner = SandboxRunner(maker.enter_prefix(pid), maker.spawn_prefix())
        sandbox = cls(holder, None, maker, pid, runner, persistent=True)
        if sandbox.identity is None:
            sandbox.close()
            raise PynetnsError(f"the sandbox's PID 1 ({pid}) ended as it started")
        sandbox._set_up()
        log.debug("persistent sandbox started: holder %s, PID 1 %s", holder.pid, pid)
        return sandbox

    def _set_up(self) -> None:
        """The sandbox's ``/run`` tmpfs and ``lo``; on failure the sandbox ends, leaving nothing."""
        try:
            for argv in self.backend.setup_commands(RUNTIME):
                self.runner.run(argv)
            for argv in self.backend.etc_commands(self._etc_submounts()):
                result = self.runner.run(argv, check=False)
                if result.returncode != 0:  # an older kernel: no overlay without privileges
                    log.warning("the sandbox's labs will have no names (%s: %s)", argv[0], result.stderr.strip())
                    break
        except BaseException:
            self.close()
            raise

    def _etc_submounts(self) -> list[str]:
        """The mount points below ``/etc`` in the sandbox (a container's ``/etc/hosts``, say), outermost first."""
        try:
            lines = Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines()
        except OSError:
            return []
        points = [line.split()[4] for line in lines if len(line.split()) > 4]
        # mountinfo escapes blanks as \040: such a path is left alone (it stays hidden below the overlay)
        return list(dict.fromkeys(p for p in points if p.startswith("/etc/") and "\\" not in p))

    @classmethod
    def attach(cls, pid: int, known: str, *, backend: str | SandboxBackend = "unshare") -> Sandbox:
        """The running persistent sandbox whose PID 1 is ``pid`` and whose :func:`identity` was ``known``
        (as its record says); :class:`PynetnsError` if that process is gone (a pid alone is never trusted:
        the kernel reuses them)."""
        if pid <= 1:
            raise InvalidValue("pid", pid, "must be the pid of a sandbox's PID 1 (over 1)")
        now = identity(pid)
        if now is None or now != known:
            raise PynetnsError(f"sandbox {pid} is gone (its PID 1 {'ended' if now is None else 'is another process'})")
        maker = _backend(backend)
        return cls(
            None, None, maker, pid, SandboxRunner(maker.enter_prefix(pid), maker.spawn_prefix()), persistent=True
        )

    @property
    def alive(self) -> bool:
        if self._closed:
            return False
        if self.persistent:
            return self.identity is not None and identity(self.pid) == self.identity
        return self.holder is not None and self.holder.alive()

    def close(self) -> None:
        """End the sandbox and everything in it (namespaces, processes, mounts, runtime files). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pipe = None
        if self._finalizer is not None:
            self._finalizer()
            return
        # persistent: SIGKILL its PID 1 (the kernel ends the rest), if it is still the same process
        if self.identity is not None and identity(self.pid) == self.identity:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.holder is not None:
            self.holder.stop()
        wait_until(lambda: identity(self.pid) != self.identity, timeout=10.0, what=f"sandbox {self.pid} to end")

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.alive else "closed"
        holder = "-" if self.holder is None else self.holder.pid
        return f"<Sandbox holder={holder} pid1={self.pid} {state}>"

    def _forget(self) -> None:
        """In a forked child: the sandbox stays its parent's (the child's copy of the pipe must not keep it)."""
        pipe, self._pipe = self._pipe, None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._closed = True
        if pipe is not None:
            os.close(pipe)


_open: weakref.WeakSet[Sandbox] = weakref.WeakSet()


def _after_fork() -> None:
    for sandbox in list(_open):
        sandbox._forget()


os.register_at_fork(after_in_child=_after_fork)


def _backend(choice: str | SandboxBackend) -> SandboxBackend:
    if isinstance(choice, SandboxBackend):
        return choice
    found = get_backend(choice) if isinstance(choice, str) else None
    if not (isinstance(found, type) and issubclass(found, SandboxBackend)):
        raise InvalidValue("backend", choice, "must be a SandboxBackend object or the registered name of one")
    return found()


def identity(pid: int) -> str | None:
    """Who process ``pid`` is: its start time and its user namespace (``"123456:user:[4026532]"``); None if it
    is gone (or a zombie, whose namespaces are gone). A reused pid gives another identity."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user = os.readlink(f"/proc/{pid}/ns/user")
    except (OSError, IndexError):
        return None
    return f"{fields[19]}:{user}"  # after the name, field 22 (starttime) is the 20th


def _init_of(holder: Process) -> int:
    """The PID (here) of the holder's child, PID 1 of the sandbox, once its user namespace is mapped (0: not yet)."""
    if not holder.alive():
        stderr = holder.stderr.read().decode(errors="replace").strip() if holder.stderr is not None else ""
        raise _refused(holder.argv, stderr)
    try:
        children = _children(holder.pid)
        if not children:
            return 0
        child = children[0]
        if not Path(f"/proc/{child}/uid_map").read_text().strip():
            return 0
    except (OSError, ValueError):
        return 0
    return child


def _children(pid: int) -> list[int]:
    """The children of process ``pid`` (by its ``children`` file, or, on a kernel without it, by every ``stat``)."""
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid):  # after the name: state, then the parent's pid
                found.append(int(entry.name))
    return found


def _refused(argv: tuple[str, ...], stderr: str) -> PynetnsError:
    if "Operation not permitted" in stderr or "Permission denied" in stderr:
        return SandboxRefused(
            f"this machine refused an unprivileged user namespace ({argv[0]}: {stderr}); "
            "check kernel.unprivileged_userns_clone, user.max_user_namespaces and AppArmor's "
            "kernel.apparmor_restrict_unprivileged_userns, or seccomp rules of a container"
        )
    return BackendUnavailable(argv[0], detail=f"the sandbox's holder exited: {stderr or 'no message'}")


def _end(holder: Process, pipe: int | None) -> None:
    """Close the holder's pipe (its PID 1 reads EOF and ends, and the kernel ends the rest), then reap it."""
    if pipe is not None:
        os.close(pipe)
    holder.stop()
