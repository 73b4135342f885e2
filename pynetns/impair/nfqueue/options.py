"""The engine's options, checked: queue numbers, seconds, fractions (standard library and errors only)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from ...errors import InvalidValue

__all__ = ["distribution_name", "fraction", "positive", "queue_list", "queue_number", "seconds", "seed_value"]


def queue_number(field: str, value: object) -> int:
    """An NFQUEUE number, 0 to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise InvalidValue(field, value, "must be an integer queue number from 0 to 65535")
    return value


def seconds(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidValue(field, value, "must be a finite number of seconds, 0 or more")
    return float(value)


def fraction(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidValue(field, value, "must be a fraction from 0 to 1 (0.1 is 10%)")
    return float(value)


def queue_list(value: object) -> tuple[int, ...]:
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Sequence):
        raise InvalidValue("queues", value, "must be a sequence of queue numbers")
    queues = tuple(queue_number("queues", item) for item in value)
    if not queues or len(set(queues)) != len(queues):
        raise InvalidValue("queues", value, "must name at least one queue, each once")
    return queues


def seed_value(value: object) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidValue("seed", value, "must be an integer or None")
    return value


def distribution_name(value: object) -> Literal["uniform", "normal"]:
    if value == "uniform":
        return "uniform"
    if value == "normal":
        return "normal"
    raise InvalidValue("distribution", value, "must be 'uniform' or 'normal'")


def positive(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise InvalidValue(field, value, "must be a positive integer")
    return value


# -- scheduling (pure: no I/O, testable with a fake clock) -----------------------
