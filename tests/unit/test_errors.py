"""Every raw failure is mapped, at one boundary, to a named error carrying its evidence."""

import pytest

from pynetns import errors
from pynetns.errors import (
    AlreadyExists,
    AlreadyExistsCommandError,
    CommandError,
    NotFound,
    NotFoundCommandError,
    PermissionDenied,
    PermissionDeniedCommandError,
    PortInUse,
    PortInUseCommandError,
    PynetnsError,
    ResourceBusy,
    from_command,
)

SAMPLES = [
    ('Cannot create namespace file "/run/netns/x": File exists', AlreadyExistsCommandError),
    ("RTNETLINK answers: File exists", AlreadyExistsCommandError),
    ('Cannot find device "nope"', NotFoundCommandError),
    ('Device "veth9" does not exist.', NotFoundCommandError),
    ('Cannot remove namespace file "/run/netns/x": No such file or directory', NotFoundCommandError),
    ('Cannot open network namespace "x": No such file or directory', NotFoundCommandError),
    ("RTNETLINK answers: Operation not permitted", PermissionDeniedCommandError),
    ("mount --make-shared /run/netns failed: Permission denied", PermissionDeniedCommandError),
    ("RTNETLINK answers: Device or resource busy", ResourceBusy),
    ("Another app is currently holding the xtables lock. Perhaps you want to use the -w option?", ResourceBusy),
    ("bind: Address already in use", PortInUseCommandError),
    ('Error: argument "x" is wrong: invalid mtu', CommandError),
]


@pytest.mark.parametrize(("stderr", "expected"), SAMPLES)
def test_stderr_is_mapped(stderr, expected):
    error = from_command(["ip", "link"], 2, "", stderr + "\n")
    assert type(error) is expected
    assert error.argv == ("ip", "link") and error.returncode == 2 and error.stderr.startswith(stderr)
    assert isinstance(error, PynetnsError) and isinstance(error, CommandError)


CONDITIONS = [
    (AlreadyExists, AlreadyExistsCommandError),
    (NotFound, NotFoundCommandError),
    (PermissionDenied, PermissionDeniedCommandError),
    (PortInUse, PortInUseCommandError),
]


@pytest.mark.parametrize(("condition", "variant"), CONDITIONS)
def test_a_condition_found_before_any_command_is_not_a_command_error(condition, variant):
    refused = condition("pynetns:x portmap/tcp/any/80-80 already exists")
    assert type(refused) is condition and not isinstance(refused, CommandError)
    assert str(refused) == "pynetns:x portmap/tcp/any/80-80 already exists" and refused.argv == ()
    # a command reporting it is both: `except condition` catches either, `except CommandError` only this one
    failed = from_command(
        ["ip", "link"],
        2,
        "",
        {
            AlreadyExists: "File exists",
            NotFound: "Cannot find device",
            PermissionDenied: "Operation not permitted",
            PortInUse: "Address already in use",
        }[condition],
    )
    assert type(failed) is variant and isinstance(failed, condition) and isinstance(failed, CommandError)
    # the shape CommandError takes (a failed command's evidence) builds the variant, as from_command does
    legacy = condition(("ip", "link"), 1, stderr="said so")
    assert type(legacy) is variant and legacy.argv == ("ip", "link") and legacy.stderr == "said so"


def test_port_in_use_held_keeps_its_evidence_and_is_not_a_command_error():
    error = PortInUse.held(
        "tcp port 8080 on every address", "a process listening on *:8080", ("ss", "-H", "-l"), "LISTEN 0 5 *:8080 *:*"
    )
    assert not isinstance(error, CommandError) and isinstance(error, PortInUse)
    assert error.holder == "a process listening on *:8080"
    assert (error.argv, error.evidence) == (("ss", "-H", "-l"), "LISTEN 0 5 *:8080 *:*")
    assert str(error) == "tcp port 8080 on every address is already in use by a process listening on *:8080"


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


# -- pickling (xdist and multiprocessing send errors between processes) ----------------------------

#: a value for each constructor parameter, by name: a new error class with a new name fails here, asking
VALUES = {
    "message": "it is so",
    "argv": ("ip", "link", "add", "x"),
    "returncode": 2,
    "stdout": "out",
    "stderr": "RTNETLINK answers: File exists",
    "line_number": 3,
    "line": "link add x type bridge",
    "evidence": "LISTEN 0 5 *:8080",
    "field": "subnet",
    "value": "127.0.0.0/24",
    "rule": "must be unicast",
    "tool": "nft",
    "package": "nftables",
    "detail": "not found on PATH",
    "key": "64768-4026531840",
    "timeout": 1.5,
    "holder": "pid 7",
    "source": "lab.toml",
    "column": 4,
    "what": "destroying lab web",
    "errors": [],
    "machine": "root@10.9.0.2",
}


def _exported_error_classes():
    import pynetns

    found = [getattr(errors, name) for name in errors.__all__]
    found += [getattr(pynetns, name) for name in pynetns.__all__]  # TopologyError lives in pynetns.lab.topology
    classes = {value for value in found if isinstance(value, type) and issubclass(value, BaseException)}
    return sorted(classes, key=lambda cls: cls.__name__)


def _example(cls):
    import inspect

    init = next(
        klass.__dict__["__init__"]
        for klass in cls.__mro__
        if inspect.isfunction(klass.__dict__.get("__init__")) or klass is BaseException
    )
    if not inspect.isfunction(init):
        return cls(VALUES["message"])  # Exception's own constructor
    args, kwargs = [], {}
    for parameter in list(inspect.signature(init).parameters.values())[1:]:
        if parameter.kind is parameter.VAR_POSITIONAL:
            if not args:
                args.append(VALUES["message"])
            continue
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        assert parameter.name in VALUES, f"{cls.__name__}({parameter.name}=…): add a value for it to VALUES"
        if parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = VALUES[parameter.name]
        else:
            args.append(VALUES[parameter.name])
    return cls(*args, **kwargs)


def _state(error):
    return (
        type(error),
        error.args,
        str(error),
        vars(error),
        [getattr(error, name, None) for name in ("errno", "strerror", "filename")],
    )


@pytest.mark.parametrize("cls", _exported_error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_survives_pickling_with_its_attributes(cls):
    import pickle

    assert issubclass(cls, PynetnsError)
    error = _example(cls)
    error.add_note("while testing")  # notes (Lab rollback attaches undo failures as notes) travel too
    copy = pickle.loads(pickle.dumps(error))
    assert _state(copy) == _state(error)


def test_a_cleanup_error_pickles_with_every_failure():
    import pickle

    failures = [errors.NotFound("bridge gone"), errors.CommandError(("ip", "netns", "delete", "x"), 1, "", "busy")]
    copy = pickle.loads(pickle.dumps(errors.CleanupError("destroying lab web", failures)))
    assert [str(error) for error in copy.errors] == [str(error) for error in failures]
    assert "2 failed" in str(copy)


def test_a_port_in_use_pickles_with_its_holder():
    import pickle

    error = PortInUse.held("tcp port 8080 on every address", "pynetns:x (portmap/tcp/any/8080-8080)")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.holder, str(copy)) == (PortInUse, error.holder, str(error))
