"""Labs on the real kernel: networks, IPAM, incremental apply, rollback, crash cleanup."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pynetns import CommandError, Host, InvalidAddress, InvalidValue, Namespace, SubnetOverlap, wait_until
from pynetns.backends.recording import RecordingRunner
from pynetns.errors import LabDestroyed
from pynetns.lab import Lab, cleanup, labs, runtime_dir
from pynetns.runner import CompletedCommand, LocalRunner


@pytest.fixture
def runtime():
    """The runtime directory of this test session (one per xdist worker, see conftest)."""
    return runtime_dir().parent


def leftovers(lab_id):
    names = [item.name for item in Namespace.all() if lab_id in item.name]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return names + [line.split(":")[1].strip() for line in links.splitlines() if f"pn{lab_id}" in line]


def assert_gone(lab_id):
    wait_until(lambda: not leftovers(lab_id), what=f"lab {lab_id} to vanish")


def ping(namespace, address):
    return namespace.run(["ping", "-c1", "-W1", str(address)], check=False).returncode == 0


# -- declaring, without root ---------------------------------------------


def test_ipam_and_explain_without_root():
    lab = Lab("plan", host=Host(dry_run=True))
    net = lab.network("front", subnet="10.20.0.0/24")
    web = lab.namespace("web", networks=[net])
    db = lab.namespace("db")
    fixed = net.connect(db, ip="10.20.0.50")
    assert [str(endpoint.ip) for endpoint in lab.endpoints] == ["10.20.0.2/24", "10.20.0.50/24"]
    assert str(net.gateway) == "10.20.0.1/24" and fixed.interface == "eth0" and fixed.namespace is db
    text = lab.explain()
    assert f"netns add {web.name}" in text and f"ip -n {web.name} -batch - <<'EOF'" in text
    assert "route add default via 10.20.0.1" in text
    with pytest.raises(InvalidAddress, match="already taken"):
        net.connect(lab.namespace("x"), ip="10.20.0.50")
    with pytest.raises(InvalidAddress, match="not a host address"):
        net.connect(lab.namespace("y"), ip="10.21.0.5")
    with pytest.raises(SubnetOverlap):
        lab.network("back", subnet="10.20.0.128/25")
    with pytest.raises(InvalidValue):
        net.connect(web)  # already connected


def test_a_destroyed_lab_says_so_and_names_its_namespaces():
    lab = Lab("gone", host=Host(dry_run=True))
    web = lab.namespace("web", networks=[lab.network("front", subnet="10.20.0.0/24")])
    assert lab.name_of(web) == "web" and lab.name_of(Namespace("other")) == "other"
    lab.apply()
    lab.destroy()
    assert lab.destroyed
    with pytest.raises(LabDestroyed, match="lab gone was destroyed"):
        lab.apply()
    with pytest.raises(LabDestroyed):
        lab.detach()


def test_default_subnets_come_from_the_pools():
    lab = Lab(host=Host(dry_run=True))
    first, second = lab.network("a"), lab.network("b")
    assert (str(first.subnet), str(second.subnet)) == ("172.17.0.0/16", "172.18.0.0/16")


# -- on the kernel --------------------------------------------------------

pytestmark = []
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


class FailOn(LocalRunner):
    """Fails the batch containing ``needle``, as if the kernel refused that line."""

    def __init__(self, needle):
        super().__init__()
        self.needle = needle

    def _execute(self, argv, input, timeout):
        if input and self.needle in input:
            lines = input.splitlines()
            number = next(i for i, line in enumerate(lines, 1) if self.needle in line)
            applied = "\n".join(lines[: number - 1]) + "\n"
            if number > 1:
                super()._execute(argv, applied, timeout)
            return CompletedCommand(argv, 2, "", f"RTNETLINK answers: injected\nCommand failed -:{number}\n")
        return super()._execute(argv, input, timeout)


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
            (runtime / "labs" / "dead.json").write_text(json.dumps(
                {"id": "dead", "name": "dead", "tag": "pynetns:dead", "owner_pid": 999999999,
                 "host_netns": Host().netns_key, "namespaces": [foreign.name], "links": ["eth0"]}))
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


def test_recording_runner_sees_one_batch_per_namespace():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner), isolated=True) as lab:
        net = lab.network("net", subnet="10.75.0.0/24", nat=False)
        for index in range(5):
            lab.namespace(f"n{index}", networks=[net])
        lab.apply()
        assert len(runner.history) == 1 + 1 + 5 + 1  # netns adds, host wiring, one batch per namespace, bridge up


def test_the_firewall_is_one_transaction_whatever_the_number_of_ports():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner, firewall="nftables"), isolated=True) as lab:
        front = lab.network("front", subnet="10.76.0.0/24")
        lab.network("back", subnet="10.77.0.0/24")
        for index in range(20):
            lab.publish(lab.namespace(f"n{index}", networks=[front]), 8000 + index, 80)
        lab.apply()
        scripts = [call for call in runner.history if call.argv[-3:] == ("nft", "-f", "-")]
        # one per IP version: the IPv6 one holds the isolation (networks are isolated for both)
        assert len(scripts) == 2 and scripts[0].input.count("dnat to") == 20
        assert "table ip6 pynetns" in scripts[1].input and "dnat to" not in scripts[1].input
        assert len(runner.history) < 20 + 16  # the batches plus a fixed handful, not a process per port
