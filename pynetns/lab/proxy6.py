"""The [::1] proxy of a published IPv6 port (see :mod:`pynetns.lab.loopback6`): the standard library only, run by
its path (``python -I proxy6.py --port 8080 --to fd00::2 --to-port 80 --journal PATH``) so it stays small. It
prints ``ready`` once it listens on ``[::1]``, relays each connection to the container, and ends when its stdin
closes — or, once told ``persist`` there, when the lab's journal is gone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["JOURNAL_POLL", "PERSIST", "main"]

#: what the owner writes on a proxy's stdin when its lab is detached: live on, as long as the journal
PERSIST = b"persist\n"
#: how often a detached lab's proxy looks for its journal (seconds)
JOURNAL_POLL = 0.5


def _copy(source: socket.socket, sink: socket.socket) -> None:
    """Relay one direction; its end goes through as a half-close (the other side may still answer)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)


def _relay(client: socket.socket, target: str, port: int) -> None:
    with client:
        try:
            upstream = socket.create_connection((target, port), timeout=10)
        except OSError:
            return
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=_copy, args=(upstream, client), daemon=True)
            back.start()
            _copy(client, upstream)
            back.join()


def _accept(listener: socket.socket, target: str, port: int) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_relay, args=(client, target, port), daemon=True).start()


def _until_released(journal: str) -> None:
    """Return when the owner ends (stdin closes), or, once told the lab is detached, when its journal goes."""
    persistent = False
    for line in sys.stdin.buffer:
        persistent = persistent or line == PERSIST
    while persistent and os.path.exists(journal):
        time.sleep(JOURNAL_POLL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="proxy6.py", description="the [::1] proxy of a published IPv6 port")
    parser.add_argument("--port", required=True, help="host port or LOW-HIGH range to listen on at [::1]")
    parser.add_argument("--to", required=True, help="the container's IPv6 address")
    parser.add_argument("--to-port", type=int, required=True, help="the container's first port")
    parser.add_argument("--journal", required=True, help="the lab's journal: once detached, live as long as it")
    args = parser.parse_args(argv)
    low, _, high = args.port.partition("-")
    listeners = []
    try:
        for number in range(int(low), int(high or low) + 1):
            listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("::1", number))
            listener.listen(128)
            listeners.append((listener, args.to_port + number - int(low)))
    except OSError as error:
        print(f"cannot listen on [::1]:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 1
    for listener, port in listeners:
        threading.Thread(target=_accept, args=(listener, args.to, port), daemon=True).start()
    print("ready", flush=True)
    # the owner holds our stdin: its end (stop(), or the owner's death) ends the proxy, unless detached
    _until_released(args.journal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
