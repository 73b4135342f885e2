"""The host lock: exclusive between processes and threads, re-entrant, released when its holder dies."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from pynetns import Host
from pynetns.errors import LockTimeout
from pynetns.locking import held, host_lock

_CONTEXT = multiprocessing.get_context("fork")


def _key() -> str:
    return f"test-{os.getpid()}-{secrets.token_hex(3)}"


def _hold_and_log(key: str, log: str, name: str, rounds: int) -> None:
    for _ in range(rounds):
        with host_lock(key), open(log, "a") as out:
            out.write(f"in {name}\n")
            out.flush()
            time.sleep(0.005)
            out.write(f"out {name}\n")


def test_processes_take_turns(tmp_path: Path) -> None:
    key, log = _key(), str(tmp_path / "log")
    workers = [_CONTEXT.Process(target=_hold_and_log, args=(key, log, str(n), 5)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 80
    for entered, left in zip(lines[::2], lines[1::2], strict=True):
        assert entered.startswith("in ") and left == "out " + entered[3:], "two holders at once"


def test_reentrant_in_a_thread_exclusive_between_threads() -> None:
    key, order = _key(), []

    def other() -> None:
        with host_lock(key):
            order.append("other")

    with host_lock(key), host_lock(key):
        assert held(key)
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.05)
        order.append("first")
    thread.join(5)
    assert order == ["first", "other"]
    assert not held(key)


def _hold_forever(key: str, ready: multiprocessing.synchronize.Event) -> None:
    with host_lock(key):
        ready.set()
        time.sleep(60)


def test_a_killed_holder_releases_it_and_a_waiter_learns_who_held_it() -> None:
    key = _key()
    ready = _CONTEXT.Event()
    holder = _CONTEXT.Process(target=_hold_forever, args=(key, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout) as caught, host_lock(key, timeout=0.1):
            pass
        assert f"process {holder.pid}" in str(caught.value)
        assert pickle.loads(pickle.dumps(caught.value)).holder == caught.value.holder
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    with host_lock(key, timeout=5):  # the kernel released it with the process
        assert held(key)


def _report_whether_free(key: str, result: multiprocessing.queues.Queue[bool]) -> None:
    try:
        with host_lock(key, timeout=0.2):
            result.put(True)
    except LockTimeout:
        result.put(False)


def test_a_forked_child_does_not_inherit_the_hold() -> None:
    key = _key()
    result: multiprocessing.queues.Queue[bool] = _CONTEXT.Queue()
    with host_lock(key):
        child = _CONTEXT.Process(target=_report_whether_free, args=(key, result))
        child.start()
        assert result.get(timeout=10) is False  # the parent still holds it: the child must wait
        child.join(10)
    child = _CONTEXT.Process(target=_report_whether_free, args=(key, result))
    with host_lock(key):
        pass
    child.start()
    assert result.get(timeout=10) is True
    child.join(10)


def test_hosts_of_one_namespace_share_the_lock_and_dry_runs_take_none() -> None:
    first, second = Host(), Host(firewall="iptables")
    assert first.netns_key == second.netns_key
    with first.lock(), second.lock():  # one process never waits for itself
        assert held(first.netns_key)
    assert Host(dry_run=True).netns_key == "dry-run"
    with Host(dry_run=True).lock():
        assert not held("dry-run")
