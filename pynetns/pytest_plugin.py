"""pytest fixtures for network namespaces and labs: the ``pynetns`` plugin.

Installing pynetns registers this plugin through the ``pytest11`` entry point
``pynetns``, so the fixtures are there in every project's tests; ``-p pynetns``
loads it where plugin autoloading is off, ``-p no:pynetns`` turns it off.

==========================  ========  =========================================================
fixture                     scope     what it gives
==========================  ========  =========================================================
``netns``                   function  a fresh :class:`~pynetns.Namespace` (``lo`` up), deleted after
``netns_factory``           function  a callable making more namespaces, all deleted after
``netlab``                  function  a fresh isolated :class:`~pynetns.Lab`, destroyed after
``netlab_factory``          session   a callable making isolated labs for module/session fixtures
``pynetns_topology``        session   the lab of ``pynetns_topology_file``, applied, destroyed at the end
``pynetns_topology_file``   session   the topology file's path: the override point
``pynetns_host``            session   the :class:`~pynetns.Host` they all use: the override point
==========================  ========  =========================================================

A test using them::

    def test_ping(netlab):
        net = netlab.network("front", subnet="10.1.0.0/24")
        web, client = netlab.namespace("web", [net]), netlab.namespace("client", [net])
        netlab.apply()
        client.run(["ping", "-c1", "-W1", "10.1.0.2"])

Names are ``pt-<worker>-<run>-<n>`` (``<worker>`` is the pytest-xdist worker,
``gw3``, or ``main``; ``<run>`` is random per test run), so ``-n auto`` just
works. Labs are isolated: parallel tests may declare the same subnets.

Without the privileges to make namespaces (root, or ``Host(sudo=True)`` with
passwordless sudo) the fixtures skip, saying how to enable them; ``--pynetns-require``
(or ``pynetns_require = true`` in the ini file) makes that an error instead, for CI.

At the end of the session the plugin reports, in a "pynetns leftovers" section,
every namespace still carrying the run's ``pt-…-<run>-`` prefix and every lab
journal still owned by a test process (a :class:`~pynetns.Lab` that was applied
and never destroyed), each with the test during which it was made. It removes
nothing itself (``pynetns cleanup`` does, once the run is over);
``--pynetns-strict-leaks`` makes leftovers fail the run (exit status 1).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from .backends.base import NetnsRef
from .errors import BackendUnavailable, PynetnsError
from .host import Host, default_host
from .lab.journal import labs
from .lab.lab import Lab
from .lab.topology import Topology
from .namespace import Namespace
from .runner import LocalRunner
from .validation import namespace_name

__all__ = [
    "LabFactory",
    "NamespaceFactory",
    "netlab",
    "netlab_factory",
    "netns",
    "netns_factory",
    "pynetns_host",
    "pynetns_topology",
    "pynetns_topology_file",
]

log = logging.getLogger(__name__)

HOW_TO_ENABLE = (
    "pynetns fixtures need root to create network namespaces: run pytest as root "
    '(e.g. sudo -E "$(command -v python)" -m pytest) or override the pynetns_host fixture '
    "with Host(sudo=True) and allow passwordless sudo"
)


@attrs.define
class _RunState:
    """What the plugin keeps for one pytest session (in ``config.stash``; no module globals)."""

    run: str
    worker: str
    counter: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    host: Host | None = None
    used: bool = False
    leftovers: set[str] = attrs.field(factory=set)
    #: the test running now (its node id), to tell which test made what
    current: str | None = None
    #: kernel name or lab id → the test during which it was made
    made_in: dict[str, str] = attrs.field(factory=dict)

    @property
    def prefix(self) -> str:
        return f"pt-{self.worker}-{self.run}-"

    def name(self, label: str | None = None) -> str:
        """A new kernel-safe name, ``pt-<worker>-<run>-<n>[-label]`` (at most 64 characters)."""
        name = f"{self.prefix}{next(self.counter)}"
        if label is not None:
            namespace_name("label", label)
            name = f"{name}-{label}".encode()[:64].decode(errors="ignore")
        name = namespace_name("name", name)
        if self.current is not None:
            self.made_in[name] = self.current
        return name

    def note_labs(self) -> None:
        """Remember, for the leak report, the test during which each lab journal of this process first showed."""
        if self.current is None:
            return
        host = self.host if self.host is not None and not self.host.dry_run else default_host()
        for path, data in host.runtime.journals():  # files only: no command, no lock
            if data.get("owner_pid") == os.getpid():
                self.made_in.setdefault(str(data.get("id", path.stem)), self.current)

    def made_by(self, key: str) -> str:
        """`` (made during <test>)``, if that is known."""
        test = self.made_in.get(key)
        return f" (made during {test})" if test else ""


_STATE = pytest.StashKey[_RunState]()


def _state(config: pytest.Config) -> _RunState:
    return config.stash[_STATE]


# -- hooks ------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pynetns", "pynetns network namespace fixtures")
    group.addoption(
        "--pynetns-strict-leaks",
        action="store_true",
        default=False,
        help="fail the run (exit status 1) when pynetns namespaces or labs are left behind",
    )
    group.addoption(
        "--pynetns-require",
        action="store_true",
        default=False,
        help="a pynetns fixture that cannot run (no privileges) is an error, not a skip (for CI)",
    )
    parser.addini(
        "pynetns_require",
        type="bool",
        default=False,
        help="as --pynetns-require: a pynetns fixture that cannot run is an error, not a skip",
    )


def _required(config: pytest.Config) -> bool:
    """``--pynetns-require`` or ``pynetns_require = true``: "cannot run" fails instead of skipping."""
    return bool(config.getoption("pynetns_require") or config.getini("pynetns_require"))


def pytest_configure(config: pytest.Config) -> None:
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None:
        run, worker = secrets.token_hex(3), "main"
    else:
        run = str(workerinput.get("pynetns_run") or str(workerinput.get("testrunuid", ""))[:6] or secrets.token_hex(3))
        worker = re.sub(r"[^A-Za-z0-9]", "", str(workerinput.get("workerid", ""))) or "gw"
    config.stash[_STATE] = _RunState(run=run, worker=worker)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist (controller): every worker names things with the controller's run id."""
    node.workerinput["pynetns_run"] = _state(node.config).run


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist (controller): collect what a worker found left behind."""
    state = _state(node.config)
    output: dict[str, Any] = getattr(node, "workeroutput", None) or {}
    state.leftovers.update(output.get("pynetns_leftovers", ()))
    if output.get("pynetns_used") or error is not None:
        state.used = True  # a crashed worker may have left namespaces: scan for the run's names


def pytest_report_header(config: pytest.Config) -> str | None:
    if _STATE not in config.stash:
        return None
    return f"pynetns: fixture names start with pt-<worker>-{_state(config).run}-"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    """Know which test runs, so that the leak report can name the test during which a leftover was made."""
    state = item.config.stash.get(_STATE, None)
    if state is None:
        yield
        return
    state.current = item.nodeid
    try:
        yield
    finally:
        state.note_labs()
        state.current = None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down: look for what pynetns objects are left behind."""
    config = session.config
    if _STATE not in config.stash:
        return
    state = _state(config)
    workeroutput: dict[str, Any] | None = getattr(config, "workeroutput", None)
    found = _leftovers(state, whole_run=workeroutput is None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput["pynetns_leftovers"] = sorted(found)
        workeroutput["pynetns_used"] = state.used
        return
    state.leftovers.update(found)
    if state.leftovers and config.getoption("pynetns_strict_leaks") and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _STATE not in config.stash or not _state(config).leftovers:
        return
    strict = bool(config.getoption("pynetns_strict_leaks"))
    terminalreporter.section("pynetns leftovers", sep="=", red=strict, yellow=not strict, bold=True)
    for line in sorted(_state(config).leftovers):
        terminalreporter.line(f"left behind: {line}")
    terminalreporter.line(
        "remove them with `pynetns cleanup` (labs of finished processes; `pynetns cleanup --orphans` also finds "
        "tagged namespaces and links whose journal is gone; from Python: pynetns.cleanup()), "
        "and other namespaces with `ip netns delete NAME`"
        + ("" if strict else "; --pynetns-strict-leaks makes leftovers fail the run")
    )


def _leftovers(state: _RunState, *, whole_run: bool) -> set[str]:
    """Namespaces and labs named with this process's prefix (``whole_run``: any worker's of this run), and labs
    journaled by this process. A worker looks at its own names only: the others may still be running tests."""
    found: set[str] = set()
    mine = re.compile(rf"^pt-[A-Za-z0-9]+-{re.escape(state.run)}-" if whole_run else f"^{re.escape(state.prefix)}")
    if state.used:
        host = state.host if state.host is not None and not state.host.dry_run else Host()
        try:
            found.update(
                f"namespace {ns.name}{state.made_by(ns.name)}" for ns in Namespace.all(host) if mine.match(ns.name)
            )
        except PynetnsError as error:
            log.warning("pynetns could not list namespaces to look for leftovers: %s", error)
    for record in labs():
        if record.owner_pid == os.getpid() or mine.match(record.name):
            names = ", ".join(record.data.get("namespaces", ()))
            made = state.made_by(record.id) or state.made_by(record.name)
            found.add(f"lab {record.name} (id {record.id}, owner pid {record.owner_pid}): namespaces {names}{made}")
    return found


# -- privileges -------------------------------------------------------------


def _privilege_problem(host: Host) -> str | None:
    """None if ``host`` can make network namespaces, else a skip reason that says how to enable them."""
    if isinstance(host, _Refused):
        return host.why
    if host.dry_run:
        return None
    runner = host.runner
    if isinstance(runner, LocalRunner) and not runner.sudo and os.geteuid() != 0:
        from plumbum import local

        if runner.machine is local:
            return HOW_TO_ENABLE
    probe = f"pt-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        created = host.run(host.ip_argv(NetnsRef.root(), host.links.netns_add(probe)), check=False, timeout=60)
    except BackendUnavailable as error:
        return f"pynetns fixtures cannot create network namespaces: {error}"
    if created.returncode != 0:
        why = created.stderr.strip() or f"exit status {created.returncode}"
        return f"{HOW_TO_ENABLE} (`{' '.join(created.argv)}` failed: {why})"
    host.run(host.ip_argv(NetnsRef.root(), host.links.netns_delete(probe)), check=False, timeout=60)
    return None


# -- fixtures ---------------------------------------------------------------


class _Refused(Host):
    """The Host of a user for whom no sandbox could be made: every fixture skips with ``why``."""

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why


def _unprivileged_host() -> Host:
    """ROOTLESS DEFAULT: the one place where the fixtures choose the Host of a user who is not root.

    A rootless Host (:meth:`Host.rootless`: an unprivileged user namespace with its own mount and network
    namespaces plays the host), so a downstream ``pytest -n 4`` needs no sudo. Where the machine forbids
    unprivileged user namespaces, the fixtures skip saying which setting does (or fail, with
    ``--pynetns-require``).
    """
    try:
        return Host.rootless()
    except PynetnsError as error:
        return _Refused(f"pynetns fixtures run rootless without root, and cannot here: {error}")


@pytest.fixture(scope="session")
def pynetns_host() -> Iterator[Host]:
    """``pynetns_host`` (session scope; needs nothing): the Host every pynetns fixture works on.

    As root ``Host()``: commands run locally, the firewall backend is chosen on first use. Not root: a
    rootless Host (:meth:`Host.rootless`), ended with the session. Override it in your ``conftest.py``
    to choose::

        @pytest.fixture(scope="session")
        def pynetns_host():
            return pynetns.Host(sudo=True, firewall="iptables")
    """
    host = Host() if os.geteuid() == 0 else _unprivileged_host()
    try:
        yield host
    finally:
        host.close()


@pytest.fixture(scope="session")
def _pynetns_ready(pynetns_host: Host, pytestconfig: pytest.Config) -> Host:
    """``pynetns_host``, once it was checked that it can make namespaces; skips every user otherwise."""
    problem = _privilege_problem(pynetns_host)
    if problem is not None:
        if _required(pytestconfig):
            pytest.fail(f"{problem} (--pynetns-require: a pynetns fixture that cannot run is an error)", pytrace=False)
        pytest.skip(problem)
    _state(pytestconfig).host = pynetns_host
    return pynetns_host


class NamespaceFactory:
    """What ``netns_factory`` gives: call it for another fresh namespace.

    ``factory()`` → a created :class:`~pynetns.Namespace` (``lo`` up) named
    ``pt-<worker>-<run>-<n>``; ``factory("server")`` appends ``-server``. Every
    namespace it made is deleted after the test, whatever the test did.
    """

    def __init__(self, host: Host, names: Callable[[str | None], str]) -> None:
        self.host = host
        self._names = names
        self._made: list[Namespace] = []

    def __call__(self, label: str | None = None) -> Namespace:
        namespace = Namespace(self._names(label), host=self.host)
        namespace.create()
        self._made.append(namespace)
        return namespace

    @property
    def namespaces(self) -> list[Namespace]:
        """The namespaces made so far, oldest first."""
        return list(self._made)

    def _delete_all(self) -> None:
        """Delete every namespace made (processes inside are ended); tolerate ones already gone."""
        errors: list[PynetnsError] = []
        while self._made:
            namespace = self._made.pop()
            try:
                if namespace.exists():
                    namespace.delete()
                else:
                    namespace.stop_processes()
            except PynetnsError as error:
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def netns_factory(_pynetns_ready: Host, pytestconfig: pytest.Config) -> Iterator[NamespaceFactory]:
    """``netns_factory`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).

    A callable making fresh namespaces, ``lo`` up, all deleted after the test::

        def test_pair(netns_factory):
            server, client = netns_factory("server"), netns_factory("client")
    """
    state = _state(pytestconfig)
    state.used = True
    factory = NamespaceFactory(_pynetns_ready, state.name)
    try:
        yield factory
    finally:
        factory._delete_all()


@pytest.fixture
def netns(netns_factory: NamespaceFactory) -> Namespace:
    """``netns`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).

    A fresh namespace with ``lo`` up, deleted after the test (with any process left inside)::

        def test_loopback(netns):
            netns.run(["ping", "-c1", "127.0.0.1"])
    """
    return netns_factory()


@pytest.fixture
def netlab(_pynetns_ready: Host, pytestconfig: pytest.Config) -> Iterator[Lab]:
    """``netlab`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).

    A fresh, empty, isolated :class:`~pynetns.Lab`: its bridges live in a
    private namespace, so parallel tests may declare the same subnets. Declare,
    then ``apply()``; it is destroyed after the test, whatever the test did::

        def test_web(netlab):
            net = netlab.network("front", subnet="10.1.0.0/24")
            web = netlab.namespace("web", [net])
            netlab.apply()
    """
    state = _state(pytestconfig)
    state.used = True
    lab = Lab(name=state.name(), host=_pynetns_ready, isolated=True)
    try:
        yield lab
    finally:
        lab.destroy()


class LabFactory:
    """What ``netlab_factory`` gives: call it for another fresh, empty lab.

    ``factory()`` → a :class:`~pynetns.Lab` named ``pt-<worker>-<run>-<n>``, isolated (``isolated=False`` puts
    its bridges in the Host's namespace: then its subnets must not clash with other tests'); ``factory("shop")``
    appends ``-shop``. :meth:`from_file` declares a topology file's lab. Every lab it made and nobody destroyed
    is destroyed at the end of the session (:meth:`Lab.destroy` is idempotent: destroy one earlier at will).
    """

    def __init__(self, host: Host, names: Callable[[str | None], str]) -> None:
        self.host = host
        self._names = names
        self._made: list[Lab] = []

    def __call__(self, label: str | None = None, *, isolated: bool = True) -> Lab:
        lab = Lab(name=self._names(label), host=self.host, isolated=isolated)
        self._made.append(lab)
        return lab

    def from_file(self, path: str | os.PathLike[str], *, isolated: bool | None = True) -> Lab:
        """A lab with everything the topology file at ``path`` declares (not applied yet), isolated unless
        ``isolated=False`` (``None``: as the file says); named ``pt-<worker>-<run>-<n>-<the file's name>``."""
        topology = Topology.from_file(path)
        lab = self(topology.name, isolated=topology.isolated if isolated is None else isolated)
        return topology.declare(lab)

    @property
    def labs(self) -> list[Lab]:
        """The labs made so far, oldest first."""
        return list(self._made)

    def _destroy_all(self) -> None:
        """Destroy every lab made, newest first, each whatever the others did; raise the first failure."""
        errors: list[PynetnsError] = []
        while self._made:
            lab = self._made.pop()
            try:
                if not lab.destroyed:
                    lab.destroy()
            except PynetnsError as error:
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def netlab_factory(_pynetns_ready: Host, pytestconfig: pytest.Config) -> Iterator[LabFactory]:
    """``netlab_factory`` (session scope; needs ``pynetns_host`` and the privileges to make namespaces).

    A callable making fresh isolated labs, for fixtures that live longer than a test; every lab it made is
    destroyed at the end of the session. A lab for one module::

        @pytest.fixture(scope="module")
        def shop(netlab_factory):
            lab = netlab_factory("shop")
            front = lab.network("front", subnet="10.1.0.0/24")
            lab.namespace("web", [front])
            lab.apply()
            yield lab
            lab.destroy()  # at the end of the module (without it: at the end of the session)

        def test_web(shop):
            shop["web"].run(["ping", "-c1", str(shop.ip("web"))])
    """
    state = _state(pytestconfig)
    state.used = True
    factory = LabFactory(_pynetns_ready, state.name)
    try:
        yield factory
    finally:
        factory._destroy_all()


@pytest.fixture(scope="session")
def pynetns_topology_file(pytestconfig: pytest.Config) -> Path:
    """``pynetns_topology_file`` (session scope; needs nothing): the topology file ``pynetns_topology`` applies.

    By default ``tests/topology.toml`` under the rootdir; override it in your ``conftest.py`` (TOML, JSON or
    YAML, see :mod:`pynetns.lab.topology`)::

        @pytest.fixture(scope="session")
        def pynetns_topology_file(pytestconfig):
            return pytestconfig.rootpath / "tests" / "shop.toml"
    """
    return pytestconfig.rootpath / "tests" / "topology.toml"


@pytest.fixture(scope="session")
def pynetns_topology(netlab_factory: LabFactory, pynetns_topology_file: str | os.PathLike[str]) -> Iterator[Lab]:
    """``pynetns_topology`` (session scope; needs ``pynetns_topology_file``, ``pynetns_host`` and the privileges
    to make namespaces).

    The lab the topology file declares, applied once for the session and destroyed at its end. It is isolated
    whatever the file says, so each pytest-xdist worker has its own copy::

        def test_web_answers(pynetns_topology):
            client = pynetns_topology["client"]
            client.run(["curl", f"http://{pynetns_topology.ip('web')}:8000/"])
    """
    path = Path(pynetns_topology_file)
    if not path.is_file():
        pytest.fail(
            f"pynetns_topology: no topology file at {path}: write one there, or override the "
            "pynetns_topology_file fixture to return its path",
            pytrace=False,
        )
    lab = netlab_factory.from_file(path)
    lab.apply()
    try:
        yield lab
    finally:
        lab.destroy()
