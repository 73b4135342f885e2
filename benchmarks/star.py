"""Build and destroy the same star topology four ways in one run, and compare.

One network (a bridge in a throwaway namespace that plays the host, with
outbound NAT), N namespaces each with a veth ``eth0``, an address, a default
route and one published TCP port (host port 20000+i → 80):

  (a) pynetns ``Lab(isolated=True)``; its members resolve each other by name (one ``/etc/netns/NAME``
      link each, to its files in /run), which (a') leaves out: ``Lab(isolated=True, names=False)``,
      the same work as (d)
  (b) naive: one process per command, as Mininet does (``nft add rule`` per port)
  (c) pyroute2 (netlink from Python) for the links, when installed; pyroute2 has no
      usable nftables API, so its rules go in one ``nft -f`` as in (d)
  (d) a hand-written raw script: one ``ip -batch`` for the host side, one per
      namespace, one ``nft -f``
  (e) the same ``Lab(isolated=True)`` as (a) on ``Host.rootless()``: every command enters a
      rootless sandbox (``nsenter -U -m -n -p -t PID``). The sandbox is started before the
      clock starts and ended after it stops (its start is printed on its own line): the row
      compares Lab up + down, as issue 12 asks. In a user namespace nft (1.0.6 at least) cannot
      raise its netlink send buffer (SO_SNDBUFFORCE needs the machine's CAP_NET_ADMIN), so one
      ``nft -f`` of more than ~100 published ports (~400 rules) fails: "Message too long"; such
      a row says "failed" and why. ``--no-ports`` compares the star without them.

Everything happens in namespaces the benchmark creates (the machine's own
firewall and sysctls are never touched).

Run as root:  python benchmarks/star.py -n 200
              python benchmarks/star.py --scaling     (pynetns' time per namespace, N=50 vs N=400)
              python benchmarks/star.py --rootless 50,200   (only (a) and (e), side by side per N)
As another user only (e) runs (the other ways need root).
"""

from __future__ import annotations

import argparse
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Callable

from pynetns import Host, Lab, PynetnsError
from pynetns.sandbox import privileged


def run(argv: list[str], input: str | None = None) -> None:
    subprocess.run(argv, input=input, text=True, check=True, capture_output=True)


def hosts(n: int) -> list[str]:
    # 10.200.0.0/16: gateway .0.1, containers from .0.2 on
    return [f"10.200.{(i + 2) // 256}.{(i + 2) % 256}" for i in range(n)]


def nft_script(n: int) -> str:
    """The rules of (b)-(d): DNAT per published port, and masquerade for the subnet."""
    lines = [
        "add table ip bench",
        "add chain ip bench prerouting { type nat hook prerouting priority -100; policy accept; }",
        "add chain ip bench postrouting { type nat hook postrouting priority 100; policy accept; }",
        'add rule ip bench postrouting ip saddr 10.200.0.0/16 oifname != "br0" masquerade',
    ]
    lines += [
        f"add rule ip bench prerouting tcp dport {20000 + index} dnat to {ip}:80" for index, ip in enumerate(hosts(n))
    ]
    return "\n".join(lines) + "\n"


def pynetns_lab(n: int, prefix: str, host: Host | None = None, ports: bool = True, names: bool = True) -> None:
    """(a): ``ports=False`` leaves out the published ports (the star's links and addresses only); ``names=False``
    the names files, (a')."""
    with Lab(isolated=True, host=host, names=names) as lab:
        net = lab.network("net", subnet="10.200.0.0/16")
        for index in range(n):
            namespace = lab.namespace(f"c{index}", networks=[net])
            if ports:
                lab.publish(namespace, 20000 + index, 80)
        lab.apply()


class Rootless:
    """(e): the Lab of (a) on one rootless sandbox, started once (outside the timed part) and reused."""

    def __init__(self, ports: bool = True) -> None:
        self.ports = ports
        started = time.perf_counter()
        self.host = Host.rootless()
        self.startup = time.perf_counter() - started

    def __call__(self, n: int, prefix: str) -> None:
        pynetns_lab(n, prefix, self.host, self.ports)

    def close(self) -> None:
        self.host.close()


def processes(host: Host, n: int, ports: bool) -> int:
    """How many processes one Lab up + down on ``host`` starts (``host.capture()``)."""
    with host.capture() as calls:
        pynetns_lab(n, "", host, ports)
    return len(calls)


def side_by_side(counts: list[int], rootless: Rootless) -> None:
    """(a) and (e) at each N, alternating, best of five each; the processes each starts."""
    root = privileged()
    ports = rootless.ports

    def root_lab(n: int, prefix: str) -> None:
        pynetns_lab(n, prefix, None, ports)

    what = "" if ports else " without published ports"
    print(
        f"pynetns Lab(isolated=True){what}, up + down; the rootless sandbox started in {rootless.startup * 1000:.0f} ms"
    )
    print(f"  {'N':>4}  {'root':>8}  {'rootless':>8}  {'ratio':>5}  processes root/rootless")
    for n in counts:
        best = {"root": float("inf"), "rootless": float("inf")}
        try:
            for attempt in range(5):  # which goes first alternates: the second follows the first's teardown
                ways = [("root", root_lab), ("rootless", rootless)] if root else [("rootless", rootless)]
                for key, function in ways[:: 1 if attempt % 2 else -1]:
                    best[key] = min(best[key], measure(function, n))
        except PynetnsError as error:
            print(f"  {n:>4}  failed: {str(error).splitlines()[0]}")
            continue
        if not root:
            print(f"  {n:>4}  {'-':>8}  {best['rootless']:7.2f}s  {'-':>5}  -/{processes(rootless.host, n, ports)}")
            continue
        ratio = best["rootless"] / best["root"]
        started = f"{processes(Host(), n, ports)}/{processes(rootless.host, n, ports)}"
        print(
            f"  {n:>4}  {best['root']:7.2f}s  {best['rootless']:7.2f}s  {ratio:5.2f}  {started} (target ratio <= 1.3)"
        )


def naive(n: int, prefix: str) -> None:
    hostns = f"{prefix}h"
    run(["ip", "netns", "add", hostns])
    run(["ip", "-n", hostns, "link", "set", "lo", "up"])
    run(["ip", "-n", hostns, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", hostns, "addr", "add", "10.200.0.1/16", "dev", "br0"])
    run(["ip", "-n", hostns, "link", "set", "br0", "up"])
    for index, ip in enumerate(hosts(n)):
        ns = f"{prefix}{index}"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", hostns, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", hostns, "link", "set", f"v{index}", "master", "br0"])
        run(["ip", "-n", hostns, "link", "set", f"v{index}", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/16", "dev", "eth0"])
        run(["ip", "-n", ns, "route", "add", "default", "via", "10.200.0.1"])
    nft = ["ip", "netns", "exec", hostns, "nft"]
    run(["ip", "netns", "exec", hostns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    for line in nft_script(n).splitlines():
        run([*nft, *line.replace('"', "").split()])
    for index in range(n):
        run(["ip", "netns", "delete", f"{prefix}{index}"])
    run(["ip", "netns", "delete", hostns])


def raw_script(n: int, prefix: str) -> None:
    hostns = f"{prefix}h"
    names = [f"{prefix}{index}" for index in range(n)]
    run(["ip", "-batch", "-"], "".join(f"netns add {name}\n" for name in [hostns, *names]))
    lines = ["link set lo up", "link add br0 type bridge", "addr add 10.200.0.1/16 dev br0", "link set br0 up"]
    for index, name in enumerate(names):
        lines += [f"link add v{index} master br0 up type veth peer name eth0 netns {name}"]
    run(["ip", "-n", hostns, "-batch", "-"], "\n".join(lines) + "\n")
    for name, ip in zip(names, hosts(n), strict=True):
        script = f"link set lo up\nlink set eth0 up\naddr add {ip}/16 dev eth0\nroute add default via 10.200.0.1\n"
        run(["ip", "-n", name, "-batch", "-"], script)
    run(["ip", "netns", "exec", hostns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run(["ip", "netns", "exec", hostns, "nft", "-f", "-"], nft_script(n))
    run(["ip", "-batch", "-"], "".join(f"netns delete {name}\n" for name in [*names, hostns]))


def pyroute2_way(n: int, prefix: str) -> None:
    from pyroute2 import NetNS, netns

    hostns = f"{prefix}h"
    names = [f"{prefix}{index}" for index in range(n)]
    netns.create(hostns)
    with NetNS(hostns) as host:
        host.link("set", index=host.link_lookup(ifname="lo")[0], state="up")
        host.link("add", ifname="br0", kind="bridge")
        bridge = host.link_lookup(ifname="br0")[0]
        host.addr("add", index=bridge, address="10.200.0.1", prefixlen=16)
        host.link("set", index=bridge, state="up")
        for index, (name, ip) in enumerate(zip(names, hosts(n), strict=True)):
            netns.create(name)
            host.link("add", ifname=f"v{index}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
            veth = host.link_lookup(ifname=f"v{index}")[0]
            host.link("set", index=veth, master=bridge, state="up")
            with NetNS(name) as inside:
                inside.link("set", index=inside.link_lookup(ifname="lo")[0], state="up")
                eth0 = inside.link_lookup(ifname="eth0")[0]
                inside.link("set", index=eth0, state="up")
                inside.addr("add", index=eth0, address=ip, prefixlen=16)
                inside.route("add", dst="default", gateway="10.200.0.1")
    run(["ip", "netns", "exec", hostns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    run(["ip", "netns", "exec", hostns, "nft", "-f", "-"], nft_script(n))
    for name in [*names, hostns]:
        netns.remove(name)


def measure(function: Callable[[int, str], None], n: int) -> float:
    prefix = f"bn{secrets.token_hex(2)}-"
    started = time.perf_counter()
    function(n, prefix)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=200, help="namespaces in the star (default 200)")
    parser.add_argument("--scaling", action="store_true", help="only (a), at N=50 and N=400: time per namespace")
    parser.add_argument(
        "--rootless",
        metavar="N,N",
        help="only (a) and (e) at these N (e.g. 50,200), side by side: best of five, ratio, processes started",
    )
    parser.add_argument("--no-ports", action="store_true", help="with --rootless: a star without published ports")
    args = parser.parse_args()
    if args.rootless:
        counts = [int(count) for count in args.rootless.split(",")]
        rootless = Rootless(ports=not args.no_ports)
        try:
            measure(rootless, 5)  # warm up, as --scaling does
            if privileged():
                measure(pynetns_lab, 5)
            side_by_side(counts, rootless)
        finally:
            rootless.close()
        return 0
    if args.scaling:
        measure(pynetns_lab, 10)  # warm up (imports, the firewall's detection), so N=50 is not charged for it
        small, large = (measure(pynetns_lab, count) / count for count in (50, 400))
        print(
            f"pynetns Lab, up + down: {small * 1000:.2f} ms/ns at N=50, {large * 1000:.2f} ms/ns at N=400, "
            f"ratio {large / small:.2f} (target <= 1.3)"
        )
        return 0
    rootless = Rootless()
    ways: dict[str, Callable[[int, str], None]] = {}
    if privileged():
        # (e) right after (a): both then follow one star's teardown, which the kernel finishes in the background
        ways["(a) pynetns Lab"] = pynetns_lab
        ways["(a') pynetns Lab, names=False"] = lambda n, prefix: pynetns_lab(n, prefix, names=False)
        ways["(e) pynetns Lab, rootless"] = rootless
        ways["(b) naive, a process per command"] = naive
        ways["(d) raw ip -batch script"] = raw_script
        try:
            import pyroute2  # noqa: F401

            ways["(c) pyroute2"] = pyroute2_way
        except ImportError:
            print("pyroute2 not installed: (c) skipped (pip install pyroute2)")
    else:
        print("not root: only (e) runs")
        ways["(e) pynetns Lab, rootless"] = rootless
    times: dict[str, float | str] = {}
    try:
        for label, function in ways.items():
            try:
                times[label] = measure(function, args.n)
            except PynetnsError as error:
                times[label] = str(error).splitlines()[0]
    finally:
        rootless.close()
    base = times.get("(a) pynetns Lab")
    print(f"star topology, N={args.n} namespaces, up + down")
    for label, seconds in sorted(times.items()):
        if isinstance(seconds, str):
            print(f"  {label:<36} failed: {seconds}")
            continue
        ratio = f"x{seconds / base:5.2f} of (a)" if isinstance(base, float) else ""
        print(f"  {label:<36} {seconds:7.2f} s   {seconds / args.n * 1000:6.2f} ms/ns   {ratio}".rstrip())
    print(f"  (e)'s sandbox started in {rootless.startup * 1000:.0f} ms, outside the timed part")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"  peak RSS: this process {own:.1f} MiB, largest child {children:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
