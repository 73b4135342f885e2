"""The pytest plugin (``pynetns.pytest_plugin``), driven the way a downstream project uses it: through ``pytester``.

Inner test sessions run in a subprocess (as a user's ``pytest`` would, xdist included); what they make must be
gone afterwards, which these tests check themselves (the inner names do not carry this test's ``token``).

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_plugin.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import pynetns
from pynetns.pytest_plugin import NamespaceFactory
from tests.support.plugin import INNER_TIMEOUT

pytest_plugins = ["pytester"]


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {item["name"] for item in json.loads(listing.strip() or "[]")}


def _run_id(result: pytest.RunResult) -> str:
    """The inner session's run id, from the report header the plugin prints."""
    match = re.search(r"pynetns: fixture names start with pt-<worker>-([0-9a-f]+)-", result.stdout.str())
    assert match, result.stdout.str()
    return match.group(1)


def _of_run(run: str) -> set[str]:
    return {name for name in _namespaces() if re.match(rf"pt-[A-Za-z0-9]+-{run}-", name)}


def _delete(names: set[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _processes_running(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    if cmdline.read().split(b"\0")[:2] == [b"sleep", marker.encode()]:
                        found.append(int(entry))
            except OSError:
                continue
    return found


WORKLOAD = """
import os
import pytest
from pynetns import Veth

def record(*names):
    with open(os.environ["PT_RECORD"], "a") as out:
        out.write("".join(name + "\\n" for name in names))

def test_netns(netns):
    record(netns.name)
    assert netns.interface("lo").up
    netns.run(["ping", "-c1", "-W2", "127.0.0.1"])
    netns.popen(["sleep", "613"])  # still running at the end: teardown stops it

def test_factory(netns_factory):
    a, b = netns_factory("a"), netns_factory("b")
    record(a.name, b.name)
    Veth("eth0", "eth0", namespace=a, peer_namespace=b, address="10.7.0.1/24", peer_address="10.7.0.2/24").create()
    b.run(["ping", "-c1", "-W2", "10.7.0.1"])

@pytest.mark.parametrize("n", range(4))
def test_same_subnet_everywhere(netlab, n):
    net = netlab.network("front", subnet="10.99.0.0/24")
    server, client = netlab.namespace("server", [net]), netlab.namespace("client", [net])
    netlab.apply()
    record(server.name, client.name, netlab.host_namespace.name)
    client.run(["ping", "-c1", "-W2", "10.99.0.2"])
    server.run(["sh", "-c", "sleep 613 >/dev/null 2>&1 &"])  # not started through pynetns: killed all the same

def test_fails(netns):
    record(netns.name)
    raise AssertionError("the namespace goes all the same")

def test_deletes_its_own(netns):
    record(netns.name)
    netns.delete()
"""


@pytest.mark.root
def test_under_xdist_every_name_is_unique_and_nothing_is_left(pytester: pytest.Pytester, tmp_path: Path) -> None:
    record = tmp_path / "names"
    pytester.makepyfile(WORKLOAD)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PT_RECORD", str(record))
        result = pytester.runpytest_subprocess("-n", "2", timeout=INNER_TIMEOUT)
    run = _run_id(result)
    try:
        result.assert_outcomes(passed=7, failed=1)
        names = record.read_text().split()
        assert len(names) == len(set(names)) == 1 + 2 + 4 * 3 + 1 + 1
        ours = [name for name in names if name.startswith("pt-")]
        assert ours and all(re.match(rf"pt-gw[01]-{run}-\d+", name) for name in ours)
        assert "pynetns leftovers" not in result.stdout.str()
        assert not set(names) & _namespaces()
        assert not _processes_running("613")
    finally:
        _delete(_of_run(run))


LEAK_NAMESPACE = """
from pynetns import Namespace

def test_leaks(monkeypatch, netns):  # monkeypatch is undone after netns' teardown: that teardown cannot delete
    monkeypatch.setattr(Namespace, "delete", lambda self: None)
"""


@pytest.mark.root
@pytest.mark.parametrize("args", [(), ("-n", "2", "--pynetns-strict-leaks")], ids=["report", "xdist-strict"])
def test_session_finish_names_a_leaked_namespace(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makepyfile(LEAK_NAMESPACE)
    result = pytester.runpytest_subprocess(*args, timeout=INNER_TIMEOUT)
    run = _run_id(result)
    try:
        result.assert_outcomes(passed=1)
        leaked = _of_run(run)
        assert len(leaked) == 1
        result.stdout.fnmatch_lines(
            [
                "*= pynetns leftovers =*",
                f"left behind: namespace {leaked.pop()} "
                "(made during test_session_finish_names_a_leaked_namespace.py::test_leaks)",
                "*`pynetns cleanup`*",
            ]
        )
        assert result.ret == (pytest.ExitCode.TESTS_FAILED if args else pytest.ExitCode.OK)
    finally:
        _delete(_of_run(run))


LEAK_LAB = """
from pynetns import Lab

def test_forgets_to_destroy(pynetns_host):
    lab = Lab(host=pynetns_host, isolated=True)
    lab.namespace("web")
    lab.apply()
    print("LAB", lab.id)
"""


@pytest.mark.root
def test_session_finish_names_a_lab_never_destroyed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LEAK_LAB)
    result = pytester.runpytest_subprocess("-s", timeout=INNER_TIMEOUT)
    match = re.search(r"LAB ([0-9a-f]+)", result.stdout.str())
    assert match, result.stdout.str()
    lab = match.group(1)
    removed = pynetns.cleanup()  # the inner process has exited: its lab is a dead owner's leftovers
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"left behind: lab lab-{lab} (id {lab}, owner pid *): namespaces pn{lab}-web, pn{lab}-host "
            "(made during test_session_finish_names_a_lab_never_destroyed.py::test_forgets_to_destroy)",
            "*`pynetns cleanup`*pynetns.cleanup()*",
        ]
    )
    assert sorted(removed) == [
        f"names folder /etc/netns/pn{lab}-web",
        f"namespace pn{lab}-host",
        f"namespace pn{lab}-web",
    ]


@pytest.mark.root
def test_fixtures_in_this_suite(netns: pynetns.Namespace, netns_factory: NamespaceFactory, netlab: pynetns.Lab) -> None:
    """The plugin is active in pynetns' own suite too (the entry point): the fixtures work side by side."""
    assert netns.exists() and netns.name.startswith("pt-")
    assert netns_factory.namespaces == [netns]
    net = netlab.network("n", subnet="10.98.0.0/24")
    web = netlab.namespace("web", [net])
    netlab.apply()
    assert web.exists()


DOWNSTREAM_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def pynetns_topology_file(pytestconfig):
    return pytestconfig.rootpath / "shop.toml"

@pytest.fixture(scope="module")
def pair(netlab_factory):
    lab = netlab_factory("pair")
    net = lab.network("n", subnet="10.97.0.0/24")
    lab.namespace("server", [net])
    lab.namespace("client", [net])
    lab.apply()
    yield lab
    lab.destroy()
"""

DOWNSTREAM = """
import os
from pynetns.servers import http_server_argv

def test_served(pair):
    server = pair["server"].popen(http_server_argv(str(pair.ip("server")), 8000, body="hi"))
    pair["server"].wait_for_port(8000)
    url = f"http://{pair.ip('server', 'n')}:8000/"
    assert pair["client"].run(["curl", "-sS", "--max-time", "5", url]).stdout.startswith("hi")
    server.stop()
    assert server.stdout_text == ""

def test_slow(pair):
    pair.impair("client", delay="20ms")
    assert pair.endpoint("client").impairment is not None  # netem, or the userspace engine without it
    pair["client"].run(["ping", "-c1", "-W2", str(pair.ip("server"))])

def test_topology(pynetns_topology):
    web = pynetns_topology["web"]
    web.run(["ping", "-c1", "-W2", str(pynetns_topology.ip("db"))])
    with open(os.environ["PT_RECORD"], "a") as out:
        made = [*pynetns_topology.namespaces.values(), pynetns_topology.host_namespace]
        out.write("".join(ns.name + "\\n" for ns in made))
"""


@pytest.mark.root
def test_a_downstream_project_with_module_and_session_labs(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makeconftest(DOWNSTREAM_CONFTEST)
    pytester.makepyfile(test_downstream=DOWNSTREAM)
    shop = Path(__file__).parents[1] / "data" / "topologies" / "shop.toml"
    (pytester.path / "shop.toml").write_text(shop.read_text())
    record = tmp_path / "names"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PT_RECORD", str(record))
        result = pytester.runpytest_subprocess("-n", "2", "--pynetns-require", timeout=INNER_TIMEOUT)
    run = _run_id(result)
    try:
        result.assert_outcomes(passed=3)
        names = set(record.read_text().split())
        assert len(names) == 4 and not names & _namespaces()  # the topology's lab is gone with the session
        assert not _of_run(run) and "pynetns leftovers" not in result.stdout.str()
    finally:
        _delete(_of_run(run))
