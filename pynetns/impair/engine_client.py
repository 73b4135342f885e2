"""Starting the userspace impairment engine (:mod:`pynetns.impair.nfqueue`) and waiting until it is ready.

>>> engine_argv([100, 101], delay=0.1, jitter=0.01, loss=0.1)[1:]  # doctest: +NORMALIZE_WHITESPACE
['-m', 'pynetns.impair.nfqueue', '--queue', '100', '--queue', '101', '--delay', '0.1', '--jitter', '0.01',
 '--loss', '0.1']
"""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal

from ..errors import NfqueueError, WaitTimeout
from ..runner import Process
from .nfqueue.options import distribution_name, fraction, positive, queue_list, seconds, seed_value

__all__ = ["engine_argv", "wait_ready"]


def engine_argv(
    queues: Sequence[int],
    *,
    delay: float = 0.0,
    jitter: float = 0.0,
    loss: float = 0.0,
    seed: int | None = None,
    distribution: Literal["uniform", "normal"] = "uniform",
    in_order: bool = False,
    queue_maxlen: int | None = None,
    fail_open: bool = False,
    gso: bool = False,
    rcvbuf: int | None = None,
    python: str | None = None,
) -> list[str]:
    """argv starting the engine (``python -m pynetns.impair.nfqueue …``); it prints ``ready`` once bound."""
    argv = [python or sys.executable, "-m", "pynetns.impair.nfqueue"]
    for queue in queue_list(queues):
        argv += ["--queue", str(queue)]
    for name, value in (("delay", seconds("delay", delay)), ("jitter", seconds("jitter", jitter)),
                        ("loss", fraction("loss", loss))):  # fmt: skip
        if value:
            argv += [f"--{name}", repr(value)]
    if seed_value(seed) is not None:
        argv += ["--seed", str(seed)]
    if distribution_name(distribution) != "uniform":
        argv += ["--distribution", distribution]
    if in_order:
        argv.append("--in-order")
    if queue_maxlen is not None:
        argv += ["--queue-maxlen", str(positive("queue_maxlen", queue_maxlen))]
    if fail_open:
        argv.append("--fail-open")
    if gso:
        argv.append("--gso")
    if rcvbuf is not None:
        argv += ["--rcvbuf", str(positive("rcvbuf", rcvbuf))]
    return argv


def wait_ready(process: Process, timeout: float = 10.0) -> None:
    """Wait for an engine started from :func:`engine_argv` to print ``ready``.

    :class:`NfqueueError` with its error output if it exits first;
    :class:`~pynetns.errors.WaitTimeout` if it says nothing for ``timeout`` seconds.
    """
    stdout = process.stdout
    if stdout is None:
        raise NfqueueError("the engine's stdout is not a pipe; start it with stdout=subprocess.PIPE")
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise WaitTimeout(f"the nfqueue engine did not report ready within {timeout} s")
    line = stdout.readline().decode(errors="replace").strip()
    if line == "ready":
        return
    detail = ""
    if process.stderr is not None:
        try:
            process.wait(timeout=min(timeout, 5.0))
        except subprocess.TimeoutExpired:  # still running: say what we have
            pass
        else:
            detail = process.stderr.read().decode(errors="replace").strip()
    raise NfqueueError(f"the nfqueue engine did not start: {detail or line or 'it exited without a word'}")


# -- command line ---------------------------------------------------------------------
