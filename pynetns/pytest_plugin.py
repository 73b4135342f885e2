"""pytest fixtures for network namespaces and labs: the ``pynetns`` plugin.

Installing pynetns registers this plugin through the ``pytest11`` entry point
``pynetns``, so the fixtures are there in every project's tests; ``-p pynetns``
loads it where plugin autoloading is off, ``-p no:pynetns`` turns it off.

========================  ========  =============================================================
fixture                   scope     what it gives
========================  ========  =============================================================
``netns``                 function  a fresh :class:`~pynetns.Namespace` (``lo`` up), deleted after
``netns_factory``         function  a callable making more namespaces, all deleted after
``netlab``                function  a fresh isolated :class:`~pynetns.Lab`, destroyed after
``pynetns_host``          session   the :class:`~pynetns.Host` they all use: the override point
========================  ========  =============================================================

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
passwordless sudo) the fixtures skip, saying how to enable them.

At the end of the session the plugin reports, in a "pynetns leftovers" section,
every namespace still carrying the run's ``pt-…-<run>-`` prefix and every lab
journal still owned by a test process (a :class:`~pynetns.Lab` that was applied
and never destroyed). It removes nothing itself; ``--pynetns-strict-leaks``
makes leftovers fail the run (exit status 1).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from .backends.base import NetnsRef
from .errors import BackendUnavailable, PynetnsError
from .host import Host
from .lab.journal import labs
from .lab.lab import Lab
from .namespace import Namespace
from .runner import LocalRunner
from .validation import namespace_name

__all__ = ["NamespaceFactory", "netlab", "netns", "netns_factory", "pynetns_host"]

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

    @property
    def prefix(self) -> str:
        return f"pt-{self.worker}-{self.run}-"

    def name(self, label: str | None = None) -> str:
        """A new kernel-safe name, ``pt-<worker>-<run>-<n>[-label]`` (at most 64 characters)."""
        name = f"{self.prefix}{next(self.counter)}"
        if label is not None:
            namespace_name("label", label)
            name = f"{name}-{label}".encode()[:64].decode(errors="ignore")
        return namespace_name("name", name)


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
        "remove namespaces with `ip netns delete NAME`, and the labs of finished processes with "
        "`python -c 'import pynetns; pynetns.cleanup()'`"
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
            found.update(f"namespace {ns.name}" for ns in Namespace.all(host) if mine.match(ns.name))
        except PynetnsError as error:
            log.warning("pynetns could not list namespaces to look for leftovers: %s", error)
    for record in labs():
        if record.owner_pid == os.getpid() or mine.match(record.name):
            names = ", ".join(record.data.get("namespaces", ()))
            found.add(f"lab {record.name} (id {record.id}, owner pid {record.owner_pid}): namespaces {names}")
    return found


# -- privileges -------------------------------------------------------------


def _privilege_problem(host: Host) -> str | None:
    """None if ``host`` can make network namespaces, else a skip reason that says how to enable them."""
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


@pytest.fixture(scope="session")
def pynetns_host() -> Host:
    """``pynetns_host`` (session scope; needs nothing): the Host every pynetns fixture works on.

    By default ``Host()``: commands run locally, the firewall backend is chosen
    on first use. Override it in your ``conftest.py`` to choose::

        @pytest.fixture(scope="session")
        def pynetns_host():
            return pynetns.Host(sudo=True, firewall="iptables")
    """
    return Host()


@pytest.fixture(scope="session")
def _pynetns_ready(pynetns_host: Host, pytestconfig: pytest.Config) -> Host:
    """``pynetns_host``, once it was checked that it can make namespaces; skips every user otherwise."""
    problem = _privilege_problem(pynetns_host)
    if problem is not None:
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
