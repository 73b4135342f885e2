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

The program is :mod:`pynetns.lab.proxy6` (the standard library only, run with ``python -I`` by its path, or on
another machine its source with ``python3 -I -c``).
"""

from __future__ import annotations

import logging
import select
import subprocess
import sys
from collections.abc import Sequence

from ..errors import CommandError, PortInUse
from ..firewall import Firewalled, PortMap
from ..namespace import Namespace
from ..runner import Call, Process
from . import proxy6
from .proxy6 import PERSIST
from .state import LabState

__all__ = ["needs_proxy", "persist", "proxy_argv", "proxy_calls", "start", "stop", "stop_all"]

log = logging.getLogger(__name__)

#: more host ports than this in one range get no [::1] proxy (a listener each): their IPv6 addresses answer
MAX_PORTS = 64


def needs_proxy(portmap: Firewalled) -> bool:
    """Whether ``portmap`` answers on the host's ``[::1]`` through a proxy: an IPv6 TCP mapping published on
    every address (or on ``::1``), of a range of at most :data:`MAX_PORTS` ports."""
    if not isinstance(portmap, PortMap) or portmap.family != 6 or portmap.protocol != "tcp":
        return False
    if portmap.host_ip is not None and not portmap.host_ip.is_loopback:
        return False
    low, high = portmap.host_ports
    return high - low < MAX_PORTS


def proxy_argv(portmap: PortMap, journal: str, program: Sequence[str] | None = None) -> list[str]:
    """argv of the proxy relaying ``[::1]``'s host ports of ``portmap`` to its container; ``journal``: the
    lab's journal (as the proxy sees it), which a detached lab's proxy outlives not; ``program``: how the Host
    runs it (:meth:`pynetns.runtime.Runtime.program_argv`; by default this Python, isolated, by its path)."""
    low, high = portmap.host_ports
    return [
        # the standard library alone (-I): a small process, whatever the environment says
        *([sys.executable, "-I", str(proxy6.__file__)] if program is None else program),
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


def _argv(state: LabState, portmap: PortMap) -> tuple[str, ...]:
    runtime = state.host.runtime
    argv = proxy_argv(portmap, runtime.command_path(state.journal_path), runtime.program_argv(proxy6))
    return state.host.exec_argv(_where(state).ref, argv)


def proxy_calls(state: LabState, objects: Sequence[Firewalled]) -> list[Call]:
    """What :func:`start` runs for ``objects`` (for ``explain()``)."""
    return [Call(_argv(state, obj)) for obj in objects if needs_proxy(obj)]  # type: ignore[arg-type]


def start(state: LabState, objects: Sequence[Firewalled], timeout: float = 10.0) -> None:
    """Start the proxies ``objects`` need (those not running yet); each listens before this returns."""
    if state.host.dry_run:
        return
    for portmap in objects:
        if not needs_proxy(portmap) or portmap in state.proxies:
            continue
        assert isinstance(portmap, PortMap)
        process = state.host.popen(
            _argv(state, portmap), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
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
