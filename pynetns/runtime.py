"""Where a Host keeps its runtime files — lab journals — and how they are written, locked and listed.

:class:`LocalRuntime` is the local machine's: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``, each journal a
file replaced whole and held by its owner with an ``flock``. A Host that drives another machine (or a
sandbox) brings a runtime of its own (``Host(runtime=...)``), so its journals live there:
:class:`RemoteRuntime` keeps them on the machine a remote Host drives, through a pynetns agent started
there over the Host's connection (:mod:`pynetns.agent`), which also takes that machine's host lock.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Any

from . import agent as files
from .errors import LockTimeout
from .runner import Agent, Runner, agent_argv

__all__ = [
    "Journal",
    "JournalFile",
    "LocalRuntime",
    "RemoteJournal",
    "RemoteRuntime",
    "Runtime",
    "SandboxRuntime",
    "owner_alive",
    "remove_journal",
    "runtime_dir",
]

log = logging.getLogger(__name__)


class Journal(ABC):
    """One lab's journal: replaced whole, and held by its owner (so others can tell it lives) while owned."""

    path: Path

    @property
    @abstractmethod
    def held(self) -> bool:
        """This process holds the journal."""

    @abstractmethod
    def write(self, data: dict[str, Any], *, owned: bool) -> None:
        """Replace the journal with ``data``; ``owned``: this process holds it (else it is persistent)."""

    @abstractmethod
    def remove(self) -> None:
        """Remove the journal (and the folders it leaves empty), then let the hold go."""

    @abstractmethod
    def release(self) -> None:
        """Stop holding the journal (its file stays)."""


class Runtime(ABC):
    """Where a Host's runtime files live and how they are written, held, listed and removed."""

    #: takes the host lock on the machine the Host drives (:mod:`pynetns.locking`); None: this machine's sockets
    locker: Any = None

    def program_argv(self, module: ModuleType) -> list[str]:
        """How the Host's commands run ``module``, a pynetns program of the standard library alone (the ``[::1]``
        proxy): this Python, isolated (``-I``), by the module's path."""
        return [sys.executable, "-I", str(module.__file__)]

    def command_path(self, path: Path) -> str:
        """``path`` (a runtime file's) as the Host's commands see it."""
        return str(path)

    @property
    @abstractmethod
    def folder(self) -> Path:
        """Where lab journals live (on the machine the Host drives)."""

    def journal_path(self, lab_id: str) -> Path:
        return self.folder / f"{lab_id}.json"

    @abstractmethod
    def journal(self, lab_id: str) -> Journal:
        """The journal of lab ``lab_id``, to write (and hold) or remove."""

    @abstractmethod
    def journals(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every journal that can be read, with its content."""

    @abstractmethod
    def owner_alive(self, path: Path) -> bool:
        """Whether a process holds the journal at ``path``."""

    @abstractmethod
    def remove(self, path: Path) -> None:
        """Remove the journal at ``path``, its leftover temporary files, and the folders left empty."""

    @abstractmethod
    def remove_orphans(self) -> None:
        """Remove temporary journal files whose writer died."""

    @abstractmethod
    def unwritable(self) -> str | None:
        """Why journals cannot be written (None: they can)."""

    @abstractmethod
    def read_file(self, path: Path) -> str | None:
        """The text of a small runtime file (beside the journals' folder, say); None if there is none."""

    @abstractmethod
    def replace_file(self, path: Path, text: str) -> None:
        """Replace a small runtime file whole (a reader sees the old text or the new), making its folder."""

    def close(self) -> None:
        """Let go of what this runtime holds (a remote agent); nothing, for a runtime of this machine."""
        return None


class LocalRuntime(Runtime):
    """The runtime files of a Host on this machine: journals under :func:`runtime_dir`, locked with ``flock``."""

    @property
    def folder(self) -> Path:
        """Where lab journals live (read at each use: ``$PYNETNS_RUNTIME_DIR`` may change)."""
        return runtime_dir()

    def journal(self, lab_id: str) -> JournalFile:
        """The journal file of lab ``lab_id``, to write (and hold) or remove."""
        return JournalFile(self.journal_path(lab_id))

    def journals(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every journal that can be read, with its content (a folder this user may not read: none)."""
        try:
            paths = sorted(self.folder.glob("*.json"))
        except OSError as error:
            log.debug("cannot list lab journals: %s", error)
            return []
        found = []
        for path in paths:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            found.append((path, data))
        return found

    def owner_alive(self, path: Path) -> bool:
        return owner_alive(path)

    def remove(self, path: Path) -> None:
        remove_journal(path)

    def remove_orphans(self) -> None:
        remove_orphans(self.folder)

    def unwritable(self) -> str | None:
        """Why this user cannot write journals here (None: it can)."""
        return files.unwritable(self.folder)

    def read_file(self, path: Path) -> str | None:
        return files.read_text(path)

    def replace_file(self, path: Path, text: str) -> None:
        files.write_journal(path, text.encode(), owned=False)


class SandboxRuntime(LocalRuntime):
    """The runtime files of a rootless sandbox: on its own tmpfs, reached from outside through its
    holder's root (``/proc/PID/root/run/pynetns/labs``), so they end with the sandbox.

    >>> SandboxRuntime(Path("/proc/4242/root/run/pynetns")).folder
    PosixPath('/proc/4242/root/run/pynetns/labs')
    """

    def __init__(self, base: Path) -> None:
        self.base = base

    @property
    def folder(self) -> Path:
        return self.base / "labs"

    def command_path(self, path: Path) -> str:
        """Inside the sandbox (its own PID namespace): the path under the holder's root.

        >>> SandboxRuntime(Path("/proc/4242/root/run/pynetns")).command_path(Path("/proc/4242/root/run/x"))
        '/run/x'
        """
        return "/" + str(path.relative_to(Path(*self.base.parts[:4])))


def runtime_dir() -> Path:
    """Where lab journals live: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``."""
    return Path(os.environ.get("PYNETNS_RUNTIME_DIR", "/run/pynetns")) / "labs"


def owner_alive(path: Path) -> bool:
    """Whether a process holds the journal at ``path`` (its owner runs), as the kernel's ``flock`` says.

    Right across PID namespaces and containers sharing the folder; a journal replaced while it is
    looked at is looked at again (the owner locks the new file before it takes the path).
    """
    return files.owner_alive(path)


class JournalFile(Journal):
    """One lab's journal file: replaced whole (a reader sees the old text or the new, never half), and
    locked by its owner while ``owned``.

    The lock is an ``flock`` on the file itself, taken on the temporary file before it is renamed over
    the journal, so the journal's path always names a locked file while its owner lives. The descriptor
    is not inherited by programs the owner starts, and a forked child closes its copy (the lab stays
    its parent's). Several labs of one process each hold their own file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        _open_files.add(self)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def write(self, data: dict[str, Any], *, owned: bool) -> None:
        """Replace the journal with ``data``; ``owned``: this process holds it (else it is persistent)."""
        fd = files.write_journal(self.path, json.dumps(data, indent=2).encode(), owned=owned)
        old, self._fd = self._fd, fd
        if old is not None:  # after the rename: the path never names an unlocked file while owned
            os.close(old)

    def remove(self) -> None:
        """Remove the journal (and the folders it leaves empty), then let the lock go."""
        remove_journal(self.path)
        self.release()

    def release(self) -> None:
        """Stop holding the journal (its file stays)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _forget(self) -> None:
        """In a forked child: the parent's hold is not the child's."""
        self.release()


_open_files: weakref.WeakSet[JournalFile] = weakref.WeakSet()


def _after_fork() -> None:
    for journal in list(_open_files):
        journal._forget()


os.register_at_fork(after_in_child=_after_fork)


def remove_orphans(folder: Path) -> None:
    """Remove temporary journal files their writer left when it died (nobody holds them; no live journal)."""
    files.remove_orphans(folder)


def remove_journal(path: Path) -> None:
    """Remove a journal and its writer's leftover temporary files, then the runtime folders left empty."""
    files.remove_journal(path)


class RemoteRuntime(Runtime):
    """The runtime files of a Host driving another machine, kept on that machine (``base``/labs, by default
    ``/run/pynetns/labs`` there), and its host lock, taken there.

    A pynetns agent (:mod:`pynetns.agent`, run by ``python3`` there through the Host's runner, so over its
    connection) writes and holds the journals with ``flock`` and binds the lock's abstract socket, exactly as a
    local pynetns on that machine does: both see each other's labs and locks. It lives as long as the
    connection; when the connection breaks, the kernel there lets go of everything it held, and the next
    request raises :class:`~pynetns.errors.ConnectionLost`. Started on first use; :meth:`close` ends it.
    """

    def __init__(self, runner: Runner, machine: str, base: str = "/run/pynetns", *, python: str = "python3") -> None:
        self.runner = runner
        #: the machine, as errors name it
        self.machine = machine
        self.base = Path(base)
        self.python = python
        self._agent: Agent | None = None
        self._starting = threading.Lock()

    @property
    def folder(self) -> Path:
        return self.base / "labs"

    @property
    def locker(self) -> RemoteRuntime:
        return self

    def program_argv(self, module: ModuleType) -> list[str]:
        """On the other machine: its ``python3``, given the module's source (nothing of pynetns is installed there)."""
        return [self.python, "-I", "-c", inspect.getsource(module)]

    def journal(self, lab_id: str) -> RemoteJournal:
        return RemoteJournal(self, self.journal_path(lab_id))

    def journals(self) -> list[tuple[Path, dict[str, Any]]]:
        reply = self.request("journals", folder=str(self.folder))
        return [(Path(path), data) for path, data in reply["journals"]]

    def owner_alive(self, path: Path) -> bool:
        return bool(self.request("alive", path=str(path))["alive"])

    def remove(self, path: Path) -> None:
        self.request("remove", path=str(path))

    def remove_orphans(self) -> None:
        self.request("orphans", folder=str(self.folder))

    def unwritable(self) -> str | None:
        why = self.request("unwritable", folder=str(self.folder))["why"]
        return None if why is None else f"{why} on {self.machine}"

    def read_file(self, path: Path) -> str | None:
        text: str | None = self.request("read", path=str(path))["text"]
        return text

    def replace_file(self, path: Path, text: str) -> None:
        self.request("replace", path=str(path), text=text)

    # -- the host lock, taken there ------------------------------------------

    def acquire(self, key: str, timeout: float) -> None:
        """Take the host lock ``key`` on the machine (waiting up to ``timeout`` s), as :mod:`pynetns.locking`."""
        reply = self.request("lock", key=key, timeout=timeout)
        if not reply["held"]:
            raise LockTimeout(f"{key} on {self.machine}", timeout, str(reply["holder"]))

    def release(self, key: str) -> None:
        self.request("unlock", key=key)

    # -- the agent -----------------------------------------------------------

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Ask the agent (started on first use; once it is gone, so is what it held: ConnectionLost)."""
        with self._starting:
            if self._agent is None:
                self._agent = Agent(self.runner.popen(agent_argv(self.python), stdin=subprocess.PIPE), self.machine)
                log.debug("runtime agent on %s: pid %s there", self.machine, self._agent.pid)
            agent = self._agent
        return agent.request(op, **arguments)

    def close(self) -> None:
        """End the agent: the locks and journals it held go (a lab still applied becomes stale). Idempotent."""
        with self._starting:
            agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()

    def __repr__(self) -> str:
        return f"RemoteRuntime({self.machine!r}, {str(self.base)!r})"


class RemoteJournal(Journal):
    """A lab's journal on the machine a :class:`RemoteRuntime` drives, written and held by its files."""

    def __init__(self, runtime: RemoteRuntime, path: Path) -> None:
        self.runtime = runtime
        self.path = path
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def write(self, data: dict[str, Any], *, owned: bool) -> None:
        self.runtime.request("write", path=str(self.path), text=json.dumps(data, indent=2), owned=owned)
        self._held = owned

    def remove(self) -> None:
        self.runtime.request("remove", path=str(self.path))
        self._held = False

    def release(self) -> None:
        if self._held:
            self.runtime.request("release", path=str(self.path))
            self._held = False
