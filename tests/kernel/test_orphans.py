"""``cleanup(orphans=True)`` / ``pynetns cleanup --orphans``: the objects of labs whose journal is gone.

Orphan hunting looks at every namespace in ``/run/netns``, and the labs of other processes (other test workers)
keep their journals in other runtime directories: so the test runs in a sandbox, a private mount namespace
(with its own ``/run/netns``) and network namespace, held by a process the test starts and ends. Whatever is
made in it goes with it.

This file: root tests only; the command line's flag is tested in tests/unit/test_cli.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynetns import Host, Lab, Namespace
from pynetns.lab import cleanup, orphans
from pynetns.runner import LocalRunner

pytestmark = pytest.mark.root
ETC = Path("/etc/netns")

HOLD = "mount -t tmpfs pynetns-test /run/netns && ip link set lo up && echo ready && exec sleep 600"


@pytest.fixture
def sandbox(token: str) -> Iterator[Host]:
    """A Host whose commands run in a private mount and network namespace: its own ``/run/netns``."""
    holder = subprocess.Popen(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", HOLD],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        runner = LocalRunner(wrap=("nsenter", "-t", str(holder.pid), "--mount", "--net"))
        yield Host(runner=runner, tag=f"pynetns:test-{token}")
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_orphans_are_the_tagged_objects_no_journal_names(sandbox: Host) -> None:
    lost = Lab("lost", host=sandbox)  # not isolated: its bridge and veth ends are in the sandbox's namespace
    net = lost.network("n", subnet="10.96.0.0/24", nat=False)
    web = lost.namespace("web", [net])
    lost.apply()
    web.popen(["sleep", "600"])
    live = Lab("live", host=sandbox, isolated=True)  # its journal stays: never an orphan, though tagged alike
    live.namespace("db", [live.network("n", subnet="10.96.0.0/24")])
    live.apply()
    plain = Namespace("plain", host=sandbox)  # the Host's tag, not a lab's: never an orphan
    plain.create()
    assert orphans(sandbox) == []
    lost.journal_path.unlink()  # the journal is gone (a crash while it was written, a wiped runtime dir)

    found = orphans(sandbox)
    bridge, veth = net.bridge, lost.endpoints[0].host_interface
    assert sorted(found) == sorted([f"namespace {web.name}", f"interface {bridge}", f"interface {veth}"])
    assert found.tags == found.host_tags == {lost.tag}
    assert (ETC / web.name / "hosts").exists()  # /etc/netns is the machine's: the sandbox's /run/netns is not
    removed = cleanup(sandbox, orphans=True)
    assert {f"namespace {web.name}", f"interface {bridge}", f"names folder {ETC / web.name}"} <= set(removed)
    assert not (ETC / web.name).exists()  # the names files of the namespace removed
    assert orphans(sandbox) == [] and not web.exists() and not web.processes[0].alive()
    left = {namespace.name for namespace in Namespace.all(sandbox)}
    assert left == {plain.name, live["db"].name, live.host_namespace.name}  # type: ignore[union-attr]
    live.destroy()
    plain.delete()
    web.stop_processes()
