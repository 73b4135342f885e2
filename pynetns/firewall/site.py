"""The firewall of one namespace of one host, as pynetns reads and changes it, and the host's path to a container.

Every command a :class:`Site` runs is made by a backend (the Host's firewall
and link backends, iptables for the FORWARD chains); it runs them only when
a transaction reads or writes. A site made with ``reads=False`` (what
:func:`~pynetns.firewall.preview` uses) answers every probe of the path to a
container with "unknown" and runs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

import attrs

from ..backends import get_backend
from ..backends.base import Family, FirewallBackend, FirewallState, Scope
from ..errors import BackendUnavailable, CommandError, NotFound, from_command
from ..host import Host
from ..namespace import Namespace
from ..validation import interface_name

__all__ = ["HostPath", "Site", "hairpin_key", "localnet_key", "refuse_without_sctp"]

log = logging.getLogger(__name__)

#: what ``ip netns exec`` and ``nsenter`` say when the program is not installed
_NOT_EXECUTED = re.compile(r"exec of .* failed: No such file|failed to execute .*: No such file")


def localnet_key(device: str) -> str:
    return f"net.ipv4.conf.{device}.route_localnet"


def hairpin_key(port: str) -> str:
    return f"hairpin.{port}"


@attrs.frozen
class HostPath:
    """How the host reaches a mapping's container: the device (for route_localnet), the bridge port (hairpin)."""

    localnet: str | None = None
    hairpin_port: str | None = None
    #: the settings are the caller's to make (a Lab sets them on devices it owns, so nothing is recorded)
    managed: bool = False

    def keys(self) -> list[str]:
        if self.managed:
            return []
        return ([localnet_key(self.localnet)] if self.localnet else []) + (
            [hairpin_key(self.hairpin_port)] if self.hairpin_port else []
        )


def refuse_without_sctp(host: Host, what: str, where: Namespace | None = None) -> None:
    """:class:`BackendUnavailable` for ``what`` if the kernel has no SCTP as seen from ``where`` (default: the Host's
    namespace); nothing on a dry run. pynetns loads no kernel module: ``modprobe sctp`` is the user's choice."""
    if host.dry_run:
        return
    namespace = Namespace.host(host) if where is None else where
    result = namespace.run(host.links.sctp_probe(), check=False)
    if result.returncode != 0:
        detail = (
            f"{what} needs SCTP, and this kernel has none loaded (/proc/net/sctp is absent); pynetns loads no "
            "kernel module: 'modprobe sctp' first where the kernel has it, or publish tcp or udp"
        )
        raise BackendUnavailable("sctp", detail=detail)


class Site:
    """The firewall of one namespace of one host: its lock, the reads of a transaction, and its writes."""

    def __init__(self, namespace: Namespace, *, reads: bool = True) -> None:
        self.namespace = namespace
        self.host: Host = namespace.host
        self.where = namespace.ref
        #: False: a plan only (preview); the path probes answer "unknown" and nothing runs
        self.reads = reads
        self._listeners: dict[str, tuple[Sequence[str], str]] = {}
        self._sctp: bool | None = None

    def listeners(self, protocol: str) -> tuple[Sequence[str], str]:
        """``ss``'s listening sockets of ``protocol`` here (argv and output), read once per transaction."""
        if protocol not in self._listeners:
            argv = self.host.links.listeners(protocol)
            try:  # a failed ss must not pass for "no process listens"
                listing = self.run(argv).stdout
            except CommandError as error:
                if _NOT_EXECUTED.search(error.stderr):  # ip netns exec / nsenter found no ss
                    detail = f"in {self.namespace.name}: {error.stderr.strip()}"
                    raise BackendUnavailable("ss", detail=detail) from error
                raise
            self._listeners[protocol] = (argv, listing)
        return self._listeners[protocol]

    def refuse_without_sctp(self, what: str) -> None:
        """Refuse ``what`` (a port map on SCTP) where the kernel has no SCTP; asked once per transaction."""
        if self.reads and self._sctp is None:
            refuse_without_sctp(self.host, what, self.namespace)
            self._sctp = True

    def run(self, argv: Sequence[str], *, check: bool = True) -> Any:
        return self.namespace.run(argv, check=check)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The host lock of this namespace: every read-modify-write of its firewall and settings runs under it."""
        return self.host.lock(site=self.where)

    def state(self, backend: FirewallBackend, family: Family, scope: Scope) -> FirewallState:
        outputs = []
        for argv in backend.list_commands(family, scope):
            result = self.namespace.run(argv, check=False)
            if result.returncode != 0:
                error = from_command(result.argv, result.returncode, result.stdout, result.stderr)
                if not isinstance(error, NotFound):
                    raise error
            outputs.append(result.stdout if result.returncode == 0 else "")
        return backend.parse(family, scope, outputs)

    def batch_argv(self, backend: FirewallBackend, family: Family) -> tuple[str, ...]:
        """The process that applies a script of ``backend`` here, atomically, from stdin."""
        return self.host.exec_argv(self.where, backend.batch_command(family))

    def apply(self, backend: FirewallBackend, family: Family, lines: Sequence[str]) -> None:
        """Write ``lines`` in one atomic batch; where the kernel refuses a batch that large (a rootless
        sandbox: "Message too long"), in the backend's chunks, in order — the transaction's undo covers
        a failure between them."""
        if not lines:
            return
        argv = self.batch_argv(backend, family)
        try:
            self.host.runner.run_batch(argv, lines, atomic=True)
        except CommandError as error:
            chunks = backend.chunks(lines) if "Message too long" in error.stderr else None
            if not chunks or len(chunks) < 2:
                note = getattr(error, "add_note", None)  # Python 3.11+
                if note is not None and "Message too long" in error.stderr:
                    note(
                        "the kernel refused a batch this large (in a user namespace nft cannot enlarge its "
                        "netlink buffer): apply fewer objects at once"
                    )
                raise
            log.info("%s refused %d lines at once; writing them in %d parts", backend.name, len(lines), len(chunks))
            for chunk in chunks:
                self.host.runner.run_batch(argv, chunk, atomic=True)

    def setting(self, key: str, value: str | None = None) -> str:
        """Read a setting (a sysctl, or ``hairpin.<port>``); with ``value``, write it."""
        if key.startswith("hairpin."):
            port = interface_name("port", key.removeprefix("hairpin."))
            if value is None:
                data = self.host.ip(self.where, self.host.links.show_links(device=port)).json()
                slave = (data[0].get("linkinfo") or {}).get("info_slave_data") or {} if data else {}
                return "1" if slave.get("hairpin") else "0"
            self.host.ip(self.where, self.host.links.bridge_port_set(port, hairpin=value == "1"))
            return value
        return self.namespace.sysctl(key, value).strip()

    def forward_backends(self, family: Family) -> list[FirewallBackend]:
        """The xtables flavours whose ``filter`` table exists here, so whose FORWARD may drop."""
        found = []
        xtables = get_backend("iptables")
        for variant in ("nft", "legacy"):
            backend: FirewallBackend = xtables(variant)
            argv = backend.forward_probe(family)
            if argv is None:
                continue
            try:
                result = self.run(argv, check=False)
            except BackendUnavailable:  # no nft program: no iptables-nft filter table to find
                continue
            if result.returncode == 0 and backend.forward_found(family, result.stdout):
                found.append(backend)
        return found

    # -- the path to a container (the read phase only) ------------------------

    def path_to(self, address: str, family: Family, *, localnet: bool) -> HostPath:
        """The device toward ``address`` (for ``route_localnet`` if ``localnet``) and, on a bridge, its port.

        With ``br_netfilter`` loaded (as on Docker hosts) a DNATed packet
        whose new destination is on the bridge it came from is *bridged*
        back, so hairpin needs the container's bridge port in hairpin mode,
        as Docker sets it when it runs without the userland proxy.
        """
        if not self.reads:
            return HostPath()
        links = self.host.links
        found = self.host.ip(self.where, links.route_get(address), check=False)
        if not found.ok and "unreachable" in found.stderr.lower():
            # a target on no network of the host, e.g. a container not made yet: say so, not only what ip said
            raise NotFound(
                f"the host has no route to {address}: create the network it is on (a bridge with an address "
                "in its subnet, or a lab) before mapping a port to it",
                argv=found.argv,
                evidence=found.stderr.strip(),
            )
        if not found.ok:
            raise from_command(found.argv, found.returncode, found.stdout, found.stderr)
        routes = found.json()
        device = routes[0].get("dev") if routes else None
        if not device or device == "lo":
            return HostPath()
        device = interface_name("device", device)
        return HostPath(device if localnet else None, self._bridge_port(address, family, device))

    def _bridge_port(self, address: str, family: Family, device: str) -> str | None:
        links = self.host.links
        found = self.host.ip(self.where, links.show_links(device=device)).json()
        if not found or (found[0].get("linkinfo") or {}).get("info_kind") != "bridge":
            return None
        self.run(links.ping(address, family), check=False)  # learn the container's MAC, and its bridge port
        neighbours = self.host.ip(self.where, links.neigh_show(address, device)).json()
        mac = next((item.get("lladdr") for item in neighbours if item.get("lladdr")), None)
        if mac is None:
            log.debug("no neighbour entry for %s on %s; hairpin mode not set", address, device)
            return None
        fdb = self.run(links.fdb_show(device)).json()
        port = next(
            (item.get("ifname") for item in fdb if item.get("mac") == mac and item.get("ifname") != device), None
        )
        return None if port is None else interface_name("port", port)
