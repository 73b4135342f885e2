"""Total rollback and teardown: undo carries on past failures, a killed batch is undone whole, transient
failures are retried, the journal stays while anything may be left, ``destroy()`` runs every part.

Fast tests drive a fake kernel (a runner that models namespaces and links, and fails on request); the root
tests inject the same faults into a lab on a ``playhost`` (firewall, NAT, a published port, ``ip_forward``).
``PYNETNS_SWEEP=3`` (or more) sweeps every position of the kernel lab with one and with three failing commands
(by default: every position with one, a sample with three).

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_rollback.py.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from pynetns import (
    CommandError,
    Host,
    WaitTimeout,
    wait_until,
)
from pynetns.lab.lab import Lab
from pynetns.plan import undo_errors
from pynetns.runner import CompletedCommand, LocalRunner
from tests.support.rollback import small_lab

root = pytest.mark.root

SWEEP = max(1, int(os.environ.get("PYNETNS_SWEEP", "1")))


class FaultyRunner(LocalRunner):
    """A playhost's runner that fails the commands numbered in ``fail`` (``mode`` as for FakeKernel);
    ``batches_only``: counting only the commands reading a script on stdin (the names files' ``tee`` aside)."""

    def __init__(
        self, wrap: Sequence[str], fail: Sequence[int] = (), mode: str = "refuse", batches_only: bool = False
    ) -> None:
        super().__init__(wrap=wrap)
        self.fail, self.mode, self.batches_only, self.count = set(fail), mode, batches_only, 0
        self._lock = threading.Lock()

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        with self._lock:
            # the batches: ip -batch, nft -f, …-restore (not tee, whose count depends on whether another lab
            # made /etc/netns already)
            counted = not self.batches_only or (input is not None and "tee" not in argv)
            self.count += counted
            injected = counted and self.count in self.fail
        if not injected:
            return super()._execute(argv, input, timeout)
        if self.mode == "refuse":
            return CompletedCommand(argv, 1, "", "injected failure\n")
        if input is not None:  # killed half-way through a batch
            lines = input.splitlines(keepends=True)
            super()._execute(argv, "".join(lines[: len(lines) // 2]), timeout)
        else:
            super()._execute(argv, None, timeout)
        return CompletedCommand(argv, 137, "", "")


def state_of(play: Host) -> dict[str, Any]:
    """What a lab must leave as it found it in the playhost: links, firewall, forwarding."""
    return {
        "links": sorted(item["ifname"] for item in play.run(["ip", "-j", "link", "show"]).json()),
        "ruleset": play.run(["nft", "list", "ruleset"]).stdout,
        "ip_forward": play.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip(),
    }


def settled(play: Host, before: dict[str, Any]) -> bool:
    """The playhost is as it was (a deleted namespace's veths go a moment later: polled)."""
    try:
        wait_until(lambda: state_of(play) == before, timeout=5, what="the playhost to be as before")
    except WaitTimeout:
        return False
    return True


def lab_namespaces(lab_id: str) -> list[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(f"pn{lab_id}")]


def kernel_lab(play: Host, runner: LocalRunner) -> Lab:
    return small_lab(Host(runner=runner, tag=play.tag, firewall="nftables"))


def positions(total: int, chunk: int, chunks: int, every: int = 1) -> list[int]:
    return [k for k in range(1, total + 1) if k % chunks == chunk and (k // chunks) % every == 0]


CHUNKS = 3


@root
@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("failures", [1, 3], ids=["one", "three"])
def test_every_position_on_the_kernel(playhost, chunk, failures):
    """Fail command k (and k+1, k+2: the undo) of a host lab with NAT and a published port, at every k of
    this chunk: after the failed apply (and destroy, if its undo was incomplete) nothing is left and the
    firewall and ip_forward are as before; an apply on a fresh Lab then works."""
    wrap = playhost.runner.wrap
    before = state_of(playhost)
    counter = FaultyRunner(wrap)
    lab = kernel_lab(playhost, counter)
    declared = counter.count
    lab.apply()
    total = counter.count - declared
    lab.destroy()
    every = 1 if failures == 1 or SWEEP >= 3 else 3
    tried, incomplete = [], 0
    for position in positions(total, chunk, CHUNKS, every):
        runner = FaultyRunner(wrap)
        lab = kernel_lab(playhost, runner)
        runner.fail = {runner.count + k for k in range(position, position + failures)}
        error: Exception | None = None
        try:
            lab.apply()
        except Exception as caught:  # any injected failure
            error = caught
        if error is None or undo_errors(error):  # an ignored failure (an optional probe), or an incomplete undo
            incomplete += error is not None
            assert lab.journal_path.exists()
            runner.fail = set()
            lab.destroy()
        assert not lab.journal_path.exists()
        assert lab_namespaces(lab.id) == [], f"position {position}: {error}"
        assert settled(playhost, before), f"position {position}: {error}: {state_of(playhost)}"
        fresh = kernel_lab(playhost, LocalRunner(wrap=wrap))
        fresh.apply()
        fresh.destroy()
        assert settled(playhost, before)
        tried.append(position)
    print(f"{failures} failure(s) at positions {tried} of {total}: {incomplete} incomplete undo(s), no leftovers")
    if failures == 1:
        assert incomplete == 0


@root
def test_a_batch_killed_half_way_on_the_kernel(playhost):
    """Each ``ip -batch`` of the apply killed half-way (exit 137, no line): what it made is undone."""
    wrap = playhost.runner.wrap
    before = state_of(playhost)
    counter = FaultyRunner(wrap, batches_only=True)
    lab = kernel_lab(playhost, counter)
    lab.apply()
    total = counter.count
    lab.destroy()
    assert total >= 4  # ip -batch: setup, each namespace's inside; nft -f
    for position in range(1, total + 1):
        lab = kernel_lab(playhost, FaultyRunner(wrap, fail=[position], mode="kill", batches_only=True))
        with pytest.raises(CommandError) as caught:
            lab.apply()
        assert caught.value.returncode == 137 and not undo_errors(caught.value)
        assert not lab.journal_path.exists()
        assert lab_namespaces(lab.id) == [] and settled(playhost, before), f"position {position}"


@root
def test_ctrl_c_during_the_concurrent_stage_on_the_kernel(playhost, monkeypatch):
    """Ctrl-C once the namespaces' insides and the firewall are done, before the stage returns: the rules go,
    ip_forward is restored, the namespaces and links go, and so does the journal."""
    from pynetns.lab import compile as lab_module

    before = state_of(playhost)
    lab = kernel_lab(playhost, LocalRunner(wrap=playhost.runner.wrap))

    def interrupted(futures: Any, *args: Any, **kwargs: Any) -> Any:
        lab_module.concurrent.futures.wait(futures)
        raise KeyboardInterrupt

    monkeypatch.setattr(lab_module.concurrent.futures, "as_completed", interrupted)
    with pytest.raises(KeyboardInterrupt) as caught:
        lab.apply()
    monkeypatch.undo()
    assert not undo_errors(caught.value) and not lab.journal_path.exists()
    assert lab_namespaces(lab.id) == [] and settled(playhost, before), state_of(playhost)
