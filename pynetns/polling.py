"""Wait for a condition by polling it, with a timeout (never a bare ``sleep``).

>>> wait_until(lambda: True, timeout=1.0, what="nothing")
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from .errors import WaitTimeout

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Call ``condition`` until it returns something truthy, and return that.

    Raises :class:`~pynetns.errors.WaitTimeout` naming ``what`` after ``timeout`` seconds.
    The interval grows from ``interval`` up to 0.2 s.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)
