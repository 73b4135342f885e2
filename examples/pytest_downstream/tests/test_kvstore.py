"""kvstore's server and client in different network namespaces, with pynetns' pytest fixtures.

- ``netns``: one namespace; the server listening on its loopback is invisible from outside.
- ``netns_factory``: two namespaces joined by a veth pair.
- ``netlab``: a Docker-style network with a server and a client "container"; the same subnet in every test, since
  each lab is isolated (``pytest -n 4`` runs them side by side). Under 100 ms delay and 10 % loss the client
  slows down; during a partition it times out, and after ``heal()`` it recovers.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from pynetns import Endpoint, Lab, Namespace, Process, Veth

import kvstore
from kvstore.client import KVClient, KVUnavailable

ROOT = Path(kvstore.__file__).resolve().parent.parent
SUBNET = "10.90.0.0/24"  # every lab declares the same one: labs are isolated
OPS = 6  # requests per benchmark; each one is a new connection, so at least two round trips


def python(*args: str) -> list[str]:
    """argv running this Python with kvstore importable, also inside a namespace (``env`` survives sudo)."""
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, *args]


def start_server(namespace: Namespace, host: str = "0.0.0.0", port: int = 7000) -> tuple[Process, int]:
    """Start the server inside ``namespace``; return it once it listens, with its port."""
    process = namespace.popen(python("-m", "kvstore.server", "--host", host, "--port", str(port)))
    assert process.stdout is not None and process.stderr is not None
    line = process.stdout.readline().decode()
    if not line.startswith("listening on "):
        raise RuntimeError(f"kvstore server did not start: {line!r} {process.stderr.read().decode()!r}")
    return process, int(line.rsplit(":", 1)[1])


def kv(
    namespace: Namespace, server: str, port: int, *args: str, timeout: float = 2.0, retries: int = 2
) -> tuple[int, dict[str, Any]]:
    """Run the kvstore client inside ``namespace``: its exit status and its JSON answer."""
    argv = python(
        "-m",
        "kvstore.client",
        "--host",
        server,
        "--port",
        str(port),
        "--timeout",
        str(timeout),
        "--retries",
        str(retries),
        *args,
    )
    result = namespace.run(argv, check=False, timeout=120)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_server_is_private_to_its_namespace(netns: Namespace) -> None:
    _, port = start_server(netns, host="127.0.0.1", port=0)

    assert kv(netns, "127.0.0.1", port, "set", "colour", "green")[0] == 0
    assert kv(netns, "127.0.0.1", port, "get", "colour")[1]["value"] == "green"
    # The test process is in the host's namespace: that loopback has no server on this port.
    with pytest.raises(KVUnavailable):
        KVClient("127.0.0.1", port, timeout=0.5, retries=0).get("colour")


def test_two_namespaces_joined_by_a_veth(netns_factory: Any) -> None:
    server, client = netns_factory("server"), netns_factory("client")
    Veth(
        "eth0", "eth0", namespace=server, peer_namespace=client, address="10.91.0.1/24", peer_address="10.91.0.2/24"
    ).create()
    start_server(server)

    assert kv(client, "10.91.0.1", 7000, "set", "k", "v")[0] == 0
    assert kv(client, "10.91.0.1", 7000, "get", "k")[1]["value"] == "v"


@attrs.frozen
class KV:
    """A lab with one network, the server in one namespace and the client in another."""

    lab: Lab
    server: Namespace
    client: Namespace
    address: str
    port: int

    @property
    def client_endpoint(self) -> Endpoint:
        return next(endpoint for endpoint in self.lab.endpoints if endpoint.namespace is self.client)

    def __call__(self, *args: str, timeout: float = 2.0, retries: int = 2) -> tuple[int, dict[str, Any]]:
        return kv(self.client, self.address, self.port, *args, timeout=timeout, retries=retries)


@pytest.fixture
def kvnet(netlab: Lab) -> Iterator[KV]:
    net = netlab.network("kv", subnet=SUBNET)
    server = netlab.namespace("server", networks=[net])
    client = netlab.namespace("client", networks=[net])
    netlab.apply()
    address = str(next(endpoint.ip.ip for endpoint in netlab.endpoints if endpoint.namespace is server))
    _, port = start_server(server)
    yield KV(netlab, server, client, address, port)  # netlab's teardown stops the server and removes it all


def test_set_and_get_across_the_network(kvnet: KV) -> None:
    assert kvnet("set", "answer", "42")[0] == 0
    assert kvnet("get", "answer")[1]["value"] == "42"
    assert kvnet("get", "question")[1]["value"] is None


def test_slower_under_delay_and_loss(kvnet: KV, record_property: Any) -> None:
    status, baseline = kvnet("bench", str(OPS))
    assert status == 0, baseline

    kvnet.client_endpoint.impair(delay="100ms", loss="10%", direction="both")
    status, impaired = kvnet("bench", str(OPS), timeout=15, retries=3)  # lost SYNs cost seconds: be patient
    assert status == 0, impaired

    kvnet.client_endpoint.clear_impairment()
    status, restored = kvnet("bench", str(OPS))
    assert status == 0, restored

    record_property(
        "seconds", {"baseline": baseline["seconds"], "impaired": impaired["seconds"], "restored": restored["seconds"]}
    )
    print(
        f"{OPS} requests: {baseline['seconds']:.3f} s, impaired {impaired['seconds']:.3f} s, "
        f"restored {restored['seconds']:.3f} s"
    )
    # Every request opens a connection and waits for an answer: two round trips, each one crossing the delayed
    # link at least once, so at least 200 ms more per request — whatever loss adds on top.
    assert impaired["seconds"] >= baseline["seconds"] + 0.9 * OPS * 0.2
    assert restored["seconds"] < impaired["seconds"] / 2


def test_partition_times_out_then_recovers_after_heal(kvnet: KV) -> None:
    assert kvnet("set", "k", "before")[0] == 0

    kvnet.lab.partition([kvnet.client], [kvnet.server])
    status, answer = kvnet("get", "k", timeout=0.5, retries=0)
    assert (status, answer["error"]) == (2, "timeout"), answer

    # A patient client started during the partition gets its answer once the partition heals.
    patient = kvnet.client.popen(
        python(
            "-m",
            "kvstore.client",
            "--host",
            kvnet.address,
            "--port",
            str(kvnet.port),
            "--timeout",
            "0.5",
            "--retries",
            "40",
            "get",
            "k",
        )
    )
    assert patient.stdout is not None and patient.stderr is not None
    first = patient.stderr.readline().decode()
    assert first.startswith("attempt 1 failed: TimeoutError"), first  # it is still cut off
    healed = time.monotonic()
    kvnet.lab.heal()

    assert patient.wait(timeout=60) == 0, patient.stderr.read().decode()
    answer = json.loads(patient.stdout.read())
    assert answer["value"] == "before"  # the server kept its data through the partition
    assert answer["attempts"] >= 2
    assert time.monotonic() - healed < 10
    assert kvnet("get", "k", timeout=0.5, retries=0)[0] == 0
