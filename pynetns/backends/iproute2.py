"""The iproute2 backend: ``ip`` commands for namespaces, links, addresses and routes.

Every method returns an argv tuple; nothing here runs a process.

>>> Iproute2().command("web", Iproute2().link_set("eth0", up=True))
('ip', '-n', 'web', 'link', 'set', 'eth0', 'up')
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import Argv, LinkBackend

__all__ = ["Iproute2"]


class Iproute2(LinkBackend):
    """Commands for iproute2's ``ip`` (JSON output through ``-j``)."""

    name = "iproute2"
    program = "ip"

    def command(self, netns: str | None, args: Sequence[str]) -> Argv:
        return ("ip", *(("-n", netns) if netns else ()), *args)

    def batch_command(self, netns: str | None) -> Argv:
        return self.command(netns, ("-batch", "-"))

    def exec_command(self, netns: str, argv: Sequence[str]) -> Argv:
        return ("ip", "netns", "exec", netns, *argv)

    def netns_add(self, name: str) -> Argv:
        return ("netns", "add", name)

    def netns_delete(self, name: str) -> Argv:
        return ("netns", "delete", name)

    def netns_list(self) -> Argv:
        return ("-j", "netns", "list")

    def netns_pids(self, name: str) -> Argv:
        return ("netns", "pids", name)

    def bridge_add(self, name: str, *, mtu: int | None) -> Argv:
        return ("link", "add", name, *_opt("mtu", mtu), "type", "bridge")

    def veth_add(
        self,
        name: str,
        peer: str,
        *,
        peer_netns: str | None,
        mtu: int | None,
        mac: str | None,
        peer_mac: str | None,
        master: str | None,
    ) -> Argv:
        # The kernel refuses "up" for a peer created in another namespace
        # (ENOTCONN), so the peer is brought up by a later command there.
        return (
            "link", "add", name, *_opt("mtu", mtu), *_opt("address", mac), *_opt("master", master), "up",
            "type", "veth", "peer", "name", peer, *_opt("netns", peer_netns), *_opt("mtu", mtu),
            *_opt("address", peer_mac),
        )  # fmt: skip

    def vxlan_add(self, name: str, *, vni: int, local: str, port: int, mtu: int | None) -> Argv:
        return (
            "link", "add", name, *_opt("mtu", mtu), "type", "vxlan", "id", str(vni), "local", local,
            "dstport", str(port), "nolearning",
        )  # fmt: skip

    def fdb_append(self, device: str, mac: str, destination: str) -> Argv:
        return ("fdb", "append", mac, "dev", device, "dst", destination)

    def fdb_delete(self, device: str, mac: str, destination: str) -> Argv:
        return ("fdb", "delete", mac, "dev", device, "dst", destination)

    def bridge_command(self, netns: str | None, args: Sequence[str]) -> Argv:
        return ("bridge", *(("-n", netns) if netns else ()), *args)

    def bridge_batch_command(self, netns: str | None) -> Argv:
        return self.bridge_command(netns, ("-batch", "-"))

    def link_set(
        self, name: str, *, up: bool | None = None, alias: str | None = None, master: str | None = None
    ) -> Argv:
        state = () if up is None else ("up",) if up else ("down",)
        return ("link", "set", name, *_opt("master", master), *_opt("alias", alias), *state)

    def link_delete(self, name: str) -> Argv:
        return ("link", "delete", name)

    def bridge_port_set(self, name: str, *, hairpin: bool) -> Argv:
        return ("link", "set", "dev", name, "type", "bridge_slave", "hairpin", "on" if hairpin else "off")

    def addr_add(self, device: str, address: str, *, nodad: bool = False) -> Argv:
        return ("addr", "add", address, "dev", device, *(("nodad",) if nodad else ()))

    def addr_delete(self, device: str, address: str) -> Argv:
        return ("addr", "delete", address, "dev", device)

    def route_add(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv:
        return ("route", "add", destination, *_opt("via", via), *_opt("dev", device), *_opt("metric", metric))

    def route_delete(self, destination: str, *, via: str | None, device: str | None, metric: int | None) -> Argv:
        return ("route", "delete", destination, *_opt("via", via), *_opt("dev", device), *_opt("metric", metric))

    def show_links(self, *, device: str | None = None, master: str | None = None) -> Argv:
        return ("-d", "-j", "addr", "show", *_opt("dev", device), *_opt("master", master))

    def show_routes(self, *, family: int = 4, destination: str | None = None) -> Argv:
        return ("-j", f"-{family}", "route", "show", *_opt("exact", destination))

    def route_get(self, address: str) -> Argv:
        return ("-j", "route", "get", address)

    def neigh_show(self, address: str, device: str) -> Argv:
        return ("-j", "neigh", "show", "to", address, "dev", device)

    def fdb_show(self, bridge: str) -> Argv:
        return ("bridge", "-j", "fdb", "show", "br", bridge)

    def listeners(self, protocol: str) -> Argv:
        return ("ss", "-H", "-l", "-n", "-p", {"tcp": "-t", "udp": "-u", "sctp": "-S"}[protocol])

    def ping(self, address: str, family: int) -> Argv:
        return ("ping", *(("-6",) if family == 6 else ()), "-c1", "-W1", address)


def _opt(keyword: str, value: object) -> tuple[str, ...]:
    return () if value is None else (keyword, str(value))
