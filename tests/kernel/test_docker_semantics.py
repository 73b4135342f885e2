"""Docker's meanings: host_ip 0.0.0.0 and :: are every address, internal networks lead nowhere
(no default route, nothing published), and IPv6 addresses work as soon as apply() returns.

Kernel tests use isolated labs: their host is a private namespace, so no rule or sysctl of the
machine is touched.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_docker_semantics.py.
"""

from __future__ import annotations

import secrets
import sys

import pytest

from pynetns import Host, Lab, Namespace
from tests.support.lab import assert_gone, ping
from tests.support.web import fetch, serve

root = pytest.mark.root


def _default_routes(namespace: Namespace, family: int = 4) -> list[str | None]:
    return [route.via for route in namespace.routes(family) if route.destination == "default"]


@root
def test_internal_networks_and_wildcard_ports_on_the_kernel() -> None:
    with Lab("internal", isolated=True) as lab:
        back = lab.network("back", subnet="10.71.0.0/24", internal=True)
        front = lab.network("front", subnet="10.72.0.0/24")
        web = lab.namespace("web", networks=[back, front])
        vault = lab.namespace("vault", networks=[back])
        lab.publish(web, 8080, 80, host_ip="0.0.0.0")
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        assert [str(gateway) for gateway in _default_routes(web)] == ["10.72.0.1"]
        assert _default_routes(vault) == []
        assert not ping(vault, "10.72.0.1")  # no way out: not even a route
        serve(web, "0.0.0.0", 80, "web")
        assert fetch(hostns, "http://10.72.0.1:8080/") == "web"  # 0.0.0.0: every address of the host
        assert fetch(hostns, "http://10.71.0.1:8080/") == "web"
        assert ping(vault, "10.71.0.3")  # within the internal network, as before
        lab_id = lab.id
    assert_gone(lab_id)


CONNECT = """
import socket, sys
source, target, port = sys.argv[1:]
with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
    sock.settimeout(3)
    sock.bind((source, 0))  # fails at once while the address is still tentative
    sock.connect((target, int(port)))
    sock.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    reply = b""
    while chunk := sock.recv(4096):
        reply += chunk
    print(reply.decode().split("\\r\\n\\r\\n", 1)[1].splitlines()[0])
"""


def _tentative(namespace: Namespace) -> list[tuple[str, str]]:
    listing = namespace.run(["ip", "-j", "-6", "addr", "show"]).json()
    return [
        (item["ifname"], info["local"])
        for item in listing
        for info in item.get("addr_info", ())
        if info.get("tentative") or info.get("dadfailed")
    ]


@root
@pytest.mark.parametrize("isolated", [True, False], ids=["isolated", "host-lab"])
def test_ipv6_addresses_are_usable_as_soon_as_apply_returns(playhost: Host, isolated: bool) -> None:
    """A host lab is built on ``playhost``: its "root namespace", bridges included, is a throwaway one."""
    subnet = f"fd00:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}::/64"
    with Lab("dad", host=playhost, isolated=isolated) as lab:
        six = lab.network("six", subnet=subnet)
        a = lab.namespace("a", networks=[six])
        b = lab.namespace("b", networks=[six])
        lab.publish(b, 8081, 80, host_ip="::")
        lab.apply()
        # one attempt each, no retry: with duplicate address detection these fail for about 2.5 s
        gateway = str(six.gateway.ip)
        assert a.run(["ping", "-6", "-c1", "-W1", gateway], check=False).returncode == 0
        assert _tentative(a) == [] and _tentative(b) == []
        host = lab.host_namespace or Namespace.host(playhost)
        assert gateway not in [address for _, address in _tentative(host)]
        (source,), (target,) = ([str(e.ip.ip) for e in lab.endpoints if e.namespace is n] for n in (a, b))
        serve(b, "::", 80, "b")
        answer = a.run([sys.executable, "-c", CONNECT, source, target, "80"], check=False)
        assert answer.returncode == 0 and answer.stdout.strip() == "b", answer.stderr
        assert fetch(host, f"http://[{gateway}]:8081/") == "b"  # "::": every IPv6 address of the host
        lab_id = lab.id
    assert_gone(lab_id)
