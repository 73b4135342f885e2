"""The one place where pynetns starts a process.

Everything above this module builds argv lists (never shell strings) and hands
them to a :class:`Runner`. The runner logs each command at DEBUG, tells its
listeners (``explain``, the demo, ``Host.history``), maps failures to the
:mod:`pynetns.errors` hierarchy, and retries transient ones (EBUSY, lock
contention) a bounded number of times.

>>> from pynetns.backends.recording import RecordingRunner
>>> runner = RecordingRunner()
>>> runner.run(["ip", "link", "show"]).returncode
0
>>> runner.history
[Call(argv=('ip', 'link', 'show'), input=None)]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import itertools
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import attrs
import tenacity

from . import agent
from .agent import SPAWN_MARK
from .errors import (
    BackendUnavailable,
    CommandTimeout,
    ConnectionLost,
    InvalidValue,
    PynetnsError,
    ResourceBusy,
    from_command,
)
from .views import Viewable

__all__ = [
    "Agent",
    "Call",
    "Commands",
    "CompletedCommand",
    "LocalRunner",
    "Process",
    "Runner",
    "SandboxRunner",
    "SshRunner",
    "agent_argv",
    "as_argv",
    "commands",
]

log = logging.getLogger(__name__)

Listener = Callable[["Call"], None]


def as_argv(value: Iterable[str]) -> tuple[str, ...]:
    """An argv as an immutable tuple."""
    return tuple(value)


@attrs.frozen
class Call:
    """One command as it was started: its argv and, for a batch, its standard input."""

    argv: tuple[str, ...] = attrs.field(converter=as_argv)
    input: str | None = None

    def __str__(self) -> str:
        """Copy-pasteable shell: a batch input becomes a here-document."""
        command = shlex.join(self.argv)
        if self.input is None:
            return command
        body = self.input if self.input.endswith("\n") else self.input + "\n"
        return f"{command} <<'EOF'\n{body}EOF"


class Commands(Viewable, str):
    """Shell commands as text (``lab.explain()``, a dry run's history), shown by notebooks as a code block."""

    __slots__ = ()


def commands(calls: Iterable[Call]) -> Commands:
    """Copy-pasteable shell for ``calls``, one per line (a batch as a here-document), ending with a newline.

    >>> print(commands([Call(("ip", "netns", "add", "web"))]), end="")
    ip netns add web
    """
    return Commands("\n".join(str(call) for call in calls) + "\n")


@attrs.frozen
class CompletedCommand:
    """The outcome of a finished command."""

    argv: tuple[str, ...] = attrs.field(converter=as_argv)
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def json(self) -> Any:
        """Parse stdout as JSON (``ip -j``, ``nft -j``); empty output is ``[]``."""
        text = self.stdout.strip()
        return json.loads(text) if text else []


class Process:
    """A long-running process started by :meth:`Runner.popen`.

    A thin wrapper over a ``subprocess.Popen``-like object that knows how to
    stop itself politely: SIGTERM, then SIGKILL after a grace period.

    Its output stays readable after :meth:`stop`: stop reads what is left in the
    ``stdout``/``stderr`` pipes (without waiting for a child that still holds them),
    closes them, and keeps it in :attr:`stdout_text` and :attr:`stderr_text`::

        server = ns.popen(["python3", "-m", "http.server", "8000"])
        ...
        server.stop()
        assert "GET /" in server.stderr_text
    """

    def __init__(self, argv: Sequence[str], popen: Any) -> None:
        self.argv = tuple(argv)
        self._popen = popen
        self._kept: tuple[bytes, bytes] | None = None

    @property
    def pid(self) -> int:
        return int(self._popen.pid)

    @property
    def stdin(self) -> IO[bytes] | None:
        return self._popen.stdin  # type: ignore[no-any-return]

    @property
    def stdout(self) -> IO[bytes] | None:
        return self._popen.stdout  # type: ignore[no-any-return]

    @property
    def stderr(self) -> IO[bytes] | None:
        return self._popen.stderr  # type: ignore[no-any-return]

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()  # type: ignore[no-any-return]

    @property
    def stopped(self) -> bool:
        """:meth:`stop` ran: the output is kept in :attr:`stdout_text` / :attr:`stderr_text`."""
        return self._kept is not None

    @property
    def stdout_text(self) -> str:
        """What the process wrote to its ``stdout`` pipe and nobody read, as text (after :meth:`stop`)."""
        return self._output(0)

    @property
    def stderr_text(self) -> str:
        """What the process wrote to its ``stderr`` pipe and nobody read, as text (after :meth:`stop`)."""
        return self._output(1)

    def _output(self, index: int) -> str:
        if self._kept is None:
            raise InvalidValue("process", self.pid, "is not stopped: its output is kept by stop(), read it after that")
        return self._kept[index].decode(errors="replace")

    def alive(self) -> bool:
        return self.returncode is None

    def wait(self, timeout: float | None = None) -> int:
        return int(self._popen.wait(timeout=timeout))

    def stop(self, grace: float = 3.0) -> int:
        """Terminate, wait up to ``grace`` seconds, then kill; keep what is left of its output, close its pipes.
        Returns the exit status. Calling it again changes nothing."""
        if self.alive():
            self._popen.terminate()
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=grace)
        if self._kept is None:
            self._kept = (_drain(self._popen.stdout), _drain(self._popen.stderr))
        if self._popen.stdin is not None:
            with contextlib.suppress(OSError):  # what is left in its buffer has nowhere to go: a broken pipe
                self._popen.stdin.close()
        return int(self._popen.returncode)

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.returncode}"
        return f"<Process {self.pid} {shlex.join(self.argv)!r} {state}>"


def _drain(stream: IO[bytes] | None) -> bytes:
    """What is left to read in a pipe, without blocking (a child of the process may still hold its other end);
    then close it. Anything but a pipe (``None``, a file the caller gave) gives ``b""``."""
    if stream is None or stream.closed:
        return b""
    chunks: list[bytes] = []
    try:
        os.set_blocking(stream.fileno(), False)
        while True:  # a buffered read of a non-blocking pipe: what is there now (buffer included), None if nothing
            chunk = stream.read()
            if not chunk:
                break
            chunks.append(chunk)
    except (OSError, ValueError, AttributeError):
        pass  # not a real pipe (a fake of the tests, a closed file)
    finally:
        stream.close()
    return b"".join(chunks)


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str):
        raise InvalidValue("argv", argv, "must be a list of arguments, not a shell string")
    result = tuple(argv)
    if not result:
        raise InvalidValue("argv", argv, "must not be empty")
    for arg in result:
        if not isinstance(arg, str) or "\x00" in arg:
            raise InvalidValue("argv", argv, "every argument must be a string without NUL bytes")
    return result


def _check_lines(lines: Sequence[str]) -> list[str]:
    result = list(lines)
    for line in result:
        if not isinstance(line, str) or "\n" in line or "\r" in line or "\x00" in line:
            raise InvalidValue("batch line", line, "must be one line of text")
    return result


class Runner(ABC):
    """Starts commands. Subclasses say *how* (local, sudo, recorded, later ssh)."""

    #: commands run on this machine in this very process's network namespace (no wrapper, not remote)
    in_caller_namespace = False
    #: bounded retries of transient failures
    retry_attempts = 5
    retry_max_delay = 10.0

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    # -- listeners --------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(call)`` for every command started; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[Call]]:
        """Collect the commands started inside the ``with`` block."""
        calls: list[Call] = []
        unsubscribe = self.subscribe(calls.append)
        try:
            yield calls
        finally:
            unsubscribe()

    def _announce(self, call: Call) -> None:
        if call.input is None:
            log.debug("run %s", shlex.join(call.argv))
        else:
            log.debug("run %s <<< %r", shlex.join(call.argv), call.input)
        for listener in list(self._listeners):
            listener(call)

    def retrying(self) -> tenacity.Retrying:
        """This runner's bounded retry of transient failures (:class:`ResourceBusy`), for callers that retry
        more than one command (a rollback resending an undo)."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(ResourceBusy),
            stop=tenacity.stop_after_attempt(self.retry_attempts) | tenacity.stop_after_delay(self.retry_max_delay),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            before_sleep=tenacity.before_sleep_log(log, logging.DEBUG),
            reraise=True,
        )

    # -- running ----------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> CompletedCommand:
        """Run ``argv`` to completion; raise a :class:`CommandError` subclass if it fails and ``check``."""
        args = _check_argv(argv)

        def attempt() -> CompletedCommand:
            self._announce(Call(args, input))
            result = self._execute(args, input, timeout)
            if result.returncode != 0:
                error = from_command(args, result.returncode, result.stdout, result.stderr)
                if isinstance(error, ResourceBusy) or check:
                    raise error
            return result

        try:
            return self.retrying()(attempt)
        except ResourceBusy as error:
            if check:
                raise
            return CompletedCommand(args, error.returncode, error.stdout, error.stderr)

    def run_batch(
        self,
        argv: Sequence[str],
        lines: Sequence[str],
        *,
        atomic: bool = False,
        timeout: float | None = None,
    ) -> CompletedCommand:
        """Send ``lines`` to one process reading a script on stdin (``ip -batch -``, ``nft -f -``).

        On failure the error names the failing line. A transient failure is
        retried: an ``atomic`` batch (nft) is sent again whole; otherwise the
        lines before the failing one were applied, so only the rest is resent.
        """
        args = _check_argv(argv)
        pending = _check_lines(lines)
        done = 0
        for attempt in self.retrying():
            with attempt:
                if not pending:
                    break
                text = "\n".join(pending) + "\n"
                self._announce(Call(args, text))
                result = self._execute(args, text, timeout)
                if result.returncode != 0:
                    error = from_command(args, result.returncode, result.stdout, result.stderr, batch=pending)
                    if error.line_number is not None:
                        error.line_number += done
                    if isinstance(error, ResourceBusy) and not atomic and error.line_number:
                        applied = error.line_number - 1 - done
                        done += applied
                        pending = pending[applied:]
                    raise error
                return result
        return CompletedCommand(args, 0)

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdin: Any = subprocess.DEVNULL,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
    ) -> Process:
        """Start a long-running process; the caller owns it (see :meth:`Process.stop`)."""
        args = _check_argv(argv)
        self._announce(Call(args))
        return Process(args, self._spawn(args, stdin, stdout, stderr))

    @abstractmethod
    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        """Run one process to completion and report what it did; never raise for a non-zero exit."""

    @abstractmethod
    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        """Start one process and return a ``subprocess.Popen``-like object."""


class LocalRunner(Runner):
    """Runs commands on a plumbum machine (the local one by default).

    ``sudo=True`` prefixes every command with ``sudo -n``; ``path`` replaces
    the search path for programs (useful for pinned tool versions and tests);
    ``wrap`` runs every command through a wrapper program, e.g.
    ``("nsenter", "--net=/run/netns/playhost")`` so that a throwaway namespace
    plays the machine's root namespace.
    """

    def __init__(
        self,
        machine: Any = None,
        *,
        sudo: bool = False,
        path: Sequence[str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        super().__init__()
        import plumbum

        if machine is None:
            machine = plumbum.local
        self.machine = machine
        self.sudo = sudo
        self.path = None if path is None else tuple(path)
        self.wrap = as_argv(wrap) if wrap else ()
        self._programs: dict[str, Any] = {}
        self.in_caller_namespace = machine is plumbum.local and not self.wrap

    def _program(self, name: str) -> Any:
        program = self._programs.get(name)
        if program is not None:
            return program
        from plumbum import CommandNotFound

        if "/" in name:
            location = self.machine.path(name)
            if not location.exists():
                raise BackendUnavailable(name.rsplit("/", 1)[-1], detail=f"{name} does not exist")
        elif self.path is not None:
            for folder in self.path:
                location = self.machine.path(folder) / name
                if location.is_file() and location.access("x"):
                    break
            else:
                raise BackendUnavailable(name, detail=f"not found in {':'.join(self.path)}")
        else:
            try:
                location = self.machine.which(name)
            except CommandNotFound:
                raise BackendUnavailable(name, detail="not found on PATH") from None
        program = self._programs[name] = self.machine[location]
        return program

    def _command(self, argv: tuple[str, ...]) -> Any:
        if self.wrap:
            self._program(argv[0])  # a missing tool is named, not the wrapper's complaint
            argv = (*self.wrap, *argv)
        if self.sudo:
            self._program(argv[0])
            args = ("-n", "--", *argv)
            return self._program("sudo")[args]
        return self._program(argv[0])[argv[1:]]

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        command = self._command(argv)
        process = command.popen(
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started = time.monotonic()
        try:
            out, err = process.communicate(None if input is None else input.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise CommandTimeout(
                argv, -9, out.decode(errors="replace"), f"timed out after {timeout} s\n" + err.decode(errors="replace")
            ) from None
        except BaseException:
            # Ctrl-C or another interruption: never leave the child running or unreaped.
            process.kill()
            process.wait()
            raise
        log.debug("exit %s after %.3f s: %s", process.returncode, time.monotonic() - started, shlex.join(argv))
        return CompletedCommand(argv, process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        return self._command(argv).popen(stdin=stdin, stdout=stdout, stderr=stderr)


class SandboxRunner(Runner):
    """Runs every command inside a rootless sandbox (:mod:`pynetns.sandbox`), entering it with ``enter``.

    ``enter`` (``nsenter --preserve-credentials -U -m -n -p -t PID --``) prefixes every command;
    a long-running process gets ``spawn`` after it too (``setpriv --pdeathsig KILL --``), so that
    stopping the entering process stops the program. The commands run on the local machine, as
    this user, through a :class:`LocalRunner`.
    """

    def __init__(self, enter: Sequence[str], spawn: Sequence[str] = (), *, path: Sequence[str] | None = None) -> None:
        super().__init__()
        self.enter = _check_argv(enter)
        self.spawn = as_argv(spawn)
        self._local = LocalRunner(path=path, wrap=self.enter)

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        return self._local._execute(argv, input, timeout)

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        if self.spawn:
            self._local._program(argv[0])  # a missing tool is named, not the wrapper's complaint
            argv = (*self.spawn, *argv)
        return self._local._spawn(argv, stdin, stdout, stderr)

    def __repr__(self) -> str:
        return f"SandboxRunner({shlex.join(self.enter)!r})"


class Agent:
    """The Host's side of a pynetns agent (:mod:`pynetns.agent`) running on the machine the Host drives, in
    ``process`` (started by a runner, over its connection): requests go as JSON lines to its standard input,
    replies come back by id, several at once (a thread reads them).

    When its output ends (the connection broke, or the agent died), every request waiting and every later one
    raises :class:`~pynetns.errors.ConnectionLost` naming ``machine``.
    """

    def __init__(self, process: Process, machine: str) -> None:
        self.process = process
        self.machine = machine
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lost: ConnectionLost | None = None
        assert process.stdout is not None
        first = process.stdout.readline()
        if not first.startswith(b'{"id": null, "ready"'):
            self._lost = self._connection_lost(first.decode(errors="replace"))
            raise self._lost
        #: the agent's pid on its machine
        self.pid = int(json.loads(first)["ready"])
        self._reader = threading.Thread(target=self._read, name=f"pynetns agent {machine}", daemon=True)
        self._reader.start()

    def request(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Send a request and wait for its reply; a failure the agent met there is raised here (``OSError``s as
        themselves, with the machine named, the rest as :class:`~pynetns.errors.PynetnsError`)."""
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            if self._lost is not None:
                raise self._lost
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"id": request_id, "op": op, **arguments}).encode() + b"\n")
                self.process.stdin.flush()
            except OSError:
                pass  # it is gone: the reader fails the request when the output ends
        try:
            reply = future.result()
        except BaseException:  # Ctrl-C: a command there must not go on unwatched
            if op == "run" and self._lost is None:
                self._cancel(request_id)
            raise
        if "error" in reply:
            message = f"{reply['message']} (on {self.machine})"
            if reply["errno"] is not None and reply["error"] in _OS_ERRORS:
                raise _OS_ERRORS[reply["error"]](reply["errno"], message)
            raise PynetnsError(f"the pynetns agent on {self.machine} failed to {op}: {reply['error']}: {message}")
        return reply

    def _cancel(self, request_id: int) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._pending.pop(request_id, None)
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"op": "cancel", "target": request_id}).encode() + b"\n")
            self.process.stdin.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                reply = json.loads(line)
                with self._lock:
                    future = self._pending.pop(reply.pop("id"), None)
                if future is not None:
                    future.set_result(reply)
        except (OSError, ValueError) as error:  # a broken line: the agent is not to be trusted any more
            log.debug("the agent on %s: %s", self.machine, error)
        finally:
            try:
                lost = self._connection_lost()
            except Exception as error:  # whatever happens, no request waits forever
                lost = ConnectionLost(self.machine, (), 255, "", f"its pynetns agent there is gone ({error})")
            with self._lock:
                self._lost = lost
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(lost)

    def _connection_lost(self, said: str = "") -> ConnectionLost:
        self.process.stop(grace=1.0)
        lines = (said + self.process.stderr_text).strip().splitlines()
        stderr = "\n".join([*lines, "its pynetns agent there is gone"])
        return ConnectionLost(self.machine, (), self.process.returncode or 255, "", stderr)

    @property
    def alive(self) -> bool:
        return self._lost is None

    def close(self) -> None:
        """End the agent (closing its input); what it held there goes. Idempotent."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        self._reader.join(timeout=5)  # it ends when the agent does, and stops it
        self.process.stop(grace=1.0)


_OS_ERRORS: dict[str, type[OSError]] = {
    "PermissionError": PermissionError,
    "FileNotFoundError": FileNotFoundError,
    "OSError": OSError,
}


def agent_argv(python: str = "python3") -> tuple[str, ...]:
    """The command that runs a pynetns agent (:mod:`pynetns.agent`) wherever it runs: its source as an argument."""
    return (python, "-c", inspect.getsource(agent))


class _RemotePopen:
    """A ``Popen`` of a long-running process on another machine (an ssh session): terminating or killing it
    signals the process there (found by its mark, :func:`pynetns.agent.signal_spawned`) as well as the session."""

    def __init__(self, popen: Any, agent: Agent, token: str) -> None:
        self._popen, self._agent, self._token = popen, agent, token

    def __getattr__(self, name: str) -> Any:
        return getattr(self._popen, name)

    def _signal(self, signum: int) -> None:
        if self._agent.alive:
            with contextlib.suppress(PynetnsError):
                self._agent.request("signal", token=self._token, signal=int(signum))

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        self._popen.kill()


#: an ssh destination: ``[user@]machine``, nothing ssh would read as an option or the shell would split
_DESTINATION = re.compile(r"(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9_.:\[\]%-]+")


class SshRunner(LocalRunner):
    """Runs commands on another machine over one ssh connection (``Host.ssh``).

    A master connection (``ssh -M``, OpenSSH's ControlMaster) is opened once, here, and held by this runner;
    what runs there then travels as sessions multiplexed over it — no new handshake — started by plumbum's
    ``SshMachine``, which quotes each argument for the remote shell. The user's ssh configuration, agent and
    keys apply; ``port``, ``keyfile`` and ``ssh_opts`` add to them.

    Commands (:meth:`run`, :meth:`run_batch`) go to a pynetns agent (:mod:`pynetns.agent`) started there in
    one session: it runs each argv list as given, several at once, and answers with its exit status and
    output, which saves a new session (~5 ms and the remote shell's start) per command. Long-running
    processes (:meth:`popen`) are sessions of their own, their output streamed; they carry a mark in their
    environment, so that stopping one signals it there too (closing a session does not). The agent needs
    ``python3`` there.

    Nothing opens a connection of its own (``ProxyCommand=false`` for the sessions): once the master is
    gone, every command raises :class:`~pynetns.errors.ConnectionLost` naming the machine, instead of
    silently reconnecting without the locks and journals the master's sessions held there. The master ends
    with :meth:`close`, or with this process (it reads its standard input, a pipe from here).
    """

    def __init__(
        self,
        destination: str,
        *,
        port: int | None = None,
        keyfile: str | None = None,
        ssh_opts: Sequence[str] = (),
        sudo: bool = False,
        path: Sequence[str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(destination, str) or not _DESTINATION.fullmatch(destination) or destination[0] == "-":
            raise InvalidValue("destination", destination, "must be [user@]machine (letters, digits, . _ - : [ ])")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise InvalidValue("port", port, "must be a TCP port, 1-65535")
        options = _check_argv(ssh_opts) if ssh_opts else ()
        self.destination = destination
        user, _, machine = destination.rpartition("@")
        self._directory = tempfile.mkdtemp(prefix="pynetns-ssh-")
        #: the master connection's control socket (on this machine)
        self.control_path = os.path.join(self._directory, "master")
        self._log = os.path.join(self._directory, "master.log")
        self._options = (
            *options,
            *(("-p", str(port)) if port is not None else ()),
            *(("-i", str(keyfile)) if keyfile is not None else ()),
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={max(1, round(connect_timeout))}",
            "-o",
            "ServerAliveInterval=10",
        )
        self._lookup = threading.RLock()
        self._master: subprocess.Popen[bytes] | None = None
        self._agent: Agent | None = None
        try:
            self._master = self._connect(connect_timeout)
            from plumbum.machines.ssh_machine import SshMachine

            session_options = ("-S", self.control_path, "-o", "ControlMaster=no", "-o", "ProxyCommand=false")
            ssh_machine = SshMachine(
                machine, user=user or None, ssh_opts=(*session_options, *self._options), connect_timeout=None
            )
            super().__init__(ssh_machine, sudo=sudo, path=path)
            #: runs the commands there
            self._agent = Agent(self.popen(agent_argv(), stdin=subprocess.PIPE), destination)
        except BaseException:
            self.close()
            raise

    def _connect(self, timeout: float) -> subprocess.Popen[bytes]:
        """Open the master connection; wait until its control socket answers (or it fails: why, from ssh)."""
        ssh = shutil.which("ssh")
        if ssh is None:
            raise BackendUnavailable("ssh", detail="no ssh client on this machine's PATH")
        argv = [ssh, *self._options, "-M", "-S", self.control_path, "-o", "ControlPersist=no", self.destination]
        argv += ["exec", "cat"]  # ends when this process's end of its stdin closes (the runner's close, or death)
        log.debug("run %s", shlex.join(argv))
        with open(self._log, "wb") as log_file:  # a file, not a pipe nobody reads: it may write for hours
            master = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log_file)
        deadline = time.monotonic() + timeout + 5
        interval = 0.005
        while not os.path.exists(self.control_path):
            if master.poll() is not None or time.monotonic() > deadline:
                if master.poll() is None:
                    master.kill()
                master.wait()
                why = self._said() or f"ssh exited {master.returncode}"
                raise PynetnsError(f"cannot connect to {self.destination} over ssh: {why}")
            time.sleep(interval)
            interval = min(interval * 1.5, 0.1)
        return master

    @property
    def connected(self) -> bool:
        """The master connection is up."""
        return self._master is not None and self._master.poll() is None

    def _said(self) -> str:
        """What the master connection wrote to its standard error."""
        try:
            with open(self._log, "rb") as log_file:
                return log_file.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _lost(self, argv: tuple[str, ...], stdout: str = "", stderr: str = "") -> ConnectionLost:
        return ConnectionLost(self.destination, argv, 255, stdout, stderr or self._said())

    def _program(self, name: str) -> Any:
        with self._lookup:
            if not self.connected:
                raise self._lost((name,))
            try:
                return super()._program(name)
            except BackendUnavailable as error:
                where = f"on {self.destination}: {error.detail}" if error.detail else f"on {self.destination}"
                raise BackendUnavailable(name, error.package, where) from None
            except PynetnsError:
                raise
            except Exception as error:  # plumbum's shell session over the connection broke
                if self.connected:
                    raise
                raise self._lost((name,), stderr=str(error)) from error

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        if not self.connected or self._agent is None:
            raise self._lost(argv)
        try:
            reply = self._agent.request("run", argv=argv, input=input, timeout=timeout, path=self.path)
        except ConnectionLost as lost:
            raise self._lost(argv, stderr=lost.stderr) from None
        if "missing" in reply:
            raise BackendUnavailable(argv[0], detail=f"on {self.destination}: {reply['missing']}")
        if reply.get("timeout"):
            stderr = f"timed out after {timeout} s on {self.destination}\n{reply['stderr']}"
            raise CommandTimeout(argv, -9, reply["stdout"], stderr)
        return CompletedCommand(argv, reply["returncode"], reply["stdout"], reply["stderr"])

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        agent = self._agent
        if agent is None:  # the agent itself
            return super()._spawn(argv, stdin, stdout, stderr)
        self._program(argv[0])  # a missing tool is named, not env's complaint
        token = secrets.token_hex(8)
        marked = ("/usr/bin/env", f"{SPAWN_MARK}={token}", *argv)  # where every shebang finds it
        return _RemotePopen(super()._spawn(marked, stdin, stdout, stderr), agent, token)

    def close(self) -> None:
        """End the agent and the master connection (and with it every session still open over it). Idempotent."""
        agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()
        machine = getattr(self, "machine", None)
        if machine is not None:
            with contextlib.suppress(Exception):
                machine.close()
        master, self._master = self._master, None
        if master is not None:
            if master.stdin is not None:
                master.stdin.close()
            master.terminate()
            try:
                master.wait(timeout=5)
            except subprocess.TimeoutExpired:
                master.kill()
                master.wait()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __repr__(self) -> str:
        return f"SshRunner({self.destination!r})"
