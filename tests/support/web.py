"""Small helpers the kernel tests share: fetch a page from inside a namespace, serve one there."""

from __future__ import annotations

from pynetns import Namespace
from pynetns.polling import wait_until
from pynetns.servers import http_server_argv


def fetch(namespace: Namespace, url: str) -> str | None:
    """The first line of ``url`` fetched from inside ``namespace`` (2 s at most), or None."""
    result = namespace.run(["curl", "-g", "-s", "-m", "2", url], check=False)
    return result.stdout.splitlines()[0] if result.returncode == 0 and result.stdout else None


def serve(namespace: Namespace, address: str, port: int, body: str) -> None:
    """An HTTP server answering ``body`` on ``address``:``port`` inside ``namespace``, once it answers."""
    namespace.popen(http_server_argv(address, port, body=body))
    local = "[::1]" if ":" in address else "127.0.0.1"
    wait_until(lambda: fetch(namespace, f"http://{local}:{port}/") == body, what=f"a server in {namespace.name}")
