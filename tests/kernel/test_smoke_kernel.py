"""A first end-to-end check: two containers on a bridge inside a throwaway host."""

import pytest

from pynetns import Bridge, Namespace, Route, Veth, wait_until
from pynetns.servers import http_server_argv

pytestmark = pytest.mark.root


def test_two_containers_ping_and_http(names, host, hostns):
    bridge = Bridge(names("br"), address="10.77.0.1/24", namespace=hostns, host=host)
    bridge.create()
    with Namespace(names("c1"), host=host) as c1, Namespace(names("c2"), host=host) as c2:
        for number, container in enumerate((c1, c2), 2):
            Veth(
                names("veth"),
                "eth0",
                namespace=hostns,
                peer_namespace=container,
                master=bridge,
                peer_address=f"10.77.0.{number}/24",
                host=host,
            ).create()
            Route("default", via="10.77.0.1", namespace=container, host=host).create()
        c1.run(["ping", "-c1", "-W2", "10.77.0.3"])
        c2.popen(http_server_argv("10.77.0.3", 8000, body="c2"))
        fetch = ["curl", "-sS", "--max-time", "2", "http://10.77.0.3:8000/"]
        body = wait_until(lambda: hostns.run(fetch, check=False).stdout, what="the HTTP server in c2")
        assert body.startswith("c2\nclient 10.77.0.1")
