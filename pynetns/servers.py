"""Tiny servers to run inside namespaces: an HTTP server and a UDP echo.

They exist because ``python -m http.server`` looks up its own name in DNS on
start (``socket.getfqdn``), which stalls for seconds in a namespace whose
default route leads nowhere. These never touch DNS.

Start one inside a namespace with its argv::

    server = ns.popen(http_server_argv("10.0.0.2", 8000, body="hello from c1"))
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["http_server_argv", "main", "udp_echo_argv"]


def http_server_argv(address: str, port: int, body: str = "hello from pynetns") -> list[str]:
    """argv of an HTTP server answering every GET with ``body`` and the client's address."""
    return [sys.executable, "-m", "pynetns.servers", "http", "--bind", address, "--port", str(port), "--body", body]


def udp_echo_argv(address: str, port: int) -> list[str]:
    """argv of a UDP server that answers each datagram with ``<client ip> <datagram>``."""
    return [sys.executable, "-m", "pynetns.servers", "udp", "--bind", address, "--port", str(port)]


class _Handler(BaseHTTPRequestHandler):
    body = ""

    def do_GET(self) -> None:
        payload = f"{self.body}\nclient {self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(); skip the DNS lookup.
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


def _serve_http(address: str, port: int, body: str) -> None:
    handler = type("Handler", (_Handler,), {"body": body})
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    server_class = type("Server", (_Server,), {"address_family": family, "allow_reuse_address": True})
    with server_class((address, port), handler) as server:
        server.serve_forever()


def _serve_udp(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, port))
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(f"{peer[0]} ".encode() + data, peer)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pynetns.servers")
    parser.add_argument("kind", choices=["http", "udp"])
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", default="hello from pynetns")
    args = parser.parse_args(argv)
    try:
        if args.kind == "http":
            _serve_http(args.bind, args.port, args.body)
        else:
            _serve_udp(args.bind, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
