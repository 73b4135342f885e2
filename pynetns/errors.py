"""Every error pynetns raises, in one hierarchy.

::

    PynetnsError
    ├── InvalidInput (+ValueError)          refused before any command runs
    │   ├── InvalidName                     interface / namespace names
    │   ├── InvalidAddress                  IP addresses, CIDRs, MACs
    │   │   └── SubnetOverlap               a subnet clashes with a live network or route
    │   ├── InvalidValue                    MTU, ports, argv, backends, tags, sysctl keys, …
    │   └── TopologyError                   a topology file: names the file, the field, the rule
    ├── UnknownBackend (+LookupError)       no backend registered under that name
    ├── BackendUnavailable (+RuntimeError)  a tool is missing; names its package
    ├── WaitTimeout (+TimeoutError)         a polled condition never came true
    │   └── LockTimeout                     another process held the host lock too long
    ├── NotOwned                            refusing to delete what pynetns did not create
    ├── CleanupError                        a teardown ran every part; some failed (listed)
    ├── DemoFailed                          a step of the demo walkthrough did not show what it should
    ├── LabDestroyed                        a destroyed lab was used again
    ├── AlreadyExists                       the object already exists
    ├── NotFound (+LookupError)             the object does not exist
    ├── PermissionDenied                    not allowed: not root, no CAP_NET_ADMIN, …
    │   └── SandboxRefused                  the machine forbids unprivileged user namespaces (says how to allow)
    ├── PortInUse                           a host port is already mapped or listened on
    ├── NfqueueError (+OSError)             the userspace impairment engine: a queue refused, a failed start
    └── CommandError                        a command failed: argv, returncode, stderr
        ├── AlreadyExistsCommandError (+AlreadyExists)        "File exists"
        ├── NotFoundCommandError (+NotFound)                  "Cannot find device", "does not exist", …
        ├── PermissionDeniedCommandError (+PermissionDenied)  "Operation not permitted"
        ├── PortInUseCommandError (+PortInUse)                "Address already in use"
        ├── ResourceBusy                    EBUSY, lock contention (retried, bounded)
        ├── CommandTimeout (+TimeoutError)  the command ran past its timeout
        └── ConnectionLost (+ConnectionError)  the connection to a remote Host's machine broke

A named condition (:class:`AlreadyExists`, :class:`NotFound`,
:class:`PermissionDenied`, :class:`PortInUse`) is raised as itself when pynetns
finds it before running anything (a port another mapping holds), and as its
``…CommandError`` variant when a command reports it: ``except NotFound`` catches
both, ``except CommandError`` only real command failures.

Raw process failures become these in exactly one place: :func:`from_command`,
called by the runner. Every error pickles with all its attributes (xdist,
multiprocessing).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any, ClassVar, overload

__all__ = [
    "PACKAGES",
    "AlreadyExists",
    "AlreadyExistsCommandError",
    "BackendUnavailable",
    "CleanupError",
    "CommandError",
    "CommandTimeout",
    "ConnectionLost",
    "DemoFailed",
    "InvalidAddress",
    "InvalidInput",
    "InvalidName",
    "InvalidValue",
    "LabDestroyed",
    "LockTimeout",
    "NfqueueError",
    "NotFound",
    "NotFoundCommandError",
    "NotOwned",
    "PermissionDenied",
    "PermissionDeniedCommandError",
    "PortInUse",
    "PortInUseCommandError",
    "PynetnsError",
    "ResourceBusy",
    "SandboxRefused",
    "SubnetOverlap",
    "TopologyError",
    "UnknownBackend",
    "WaitTimeout",
    "from_command",
]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickle an error: its ``args`` as they were, its attributes from the pickled state (no ``__init__``)."""
    error = cls.__new__(cls, *args)
    error.args = args  # (OSError's subclasses, TimeoutError's, leave them to __init__)
    return error


class PynetnsError(Exception):
    """Base of every error pynetns raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from args and attributes, whatever the constructor's signature: a subclass
        # with its own arguments still crosses process boundaries (xdist, multiprocessing) whole.
        return (_rebuild, (type(self), self.args), self.__dict__ or None)


class InvalidInput(PynetnsError, ValueError):
    """A value was refused before any command ran."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}={value!r}: {rule}")


class InvalidName(InvalidInput):
    """An interface or namespace name breaks the naming rules."""


class InvalidAddress(InvalidInput):
    """An IP address, network or MAC address is malformed or out of range."""


class SubnetOverlap(InvalidAddress):
    """A subnet overlaps another live pynetns network or an existing route."""


class InvalidValue(InvalidInput):
    """Any other refused value: an MTU, a port, an argv, a backend, a sysctl key."""


class TopologyError(InvalidInput):
    """A topology file (or dict) breaks a rule: ``"<source>: <field>: <rule>"``.

    :attr:`source` is the file (or ``"<dict>"``), :attr:`field` the dotted path
    inside it (``namespaces.db.networks[0].ip``), :attr:`rule` what is wrong,
    :attr:`value` the offending value (None when a key is missing). A syntax
    error names its :attr:`line` (and :attr:`column`, when the parser says).
    """

    def __init__(
        self, source: str, field: str, value: object, rule: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(field, value, rule)
        self.source = source
        self.line = line
        self.column = column
        self.args = (f"{source}: {field}: {rule}",)


class UnknownBackend(PynetnsError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailable(PynetnsError, RuntimeError):
    """A system tool a backend needs is not installed."""

    def __init__(self, tool: str, package: str | None = None, detail: str = "") -> None:
        self.tool = tool
        self.package = package or PACKAGES.get(tool)
        self.detail = detail
        hint = f"; install the Debian package {self.package!r}" if self.package else ""
        more = f" ({detail})" if detail else ""
        super().__init__(f"{tool!r} is not available{more}{hint}")


class WaitTimeout(PynetnsError, TimeoutError):
    """A condition polled by :func:`pynetns.wait_until` did not come true in time."""


class LockTimeout(WaitTimeout):
    """The host lock (:mod:`pynetns.locking`) stayed held by another process past the timeout."""

    def __init__(self, key: str, timeout: float, holder: str) -> None:
        self.key, self.timeout, self.holder = key, timeout, holder
        # one argument: given more, TimeoutError (an OSError) would read them as errno, strerror, filename
        super().__init__(f"the pynetns host lock {key} was held by {holder} for more than {timeout} s")


class NotOwned(PynetnsError):
    """pynetns refuses to delete an object it did not create."""


class _Condition(PynetnsError):
    """A named condition, found by pynetns (``Condition("what is wrong")``) or reported by a command.

    Built from a failed command's evidence (``NotFound(argv, returncode, stdout, stderr)``, the
    shape :class:`CommandError` takes) it is the condition's ``…CommandError`` variant, as
    :func:`from_command` makes it.
    """

    #: the CommandError variant a failed command reporting this condition raises
    command_error: ClassVar[type[CommandError]]

    @overload
    def __init__(self, message: str, *, argv: Sequence[str] = (), evidence: str = "") -> None: ...

    @overload
    def __init__(
        self,
        message: Sequence[str],
        returncode: int,
        stdout: str = "",
        stderr: str = "",
        *,
        line_number: int | None = None,
        line: str | None = None,
    ) -> None: ...

    def __init__(self, message: Any, *args: Any, argv: Sequence[str] = (), evidence: str = "", **kwargs: Any) -> None:
        if args or kwargs or not isinstance(message, str):  # the command shape reaches the variant's __init__
            raise TypeError(f"{type(self).__name__}() takes a message, and argv= and evidence= only")
        #: the command whose (successful) output showed the condition, if one did
        self.argv = tuple(argv)
        #: what that output said
        self.evidence = evidence
        super().__init__(message)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        variant = cls.__dict__.get("command_error")
        if variant is not None and args and not isinstance(args[0], str):  # (argv, returncode, …)
            return super().__new__(variant, *args)
        return super().__new__(cls, *args)


class AlreadyExists(_Condition):
    """The object (a namespace, a link, a firewall object) already exists."""


class NotFound(_Condition, LookupError):
    """The device, namespace, route or firewall object does not exist."""


class PermissionDenied(_Condition):
    """Not allowed: not root, missing CAP_NET_ADMIN, or a file pynetns needs cannot be written."""


class SandboxRefused(PermissionDenied):
    """This machine does not let an unprivileged user make a user namespace (a rootless Host's sandbox);
    the message names the setting that forbids it and how to allow it."""


class PortInUse(_Condition):
    """A host port is already published by pynetns or bound by a process.

    :attr:`holder` names who has it: a pynetns tag and mapping, or the
    listening socket as ``ss`` shows it (with its process).
    """

    holder: str | None = None

    @classmethod
    def held(cls, what: str, holder: str, argv: Sequence[str] = (), evidence: str = "") -> PortInUse:
        """``what`` (e.g. ``"tcp port 8080 on any address"``) is held by ``holder``; ``argv``'s output
        (``evidence``) showed it. No command failed: this is a refusal before any change."""
        error = PortInUse(f"{what} is already in use by {holder}", argv=argv, evidence=evidence)
        error.holder = holder
        return error


class NfqueueError(PynetnsError, OSError):
    """The kernel refused a queue request (``errno`` set), or the userspace impairment engine could not start."""


class CommandError(PynetnsError):
    """A command exited non-zero.

    Carries the evidence: ``argv``, ``returncode``, ``stdout``, ``stderr`` and,
    for a batch, the failing ``line_number`` (1-based) and ``line``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: str = "",
        stderr: str = "",
        *,
        line_number: int | None = None,
        line: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.line_number = line_number
        self.line = line
        # not super(): a variant's next class is its condition, whose constructor takes a message
        PynetnsError.__init__(self, self._message())

    def _message(self) -> str:
        where = shlex.join(self.argv)
        if self.line is not None:
            where += f" (batch line {self.line_number}: {self.line!r})"
        reason = self.stderr.strip().splitlines()
        detail = reason[0] if reason else f"exit status {self.returncode}"
        for text in reason:
            if not text.startswith("Command failed"):
                detail = text
                break
        return f"{where}: {detail}"


class AlreadyExistsCommandError(CommandError, AlreadyExists):
    """A command said the object already exists ("File exists")."""


class NotFoundCommandError(CommandError, NotFound):
    """A command said the device, namespace or route does not exist."""


class PermissionDeniedCommandError(CommandError, PermissionDenied):
    """The kernel refused a command: not root, or missing CAP_NET_ADMIN."""


class PortInUseCommandError(CommandError, PortInUse):
    """A command could not bind a port ("Address already in use")."""


AlreadyExists.command_error = AlreadyExistsCommandError
NotFound.command_error = NotFoundCommandError
PermissionDenied.command_error = PermissionDeniedCommandError
PortInUse.command_error = PortInUseCommandError


class ResourceBusy(CommandError):
    """A transient condition (EBUSY, lock contention); retried by the runner."""


class CommandTimeout(CommandError, TimeoutError):
    """The command did not finish within its timeout."""


class ConnectionLost(CommandError, ConnectionError):
    """The connection to the machine a remote Host drives broke while a command ran (or before it could
    start): what the command did there is unknown. ``machine`` names it; ``pynetns cleanup --host MACHINE``
    removes what a lab left there."""

    def __init__(
        self, machine: str, argv: Sequence[str] = (), returncode: int = 255, stdout: str = "", stderr: str = ""
    ) -> None:
        self.machine = machine
        super().__init__(argv, returncode, stdout, stderr)

    def _message(self) -> str:
        what = f" running {shlex.join(self.argv)}" if self.argv else ""
        reason = self.stderr.strip().splitlines()
        detail = f" ({reason[-1]})" if reason else ""
        return (
            f"lost the connection to {self.machine}{what}{detail}; "
            f"'pynetns cleanup --host {self.machine}' removes what was left there"
        )


class LabDestroyed(PynetnsError):
    """The lab was destroyed: it cannot be applied or detached again (declare a new one)."""


class CleanupError(PynetnsError):
    """A teardown (``Lab.destroy()``, removing what a failed apply left) ran every part, and some failed.

    :attr:`errors` lists every failure, in the order met. (An operation that fails for its own reason raises
    that error instead, with the failures of its undo in its ``undo_errors``: see ``pynetns.plan``.)
    """

    def __init__(self, what: str, errors: Sequence[BaseException]) -> None:
        self.what = what
        self.errors = list(errors)
        super().__init__(what, self.errors)

    def __str__(self) -> str:
        listed = "; ".join(f"{type(error).__name__}: {error}" for error in self.errors)
        return f"{self.what}: {len(self.errors)} failed: {listed}"


class DemoFailed(PynetnsError):
    """A step of the walkthrough (``pynetns demo``, :mod:`pynetns.cli.demo`) did not show what it should have."""


#: Debian package of each tool a backend may run.
PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "bridge": "iproute2",
    "ss": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "iptables-save": "iptables",
    "ip6tables": "iptables",
    "ip6tables-restore": "iptables",
    "ip6tables-save": "iptables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "setpriv": "util-linux",
    "sysctl": "procps",
    "ping": "iputils-ping",
    "curl": "curl",
    "conntrack": "conntrack",
    "sudo": "sudo",
    "ssh": "openssh-client",
    "python3": "python3",
    "paramiko": "python3-paramiko",
    # the lab's names files (/etc/netns/NAME/hosts)
    "mkdir": "coreutils",
    "tee": "coreutils",
    "ln": "coreutils",
    "ls": "coreutils",
    "rm": "coreutils",
    "rmdir": "coreutils",
    "cat": "coreutils",
}

# Order matters: the first pattern found in stderr wins.
_PATTERNS: tuple[tuple[re.Pattern[str], type[CommandError]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), cls)
    for pattern, cls in (
        (r"Device or resource busy|Resource temporarily unavailable", ResourceBusy),
        (r"xtables lock|holding the xtables lock|Could not process rule: Device or resource busy", ResourceBusy),
        (r"Operation not permitted|Permission denied|must be run as root|are you root", PermissionDeniedCommandError),
        (r"File exists|already exists", AlreadyExistsCommandError),
        (r"Address already in use", PortInUseCommandError),
        (
            r"Cannot find device|does not exist|No such file or directory|No such device"
            r"|No such process|Cannot open network namespace|Object not found|Bad rule \(does a matching rule exist",
            NotFoundCommandError,
        ),
    )
)

_BATCH_LINE = re.compile(r"Command failed -:(\d+)|^(?:/dev/stdin|-):(\d+):", re.MULTILINE)


def from_command(
    argv: Sequence[str],
    returncode: int,
    stdout: str = "",
    stderr: str = "",
    *,
    batch: Sequence[str] | None = None,
) -> CommandError:
    """Map a failed command to the most specific :class:`CommandError`.

    For a batch (``ip -batch -``, ``nft -f -``) the failing line is found in
    stderr and attached to the error.
    """
    line_number = line = None
    if batch is not None:
        match = _BATCH_LINE.search(stderr)
        number = int(match.group(1) or match.group(2)) if match else 0
        if 1 <= number <= len(batch):
            line_number = number
            line = batch[number - 1]
    cls = CommandError
    for pattern, candidate in _PATTERNS:
        if pattern.search(stderr):
            cls = candidate
            break
    return cls(argv, returncode, stdout, stderr, line_number=line_number, line=line)
