"""The Docker networking walkthrough behind ``pynetns demo``.

It rebuilds, from pynetns objects, what Docker does for ``--network none``,
``--network host`` and the default bridge network, and prints every command
it ran, so the output reads as a shell script with comments::

    $ pynetns demo
    $ python examples/docker_walkthrough.py

or from Python::

    from pynetns.cli.demo import walkthrough
    walkthrough()

As root it works on the machine itself; as any other user a rootless sandbox
(:meth:`Host.auto() <pynetns.Host.auto>`) plays the host, and ends with the demo.

This module is meant to be read: each method of :class:`Walkthrough` is one
step. Everything it creates carries a unique prefix (``pn-<4 hex>``) and is
removed at the end, also after an error or Ctrl-C. It changes no sysctl and
no firewall rule of the machine (``-p 8080:80`` is written, with the iptables
backend, in a namespace of its own that plays the host), and sends traffic only
to the namespaces it created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import secrets
import textwrap
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Protocol, TypeVar

import attrs

from ..backends.base import NetnsRef
from ..errors import DemoFailed, InvalidName, NotFound, PynetnsError, WaitTimeout
from ..firewall import PortMap
from ..host import Host
from ..lab.ipam import Allocator, pick_subnet, taken_networks
from ..links import Bridge, Veth
from ..namespace import Namespace
from ..polling import wait_until
from ..routes import Route
from ..runner import Call
from ..servers import http_server_argv
from ..validation import IPInterface, interface_name

__all__ = [
    "Container",
    "DemoFailed",
    "Walkthrough",
    "check_prefix",
    "format_calls",
    "walkthrough",
]

log = logging.getLogger(__name__)

#: the number of steps, teardown included
STEPS = 11
#: the container's port and the host port publishing it: ``-p 8080:80``
HTTP_PORT = 80
PUBLISHED_PORT = 8080
#: the iptables backend's chain of published ports, where Docker has DOCKER
DNAT_CHAIN = "PYNETNS-DNAT"
WIDTH = 78


class _KernelObject(Protocol):
    """What the demo creates (a Namespace, Bridge or Veth), as its bookkeeping sees it."""

    name: str

    def create(self) -> None: ...

    def delete(self) -> None: ...


_T = TypeVar("_T", bound=_KernelObject)


@attrs.define
class Published:
    """A published port as the demo's bookkeeping sees it: removed with the rest, newest first."""

    mapping: PortMap
    name: str = attrs.field(default=attrs.Factory(lambda self: f"-p {self.mapping}", takes_self=True))

    def create(self) -> None:
        self.mapping.create()

    def delete(self) -> None:
        self.mapping.delete()


@attrs.frozen
class Container:
    """A "container" on the bridge: its namespace, its veth pair, and its address on ``eth0``."""

    namespace: Namespace
    veth: Veth
    address: IPInterface

    @property
    def name(self) -> str:
        return self.namespace.name

    @property
    def ip(self) -> str:
        return str(self.address.ip)


def walkthrough(
    host: Host | None = None,
    out: Callable[[str], object] = print,
    prefix: str | None = None,
    *,
    commands: bool = True,
    pause: Callable[[], object] | None = None,
) -> int:
    """Run the whole walkthrough; 0 if every step showed what it should, else 1.

    ``out`` receives the transcript line by line; ``prefix`` starts the name
    of everything created (default ``pn-<4 hex>``); ``commands=False`` leaves
    the commands out; ``pause`` is called between steps. A KeyboardInterrupt
    (or any other exception) propagates — after everything was removed.
    Without ``host``: :meth:`Host.auto` — as root the machine itself, else a
    rootless sandbox, closed at the end.
    """
    named = {} if prefix is None else {"prefix": prefix}
    if host is not None:
        return Walkthrough(host, out, commands=commands, pause=pause, **named).run()
    with Host.auto() as made:
        return Walkthrough(made, out, commands=commands, pause=pause, **named).run()


@attrs.define
class Walkthrough:
    """The walkthrough's state: what it printed, what it created (to remove exactly that)."""

    host: Host
    out: Callable[[str], object] = print
    prefix: str = attrs.field(factory=lambda: f"pn-{secrets.token_hex(2)}")
    commands: bool = True
    pause: Callable[[], object] | None = None
    #: what this walkthrough created and has not removed yet, oldest first
    created: list[_KernelObject] = attrs.field(factory=list, init=False)
    #: everything it ever created, to check at the end that none of it is left
    made: list[_KernelObject] = attrs.field(factory=list, init=False)
    #: argv of programs started in the background (shown with a trailing ``&``)
    _background: set[tuple[str, ...]] = attrs.field(factory=set, init=False)
    _calls: list[Call] = attrs.field(factory=list, init=False)
    _shown: int = attrs.field(default=0, init=False)

    @prefix.validator
    def _check_prefix(self, attribute: object, value: str) -> None:
        check_prefix(value)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    # -- the walkthrough --------------------------------------------------

    def run(self) -> int:
        """Every step in order, then the cleanup, whatever happened."""
        self.out("# pynetns demo: Docker's networking, rebuilt from plain ip commands.")
        self.out(f"# Everything is named {self.prefix}-* and removed at the end, also on an error or Ctrl-C.")
        self.out("# Lines without '#' are the exact commands pynetns ran; '#   ' lines show what came back.")
        if self.host.sandbox is not None:
            self.out("# Not root: a rootless sandbox (a user namespace with its own network namespace) plays the")
            self.out("# host, and every command runs in it; as root they would run on this machine itself.")
        failure: PynetnsError | None = None
        reason = "done"
        try:
            self.network_none()
            self.network_host()
            bridge = self.default_bridge()
            c1, c2 = self.containers(bridge)
            self.ping(c1, c2)
            self.http(c2)
            self.publish(bridge, c2)
            self.enter_by_pid(c2)
            self.inspect(c1, bridge)
            self.remove_container(c1, bridge)
        except PynetnsError as error:
            log.debug("the walkthrough failed", exc_info=True)
            self.out(f"# FAILED: {error}")
            failure, reason = error, "failed"
        except BaseException:  # Ctrl-C, SIGTERM turned into an exception by the CLI, or a bug
            reason = "interrupted"
            raise
        finally:
            clean = self.teardown(reason)
        return 0 if failure is None and clean else 1

    def network_none(self) -> Namespace:
        """``docker run --network none``: a namespace of its own with only ``lo``."""
        with self.step(
            1,
            "docker run --network none",
            "Docker gives the container a new network namespace and sets up nothing in it but the loopback interface.",
        ):
            none = self.create(Namespace(self.name("none"), host=self.host))
            interfaces = none.interfaces()
            self.show(*interfaces)
            if [item.name for item in interfaces] != ["lo"]:
                raise DemoFailed(f"{none.name} should hold only lo, not {[item.name for item in interfaces]}")
            self.show(f"{none.name} can reach nothing but itself on 127.0.0.1.")
        return none

    def network_host(self) -> None:
        """``docker run --network host``: no new namespace; the host's own interfaces (only read here)."""
        with self.step(
            2,
            "docker run --network host",
            "No new namespace at all: the container shares the "
            "host's, with all its interfaces, addresses and ports. Namespace.host() is that "
            "namespace; pynetns can inspect and enter it, never delete it.",
        ):
            self.show(*Namespace.host(self.host).interfaces())
            self.show("a --network host container sees exactly these (the demo only reads them).")

    def default_bridge(self) -> Bridge:
        """``docker0``: a bridge holding the gateway address ``.1`` of a free subnet."""
        with self.step(
            3,
            "the default bridge (docker0)",
            "The Docker daemon creates the bridge docker0 "
            "and gives it the first address of its subnet, 172.17.0.0/16 unless that is in use "
            "here: the containers' gateway. (Docker also enables IP forwarding and adds NAT "
            "rules so containers reach the outside: step 7 shows the rule of a published port, in a "
            "namespace of its own.)",
        ):
            with self.host.lock():
                taken = taken_networks(self.host)
                subnet = pick_subnet(taken)
                if subnet != ipaddress.ip_network("172.17.0.0/16"):
                    self.show(f"172.17.0.0/16 overlaps a route or address here, so, like Docker, using {subnet}")
                gateway = Allocator(subnet).gateway
                bridge = self.create(Bridge(self.name("br"), address=gateway, host=self.host))
            self.show(bridge.interface())
        return bridge

    def containers(self, bridge: Bridge) -> tuple[Container, Container]:
        """Two containers on the bridge, ``.2`` and ``.3``."""
        with self.step(
            4,
            "two containers on the bridge",
            "For each container Docker makes a veth pair: "
            "one end joins docker0 (Docker names it vethXXXXXXX), the other moves into the "
            "container's namespace as eth0 with the next free address, and a default route "
            "points at the gateway.",
        ):
            assert bridge.address is not None
            addresses = Allocator(bridge.address.network)
            c1 = self.run_container(bridge, 1, addresses.allocate())
            c2 = self.run_container(bridge, 2, addresses.allocate())
            for container in (c1, c2):
                self.show(
                    f"{container.name}: eth0 {container.address}, default via {bridge.address.ip}, "
                    f"host side {container.veth.name} on {bridge.name}"
                )
        return c1, c2

    def run_container(self, bridge: Bridge, number: int, address: IPInterface) -> Container:
        """One container: namespace, veth pair (host end on the bridge, ``eth0`` inside), default route."""
        return Container(*self.plug(self.name(f"c{number}"), self.name(f"v{number}"), bridge, address), address)

    def plug(self, name: str, veth_name: str, bridge: Bridge, address: IPInterface) -> tuple[Namespace, Veth]:
        """A new namespace on ``bridge``: its ``eth0`` at ``address``, its default route via the gateway."""
        assert bridge.address is not None
        namespace = self.create(Namespace(name, host=self.host))
        veth = self.create(
            Veth(veth_name, "eth0", peer_namespace=namespace, master=bridge, peer_address=address, host=self.host)
        )
        Route("default", via=bridge.address.ip, namespace=namespace, host=self.host).create()
        return namespace, veth

    def ping(self, c1: Container, c2: Container) -> None:
        """c1 pings c2 across the bridge."""
        with self.step(
            5,
            f"ping from {c1.name} to {c2.name}",
            "Containers on the same bridge talk "
            "directly: the bridge forwards their frames like a switch. (The default bridge has "
            "no DNS between containers, so they use addresses.)",
        ):
            result = c1.namespace.run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", c2.ip], check=False)
            self.show(*(line for line in result.stdout.splitlines() if "transmitted" in line or "rtt" in line))
            if not result.ok:
                raise DemoFailed(
                    f"{c1.name} could not ping {c2.name} at {c2.ip} (with br_netfilter loaded, as on "
                    "Docker hosts, the host's FORWARD firewall rules also judge bridged traffic)"
                )

    def http(self, c2: Container) -> None:
        """An HTTP server in c2, fetched from the host at c2's address."""
        with self.step(
            6,
            f"an HTTP server in {c2.name}, fetched from the host",
            "A server in a container "
            "listens on the container's address; the host reaches it through the bridge "
            "directly (publishing a port with -p is for everyone else).",
        ):
            body = f"hello from {c2.name}"
            server = c2.namespace.popen(http_server_argv(c2.ip, HTTP_PORT, body=body))
            self._background.add(server.argv)
            url = f"http://{c2.ip}/"
            curl = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "2", url]
            root = Namespace.host(self.host)

            def fetch() -> str:
                if not server.alive():
                    raise DemoFailed(f"the HTTP server in {c2.name} exited with status {server.returncode}")
                return root.run(curl, check=False).stdout

            reply = wait_until(fetch, timeout=10, what=f"the HTTP server at {url}")
            self.show(*reply.splitlines())
            if not reply.startswith(body):
                raise DemoFailed(f"unexpected reply from {url}: {reply!r}")
            self.show("the server saw the host's request come from the gateway address, across the bridge.")

    def publish(self, bridge: Bridge, c2: Container) -> PortMap:
        """``docker run -p 8080:80``: a DNAT rule (iptables backend) in a namespace that plays the host."""
        with self.step(
            7,
            f"docker run -p {PUBLISHED_PORT}:{HTTP_PORT}: publish {c2.name}'s port",
            "Docker publishes a port with a DNAT rule in the nat table: packets to the host's port "
            f"{PUBLISHED_PORT} get {c2.name}'s address and port {HTTP_PORT}, also from 127.0.0.1 (route_localnet "
            "and a masquerade rule). So that the demo never touches this machine's firewall, a new "
            f"namespace {self.name('host')} plays the host: its eth0 sits on the bridge, like docker0's host "
            "side, and the rule is written in it with the iptables backend.",
        ):
            assert bridge.address is not None
            address = Allocator(bridge.address.network).allocate(bridge.address.network[4])
            playhost, _ = self.plug(self.name("host"), self.name("vh"), bridge, address)
            iptables = Host(runner=self.host.runner, runtime=self.host.runtime, firewall="iptables", tag=self.host.tag)
            mapping = PortMap(PUBLISHED_PORT, c2.ip, HTTP_PORT, namespace=playhost, host=iptables)
            self.create(Published(mapping))
            # what a Docker user types; "iptables" is the flavour (nft or legacy) the backend detected from it
            listing = ["iptables", "-w", "-t", "nat", "-nvL", DNAT_CHAIN]
            before = mapping.counters()
            self.show(
                f"iptables -nvL -t nat in {playhost.name}:",
                *playhost.run(listing).stdout.splitlines(),
                f"packets DNATed so far: {before.packets}",
            )
            url = f"http://localhost:{PUBLISHED_PORT}/"
            curl = ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "2", url]
            reply = wait_until(
                lambda: playhost.run(curl, check=False).stdout, timeout=10, what=f"{url} in {playhost.name}"
            )
            self.show(*reply.splitlines())
            if not reply.startswith(f"hello from {c2.name}"):
                raise DemoFailed(f"unexpected reply from {url} in {playhost.name}: {reply!r}")
            after = mapping.counters()
            self.show(
                *playhost.run(listing).stdout.splitlines(),
                f"packets DNATed: {before.packets} before curl, {after.packets} after: the rule sent "
                f"localhost:{PUBLISHED_PORT} to {c2.ip}:{HTTP_PORT}.",
            )
            if after.packets <= before.packets:
                raise DemoFailed(f"the DNAT rule for {mapping} counted no packet for {url}")
        return mapping

    def enter_by_pid(self, c2: Container) -> None:
        """``nsenter -t PID -n``: into a container's namespace through one of its processes."""
        with self.step(
            8,
            f"nsenter -t PID -n: into {c2.name} by a process's PID",
            "Docker's containers have no name under /run/netns; the way in is a process running in the "
            "container: PID=$(docker inspect -f '{{.State.Pid}}' NAME), then nsenter -t $PID -n. Here the "
            "PID is the HTTP server's, found with ip netns pids.",
        ):
            listing = self.host.ip_argv(NetnsRef.root(), self.host.links.netns_pids(c2.name))
            pids = self.host.run(listing).stdout.split()
            if not pids:
                raise DemoFailed(f"no process runs in {c2.name}")
            inside = Namespace.from_pid(int(pids[0]), host=self.host)
            interfaces = inside.interfaces()
            self.show(f"nsenter -t {pids[0]} -n ip addr:", *interfaces)
            if not any(c2.address in item.addresses for item in interfaces):
                raise DemoFailed(f"process {pids[0]} does not see {c2.name}'s address {c2.address}")

    def inspect(self, c1: Container, bridge: Bridge) -> None:
        """What exists: c1's interfaces and routes, the bridge's ports, and which veth end is c1's eth0."""
        with self.step(
            9,
            "inspect",
            "What 'ip addr', 'ip route' and 'ip link show master' show. "
            "eth0@ifN means: my peer is interface N, in another namespace (link-netnsid).",
        ):
            interfaces = c1.namespace.interfaces()
            self.show(f"inside {c1.name}:", *interfaces)
            self.show(f"routes in {c1.name}:", *c1.namespace.routes())
            self.show(f"ports of {bridge.name}:", *bridge.ports())
            eth0 = next(item for item in interfaces if item.name == "eth0")
            if eth0.peer_index is None:
                raise DemoFailed(f"eth0 in {c1.name} reports no peer")
            peer = Namespace.host(self.host).find_interface(eth0.peer_index)
            nsid = c1.namespace.netnsid()
            if peer is None or peer.peer_index != eth0.index or peer.link_netnsid != nsid:
                raise DemoFailed(f"eth0@if{eth0.peer_index} in {c1.name} has no matching veth on the host")
            self.show(
                f"eth0@if{eth0.peer_index} in {c1.name}  <->  {peer.name}@if{peer.peer_index} on the host:",
                f"ifindex {eth0.peer_index} on the host is {peer.name}, whose peer is ifindex "
                f"{peer.peer_index} in netns id {nsid} = {c1.name} (ip netns list).",
            )

    def remove_container(self, c1: Container, bridge: Bridge) -> None:
        """Delete c1's namespace and watch its host-side veth vanish."""
        with self.step(
            10,
            f"remove {c1.name}",
            "When a network namespace goes away the kernel destroys "
            "the interfaces inside; destroying one end of a veth destroys the other, so the "
            "host side vanishes too, asynchronously: poll, don't sleep.",
        ):
            self.show(f"before: {c1.veth.interface()}")
            self.remove(c1.namespace)
            started = time.monotonic()
            wait_until(lambda: not c1.veth.exists(), timeout=10, what=f"{c1.veth.name} to vanish")
            self.forget(c1.veth)
            self.show(
                f"{c1.veth.name} vanished {time.monotonic() - started:.2f} s after 'ip netns delete'; "
                "nobody deleted it.",
                f"ports of {bridge.name} now:",
                *bridge.ports(),
            )

    def teardown(self, reason: str = "done") -> bool:
        """Remove everything created, newest first; True if nothing is left.

        An interruption (Ctrl-C) during the cleanup does not cut it short: the
        object being removed is tried again, the rest removed, and then the
        interruption raised. A second one gives up.
        """
        why = {
            "done": "docker rm and docker network rm: remove everything the demo created, newest first.",
            "failed": "The demo failed; remove everything it created, newest first.",
            "interrupted": "Interrupted; remove everything the demo created, newest first.",
        }[reason]
        stop: BaseException | None = None
        if reason == "done" and self.pause is not None:
            try:
                self.pause()
            except BaseException as error:  # Ctrl-C while waiting for Enter: clean up all the same
                stop = error
        self.pause = None
        with self.step(STEPS, "clean up", why):
            clean = True
            while self.created:
                thing = self.created[-1]
                try:
                    thing.delete()
                except NotFound:
                    pass  # already gone, e.g. a veth taken away with its namespace
                except PynetnsError as error:
                    self.show(f"could not remove {thing.name}: {error}")
                    clean = False
                except BaseException as error:
                    if stop is not None:
                        raise
                    stop = error
                    self.show("interrupted; finishing the cleanup first")
                    continue  # try this one again
                self.created.pop()
            left = self.leftovers() if self.made else []
            if left:
                self.show("left behind: " + ", ".join(left))
            elif self.made:
                kernel = [thing for thing in self.made if isinstance(thing, (Namespace, Bridge, Veth))]
                self.show(f"nothing the demo made is left ({len(kernel)} namespaces and interfaces).")
        if stop is not None:
            raise stop
        return clean and not left

    def leftovers(self, timeout: float = 5.0) -> list[str]:
        """What this walkthrough made that still exists; interfaces are given ``timeout`` s to go."""
        namespaces = {item.name for item in Namespace.all(self.host)}
        left = [
            f"namespace {thing.name}"
            for thing in self.made
            if isinstance(thing, Namespace) and thing.name in namespaces
        ]
        interfaces = [thing.name for thing in self.made if isinstance(thing, (Bridge, Veth))]  # all on the host
        still_there: list[str] = []

        def gone() -> bool:
            present = {item.name for item in Namespace.host(self.host).interfaces()}
            still_there[:] = [f"interface {name}" for name in interfaces if name in present]
            return not still_there

        with contextlib.suppress(WaitTimeout):
            wait_until(gone, timeout=timeout, what="the demo's interfaces to go")
        return left + still_there

    # -- bookkeeping ------------------------------------------------------

    def create(self, thing: _T) -> _T:
        """``thing.create()``, then remember it for the cleanup (never before: what failed to be made is not ours)."""
        thing.create()
        self.created.append(thing)
        self.made.append(thing)
        return thing

    def remove(self, thing: _KernelObject) -> None:
        thing.delete()
        self.forget(thing)

    def forget(self, thing: _KernelObject) -> None:
        """It is gone (the demo removed it, or the kernel did): nothing for the cleanup to do."""
        self.created = [item for item in self.created if item is not thing]

    # -- printing ---------------------------------------------------------

    @contextlib.contextmanager
    def step(self, number: int, title: str, why: str) -> Iterator[None]:
        """Print a step's title and explanation, then the commands it runs, as they run."""
        if number > 1 and self.pause is not None:
            self.pause()
        self.out("")
        head = f"# == {number}/{STEPS}  {title} "
        self.out(head + "=" * max(3, WIDTH - len(head)))
        for line in textwrap.wrap(why, WIDTH - 2):
            self.out(f"# {line}")
        with self.host.capture() as calls:
            self._calls, self._shown = calls, 0
            try:
                yield
            finally:
                self._flush()

    def show(self, *lines: object) -> None:
        """Print a result, after the commands that produced it."""
        self._flush()
        for line in lines:
            self.out(f"#   {line}")

    def _flush(self) -> None:
        new = self._calls[self._shown :]
        self._shown = len(self._calls)
        if self.commands:
            for line in format_calls(new, self._background):
                self.out(line)


def check_prefix(prefix: str) -> str:
    """A prefix for the demo's names: safe, and short enough for ``<prefix>-br`` to be an interface name."""
    interface_name("prefix", prefix)
    if len(prefix.encode()) > 12:
        raise InvalidName("prefix", prefix, "must be at most 12 bytes (interface names get '-br', '-v1')")
    return prefix


def format_calls(calls: Sequence[Call], background: Collection[tuple[str, ...]] = ()) -> list[str]:
    """Shell lines for ``calls``: background programs end in ``&``; a command polled N times is shown once."""
    lines: list[str] = []
    for call, repeats in itertools.groupby(calls):
        first, *rest = str(call).splitlines()
        if call.argv in background:
            first += " &"
        count = len(list(repeats))
        if count > 1:
            first += f"  # polled: {count} times"
        lines += [first, *rest]
    return lines
