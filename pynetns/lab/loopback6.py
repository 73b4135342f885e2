"""Published IPv6 ports answering on the host's ``[::1]``, as Docker's do: a small TCP proxy per mapping.

IPv4 reaches a container from ``127.0.0.1`` through the kernel alone (``route_localnet``, a DNAT in the
output hook and a masquerade). IPv6 has no ``route_localnet``, and the same trick was measured to fail:
the DNAT in output and a masquerade of ``::1`` in postrouting get the SYN to the container (counters
move), but its SYN-ACK, un-NATed back to ``::1`` after arriving on the bridge, is dropped before the
input hook (the kernel never accepts ``::1`` from a device other than ``lo``), and ``curl -6
http://[::1]:8080/`` hangs. So, like ``docker-proxy``, a process of the lab listens on ``[::1]:PORT``
and relays each connection to the container's IPv6 address (the container sees the bridge's gateway as
its client); the IPv6 DNAT rules leave ``::1`` alone (``not_daddr``) so it gets them.

Nothing is opened to the lab's namespaces: ``::1`` is unreachable from any device but ``lo`` (the kernel
drops such packets before any hook; tests/kernel/test_dualstack.py sends raw SYNs to check). The proxy
is started by the runner like any program, tracked by the lab (:attr:`LabState.proxies`), stopped by
``unpublish``/``destroy``/a failed apply's undo, and ends by itself when its owner dies (its stdin, a pipe
from the owner, closes) — unless the lab was detached (``pynetns up``): told so (:func:`persist`), it lives
as long as the lab's journal does (``down`` or ``cleanup`` removes it; an isolated lab's host namespace takes
the proxy with it). TCP only: a UDP port is not proxied on ``[::1]`` (its IPv6 addresses answer).

The program itself (``python -m pynetns.lab.loopback6 --port 8080 --to fd00::2 --to-port 80 --journal
PATH``) prints ``ready`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence

from ..errors import CommandError, PortInUse
from ..firewall import Firewalled, PortMap
from ..namespace import Namespace
from ..runner import Call, Process
from .state import LabState

__all__ = ["main", "needs_proxy", "persist", "proxy_argv", "proxy_calls", "start", "stop", "stop_all"]

log = logging.getLogger(__name__)

#: more host ports than this in one range get no [::1] proxy (a listener each): their IPv6 addresses answer
MAX_PORTS = 64
#: what the owner writes on a proxy's stdin when its lab is detached: live on, as long as the journal
PERSIST = b"persist\n"
#: how often a detached lab's proxy looks for its journal (seconds)
JOURNAL_POLL = 0.5


def needs_proxy(portmap: Firewalled) -> bool:
    """Whether ``portmap`` answers on the host's ``[::1]`` through a proxy: an IPv6 TCP mapping published on
    every address (or on ``::1``), of a range of at most :data:`MAX_PORTS` ports."""
    if not isinstance(portmap, PortMap) or portmap.family != 6 or portmap.protocol != "tcp":
        return False
    if portmap.host_ip is not None and not portmap.host_ip.is_loopback:
        return False
    low, high = portmap.host_ports
    return high - low < MAX_PORTS


def proxy_argv(portmap: PortMap, journal: str) -> list[str]:
    """argv of the proxy relaying ``[::1]``'s host ports of ``portmap`` to its container; ``journal``: the
    lab's journal, which a detached lab's proxy outlives not."""
    low, high = portmap.host_ports
    return [
        sys.executable,
        "-m",
        "pynetns.lab.loopback6",
        "--port",
        f"{low}-{high}",
        "--to",
        str(portmap.address),
        "--to-port",
        str(portmap.port),
        "--journal",
        journal,
    ]


def _where(state: LabState) -> Namespace:
    return state.host_namespace or Namespace.host(state.host)


def proxy_calls(state: LabState, objects: Sequence[Firewalled]) -> list[Call]:
    """What :func:`start` runs for ``objects`` (for ``explain()``)."""
    where = _where(state).ref
    journal = str(state.journal_path)
    return [Call(state.host.exec_argv(where, proxy_argv(obj, journal))) for obj in objects if needs_proxy(obj)]  # type: ignore[arg-type]


def start(state: LabState, objects: Sequence[Firewalled], timeout: float = 10.0) -> None:
    """Start the proxies ``objects`` need (those not running yet); each listens before this returns."""
    if state.host.dry_run:
        return
    where = _where(state).ref
    for portmap in objects:
        if not needs_proxy(portmap) or portmap in state.proxies:
            continue
        assert isinstance(portmap, PortMap)
        argv = state.host.exec_argv(where, proxy_argv(portmap, str(state.journal_path)))
        process = state.host.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state.proxies[portmap] = process
        _wait_ready(process, timeout)


def _wait_ready(process: Process, timeout: float) -> None:
    stdout = process.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], timeout)
    line = stdout.readline().decode(errors="replace").strip() if ready else ""
    if line == "ready":
        return
    process.stop(grace=1.0)
    stderr = process.stderr_text.strip() or (f"no word within {timeout} s" if not ready else "")
    returncode = process.returncode if process.returncode is not None else -1
    error: CommandError = CommandError(process.argv, returncode, line, stderr)
    if "Address already in use" in stderr:
        error = PortInUse.command_error(process.argv, returncode, line, stderr)
    raise error


def persist(state: LabState) -> None:
    """The lab is detached: its proxies live on after this process, as long as its journal."""
    for process in state.proxies.values():
        if process.alive() and process.stdin is not None:
            process.stdin.write(PERSIST)
            process.stdin.flush()


def stop(state: LabState, portmap: PortMap) -> None:
    """Stop the proxy of ``portmap``, if it has one."""
    process = state.proxies.pop(portmap, None)
    if process is not None:
        process.stop(grace=1.0)


def stop_all(state: LabState, objects: Sequence[Firewalled] | None = None) -> None:
    """Stop the proxies of ``objects`` (default: every one of the lab)."""
    for portmap in list(state.proxies) if objects is None else objects:
        if isinstance(portmap, PortMap):
            stop(state, portmap)


# -- the program ------------------------------------------------------------------


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close goes through: the other side may still answer
    except OSError:
        writer.close()


async def _relay(target: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(target, port)
    except OSError:
        writer.close()
        return
    try:
        await asyncio.gather(_copy(reader, upstream_writer), _copy(upstream_reader, writer))
    finally:
        for side in (writer, upstream_writer):
            side.close()
            with contextlib.suppress(OSError):
                await side.wait_closed()


def _until_released(journal: str) -> None:
    """Return when the owner ends (stdin closes), or, once told the lab is detached, when its journal goes."""
    persistent = False
    for line in sys.stdin.buffer:
        persistent = persistent or line == PERSIST
    while persistent and os.path.exists(journal):
        time.sleep(JOURNAL_POLL)


async def _serve(ports: range, target: str, first: int, journal: str) -> None:
    servers = []
    for number in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to: int = first + number - ports[0]
        ) -> None:
            await _relay(target, to, reader, writer)

        servers.append(await asyncio.start_server(handle, "::1", number, reuse_address=True))
    print("ready", flush=True)
    # the owner holds our stdin: its end (stop(), or the owner's death) ends the proxy, unless detached
    await asyncio.get_running_loop().run_in_executor(None, _until_released, journal)
    for server in servers:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pynetns.lab.loopback6", description=__doc__.splitlines()[0])
    parser.add_argument("--port", required=True, help="host port or LOW-HIGH range to listen on at [::1]")
    parser.add_argument("--to", required=True, help="the container's IPv6 address")
    parser.add_argument("--to-port", type=int, required=True, help="the container's first port")
    parser.add_argument("--journal", required=True, help="the lab's journal: once detached, live as long as it")
    args = parser.parse_args(argv)
    low, _, high = args.port.partition("-")
    ports = range(int(low), int(high or low) + 1)
    try:
        asyncio.run(_serve(ports, args.to, args.to_port, args.journal))
    except OSError as error:
        print(f"cannot listen on [::1]:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
