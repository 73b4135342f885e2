"""A lab spanning two machines driven over ssh (``Host.ssh``): VXLAN between them on an underlay of their own.

Each "machine" is a network, mount and PID namespace running sshd (``tests/support/ssh.py``), reached from the
test over its own /30; the overlay runs on a second link the test makes between the two machines
(``192.0.2.1`` and ``192.0.2.2``), so the machine running the tests routes nothing. Their firewalls, sysctls,
``/run/netns`` and journals are theirs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pynetns import ConnectionLost, Lab
from pynetns.lab import cleanup
from pynetns.polling import wait_until
from tests.support.lab import ping
from tests.support.web import fetch, serve

pytestmark = pytest.mark.root


def two_machines(machines, token):
    """Two machines, their Hosts, and a direct underlay link between them."""
    first, second = machines(), machines()
    subprocess.run(
        ["ip", "-n", first.name, "link", "add", "span0", "type", "veth", "peer", "name", "span0", "netns", second.name],
        check=True,
    )
    for machine, address in ((first, "192.0.2.1/24"), (second, "192.0.2.2/24")):
        subprocess.run(["ip", "-n", machine.name, "addr", "add", address, "dev", "span0"], check=True)
        subprocess.run(["ip", "-n", machine.name, "link", "set", "span0", "up"], check=True)
    hosts = first.host(tag=f"pynetns:test-{token}-a"), second.host(tag=f"pynetns:test-{token}-b")
    return (first, second), hosts


def spanning_lab(name, a, b):
    lab = Lab(name, host=a)
    lab.machine(a, underlay="192.0.2.1", name="a")
    lab.machine(b, underlay="192.0.2.2", name="b")
    return lab


def nothing_left(machine, lab_id: str) -> bool:
    """No namespace, runtime file, rule or link of the lab on ``machine``."""
    ruleset = machine.run(["nft", "list", "ruleset"]).stdout
    links = machine.run(["ip", "-br", "link"]).stdout
    names = machine.run(["ls", "-A", "/etc/netns"], check=False).stdout  # (the machines share this /etc)
    return (
        lab_id not in names
        and not machine.namespaces()
        and not machine.runtime_files()
        and "pynetns" not in ruleset
        and lab_id not in links
    )


def test_two_ssh_machines_ping_tcp_mtu_isolation_published_port_and_partition(machines, token):
    (first, second), (a, b) = two_machines(machines, token)
    with spanning_lab("span", a, b) as lab:
        front = lab.network("front", subnet="10.61.0.0/24")
        back = lab.network("back", subnet="10.62.0.0/24")
        web = lab.namespace("web", [front])  # on a
        db = lab.namespace("db", [front], host=b)
        lab.namespace("spare", [back])  # on a: back spans a and b too
        other = lab.namespace("other", [back], host=b)
        lab.publish(db, 8080, 80)  # on machine a, for the member on b
        lab.apply()
        assert web.name in first.namespaces() and db.name in second.namespaces()
        assert ping(web, lab.ip("db")) and ping(db, lab.ip("web"))
        # TCP across the overlay, by name: each machine has its members' names files
        serve(db, "0.0.0.0", 80, "db on b")
        assert fetch(web, "http://db/") == "db on b"
        assert web.run(["getent", "hosts", "db"]).stdout.split()[:2] == [str(lab.ip("db")), "db"]
        # the MTU: 1500 on the underlay, 1450 on the overlay; a full-size packet that may not fragment passes
        for size, answered in ((1450 - 28, True), (1450 - 27, False)):
            argv = ["ping", "-c1", "-W2", "-M", "do", "-s", str(size), str(lab.ip("db"))]
            assert (web.run(argv, check=False).returncode == 0) is answered, size
        # two spanning networks are isolated from each other, on either machine
        assert ping(other, lab.ip("spare"))
        assert not ping(other, lab.ip("web")) and not ping(other, lab.ip("db"))
        # the port published on machine a reaches the member on b: from a's loopback, and from here over a's ssh link
        assert a.run(["curl", "-s", "-m", "2", "http://127.0.0.1:8080/"]).stdout.startswith("db on b")
        here = subprocess.run(["curl", "-s", "-m", "2", f"http://{first.address}:8080/"], capture_output=True)
        assert here.stdout.startswith(b"db on b")
        # a partition across the machines, then healed
        lab.partition([web], [db])
        assert not ping(web, lab.ip("db")) and not ping(db, lab.ip("web"))
        assert ping(other, lab.ip("spare"))
        lab.heal()
        assert ping(web, lab.ip("db"))
    for machine in (first, second):
        wait_until(lambda machine=machine: nothing_left(machine, lab.id), timeout=10, what=f"{machine.name} clean")


def test_the_connection_to_one_machine_lost_mid_apply_then_cleanup_leaves_nothing_on_either(machines, token):
    """Machine b's master connection dies during its part of the apply: ConnectionLost names b; what a made is
    undone at once, and ``pynetns cleanup --host`` removes what b was left with."""
    (first, second), (a, b) = two_machines(machines, token)
    lab = spanning_lab("cut", a, b)
    front = lab.network("front", subnet="10.63.0.0/24")
    lab.namespace("web", [front])
    lab.namespace("db", [front], host=b)
    lab.publish("db", 8080, 80)
    seen = 0

    def cut(call: object) -> None:
        nonlocal seen
        seen += 1
        if seen == 4:  # the journal and a first batch are there
            b.runner._master.kill()  # type: ignore[attr-defined]
            b.runner._master.wait()  # type: ignore[attr-defined]

    b.runner.subscribe(cut)
    with pytest.raises(ConnectionLost, match=second.address):
        lab.apply()
    assert seen >= 4
    wait_until(lambda: nothing_left(first, lab.id), timeout=10, what="machine a undone")
    cleanup(a)  # nothing to do there: the owner undid it
    command = [sys.executable, "-m", "pynetns", "cleanup", "--host", second.destination, "--ssh-key"]
    command += [str(second.keyfile), "--ssh-option", f"UserKnownHostsFile={second.known_hosts}"]

    def cleaned() -> bool:
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return nothing_left(second, lab.id)

    wait_until(cleaned, timeout=20, what="cleanup --host removing b's part")
    assert nothing_left(first, lab.id)
