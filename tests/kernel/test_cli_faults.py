"""Partitions and impairment from topology files and the command line, on real namespaces; SCTP publishing.

Every lab here is isolated (its host side is a namespace of its own) and every firewall change happens in a
throwaway namespace: the machine's own network and firewall are never touched. Reachability is checked pair by
pair with one ping per ordered pair, all at once.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from pynetns import BackendUnavailable, Lab, PortMap
from pynetns.lab import labs
from pynetns.polling import wait_until
from pynetns.sandbox import identity
from tests.support.cli import cli, one_error_line

MEMBERS = ("a", "b", "c", "d")
HAS_SCTP = Path("/proc/net/sctp").exists()


def topology(folder: Path, token: str) -> Path:
    """An isolated lab of four namespaces on one network: b's link delayed, a and b cut from c and d."""
    path = folder / "faults.toml"
    path.write_text(
        textwrap.dedent(f"""\
        name = "faults-{token}"
        isolated = true

        [networks.net]
        subnet = "10.91.0.0/24"

        [namespaces.a]
        networks = ["net"]
        [namespaces.b]
        networks = [{{ network = "net", impair = {{ delay = "150ms" }} }}]
        [namespaces.c]
        networks = ["net"]
        [namespaces.d]
        networks = ["net"]

        [[partition]]
        groups = [["a", "b"], "c,d"]
        """)
    )
    return path


def reachability(members: dict[str, str], addresses: dict[str, str]) -> dict[tuple[str, str], bool]:
    """(source, destination) → whether one ping answers, for every ordered pair, all pings at once."""
    pings = {
        (source, destination): subprocess.Popen(
            ["ip", "netns", "exec", members[source], "ping", "-c1", "-W2", addresses[destination]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for source in members
        for destination in members
        if source != destination
    }
    return {pair: process.wait(timeout=30) == 0 for pair, process in pings.items()}


def expected(drops: dict[str, list[str]]) -> dict[tuple[str, str], bool]:
    """A ping answers when neither the request nor the reply is dropped."""
    return {
        (source, destination): source not in drops.get(destination, ()) and destination not in drops.get(source, ())
        for source in MEMBERS
        for destination in MEMBERS
        if source != destination
    }


def rtt_min(namespace: str, address: str) -> float:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "ping", "-c2", "-i0.2", "-W3", address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = next(line for line in done.stdout.splitlines() if "min/avg/max" in line)
    return float(summary.split("=")[1].split("/")[0])


@pytest.mark.root
def test_up_impairs_and_partitions_then_the_cli_changes_the_running_lab(tmp_path, token):
    name = f"faults-{token}"
    up = cli("up", str(topology(tmp_path, token)), "--json")
    assert up.returncode == 0, up.stderr
    record = next(record for record in labs() if record.name == name)
    members = record.data["members"]
    addresses = {item["namespace"]: item["ip"].split("/")[0] for item in record.data["endpoints"]}
    engines: list[int] = []
    try:
        # what up declared: the partition, pair by pair, and b's delay (each way: at least 2 x 150 ms a round trip)
        (made,) = record.data["partitions"]
        assert made["shape"] == "groups"
        assert reachability(members, addresses) == expected(made["drops"])
        assert rtt_min(members["a"], addresses["b"]) >= 300
        (impaired,) = record.data["impairments"]
        assert (impaired["namespace"], impaired["impairment"]) == ("b", {"delay": 0.15})
        engines = [engine["pid"] for engine in impaired["engines"]]
        shown = cli("show", name).stdout.splitlines()
        assert shown[-4:-2] == ["impaired:", f"  b eth0 (net): delay 150ms, both ({impaired['mode']})"]
        assert shown[-2:] == ["partitions:", "  groups: a b | c d (8 directions cut)"]

        # heal, from this other process: the partition up made is found in the journal
        healed = cli("heal", name)
        assert healed.returncode == 0, healed.stderr
        assert healed.stdout.strip() == f"lab {name}: healed 1 partition"
        assert all(reachability(members, addresses).values())
        assert cli("heal", name).stdout.strip() == f"lab {name}: no partition was in force"

        # a shape, over every namespace, as JSON; then healed again
        shaped = cli("partition", name, "--shape", "majorities-ring", "--json")
        assert shaped.returncode == 0, shaped.stderr
        ring = json.loads(shaped.stdout)
        assert ring["shape"] == "majorities-ring" and ring["in_force"] == 1 and len(ring["cut"]) == 4
        assert reachability(members, addresses) == expected(ring["drops"])
        text = cli("partition", name, "a", "b,c", "--one-way")
        assert text.returncode == 0, text.stderr
        assert "Partition one-way" in text.stdout and "cut: a -> b, a -> c" in text.stdout
        assert "2 partition(s) in force" in text.stdout
        assert json.loads(cli("heal", name, "--json").stdout)["healed"][1]["shape"] == "one-way"
        assert all(reachability(members, addresses).values())

        # impairment: replaced, a total loss, then cleared
        lossy = cli("impair", name, "c", "--loss", "100%", "--direction", "egress", "--json")
        assert lossy.returncode == 0, lossy.stderr
        assert json.loads(lossy.stdout)["impairment"] == {"loss": 1.0}
        reach = reachability(members, addresses)
        assert not any(ok for (source, _), ok in reach.items() if source == "c")
        cleared = cli("impair", name, "b", "--clear")
        assert cleared.returncode == 0 and "impairment cleared" in cleared.stdout
        assert rtt_min(members["a"], addresses["b"]) < 150
        wait_until(lambda: all(identity(pid) is None for pid in engines), what="b's engines ended with the delay")
        journal = next(record for record in labs() if record.name == name).data
        assert [item["namespace"] for item in journal["impairments"]] == ["c"]
        engines = [engine["pid"] for engine in journal["impairments"][0]["engines"]]
        assert engines and all(identity(pid) is not None for pid in engines)

        # what is wrong says so: 1 for the lab's own refusals, 2 for the command line's
        assert "is not a namespace of this lab" in one_error_line(cli("partition", name, "a", "zz"), "partition")
        assert "no such lab" in one_error_line(cli("heal", f"none-{token}"), "heal")
        assert cli("impair", name, "a").returncode == 2
        assert cli("impair", name, "a", "--delay", "soon").returncode == 2
        assert cli("partition", name, "--shape", "thirds").returncode == 2
    finally:
        down = cli("down", name)
    assert down.returncode == 0, down.stderr
    assert not [record for record in labs() if record.name == name]
    wait_until(lambda: all(identity(pid) is None for pid in engines), what="c's engines gone with the lab")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"pn{record.id}" not in listed


@pytest.mark.root
def test_partition_and_impair_refuse_a_lab_another_process_owns(token):
    with Lab(f"owned-{token}", isolated=True) as lab:
        net = lab.network("net", subnet="10.92.0.0/24")
        lab.namespace("a", networks=[net])
        lab.namespace("b", networks=[net])
        lab.apply()
        lab.partition("a", "b")
        line = one_error_line(cli("heal", lab.name), "heal")
        assert "owned by a running process" in line
        assert lab.partitions and lab.journal_path.exists()


@pytest.mark.root
@pytest.mark.skipif(HAS_SCTP, reason="this kernel has SCTP: the refusal cannot be seen here")
def test_sctp_is_refused_before_any_change_where_the_kernel_has_none(playhost, names, token):
    bridge = names("br")  # in the namespace playing the host: it goes with it
    for argv in (
        ["link", "add", bridge, "type", "bridge"],
        ["addr", "add", "10.93.0.1/24", "dev", bridge],
        ["link", "set", bridge, "up"],
    ):
        playhost.run(["ip", *argv])
    portmap = PortMap(9000, "10.93.0.2", 9000, protocol="sctp", host=playhost)
    seen: list[tuple[str, ...]] = []
    playhost.runner.subscribe(lambda call: seen.append(call.argv))
    with pytest.raises(BackendUnavailable, match=r"needs SCTP.*/proc/net/sctp is absent.*modprobe sctp"):
        portmap.create()
    writes = [argv for argv in seen if {"-f", "iptables-restore", "-w"} & set(argv)]  # nft -f, sysctl -w
    assert writes == [] and ("stat", "-c", "%n", "/proc/net/sctp") in [argv[-4:] for argv in seen]

    lab = Lab(f"sctp-{token}", isolated=True)
    net = lab.network("net", subnet="10.93.0.0/24")
    lab.namespace("a", networks=[net])
    lab.publish("a", 9000, 9000, protocol="sctp")
    with pytest.raises(BackendUnavailable, match="published sctp ports"):
        lab.apply()
    assert not lab.journal_path.exists()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"pn{lab.id}" not in listed


@pytest.mark.root
@pytest.mark.skipif(not HAS_SCTP, reason="this kernel has no SCTP (/proc/net/sctp is absent; pynetns loads no module)")
def test_an_sctp_port_is_published_where_the_kernel_has_it(token):
    with Lab(f"sctp-{token}", isolated=True) as lab:
        net = lab.network("net", subnet="10.94.0.0/24")
        server = lab.namespace("server", networks=[net])
        client = lab.namespace("client", networks=[net])
        lab.publish("server", 9000, 7000, protocol="sctp")
        lab.apply()
        assert lab.host_namespace is not None
        code = (
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP); "
            "s.bind(('0.0.0.0', 7000)); s.listen(); c, _ = s.accept(); c.sendall(c.recv(100))"
        )
        listener = server.popen(["python3", "-c", code])
        server.wait_for_port(7000, "sctp")
        gateway = str(net.gateway.ip)
        talk = (
            "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP); "
            f"s.settimeout(5); s.connect(('{gateway}', 9000)); s.sendall(b'hi'); print(s.recv(100).decode())"
        )
        assert client.run(["python3", "-c", talk]).stdout.strip() == "hi"
        listener.stop()
