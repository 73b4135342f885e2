"""Every raw failure is mapped, at one boundary, to a named error carrying its evidence."""

import pytest

from pynetns import errors
from pynetns.errors import (
    AlreadyExists,
    CommandError,
    NotFound,
    PermissionDenied,
    PortInUse,
    PynetnsError,
    ResourceBusy,
    from_command,
)

SAMPLES = [
    ('Cannot create namespace file "/run/netns/x": File exists', AlreadyExists),
    ("RTNETLINK answers: File exists", AlreadyExists),
    ('Cannot find device "nope"', NotFound),
    ('Device "veth9" does not exist.', NotFound),
    ('Cannot remove namespace file "/run/netns/x": No such file or directory', NotFound),
    ('Cannot open network namespace "x": No such file or directory', NotFound),
    ("RTNETLINK answers: Operation not permitted", PermissionDenied),
    ('mount --make-shared /run/netns failed: Permission denied', PermissionDenied),
    ("RTNETLINK answers: Device or resource busy", ResourceBusy),
    ("Another app is currently holding the xtables lock. Perhaps you want to use the -w option?", ResourceBusy),
    ("bind: Address already in use", PortInUse),
    ("Error: argument \"x\" is wrong: invalid mtu", CommandError),
]


@pytest.mark.parametrize(("stderr", "expected"), SAMPLES)
def test_stderr_is_mapped(stderr, expected):
    error = from_command(["ip", "link"], 2, "", stderr + "\n")
    assert type(error) is expected
    assert error.argv == ("ip", "link") and error.returncode == 2 and error.stderr.startswith(stderr)
    assert isinstance(error, PynetnsError)


def test_batch_failure_names_the_line():
    lines = ["link set lo up", "link set nope up", "addr add 1.2.3.4/24 dev lo"]
    error = from_command(["ip", "-batch", "-"], 1, "", 'Cannot find device "nope"\nCommand failed -:2\n', batch=lines)
    assert isinstance(error, NotFound)
    assert (error.line_number, error.line) == (2, "link set nope up")
    assert "batch line 2: 'link set nope up'" in str(error)
    assert "Cannot find device" in str(error)


def test_nft_batch_failure_names_the_line():
    lines = ["add table ip t", "add chain ip t c { bogus }"]
    stderr = "/dev/stdin:2:18-22: Error: syntax error, unexpected string\n"
    error = from_command(["nft", "-f", "-"], 1, "", stderr, batch=lines)
    assert error.line_number == 2


def test_hierarchy_and_builtin_bases():
    assert issubclass(errors.InvalidName, ValueError)
    assert issubclass(errors.NotFound, LookupError)
    assert issubclass(errors.CommandTimeout, TimeoutError)
    assert issubclass(errors.BackendUnavailable, RuntimeError)
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type):
            assert issubclass(value, PynetnsError), name


def test_backend_unavailable_names_the_package():
    assert "iproute2" in str(errors.BackendUnavailable("ip"))
    assert "nftables" in str(errors.BackendUnavailable("nft"))
