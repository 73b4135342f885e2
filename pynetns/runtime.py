"""Where a Host keeps its runtime files — lab journals — and how they are written, locked and listed.

:class:`LocalRuntime` is the local machine's: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``, each journal a
file replaced whole and held by its owner with an ``flock``. A Host that drives another machine (or a
sandbox) brings a runtime of its own (``Host(runtime=...)``), so its journals live there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import weakref
from pathlib import Path
from typing import Any

__all__ = ["JournalFile", "LocalRuntime", "SandboxRuntime", "owner_alive", "remove_journal", "runtime_dir"]

log = logging.getLogger(__name__)


class LocalRuntime:
    """The runtime files of a Host on this machine: journals under :func:`runtime_dir`, locked with ``flock``."""

    @property
    def folder(self) -> Path:
        """Where lab journals live (read at each use: ``$PYNETNS_RUNTIME_DIR`` may change)."""
        return runtime_dir()

    def journal_path(self, lab_id: str) -> Path:
        return self.folder / f"{lab_id}.json"

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
        folder = self.folder
        existing = next((parent for parent in (folder, *folder.parents) if parent.exists()), folder)
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"cannot write lab journals in {folder} ({existing} is not writable by this user)"
        return None


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


def runtime_dir() -> Path:
    """Where lab journals live: ``$PYNETNS_RUNTIME_DIR`` or ``/run/pynetns``."""
    return Path(os.environ.get("PYNETNS_RUNTIME_DIR", "/run/pynetns")) / "labs"


def owner_alive(path: Path) -> bool:
    """Whether a process holds the journal at ``path`` (its owner runs), as the kernel's ``flock`` says.

    Right across PID namespaces and containers sharing the folder; a journal replaced while it is
    looked at is looked at again (the owner locks the new file before it takes the path).
    """
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:  # free, unless the path names a newer file by now; closing the fd lets the lock go
            opened, current = os.fstat(fd), _stat(path)
            if current is None or (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return False
        finally:
            os.close(fd)
    return False


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


class JournalFile:
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
        text = json.dumps(data, indent=2).encode()
        for attempt in range(3):  # another process may prune the folder, or a stale temporary file, meanwhile
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f"{self.path.stem}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            try:
                if owned:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(text)
                while view:
                    view = view[os.write(fd, view) :]
                os.replace(temporary, self.path)
            except FileNotFoundError:
                os.close(fd)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                os.close(fd)
                temporary.unlink(missing_ok=True)
                raise
            old, self._fd = self._fd, fd if owned else None
            if not owned:
                os.close(fd)
            if old is not None:  # after the rename: the path never names an unlocked file while owned
                os.close(old)
            return

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
    if not folder.is_dir():
        return
    for path in folder.glob("*.tmp"):
        journal = folder / f"{path.name.split('.', 1)[0]}.json"
        if journal.exists():
            continue  # its lab is being written, or not cleaned up yet: the journal's own cleanup takes it
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            path.unlink()
    _prune(folder)


def remove_journal(path: Path) -> None:
    """Remove a journal and its writer's leftover temporary files, then the runtime folders left empty."""
    path.unlink(missing_ok=True)
    for temporary in path.parent.glob(f"{path.stem}.*.tmp"):
        temporary.unlink(missing_ok=True)
    _prune(path.parent)


def _prune(folder: Path) -> None:
    for empty in (folder, folder.parent):
        try:
            empty.rmdir()
        except OSError:  # not empty (another lab's journal) or already gone
            return
