"""The agent: what a Host driving another machine over ssh runs there, and the runtime files and host lock of a
machine as files, flocks and abstract sockets (the local runtime, :mod:`pynetns.runtime`, uses these functions).

A Host over ssh starts this module on the machine (``python3 -c <its source>``, one ssh session over its
connection) and sends it requests, one JSON line each, answered by id, several at once (:func:`serve`):

- ``run``: a command, as an argv list (no shell in between), with its standard input; the exit status and
  output come back (``cancel`` kills it: the Host was interrupted). This is how
  :class:`~pynetns.runner.SshRunner` runs commands: a few milliseconds less per command than a new ssh
  session each (and no remote shell's start), which a lab of many small batches feels.
- ``signal``: signal the long-running processes the Host started there (marked in their environment).
- ``lock``/``unlock``, ``write``/``release``/``remove``, ``journals``, ``alive``, ``orphans``, ``unwritable``:
  the host lock and lab journals of that machine (:class:`~pynetns.runtime.RemoteRuntime`). A Host cannot hold
  an ``flock`` or bind an abstract socket there itself: its agent does, exactly as a local pynetns there
  does, so local pynetns processes on the machine and the remote Hosts driving it see one another's locks
  and journals.

What it holds the kernel releases when it dies, and it dies with the connection: its standard input closes.
It imports only the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = [
    "LOCK_PREFIX",
    "SPAWN_MARK",
    "bind_lock",
    "lock_holder",
    "owner_alive",
    "read_journals",
    "read_text",
    "remove_journal",
    "remove_orphans",
    "run",
    "serve",
    "signal_spawned",
    "unwritable",
    "write_journal",
]

#: the abstract socket address of the host lock ``key`` is this prefix and the key (see :mod:`pynetns.locking`)
LOCK_PREFIX = "\0pynetns/lock/"


def write_journal(path: str | os.PathLike[str], text: bytes, *, owned: bool) -> int | None:
    """Replace the journal at ``path`` with ``text`` (a reader sees the old text or the new, never half);
    ``owned``: lock it with ``flock`` first, on the temporary file before the rename, and return the descriptor
    that holds it (the path never names an unlocked file while its owner lives)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem = name.rsplit(".", 1)[0]
    for attempt in range(3):  # another process may prune the folder, or a stale temporary file, meanwhile
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f"{stem}.{secrets.token_hex(4)}.tmp")
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
            os.replace(temporary, path)
        except FileNotFoundError:
            os.close(fd)
            if attempt == 2:
                raise
            continue
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        if owned:
            return fd
        os.close(fd)
        return None
    return None  # not reached: the last attempt returns or raises


def read_text(path: str | os.PathLike[str]) -> str | None:
    """The text of the small file at ``path``; None if there is none."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        return None


def owner_alive(path: str | os.PathLike[str]) -> bool:
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
            opened = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                return False
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return False
        finally:
            os.close(fd)
    return False


def read_journals(folder: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """Every journal (``*.json``) in ``folder`` that can be read, with its content, by path."""
    folder = os.fspath(folder)
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as file:
                data = json.loads(file.read())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            found.append((path, data))
    return found


def remove_journal(path: str | os.PathLike[str]) -> None:
    """Remove a journal and its writer's leftover temporary files, then the runtime folders left empty."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    stem = name.rsplit(".", 1)[0]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        for other in os.listdir(folder):
            if other.startswith(f"{stem}.") and other.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, other))
    _prune(folder)


def remove_orphans(folder: str | os.PathLike[str]) -> None:
    """Remove temporary journal files their writer left when it died (nobody holds them; no live journal)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if not name.endswith(".tmp"):
            continue
        if os.path.exists(os.path.join(folder, f"{name.split('.', 1)[0]}.json")):
            continue  # its lab is being written, or not cleaned up yet: the journal's own cleanup takes it
        path = os.path.join(folder, name)
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            finally:
                os.close(fd)
            os.unlink(path)
    _prune(folder)


def _prune(folder: str) -> None:
    for empty in (folder, os.path.dirname(folder)):
        try:
            os.rmdir(empty)
        except OSError:  # not empty (another lab's journal) or already gone
            return


def unwritable(folder: str | os.PathLike[str]) -> str | None:
    """Why this user cannot write journals in ``folder`` (None: it can)."""
    folder = os.fspath(folder)
    existing = folder
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write lab journals in {folder} ({existing} is not writable by this user)"
    return None


def bind_lock(key: str) -> socket.socket | None:
    """Try once to take the host lock ``key``: the bound socket (held while open), or None if another holds it."""
    candidate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        candidate.bind(LOCK_PREFIX + key)
        candidate.listen(16)  # a waiter may connect to learn who holds it
    except OSError:
        candidate.close()
        return None
    return candidate


def lock_holder(key: str) -> str:
    """Who holds the lock ``key``, as the kernel says (the peer's pid), for a timeout's message."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(LOCK_PREFIX + key)
            pid, _, _ = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except OSError:
            return "another process"
    return f"process {pid}" if pid > 0 else "a process in another PID namespace"


def run(
    argv: list[str],
    input: str | None,
    timeout: float | None,
    path: list[str] | None,
    started: Any = None,
) -> dict[str, Any]:
    """Run ``argv`` (its program looked up in ``path``, else ``$PATH``): its exit status and output; a
    missing program is ``{"missing": detail}``, a command past ``timeout`` seconds ``{"timeout": ...}``.
    ``started(process)`` is told of the process (so that it can be cancelled)."""
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=None if path is None else os.pathsep.join(path))
        if found is None:
            where = "not found on PATH" if path is None else f"not found in {os.pathsep.join(path)}"
            return {"missing": where}
        program = found
    elif not os.path.exists(program):
        return {"missing": f"{program} does not exist"}
    try:
        process = subprocess.Popen(
            [program, *argv[1:]],
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as error:  # not executable, say
        return {"missing": str(error)}
    if started is not None:
        started(process)
    try:
        out, err = process.communicate(None if input is None else input.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        return {"timeout": True, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}
    return {
        "returncode": process.returncode,
        "stdout": out.decode(errors="replace"),
        "stderr": err.decode(errors="replace"),
    }


#: the environment variable marking the processes a remote Host started there to run on (:func:`signal_spawned`)
SPAWN_MARK = "PYNETNS_SPAWN"


def signal_spawned(token: str, signum: int) -> dict[str, Any]:
    """Send ``signum`` to every process whose environment carries ``PYNETNS_SPAWN=<token>``: a long-running
    process a remote Host started, and whatever it started in turn. Returns how many."""
    mark = f"{SPAWN_MARK}={token}".encode()
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as file:
                if mark not in file.read().split(b"\0"):
                    continue
            os.kill(int(entry), signum)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        count += 1
    return {"signalled": count}


class _Holder:
    """What one remote Host holds on this machine: its host locks (bound sockets) and journals (descriptors)."""

    def __init__(self) -> None:
        self.locks: dict[str, socket.socket] = {}
        self.journals: dict[str, int] = {}

    def lock(self, key: str, timeout: float) -> dict[str, Any]:
        deadline, interval = time.monotonic() + timeout, 0.002
        while key not in self.locks:
            bound = bind_lock(key)
            if bound is not None:
                self.locks[key] = bound
                break
            if time.monotonic() >= deadline:
                return {"held": False, "holder": lock_holder(key)}
            time.sleep(interval)
            interval = min(interval * 1.5, 0.05)
        return {"held": True}

    def unlock(self, key: str) -> dict[str, Any]:
        bound = self.locks.pop(key, None)
        if bound is not None:
            bound.close()
        return {}

    def write(self, path: str, text: str, owned: bool) -> dict[str, Any]:
        fd = write_journal(path, text.encode(), owned=owned)
        old = self.journals.pop(path, None)
        if fd is not None:
            self.journals[path] = fd
        if old is not None:  # after the rename: the path never names an unlocked file while owned
            os.close(old)
        return {}

    def release(self, path: str) -> dict[str, Any]:
        fd = self.journals.pop(path, None)
        if fd is not None:
            os.close(fd)
        return {}

    def remove(self, path: str) -> dict[str, Any]:
        remove_journal(path)
        return self.release(path)

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.pop("op")
        if op == "journals":
            return {"journals": read_journals(request["folder"])}
        if op == "alive":
            return {"alive": owner_alive(request["path"])}
        if op == "orphans":
            remove_orphans(request["folder"])
            return {}
        if op == "unwritable":
            return {"why": unwritable(request["folder"])}
        if op == "signal":
            return signal_spawned(request["token"], request["signal"])
        if op == "identity":
            info = os.stat("/proc/self/ns/net")
            return {"netns": f"{info.st_dev}-{info.st_ino}", "pid": os.getpid()}
        if op == "lock":
            return self.lock(request["key"], request["timeout"])
        if op == "unlock":
            return self.unlock(request["key"])
        if op == "write":
            return self.write(request["path"], request["text"], request["owned"])
        if op == "release":
            return self.release(request["path"])
        if op == "remove":
            return self.remove(request["path"])
        if op == "read":
            return {"text": read_text(request["path"])}
        if op == "replace":
            write_journal(request["path"], request["text"].encode(), owned=False)
            return {}
        raise ValueError(f"unknown request {op!r}")


def serve(requests: Any = None, replies: Any = None) -> None:
    """Answer JSON requests (``{"id": n, "op": ..., ...}``), one a line, until the input ends (the connection is
    gone); then everything held goes with this process. Commands (``run``) are answered as they finish, each
    in a thread of its own; the rest in order. A failure is answered ``{"id": n, "error": type, "errno": e,
    "message": text}``."""
    requests = sys.stdin if requests is None else requests
    replies = sys.stdout if replies is None else replies
    holder = _Holder()
    writing = threading.Lock()

    def answer(request_id: Any, reply: dict[str, Any]) -> None:
        line = json.dumps({"id": request_id, **reply}) + "\n"
        with writing:
            replies.write(line)
            replies.flush()

    def failure(error: Exception) -> dict[str, Any]:
        return {"error": type(error).__name__, "errno": getattr(error, "errno", None), "message": str(error)}

    running: dict[Any, subprocess.Popen[bytes]] = {}

    def command(request_id: Any, request: dict[str, Any]) -> None:
        def started(process: subprocess.Popen[bytes]) -> None:
            running[request_id] = process

        try:
            reply = run(request["argv"], request.get("input"), request.get("timeout"), request.get("path"), started)
        except Exception as error:  # answered, not fatal: the Host raises it as a pynetns error
            reply = failure(error)
        finally:
            running.pop(request_id, None)
        answer(request_id, reply)

    answer(None, {"ready": os.getpid()})
    for line in requests:
        request = json.loads(line)
        request_id = request.pop("id", None)
        if request.get("op") == "run":
            threading.Thread(target=command, args=(request_id, request), daemon=True).start()
            continue
        if request.get("op") == "cancel":  # the Host was interrupted: end the command it no longer waits for
            process = running.get(request.get("target"))
            if process is not None:
                process.kill()
            continue
        try:
            reply = holder.handle(request)
        except Exception as error:  # answered, not fatal
            reply = failure(error)
        answer(request_id, reply)


if __name__ == "__main__":
    serve()
