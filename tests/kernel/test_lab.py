"""Labs on the real kernel: networks, IPAM, incremental apply, rollback, crash cleanup.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_lab.py.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pynetns import CommandError, Host, Namespace, SubnetOverlap
from pynetns.lab import Lab, cleanup, labs, runtime_dir
from tests.support.lab import FailOn, assert_gone, leftovers, ping

pytestmark = []


@pytest.fixture
def runtime():
    """The runtime directory of this test session (one per xdist worker, see conftest)."""
    return runtime_dir().parent


root = pytest.mark.root


@root
@pytest.mark.parametrize("isolated", [True, False], ids=["isolated", "host"])
def test_networks_namespaces_and_incremental_apply(isolated, request):
    host = None if isolated else request.getfixturevalue("playhost")  # a host lab changes "the host": play one
    with Lab("multi", host=host, isolated=isolated) as lab:
        front = lab.network("front", subnet="10.71.0.0/24" if isolated else None)
        back = lab.network("back")
        web = lab.namespace("web", networks=[front, back])
        api = lab.namespace("api", networks=[front])
        lab.apply()
        assert {item.name for item in web.interfaces()} == {"lo", "eth0", "eth1"}
        assert ping(web, lab.endpoints[2].ip.ip)  # web -> api within front
        assert ping(api, front.gateway.ip)
        assert lab.plan() == []  # re-applying an unchanged lab is a no-op
        lab.apply()
        db = lab.namespace("db", networks=[back])
        lab.apply()
        assert ping(db, web.interface("eth1").addresses[0].ip)
        assert [record.id for record in labs()] == [lab.id] and labs()[0].alive
        if isolated:
            assert lab.host_namespace is not None
            assert lab.host_namespace.interface(front.bridge).alias == lab.tag
        lab_id = lab.id
    assert_gone(lab_id)
    assert labs() == []


@root
def test_isolated_labs_reuse_the_same_subnet_side_by_side():
    with Lab(isolated=True) as one, Lab(isolated=True) as two:
        for lab in (one, two):
            net = lab.network("net", subnet="10.99.0.0/24")
            lab.namespace("a", networks=[net])
            lab.namespace("b", networks=[net])
            lab.apply()
        assert ping(one.namespaces["a"], "10.99.0.3") and ping(two.namespaces["a"], "10.99.0.3")
        ids = one.id, two.id
    for lab_id in ids:
        assert_gone(lab_id)


@root
def test_a_host_lab_refuses_a_subnet_on_a_host_route(playhost):
    with Lab(host=playhost) as taken:
        net = taken.network("a")
        taken.namespace("n", networks=[net])
        taken.apply()
        with pytest.raises(SubnetOverlap):
            Lab(host=playhost).network("b", subnet=str(net.subnet))
        lab_id = taken.id
    assert_gone(lab_id)


@root
@pytest.mark.parametrize("needle", ["link add pn", "addr add 10.72.0.3", "route add default"])
def test_rollback_after_a_failure_in_the_middle_leaves_nothing(needle):
    lab = Lab(host=Host(runner=FailOn(needle)), isolated=True)
    net = lab.network("net", subnet="10.72.0.0/24")
    lab.namespace("a", networks=[net])
    lab.namespace("b", networks=[net])
    with pytest.raises(CommandError) as caught:
        lab.apply()
    assert needle in (caught.value.line or "")
    assert_gone(lab.id)
    lab.destroy()


CHILD = textwrap.dedent("""
    import sys
    from pynetns import Host
    from pynetns.lab.lab import Lab
    from pynetns.runner import LocalRunner
    host = Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + sys.argv[2]))) if sys.argv[2:] else None
    lab = Lab("crashy", host=host, isolated=sys.argv[1] == "isolated")
    net = lab.network("net", subnet="10.73.0.0/24" if sys.argv[1] == "isolated" else None)
    server = lab.namespace("server", networks=[net])
    lab.namespace("client", networks=[net])
    lab.apply()
    server.popen(["sleep", "300"])
    print(lab.id, flush=True)
    sys.stdin.read()
""")


@root
@pytest.mark.parametrize("mode", ["isolated", "host"])
def test_cleanup_after_sigkill_of_the_owner(mode, runtime, request):
    argv = [sys.executable, "-c", CHILD, mode]
    host = None
    if mode == "host":
        host = request.getfixturevalue("playhost")
        argv.append(host.runner.wrap[-1].rsplit("/", 1)[1])
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ})
    lab_id = child.stdout.readline().strip()
    assert lab_id and leftovers(lab_id)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdin.close()
    child.stdout.close()
    record = next(record for record in labs() if record.id == lab_id)
    assert not record.alive
    removed = cleanup(host)
    assert any("namespace" in item for item in removed)
    assert_gone(lab_id)
    assert labs() == []


@root
def test_cleanup_leaves_live_labs_and_untagged_objects_alone(names, host, runtime):
    with Lab(isolated=True) as lab:
        lab.namespace("a")
        lab.apply()
        # a stale journal that names a namespace pynetns did not tag
        foreign = Namespace(names("foreign"), host=host)
        subprocess.run(["ip", "netns", "add", foreign.name], check=True)
        try:
            (runtime / "labs" / "dead.json").write_text(
                json.dumps(
                    {
                        "id": "dead",
                        "name": "dead",
                        "tag": "pynetns:dead",
                        "owner_pid": 999999999,
                        "host_netns": Host().netns_key,
                        "namespaces": [foreign.name],
                        "links": ["eth0"],
                    }
                )
            )
            assert cleanup() == []
            assert foreign.exists() and lab.namespaces["a"].exists()
        finally:
            subprocess.run(["ip", "netns", "delete", foreign.name], check=True)
        lab_id = lab.id
    assert_gone(lab_id)


@root
def test_two_labs_built_concurrently_from_separate_processes(runtime):
    script = textwrap.dedent("""
        from pynetns.lab.lab import Lab
        with Lab(isolated=True) as lab:
            net = lab.network("net", subnet="10.74.0.0/24")
            for index in range(8):
                lab.namespace(f"n{index}", networks=[net])
            lab.apply()
            lab.namespaces["n0"].run(["ping", "-c1", "-W1", "10.74.0.9"])
            print("ok", lab.id, flush=True)
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    for output in outputs:
        assert output.startswith("ok ")
        assert_gone(output.split()[1])


@root
def test_the_journal_and_its_folders_go_with_the_lab(runtime):
    with Lab(isolated=True) as lab:
        lab.namespace("a")
        lab.apply()
        assert lab.journal_path.exists() and lab.journal_path.parent.parent == runtime
    assert not runtime.exists()  # the folders pynetns made for the journal are gone too
