"""Each packet's fate: dropped now, or accepted at a due time (pure: no I/O, testable with a fake clock)."""

from __future__ import annotations

import heapq
import math
import random
from typing import Literal

from .options import distribution_name, fraction, seconds, seed_value

__all__ = ["Scheduler"]


class Scheduler:
    """Decides each packet's fate: dropped now, or accepted at a due time.

    >>> scheduler = Scheduler(delay=0.1, seed=1)
    >>> scheduler.admit(100, 7, now=5.0)
    True
    >>> scheduler.due(5.05), scheduler.due(5.1)
    ([], [(100, 7)])
    """

    def __init__(
        self,
        delay: float = 0.0,
        jitter: float = 0.0,
        loss: float = 0.0,
        seed: int | None = None,
        *,
        distribution: Literal["uniform", "normal"] = "uniform",
        in_order: bool = False,
    ) -> None:
        self.delay = seconds("delay", delay)
        self.jitter = seconds("jitter", jitter)
        self.loss = fraction("loss", loss)
        self.distribution = distribution_name(distribution)
        self.in_order = bool(in_order)
        self._random = random.Random(seed_value(seed))
        self._held: list[tuple[float, int, int, int]] = []  # (due, arrival order, queue, packet id)
        self._count = 0
        self._last_due: dict[int, float] = {}

    def __len__(self) -> int:
        """Packets held."""
        return len(self._held)

    def _sample(self) -> float:
        if not self.jitter:
            return self.delay
        if self.distribution == "normal":
            offset = self._random.gauss(0.0, self.jitter)
        else:
            offset = self._random.uniform(-self.jitter, self.jitter)
        return max(0.0, self.delay + offset)

    def admit(self, queue: int, packet_id: int, now: float) -> bool:
        """False: drop the packet now. True: it is held until :meth:`due` returns it."""
        if self.loss and self._random.random() < self.loss:
            return False
        due = now + self._sample()
        if self.in_order:
            due = max(due, self._last_due.get(queue, due))
            self._last_due[queue] = due
        self._count += 1
        heapq.heappush(self._held, (due, self._count, queue, packet_id))
        return True

    def next_due(self) -> float | None:
        """When the earliest held packet is due, if any is held."""
        return self._held[0][0] if self._held else None

    def due(self, now: float) -> list[tuple[int, int]]:
        """(queue, packet id) of every held packet due by ``now``, earliest first; they are no longer held."""
        released = []
        while self._held and self._held[0][0] <= now:
            _, _, queue, packet_id = heapq.heappop(self._held)
            released.append((queue, packet_id))
        return released

    def drain(self) -> list[tuple[int, int]]:
        """Every held packet, earliest first; none is held afterwards."""
        return self.due(math.inf)


# -- the engine ------------------------------------------------------------------
