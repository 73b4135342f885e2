"""The same lab on a remote Host (over ssh) and on the local one, side by side in one run.

The lab of benchmarks/star.py's (a): ``Lab(isolated=True)``, one network, N namespaces each with an
address, a default route and a published TCP port, up + down. Locally, on ``Host()``; remotely, on
``Host.ssh(...)``: every command a session over one master connection, a batch one remote process, the
journals and the lock on that machine. The connection is opened before the clock starts (its time is
printed on its own line); the best of ``--rounds`` runs of each, alternating, is compared.

By default the "remote machine" is made here, as the tests make them (tests/support/ssh.py): a network,
mount and PID namespace running sshd, reached over a veth underlay, so the row measures pynetns' ssh path
(ssh multiplexing, the remote shell, the holder) without a real network's latency. ``--host`` measures a real
machine instead (its round-trip time adds to every command).

Run as root:  python benchmarks/remote.py -n 50
              python benchmarks/remote.py -n 50 --host root@lab-2 [--ssh-key FILE] [--ssh-option OPT]
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from pynetns import Host, Lab
from pynetns.sandbox import privileged


def lab(n: int, host: Host) -> None:
    with Lab(isolated=True, host=host) as built:
        net = built.network("net", subnet="10.200.0.0/16")
        for index in range(n):
            namespace = built.namespace(f"c{index}", networks=[net])
            built.publish(namespace, 20000 + index, 80)
        built.apply()


def timed(n: int, host: Host) -> float:
    started = time.perf_counter()
    lab(n, host)
    return time.perf_counter() - started


def processes(n: int, host: Host) -> int:
    with host.capture() as calls:
        lab(n, host)
    return len(calls)


def simulated_machine() -> Any:
    """A machine as the tests make them (tests/support/ssh.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.ssh import Machine, sshd_reason

    reason = sshd_reason()
    if reason is not None:
        raise SystemExit(f"cannot simulate a machine: {reason}")
    token = secrets.token_hex(3)
    return Machine.start(f"bmach-{token}", f"bul-{token}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=50, help="namespaces in the lab (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternating; the best counts (3)")
    parser.add_argument("--host", metavar="[USER@]MACHINE", help="a real machine (default: one simulated here)")
    parser.add_argument("--ssh-key", metavar="FILE", help="with --host: the ssh key")
    parser.add_argument("--ssh-option", metavar="OPT", action="append", default=[], help="with --host: ssh -o OPT")
    args = parser.parse_args()
    if not privileged():
        print("needs root (the local lab, and a simulated machine)", file=sys.stderr)
        return 2
    machine = None
    try:
        started = time.perf_counter()
        if args.host is None:
            machine = simulated_machine()
            where = f"a machine simulated here ({machine.destination}, sshd in namespaces)"
            remote = machine.host()
        else:
            options = [item for option in args.ssh_option for item in ("-o", option)]
            where = args.host
            remote = Host.ssh(args.host, keyfile=args.ssh_key, ssh_opts=options)
        remote.netns_key  # noqa: B018  (the connection and its agents: outside the clock)
        remote.runtime.journals()
        connect = time.perf_counter() - started
        local = Host()
        timed(5, local)  # warm up both (imports, the firewall's detection)
        timed(5, remote)
        local_times, remote_times = [], []
        for _ in range(args.rounds):
            local_times.append(timed(args.n, local))
            remote_times.append(timed(args.n, remote))
        local_best, remote_best = min(local_times), min(remote_times)
        count_local, count_remote = processes(args.n, local), processes(args.n, remote)
        print(f"lab of N={args.n} namespaces (a published port each), up + down, best of {args.rounds}")
        print(f"  remote Host: {where}; connected, its agents started, in {connect * 1000:.0f} ms (not timed)")
        print(f"  {'where':<8} {'seconds':>8} {'ms/ns':>7} {'processes':>10}")
        print(f"  {'local':<8} {local_best:8.2f} {local_best / args.n * 1000:7.2f} {count_local:>10}")
        print(f"  {'remote':<8} {remote_best:8.2f} {remote_best / args.n * 1000:7.2f} {count_remote:>10}")
        print(f"  remote / local: x{remote_best / local_best:.2f} (target <= 1.5)")
        remote.close()
    finally:
        if machine is not None:
            machine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
