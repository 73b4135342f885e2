"""Many processes changing one host namespace's firewall at once: nothing lost, nothing left behind.

One throwaway namespace plays the host; every worker process drives it through
``LocalRunner(wrap=("nsenter", "--net=/run/netns/<it>"))``, as the ``playhost`` fixture does, so the
machine's own ruleset and sysctls are never touched. The workers start together (they poll for a
start file) and each checks its own objects are still there before deleting them.

Size: 8 processes x 3 rounds by default; ``PYNETNS_SWEEP=N`` multiplies the rounds by N.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_firewall_concurrency.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pynetns import Host, Isolation, Masquerade, PortMap
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.firewall import remove_tagged
from pynetns.namespace import Namespace
from pynetns.runner import LocalRunner

BACKENDS = ["nftables", "iptables-nft", "iptables-legacy"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if name != "nftables":
        found = subprocess.run([f"iptables-{name.removeprefix('iptables-')}", "--version"], capture_output=True)
        if found.returncode != 0:
            pytest.skip(f"{name} is not installed")
    return name


SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))


PROCESSES = 8


ROUNDS = 3 * SWEEP


LABS = 3


#: the device of the host namespace, and the subnet its port maps point into
DEVICE, SUBNET = "pnfw0", "10.61.0.1/24"


SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    f"net.ipv4.conf.{DEVICE}.route_localnet",
    "net.ipv4.conf.all.route_localnet",
)


SAVES = ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save")


# What every worker starts with: a Host driving the namespace argv[1] with the backend argv[2].
PRELUDE = """
import json, os, sys, traceback
from pynetns import Host, Masquerade, NotFound, PortMap
from pynetns.backends.base import NetnsRef
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.polling import wait_until
from pynetns.locking import held
from pynetns.runner import LocalRunner

playns, backend, index, rounds, go, tag = sys.argv[1:7]
index, rounds = int(index), int(rounds)
firewall = Nftables() if backend == "nftables" else Iptables(backend.removeprefix("iptables-"))
host = Host(runner=LocalRunner(wrap=("nsenter", "--net=/run/netns/" + playns)), tag=tag, firewall=firewall)
problems = []
wait_until(lambda: os.path.exists(go), timeout=60, what="the start file")
"""


PORTMAPS = (
    PRELUDE
    + """
try:
    for round in range(rounds):
        objects = [PortMap(20000 + (round * 16 + index) * 3 + k, "10.61.0." + str(10 + k), 80, host=host)
                   for k in range(3)]
        objects.append(Masquerade("10.62." + str(index) + ".0/24", "pnfw0", host=host))
        for obj in objects:
            obj.create()
        for obj in objects:
            if not obj.exists():
                problems.append(f"round {round}: {obj} lost its rules before its delete")
        for obj in objects:
            try:
                obj.delete()
            except NotFound as error:
                problems.append(f"round {round}: delete of {obj}: {error}")
except Exception:
    problems.append(traceback.format_exc())
print(json.dumps(problems))
"""
)


CLEANUP = (
    PRELUDE
    + """
from pynetns.firewall import remove_tagged
from pynetns.namespace import Namespace
try:
    print(json.dumps([remove_tagged(Namespace.host(host), tag)]))
except Exception:
    print(json.dumps([traceback.format_exc()]))
    sys.exit(1)
"""
)


LABS_SCRIPT = (
    PRELUDE
    + """
from pynetns.lab.lab import Lab
try:
    for round in range(rounds):
        with Lab(f"side{index}r{round}", host=host) as lab:
            lab.network("front", subnet=f"10.{70 + index}.0.0/24")
            lab.namespace("web", networks=["front"])
            portmap = lab.publish("web", 18080 + index, 80)
            lab.apply()
            if not portmap.exists():
                problems.append(f"round {round}: lab {index}'s DNAT rule is gone before its destroy")
            portmap.counters()
except Exception:
    problems.append(traceback.format_exc())
print(json.dumps(problems))
"""
)


def _backend(name: str) -> Nftables | Iptables:
    return Nftables() if name == "nftables" else Iptables(name.removeprefix("iptables-"))  # type: ignore[arg-type]


@pytest.fixture
def playns(names: Callable[[str], str]) -> Iterator[str]:
    """A throwaway namespace playing the host, with a device (a veth) whose subnet the port maps point into."""
    name = names("play")
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (
            ["link", "set", "lo", "up"],
            ["link", "add", DEVICE, "type", "veth", "peer", "name", f"{DEVICE}p"],
            ["addr", "add", SUBNET, "dev", DEVICE],
            ["link", "set", DEVICE, "up"],
        ):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def wrapped_host(playns: str, backend: str, tag: str) -> Host:
    return Host(runner=LocalRunner(wrap=("nsenter", f"--net=/run/netns/{playns}")), tag=tag, firewall=_backend(backend))


def _empty_builtin_tables(text: str) -> str:
    """iptables-legacy's save without the tables that hold only empty built-in chains with policy ACCEPT:
    once instantiated in a namespace, a legacy built-in table cannot be removed (see the README)."""
    kept: list[str] = []
    for block in re.split(r"(?m)^(?=\*)", text):
        lines = [line for line in block.splitlines() if line.strip()]
        chains = [line for line in lines if line.startswith(":")]
        rules = [line for line in lines if line.startswith("-")]
        if lines and not rules and all(re.fullmatch(r":[A-Z]+ ACCEPT( \[\d+:\d+\])?", line) for line in chains):
            continue
        kept.append(block)
    return "".join(kept)


def snapshot(playns: str, *, legacy_tables_stay: bool = False) -> dict[str, str]:
    """Every firewall tool's view of the namespace (counters and dated comments aside), and its sysctls."""

    def run(argv: Sequence[str]) -> str:
        return subprocess.run(["ip", "netns", "exec", playns, *argv], capture_output=True, text=True).stdout

    views = {"nft": run(["nft", "list", "ruleset"])}
    for tool in SAVES:
        text = "\n".join(line for line in run([tool]).splitlines() if not line.startswith("#")) + "\n"
        if legacy_tables_stay and "legacy" in tool:
            text = _empty_builtin_tables(text)
        views[tool] = text
    views = {key: re.sub(r"\[\d+:\d+\]|packets \d+ bytes \d+", "", value).strip() for key, value in views.items()}
    views.update({key: run(["sysctl", "-n", key]).strip() for key in SYSCTLS})
    return views


def run_workers(
    script: str, playns: str, backend: str, tags: Sequence[str], rounds: int, tmp_path: Path
) -> list[tuple[int, list[object], str]]:
    """Start one worker per tag, let them go together, and return (exit code, output, stderr) of each."""
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), playns, backend, str(index), str(rounds), str(go), tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for index, tag in enumerate(tags)
    ]
    go.touch()
    results = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        lines = stdout.strip().splitlines()
        results.append((worker.returncode, json.loads(lines[-1]) if lines else [], stderr[-2000:]))
    return results


@pytest.mark.root
def test_processes_creating_and_deleting_port_maps_lose_nothing_and_leave_nothing(
    playns: str, backend: str, token: str, tmp_path: Path
) -> None:
    before = snapshot(playns)
    tags = [f"pynetns:test-{token}-{index}" for index in range(PROCESSES)]
    results = run_workers(PORTMAPS, playns, backend, tags, ROUNDS, tmp_path)
    problems = [(index, code, output, stderr) for index, (code, output, stderr) in enumerate(results) if code or output]
    assert not problems, f"{len(problems)} of {PROCESSES} processes saw problems: {problems}"
    assert snapshot(playns, legacy_tables_stay=backend == "iptables-legacy") == before


@pytest.mark.root
def test_concurrent_cleanups_of_the_same_and_different_tags_all_succeed(
    playns: str, backend: str, token: str, tmp_path: Path
) -> None:
    before = snapshot(playns)
    tags = [f"pynetns:test-{token}-{index}" for index in range(4)]
    for index, tag in enumerate(tags):
        host = wrapped_host(playns, backend, tag)
        for k in range(2):
            PortMap(21000 + index * 10 + k, f"10.61.0.{10 + k}", 80, host=host).create()
        Masquerade(f"10.63.{index}.0/24", DEVICE, host=host).create()
    # two cleanups per tag, eight at once
    results = run_workers(CLEANUP, playns, backend, tags + tags, 1, tmp_path)
    failed = [(code, output, stderr) for code, output, stderr in results if code]
    assert not failed, f"{len(failed)} of {len(results)} cleanups failed: {failed}"
    removed = [output[0] for _, output, _ in results]
    # each tag's rules went once: by one of its two cleanups, the other found none
    assert sorted(removed) == sorted([0] * 4 + [removed[index] or removed[index + 4] for index in range(4)])
    host = wrapped_host(playns, backend, tags[0])
    assert all(remove_tagged(Namespace.host(host), tag) == 0 for tag in tags)
    assert snapshot(playns, legacy_tables_stay=backend == "iptables-legacy") == before


@pytest.mark.root
def test_host_labs_applied_and_destroyed_side_by_side_keep_their_published_ports(
    playns: str, backend: str, token: str, tmp_path: Path
) -> None:
    before = snapshot(playns)
    tags = [f"pynetns:test-{token}-{index}" for index in range(LABS)]
    results = run_workers(LABS_SCRIPT, playns, backend, tags, max(1, ROUNDS // 3), tmp_path)
    problems = [(index, code, output, stderr) for index, (code, output, stderr) in enumerate(results) if code or output]
    assert not problems, f"{len(problems)} of {LABS} labs saw problems: {problems}"
    assert snapshot(playns, legacy_tables_stay=backend == "iptables-legacy") == before


@pytest.mark.root
@pytest.mark.parametrize("backend", ["iptables-nft", "iptables-legacy"])
def test_iptables_leaves_the_tables_as_it_found_them_and_keeps_one_somebody_else_uses(
    playns: str, backend: str, token: str
) -> None:
    subprocess.run(["ip", "-n", playns, "addr", "add", "fd00:61::1/64", "dev", DEVICE, "nodad"], check=True)
    host = wrapped_host(playns, backend, f"pynetns:test-{token}")
    before = snapshot(playns)
    objects = [
        PortMap(8080, "10.61.0.10", 80, host=host),
        PortMap(8080, "fd00:61::10", 80, host=host),
        Masquerade("10.61.0.0/24", DEVICE, host=host),
        Isolation(DEVICE, others=["pnother0"], host=host),
    ]
    for obj in objects:
        obj.create()
    for obj in objects:
        obj.delete()
    assert snapshot(playns, legacy_tables_stay=backend == "iptables-legacy") == before
    # a table pynetns made but somebody else uses by the time the last object goes stays, with their rule
    tool = "iptables-nft" if backend == "iptables-nft" else "iptables-legacy"
    foreign = ["POSTROUTING", "-t", "nat", "-s", "10.99.0.0/16", "-j", "MASQUERADE"]
    objects[0].create()
    subprocess.run(["ip", "netns", "exec", playns, tool, "-A", *foreign], check=True)
    objects[0].delete()
    assert "-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE" in snapshot(playns)[f"{tool}-save"]
    subprocess.run(["ip", "netns", "exec", playns, tool, "-D", *foreign], check=True)
