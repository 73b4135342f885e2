"""The pytest plugin (``pynetns.pytest_plugin``), driven the way a downstream project uses it: through ``pytester``.

Inner test sessions run in a subprocess (as a user's ``pytest`` would, xdist included); what they make must be
gone afterwards, which these tests check themselves (the inner names do not carry this test's ``token``).

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_plugin.py.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pynetns
from pynetns.pytest_plugin import _RunState
from tests.support.plugin import INNER_TIMEOUT

pytest_plugins = ["pytester"]


def test_registered_as_the_pytest11_entry_point_pynetns() -> None:
    points = [point for point in importlib.metadata.entry_points(group="pytest11") if point.name == "pynetns"]
    assert [point.value for point in points] == ["pynetns.pytest_plugin"]


def test_importing_the_plugin_starts_nothing() -> None:
    code = (
        "import subprocess, sys\n"
        "def refuse(*args, **kwargs): raise AssertionError('started a process at import')\n"
        "subprocess.Popen = refuse\n"
        "sys.modules.pop('pynetns.pytest_plugin', None)\n"
        "import pynetns.pytest_plugin\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_names_carry_worker_and_run_and_stay_valid() -> None:
    state = _RunState(run="a1b2c3", worker="gw12")
    assert state.name() == "pt-gw12-a1b2c3-1"
    assert state.name("server") == "pt-gw12-a1b2c3-2-server"
    long = state.name("x" * 60)
    assert len(long) == 64 and long.startswith("pt-gw12-a1b2c3-3-")
    with pytest.raises(pynetns.InvalidName):
        state.name("../etc")


def test_fixtures_are_documented_with_name_scope_and_needs(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:benchmark")
    result.stdout.fnmatch_lines(
        [
            "pynetns_host [[]session scope[]] -- *pytest_plugin.py*",
            "*``pynetns_host`` (session scope; needs nothing)*",
            "netns_factory -- *",
            "*``netns_factory`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).",
            "netns -- *",
            "*``netns`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).",
            "netlab -- *",
            "*``netlab`` (function scope; needs ``pynetns_host`` and the privileges to make namespaces).",
            "netlab_factory [[]session scope[]] -- *",
            "*``netlab_factory`` (session scope; needs ``pynetns_host`` and the privileges to make namespaces).",
            "pynetns_topology_file [[]session scope[]] -- *",
            "*``pynetns_topology_file`` (session scope; needs nothing)*",
            "pynetns_topology [[]session scope[]] -- *",
            "*``pynetns_topology`` (session scope; needs ``pynetns_topology_file``, ``pynetns_host`` and the*",
        ]
    )


def test_pynetns_host_override_dry_run_needs_no_privileges(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from pynetns import Host

        @pytest.fixture(scope="session")
        def pynetns_host():
            return Host(dry_run=True)
        """
    )
    pytester.makepyfile(
        """
        def test_recorded(netns, pynetns_host):
            assert netns.name.startswith("pt-main-")
            assert [str(call) for call in pynetns_host.history][0] == f"ip netns add {netns.name}"
        """
    )
    pytester.runpytest("-p", "no:benchmark").assert_outcomes(passed=1)


def test_dash_p_pynetns_enables_it_where_autoload_is_off(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from pynetns import Host

        @pytest.fixture(scope="session")
        def pynetns_host():
            return Host(dry_run=True)
        """
    )
    pytester.makepyfile("def test_it(netns_factory):\n    assert netns_factory('x').name.endswith('-x')\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        pytester.runpytest_subprocess(timeout=INNER_TIMEOUT).assert_outcomes(errors=1)  # fixture not found
        pytester.runpytest_subprocess("-p", "pynetns", timeout=INNER_TIMEOUT).assert_outcomes(passed=1)


SKIPPING_TESTS = """
def test_netns(netns):
    raise AssertionError("must not run")

def test_factory(netns_factory):
    raise AssertionError("must not run")

def test_lab(netlab):
    raise AssertionError("must not run")
"""


NO_SANDBOX = """
import os

from pynetns import Host
from pynetns.errors import SandboxRefused


def refuse(cls, **options):
    raise SandboxRefused("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone=0): "
                         "allow them with sysctl -w kernel.unprivileged_userns_clone=1")


os.geteuid = lambda: 1000  # play an unprivileged user on a machine that forbids user namespaces
Host.rootless = classmethod(refuse)
"""


def test_skip_without_root_says_how_to_enable(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(NO_SANDBOX)
    pytester.makepyfile(SKIPPING_TESTS)
    result = pytester.runpytest_subprocess("-rs", timeout=INNER_TIMEOUT)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(
        ["SKIPPED *run rootless without root, and cannot here*unprivileged_userns_clone=1*"] * 3
    )
    assert "Traceback" not in result.stdout.str()


def test_skip_when_the_probe_fails_shows_what_ip_said(pytester: pytest.Pytester) -> None:
    tools = pytester.mkdir("tools")
    calls = tools / "calls"
    fake_ip = tools / "ip"
    fake_ip.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        "echo 'mount --make-shared /run/netns failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake_ip.chmod(0o755)
    pytester.makeconftest(
        f"""
        import os
        import pytest
        from pynetns import Host, LocalRunner

        os.geteuid = lambda: 0  # root, yet the kernel refuses (a container without CAP_SYS_ADMIN, say)

        @pytest.fixture(scope="session")
        def pynetns_host():
            return Host(runner=LocalRunner(path=[{str(tools)!r}]))
        """
    )
    pytester.makepyfile(SKIPPING_TESTS)
    result = pytester.runpytest_subprocess("-rs", timeout=INNER_TIMEOUT)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["SKIPPED *need root*`ip netns add pt-probe-*` failed: mount --make-shared*"] * 3)
    assert len(calls.read_text().splitlines()) == 1  # probed once per session


@pytest.mark.parametrize("how", ["option", "ini"])
def test_require_makes_cannot_run_an_error(pytester: pytest.Pytester, how: str) -> None:
    pytester.makeconftest(NO_SANDBOX)
    pytester.makepyfile(SKIPPING_TESTS)
    if how == "ini":
        pytester.makeini("[pytest]\npynetns_require = true\n")
    args = ("--pynetns-require",) if how == "option" else ()
    result = pytester.runpytest_subprocess("-rE", *args, timeout=INNER_TIMEOUT)
    result.assert_outcomes(errors=3)
    for test in ("test_netns", "test_factory", "test_lab"):
        result.stdout.fnmatch_lines(
            [f"*ERROR at setup of {test}*", "pynetns fixtures run rootless*(--pynetns-require:*"]
        )
    assert result.ret == pytest.ExitCode.TESTS_FAILED and "Traceback" not in result.stdout.str()


def test_not_root_the_host_comes_from_the_one_rootless_place(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import os
        from pynetns import Host, pytest_plugin

        os.geteuid = lambda: 1000
        pytest_plugin._unprivileged_host = lambda: Host(dry_run=True)  # what Host.rootless() will be
        """
    )
    pytester.makepyfile("def test_it(netns, pynetns_host):\n    assert pynetns_host.dry_run and netns.name\n")
    pytester.runpytest_subprocess(timeout=INNER_TIMEOUT).assert_outcomes(passed=1)


WIDER_SCOPES_CONFTEST = """
import pytest
from pynetns import Host

HOST = Host(dry_run=True)

@pytest.fixture(scope="session")
def pynetns_host():
    return HOST

@pytest.fixture(scope="session")
def pynetns_topology_file(pytestconfig):
    return pytestconfig.rootpath / "shop.toml"

def pytest_unconfigure(config):  # after every fixture's teardown: what was deleted
    lines = [line for call in HOST.history for line in [" ".join(call.argv), *(call.input or "").splitlines()]]
    deleted = [line.split()[-1] for line in lines if "netns delete" in line]
    (config.rootpath / "deleted").write_text("\\n".join(deleted))
"""

WIDER_SCOPES = """
import ipaddress
import pytest

SEEN = []

@pytest.fixture(scope="module")
def shop(netlab_factory):
    lab = netlab_factory("shop")
    front = lab.network("front", subnet="10.1.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("client", [front])
    lab.apply()
    yield lab
    lab.destroy()

def test_one(shop):
    SEEN.append(shop)
    assert shop.ip("client") == ipaddress.ip_address("10.1.0.3") and shop["web"].name.endswith("-web")

def test_two(shop, netlab_factory):
    assert SEEN == [shop] and netlab_factory.labs == [shop] and shop.name.endswith("-shop")

def test_topology(pynetns_topology, netlab_factory):
    assert pynetns_topology.isolated and pynetns_topology.name.startswith("pt-main-")
    assert pynetns_topology.name.endswith("-shop") and pynetns_topology in netlab_factory.labs
    assert str(pynetns_topology.ip("web", "back")) == "10.31.0.2"
    assert str(pynetns_topology.endpoint("db").ip) == "10.31.0.10/24"
    print("TOPOLOGY", pynetns_topology.id)

def test_topology_again(pynetns_topology):
    print("TOPOLOGY", pynetns_topology.id)
"""


def test_module_and_session_labs_and_the_topology_file(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(WIDER_SCOPES_CONFTEST)
    pytester.makepyfile(test_wider=WIDER_SCOPES)
    shop = Path(__file__).parents[1] / "data" / "topologies" / "shop.toml"
    (pytester.path / "shop.toml").write_text(shop.read_text())
    result = pytester.runpytest_subprocess("-s", "-p", "no:randomly", timeout=INNER_TIMEOUT)
    result.assert_outcomes(passed=4)
    ids = re.findall(r"TOPOLOGY ([0-9a-f]+)", result.stdout.str())
    assert len(ids) == 2 and len(set(ids)) == 1  # one lab for the session
    deleted = (pytester.path / "deleted").read_text().split()
    assert f"pn{ids[0]}-web" in deleted and any(name.endswith("-web") and ids[0] not in name for name in deleted)


def test_a_missing_topology_file_says_what_to_do(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(WIDER_SCOPES_CONFTEST.split('@pytest.fixture(scope="session")\ndef pynetns_topology_file')[0])
    pytester.makepyfile("def test_it(pynetns_topology):\n    pass\n")
    result = pytester.runpytest_subprocess(timeout=INNER_TIMEOUT)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*no topology file at *tests/topology.toml*override the pynetns_topology_file fixture*"]
    )
