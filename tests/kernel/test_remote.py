"""Remote Hosts over ssh, on one machine: each "machine" is a network, mount and PID namespace running sshd
(``tests/support/ssh.py``), driven by ``Host.ssh``. Its firewall and sysctls are its own (a throwaway namespace).
Size: the connection is cut at 2 positions of an apply, 2 ways, by default; ``PYNETNS_SWEEP=N`` at more.

A lab built and destroyed there (NAT, a published port), explain(), the lock and journals interoperating with a
pynetns process running on that machine, the connection killed mid-apply (then ``cleanup --host``), a missing
tool there, and a remote lab beside a local one.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from pynetns import BackendUnavailable, ConnectionLost, Host, Lab, LockTimeout
from pynetns.lab import cleanup, labs
from pynetns.polling import wait_until
from tests.support.lab import ping
from tests.support.web import fetch, serve

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parent.parent.parent
#: where the connection is cut in the 19 commands of the "cut" lab's apply: two by default (the journal is
#: written, then half-way through the namespaces' batches); ``PYNETNS_SWEEP=N`` cuts at 2 x N, up to all 19
SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))
POSITIONS = sorted({3, 12} | set(range(1, 20, max(1, 19 // (2 * SWEEP))) if SWEEP > 1 else set()))


def pynetns_there(machine, code: str, **options) -> subprocess.Popen[str]:
    """A Python process on ``machine`` using this tree's pynetns as a local user of that machine would."""
    env = {key: value for key, value in os.environ.items() if key != "PYNETNS_RUNTIME_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    argv = ["nsenter", "-t", str(machine.init), "-n", "-m", "-p", "--", sys.executable, "-c", code]
    return subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)


def lab_files(machine) -> list[str]:
    """The machine's runtime files but the host's IPv6 /48 (kept for every later lab, as Docker keeps its own)."""
    return [path for path in machine.runtime_files() if path not in ("/run/pynetns", "/run/pynetns/ipv6-ula")]


def nothing_left(machine) -> None:
    assert machine.namespaces() == []
    assert lab_files(machine) == []
    ruleset = machine.run(["nft", "list", "ruleset"]).stdout
    assert "pynetns" not in ruleset, ruleset


def test_a_remote_host_builds_and_destroys_a_lab_with_nat_and_a_published_port(machines, token):
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    with Lab("shop", host=remote) as lab:
        web = lab.namespace("web", networks=[lab.network("front", subnet="10.77.0.0/24")])
        lab.publish(web, 8080, 80)
        lab.apply()
        assert web.name in machine.namespaces()  # on the machine, not here
        assert [record.name for record in labs(remote)] == ["shop"] and labs(remote)[0].alive
        assert Path(lab.journal_path).name in " ".join(machine.runtime_files())
        serve(web, "0.0.0.0", 80, "remote web")
        # the published port, from the machine itself (its loopback and its address), through the Host's runner
        for url in ("http://127.0.0.1:8080/", f"http://{machine.address}:8080/"):
            assert remote.run(["curl", "-s", "-m", "2", url]).stdout.startswith("remote web\n")
        # and from here, across the underlay
        here = subprocess.run(["curl", "-s", "-m", "2", f"http://{machine.address}:8080/"], capture_output=True)
        assert here.stdout.startswith(b"remote web\n")
        # outbound NAT: this side has no route to 10.77.0.0/24, so only a masqueraded ping is answered
        assert ping(web, machine.local_address)
    nothing_left(machine)


def test_explain_runs_nothing_on_the_remote_machine(machines, token):
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    lab = Lab("plan", host=remote)
    lab.namespace("web", networks=[lab.network("front", subnet="10.78.0.0/24")])
    lab.publish("web", 8080, 80)
    with remote.capture() as ran:
        text = lab.explain()
    assert f"netns add pn{lab.id}-web" in text and "nft" in text
    assert [call.argv for call in ran] in ([], [("nft", "-j", "list", "tables")])  # at most the firewall's probe
    nothing_left(machine)


def test_the_lock_and_journals_are_the_machines_own(machines, token):
    """A pynetns process running on the machine and the remote Host exclude each other and see each other's labs."""
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    holder = pynetns_there(
        machine,
        "import sys; from pynetns import Host\nwith Host().lock():\n print('held', flush=True); sys.stdin.readline()",
        stdin=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(LockTimeout, match=machine.address), remote.lock(timeout=0.3):
            pass
    finally:
        holder.communicate("\n", timeout=10)
    with Lab("seen", host=remote) as lab:
        lab.namespace("web", networks=[lab.network("front", subnet="10.79.0.0/24")])
        lab.apply()
        with remote.lock():  # taken there: the machine's own process waits for it
            there = pynetns_there(
                machine, "from pynetns import Host\nwith Host().lock(timeout=0.3): pass", stdin=subprocess.DEVNULL
            )
            _, err = there.communicate(timeout=20)
            assert there.returncode != 0 and "LockTimeout" in err
        listing = pynetns_there(
            machine,
            "from pynetns.lab import labs\nprint([(r.name, r.state) for r in labs()])",
            stdin=subprocess.DEVNULL,
        )
        out, err = listing.communicate(timeout=20)
        assert out.strip() == "[('seen', 'alive')]", err
    nothing_left(machine)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("how", ["master", "session"])
def test_a_connection_lost_mid_apply_is_a_clear_error_and_cleanup_host_recovers(machines, token, position, how):
    """The ssh connection dies before the command at ``position``: the master killed here, or sshd's session
    process killed there. apply() raises ConnectionLost naming the machine; ``pynetns cleanup --host`` leaves
    nothing on it."""
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    lab = Lab("cut", host=remote)
    front = lab.network("front", subnet="10.80.0.0/24")
    for name in ("a", "b", "c"):
        lab.namespace(name, networks=[front])
    lab.publish("a", 8080, 80)
    count = 0
    runner = remote.runner

    def cut(call: object) -> None:
        nonlocal count
        count += 1
        if count == position:
            if how == "master":
                runner._master.kill()  # type: ignore[attr-defined]
                runner._master.wait()  # type: ignore[attr-defined]
            else:
                for pid in machine.sessions():
                    os.kill(pid, 9)

    runner.subscribe(cut)
    with pytest.raises(ConnectionLost, match=machine.address) as lost:
        lab.apply()
    assert count >= position and lost.value.machine == machine.destination
    # the machine lets go of the dead connection's journal; then cleanup --host removes what the lab made
    command = [sys.executable, "-m", "pynetns", "cleanup", "--host", machine.destination, "--ssh-key"]
    command += [str(machine.keyfile)]
    command += ["--ssh-option", f"UserKnownHostsFile={machine.known_hosts}", "--ssh-option", "BatchMode=yes"]

    def cleaned() -> bool:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        return machine.namespaces() == [] and machine.runtime_files() == []

    wait_until(cleaned, timeout=20, what="cleanup --host removing the lab")
    nothing_left(machine)


def test_a_missing_tool_on_the_remote_machine_names_its_package(machines, token, tmp_path):
    machine = machines()
    tools = tmp_path / "bin"  # a PATH there with ip, python3 and coreutils, without nft or iptables
    tools.mkdir()
    for program in ("ip", "stat", "mkdir", "tee", "ln", "ls", "rm", "rmdir", "cat"):
        shutil.copy(shutil.which(program), tools / program)
    (tools / "python3").write_text('#!/bin/sh\nexec /usr/bin/python3 "$@"\n')
    (tools / "python3").chmod(0o755)
    remote = machine.host(tag=f"pynetns:test-{token}", path=[str(tools)], firewall="nftables")
    with pytest.raises(BackendUnavailable, match="nftables") as missing:
        remote.run(["nft", "list", "tables"])
    assert missing.value.tool == "nft" and machine.address in str(missing.value)
    lab = Lab("bare", host=remote)
    lab.namespace("web", networks=[lab.network("front", subnet="10.81.0.0/24")])
    lab.publish("web", 8080, 80)
    with pytest.raises(BackendUnavailable, match="nftables"):
        lab.apply()
    nothing_left(machine)


def test_a_remote_lab_and_a_local_lab_side_by_side(machines, token, playhost):
    """The same lab name, the same subnet, applied at once here (on a playhost) and on the machine."""
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    results: dict[str, object] = {}

    def build(where: str, host: Host) -> None:
        try:
            with Lab("twin", host=host) as lab:
                web = lab.namespace("web", networks=[lab.network("front", subnet="10.82.0.0/24")])
                lab.publish(web, 8080, 80)
                lab.apply()
                serve(web, "0.0.0.0", 80, where)
                results[where] = fetch(lab.namespaces["web"], "http://10.82.0.1:8080/")
        except BaseException as error:  # reported below
            results[where] = error

    threads = [threading.Thread(target=build, args=args) for args in (("local", playhost), ("remote", remote))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"local": "local", "remote": "remote"}
    nothing_left(machine)


def test_stopping_a_remote_process_ends_it_there(machines, token):
    """Closing an ssh session does not end what runs in it: stop() signals the process there too."""
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    marker = f"{token}-sleeper"
    process = remote.popen(["sh", "-c", 'sleep 300; echo "$0"', marker])
    wait_until(lambda: marker in machine.run(["ps", "-eo", "args"]).stdout, what="the process there")
    process.stop()
    wait_until(lambda: marker not in machine.run(["ps", "-eo", "args"]).stdout, what="the process there to end")


def test_a_killed_owner_leaves_a_stale_lab_there_that_cleanup_removes(machines, token):
    """The process driving the machine is SIGKILLed with its lab applied: its connection ends, and with it the
    agent holding the journal there, so the lab is stale on the machine and cleanup removes it."""
    machine = machines()
    code = (
        "import sys\nfrom pynetns import Host, Lab\n"
        f"remote = Host.ssh({machine.destination!r}, keyfile={str(machine.keyfile)!r}, ssh_opts={machine.ssh_opts!r})\n"
        "lab = Lab('doomed', host=remote)\n"
        "lab.namespace('web', networks=[lab.network('front', subnet='10.83.0.0/24')])\n"
        "lab.publish('web', 8080, 80)\nlab.apply()\nprint('applied', flush=True)\nsys.stdin.readline()\n"
    )
    scratch = tempfile.mkdtemp(prefix="pn-")  # its control socket's folder: a SIGKILL leaves it (short: a socket path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": scratch}
    owner = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == b"applied\n"
        remote = machine.host(tag=f"pynetns:test-{token}")
        assert [(record.name, record.state) for record in labs(remote)] == [("doomed", "alive")]
    finally:
        owner.kill()
        owner.wait()
        shutil.rmtree(scratch)
    wait_until(lambda: [record.state for record in labs(remote)] == ["stale"], what="the lab there to go stale")
    removed = cleanup(remote)
    assert any(item.startswith("namespace pn") for item in removed)
    nothing_left(machine)


def test_a_dual_stack_lab_on_a_remote_host_answers_on_its_loopback_of_both_families(machines, token):
    """The IPv6 /48 is drawn and kept on the machine; the [::1] proxy runs there (by its source: nothing of
    pynetns is installed there), and ends with the lab."""
    machine = machines()
    remote = machine.host(tag=f"pynetns:test-{token}")
    with Lab("dual", host=remote) as lab:
        web = lab.namespace("web", networks=[lab.network("front", subnet="10.84.0.0/24", ipv6=True)])
        lab.publish(web, 8080, 80)
        lab.apply()
        ula = machine.run(["cat", "/run/pynetns/ipv6-ula"]).stdout.strip()
        assert lab.ip(web, "front", version=6) in ipaddress.IPv6Network(ula)
        serve(web, "::", 80, "dual web")
        for url in ("http://127.0.0.1:8080/", "http://[::1]:8080/", f"http://[{lab.ip(web, 'front', version=6)}]/"):
            assert remote.run(["curl", "-g", "-s", "-m", "2", url]).stdout.startswith("dual web\n"), url
    nothing_left(machine)
