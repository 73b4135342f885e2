"""Every error pynetns raises, in one hierarchy.

::

    PynetnsError
    ├── InvalidInput (+ValueError)          refused before any command runs
    │   ├── InvalidName                     interface / namespace names
    │   ├── InvalidAddress                  IP addresses, CIDRs, MACs
    │   │   └── SubnetOverlap               a subnet clashes with a live network or route
    │   ├── InvalidValue                    MTU, ports, sysctl keys, …
    │   └── TopologyError                   a topology file: names the file, the field, the rule
    ├── UnknownBackend (+LookupError)       no backend registered under that name
    ├── BackendUnavailable (+RuntimeError)  a tool is missing; names its package
    ├── WaitTimeout (+TimeoutError)         a polled condition never came true
    │   └── LockTimeout                     another process held the host lock too long
    ├── NotOwned                            refusing to delete what pynetns did not create
    ├── CleanupError                        a teardown ran every part; some failed (listed)
    └── CommandError                        a command failed: argv, returncode, stderr
        ├── AlreadyExists                   "File exists"
        ├── NotFound (+LookupError)         "Cannot find device", "does not exist", …
        ├── PermissionDenied                "Operation not permitted"
        ├── ResourceBusy                    EBUSY, lock contention (retried, bounded)
        ├── PortInUse                       a host port is already mapped or listened on
        └── CommandTimeout (+TimeoutError)  the command ran past its timeout

Raw process failures become these in exactly one place: :func:`from_command`,
called by the runner.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

__all__ = [
    "PynetnsError",
    "InvalidInput",
    "InvalidName",
    "InvalidAddress",
    "InvalidValue",
    "SubnetOverlap",
    "UnknownBackend",
    "BackendUnavailable",
    "WaitTimeout",
    "LockTimeout",
    "NotOwned",
    "CommandError",
    "AlreadyExists",
    "NotFound",
    "PermissionDenied",
    "ResourceBusy",
    "PortInUse",
    "CommandTimeout",
    "CleanupError",
    "from_command",
    "PACKAGES",
]


class PynetnsError(Exception):
    """Base of every error pynetns raises."""


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
    """Any other refused value: an MTU, a port, a sysctl key."""


class UnknownBackend(PynetnsError, LookupError):
    """No backend is registered under the requested name."""


class BackendUnavailable(PynetnsError, RuntimeError):
    """A system tool a backend needs is not installed."""

    def __init__(self, tool: str, package: str | None = None, detail: str = "") -> None:
        self.tool = tool
        self.package = package or PACKAGES.get(tool)
        hint = f"; install the Debian package {self.package!r}" if self.package else ""
        more = f" ({detail})" if detail else ""
        super().__init__(f"{tool!r} is not available{more}{hint}")


class WaitTimeout(PynetnsError, TimeoutError):
    """A condition polled by :func:`pynetns.wait_until` did not come true in time."""


class LockTimeout(WaitTimeout):
    """The host lock (:mod:`pynetns.locking`) stayed held by another process past the timeout."""

    def __init__(self, key: str, timeout: float, holder: str) -> None:
        self.key, self.timeout, self.holder = key, timeout, holder
        super().__init__(key, timeout, holder)

    def __str__(self) -> str:
        return f"the pynetns host lock {self.key} was held by {self.holder} for more than {self.timeout} s"


class NotOwned(PynetnsError):
    """pynetns refuses to delete an object it did not create."""


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
        super().__init__(self._message())

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


class AlreadyExists(CommandError):
    """The kernel object already exists ("File exists")."""


class NotFound(CommandError, LookupError):
    """The device, namespace or route does not exist."""


class PermissionDenied(CommandError):
    """The kernel refused: not root, or missing CAP_NET_ADMIN."""


class ResourceBusy(CommandError):
    """A transient condition (EBUSY, lock contention); retried by the runner."""


class PortInUse(CommandError):
    """A host port is already published by pynetns or bound by a process.

    :attr:`holder` names who has it: a pynetns tag and mapping, or the
    listening socket as ``ss`` shows it (with its process).
    """

    holder: str | None = None

    @classmethod
    def held(cls, what: str, holder: str, argv: Sequence[str] = (), evidence: str = "") -> PortInUse:
        """``what`` (e.g. ``"tcp port 8080 on any address"``) is held by ``holder``; ``argv`` found out."""
        error = cls(argv or ("pynetns",), 1, evidence, f"{what} is already in use by {holder}")
        error.holder = holder
        return error


class CommandTimeout(CommandError, TimeoutError):
    """The command did not finish within its timeout."""


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


#: Debian package of each tool a backend may run.
PACKAGES = {
    "ip": "iproute2",
    "tc": "iproute2",
    "bridge": "iproute2",
    "nft": "nftables",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "iptables-save": "iptables",
    "ip6tables": "iptables",
    "ip6tables-restore": "iptables",
    "ip6tables-save": "iptables",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "sysctl": "procps",
    "ping": "iputils-ping",
    "curl": "curl",
    "conntrack": "conntrack",
    "sudo": "sudo",
}

# Order matters: the first pattern found in stderr wins.
_PATTERNS: tuple[tuple[re.Pattern[str], type[CommandError]], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), cls)
    for pattern, cls in (
        (r"Device or resource busy|Resource temporarily unavailable", ResourceBusy),
        (r"xtables lock|holding the xtables lock|Could not process rule: Device or resource busy", ResourceBusy),
        (r"Operation not permitted|Permission denied|must be run as root|are you root", PermissionDenied),
        (r"File exists|already exists", AlreadyExists),
        (r"Address already in use", PortInUse),
        (
            r"Cannot find device|does not exist|No such file or directory|No such device"
            r"|No such process|Cannot open network namespace|Object not found|Bad rule \(does a matching rule exist",
            NotFound,
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
