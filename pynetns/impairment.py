"""Link impairment: delay, jitter, loss, duplication, corruption and a rate limit, as ``tc`` applies them.

An :class:`Impairment` holds the values, checked and normalised when it is made
(nothing runs); :class:`~pynetns.backends.tc.Tc` turns it into ``tc`` commands and
:func:`plan_impairment` says which end of a veth pair gets them.

>>> bad = Impairment(delay="100ms", jitter="20ms", loss="10%", rate="1mbit")
>>> print(bad)
delay 100ms 20ms loss 10% rate 1mbit
>>> bad.delay, bad.jitter, bad.loss, bad.rate
(0.1, 0.02, 0.1, 1000000)
>>> bad.netem_args()
('delay', '100ms', '20ms', 'loss', '10%')
>>> Impairment(loss=10)
Traceback (most recent call last):
pynetns.errors.InvalidValue: loss=10: must be a fraction from 0 to 1 (write '10%' for percent)

Units, and how plain numbers are read:

- **durations** (``delay``, ``jitter``): ``"50ms"``, ``"1.5s"``, ``"200us"`` (tc's
  ``s``/``sec``/``secs``, ``ms``/``msec``/``msecs``, ``us``/``usec``/``usecs``), a
  :class:`datetime.timedelta`, or a plain number of **seconds**, as in Python's
  ``time.sleep`` and pynetns' own ``timeout=`` arguments. A string without a unit
  (``"50"``) is refused: tc would read it as microseconds. Stored as float seconds,
  rounded to the microsecond (tc's resolution); at most 274 s (what tc can express).
- **fractions** (``loss``, ``duplicate``, ``corrupt``): a number from 0 to 1
  (``0.1``) or a percentage string (``"10%"``, ``"10 %"``). Stored as a float
  fraction rounded to 6 decimals (0.0001 %).
- **rate**: tc's units, case-insensitive: ``bit``, ``kbit``, ``mbit``, ``gbit``,
  ``tbit`` (powers of 1000), ``kibit``, ``mibit``… (powers of 1024) and — tc's
  meaning — ``bps``, ``kbps``, ``mbps``… in **bytes** per second
  (``"500kbps"`` is 4 Mbit/s); or a plain number of bits per second. Stored as
  integer bits per second, rounded to a whole byte per second (tc's resolution);
  from 8 bit/s to 100 gbit.

A zero delay, jitter or fraction means "none" and is stored as ``None``, so
``Impairment(loss=0) == Impairment()``; a zero rate is refused.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from .errors import InvalidValue
from .validation import interface_name

__all__ = [
    "DIRECTIONS",
    "MAX_DURATION",
    "MAX_RATE",
    "Direction",
    "DurationLike",
    "FractionLike",
    "Impairment",
    "RateLike",
    "format_duration",
    "format_percent",
    "format_rate",
    "parse_direction",
    "parse_duration",
    "parse_fraction",
    "parse_rate",
    "plan_impairment",
]

#: Which traffic of an endpoint is impaired, seen from its namespace.
Direction = Literal["both", "egress", "ingress"]
DIRECTIONS: tuple[Direction, ...] = ("both", "egress", "ingress")

#: The longest delay or jitter tc accepts: 2**32 psched ticks of 64 ns (``Illegal … time (too large)`` beyond).
MAX_DURATION = 274.0
#: The fastest rate accepted (bits per second); veth pairs do not go faster.
MAX_RATE = 100_000_000_000

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_QUANTITY = re.compile(rf"\s*{_NUMBER}\s*([^\s\d.]*)\s*")

_TIME_UNITS = {
    **dict.fromkeys(("s", "sec", "secs"), 1_000_000),
    **dict.fromkeys(("ms", "msec", "msecs"), 1_000),
    **dict.fromkeys(("us", "usec", "usecs", "µs"), 1),
}
# tc's table (lib/utils.c), matched case-insensitively as tc does; "bps" is bytes per second.
_RATE_UNITS = {
    "bit": 1,
    "kbit": 10**3,
    "mbit": 10**6,
    "gbit": 10**9,
    "tbit": 10**12,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "tibit": 2**40,
    "bps": 8,
    "kbps": 8 * 10**3,
    "mbps": 8 * 10**6,
    "gbps": 8 * 10**9,
    "tbps": 8 * 10**12,
    "kibps": 8 * 2**10,
    "mibps": 8 * 2**20,
    "gibps": 8 * 2**30,
    "tibps": 8 * 2**40,
}

_DURATION_HINT = "must be a duration such as '50ms', '1.5s' or '200us', or a number of seconds"
_RATE_HINT = "must be a rate such as '1mbit', '100kbit' or '1gbit' (tc units: 'kbps' is kilobytes/s), or bits/s"


def _real(value: object) -> float | None:
    """``value`` as a float if it is an int or float (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _quantity(value: str) -> tuple[float, str] | None:
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    return float(match.group(1)), match.group(2).lower()


def parse_duration(field: str, value: object) -> float | None:
    """A delay or jitter in seconds, rounded to the microsecond; ``None`` for none or zero.

    >>> parse_duration("delay", "50ms"), parse_duration("delay", 1.5), parse_duration("delay", "0s")
    (0.05, 1.5, None)
    """
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        parsed = _quantity(value)
        if parsed is None:
            raise InvalidValue(field, value, _DURATION_HINT)
        number, unit = parsed
        if not unit:
            raise InvalidValue(field, value, f"needs a unit, e.g. '{value.strip()}ms' (a plain number is seconds)")
        if unit not in _TIME_UNITS:
            raise InvalidValue(field, value, _DURATION_HINT)
        seconds = number * _TIME_UNITS[unit] / 1_000_000
    else:
        real = _real(value)
        if real is None:
            raise InvalidValue(field, value, _DURATION_HINT)
        seconds = real
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidValue(field, value, "must be a finite duration, not negative")
    if seconds > MAX_DURATION:
        raise InvalidValue(field, value, f"must be at most {MAX_DURATION:g}s (the longest tc can express)")
    micros = round(seconds * 1_000_000)
    if micros == 0 and seconds > 0:
        raise InvalidValue(field, value, "must be at least 1us (tc's resolution)")
    return micros / 1_000_000 if micros else None


def parse_fraction(field: str, value: object) -> float | None:
    """A probability as a fraction from 0 to 1, rounded to 6 decimals; ``None`` for none or zero.

    >>> parse_fraction("loss", "10%"), parse_fraction("loss", 0.25), parse_fraction("loss", "0 %")
    (0.1, 0.25, None)
    """
    if value is None:
        return None
    if isinstance(value, str):
        parsed = _quantity(value)
        if parsed is None or parsed[1] != "%":
            if parsed is not None and not parsed[1]:
                raise InvalidValue(field, value, f"needs a '%' sign ('{value.strip()}%'), or give a number from 0 to 1")
            raise InvalidValue(field, value, "must be a percentage such as '10%' or a fraction from 0 to 1")
        if not 0 <= parsed[0] <= 100:
            raise InvalidValue(field, value, "must be from 0% to 100%")
        fraction = parsed[0] / 100
    else:
        number = _real(value)
        if number is None:
            raise InvalidValue(field, value, "must be a percentage such as '10%' or a fraction from 0 to 1")
        if not 0 <= number <= 1:  # also refuses NaN
            hint = f" (write '{value}%' for percent)" if 1 < number <= 100 else ""
            raise InvalidValue(field, value, f"must be a fraction from 0 to 1{hint}")
        fraction = number
    rounded = round(fraction, 6)
    if rounded == 0 and fraction > 0:
        raise InvalidValue(field, value, "must be 0 or at least 0.0001% (the resolution kept)")
    return rounded or None


def parse_rate(field: str, value: object) -> int | None:
    """A rate in bits per second, rounded to a whole byte per second (tc's units; ``bps`` is bytes/s).

    >>> parse_rate("rate", "1mbit"), parse_rate("rate", "500kbps"), parse_rate("rate", 2_000_000)
    (1000000, 4000000, 2000000)
    """
    if value is None:
        return None
    if isinstance(value, str):
        parsed = _quantity(value)
        if parsed is None:
            raise InvalidValue(field, value, _RATE_HINT)
        number, unit = parsed
        if not unit:
            raise InvalidValue(field, value, f"needs a unit, e.g. '{value.strip()}kbit' (a plain number is bits/s)")
        if unit not in _RATE_UNITS:
            raise InvalidValue(field, value, _RATE_HINT)
        bits = number * _RATE_UNITS[unit]
    else:
        real = _real(value)
        if real is None:
            raise InvalidValue(field, value, _RATE_HINT)
        bits = real
    if not math.isfinite(bits) or bits <= 0:
        raise InvalidValue(field, value, "must be a positive rate")
    if bits > MAX_RATE:
        raise InvalidValue(field, value, f"must be at most {format_rate(MAX_RATE)}")
    whole_bytes = round(bits / 8)
    if whole_bytes < 1:
        raise InvalidValue(field, value, "must be at least 8bit (one byte per second, tc's resolution)")
    return whole_bytes * 8


def parse_direction(field: str, value: object) -> Direction:
    """``"both"``, ``"egress"`` (what leaves the namespace) or ``"ingress"`` (what enters it)."""
    for direction in DIRECTIONS:
        if value == direction:
            return direction
    raise InvalidValue(field, value, "must be 'both', 'egress' or 'ingress'")


def format_duration(seconds: float) -> str:
    """A duration as tc writes it: ``"1500ms"``, ``"2s"``, ``"250us"``.

    >>> format_duration(0.05), format_duration(2.0), format_duration(0.00025)
    ('50ms', '2s', '250us')
    """
    micros = round(seconds * 1_000_000)
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    if micros % 1_000 == 0:
        return f"{micros // 1_000}ms"
    return f"{micros}us"


def format_percent(fraction: float) -> str:
    """A fraction as a tc percentage: ``0.105`` → ``"10.5%"``."""
    return f"{round(fraction * 100, 4):g}%"


def format_rate(bits: int) -> str:
    """A rate in the largest tc unit that writes it exactly: ``1500000`` → ``"1500kbit"``."""
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits % scale == 0:
            return f"{bits // scale}{unit}"
    return f"{bits}bit"


#: what a duration field accepts: ``"50ms"``, seconds, a timedelta
DurationLike = str | float | datetime.timedelta | None
#: what a fraction field accepts: ``"10%"`` or 0..1
FractionLike = str | float | None
#: what the rate accepts: ``"1mbit"`` or bits per second
RateLike = str | float | None


# Named converters (one per field, so errors name it) give mypy the accepted types of Impairment().
def _delay(value: DurationLike) -> float | None:
    return parse_duration("delay", value)


def _jitter(value: DurationLike) -> float | None:
    return parse_duration("jitter", value)


def _loss(value: FractionLike) -> float | None:
    return parse_fraction("loss", value)


def _duplicate(value: FractionLike) -> float | None:
    return parse_fraction("duplicate", value)


def _corrupt(value: FractionLike) -> float | None:
    return parse_fraction("corrupt", value)


def _rate(value: RateLike) -> int | None:
    return parse_rate("rate", value)


@attrs.frozen(kw_only=True)
class Impairment:
    """What a link does to the packets it sends: delay them, drop, duplicate, corrupt, or pace them.

    All fields are optional; an ``Impairment()`` with none set is false and
    means "no impairment". ``jitter`` varies the delay by up to ± that much
    (netem's uniform jitter, which reorders packets) and needs a ``delay``.
    """

    delay: float | None = attrs.field(default=None, converter=_delay)
    jitter: float | None = attrs.field(default=None, converter=_jitter)
    loss: float | None = attrs.field(default=None, converter=_loss)
    rate: int | None = attrs.field(default=None, converter=_rate)
    duplicate: float | None = attrs.field(default=None, converter=_duplicate)
    corrupt: float | None = attrs.field(default=None, converter=_corrupt)

    def __attrs_post_init__(self) -> None:
        if self.jitter is not None and self.delay is None:
            raise InvalidValue("jitter", self.jitter, "needs a delay to vary around (netem ignores jitter without one)")

    def __bool__(self) -> bool:
        return any(value is not None for value in attrs.astuple(self))

    @property
    def needs_netem(self) -> bool:
        """True if anything besides the rate is set (those need the ``netem`` qdisc)."""
        return any(value is not None for value in (self.delay, self.loss, self.duplicate, self.corrupt))

    def netem_args(self) -> tuple[str, ...]:
        """The words after ``netem`` in a ``tc qdisc`` command, without the rate (a separate limiter)."""
        words: list[str] = []
        if self.delay is not None:
            words += ["delay", format_duration(self.delay)]
            if self.jitter is not None:
                words.append(format_duration(self.jitter))
        for keyword, fraction in (("loss", self.loss), ("duplicate", self.duplicate), ("corrupt", self.corrupt)):
            if fraction is not None:
                words += [keyword, format_percent(fraction)]
        return tuple(words)

    def args(self) -> tuple[str, ...]:
        """Every setting as tc words: :meth:`netem_args` and then ``rate R``."""
        return self.netem_args() + (() if self.rate is None else ("rate", format_rate(self.rate)))

    def __str__(self) -> str:
        return " ".join(self.args()) or "none"

    @classmethod
    def from_tc_json(cls, qdiscs: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Impairment:
        """What the qdiscs of one device do, from ``tc -j qdisc show dev X``; ``Impairment()`` if nothing.

        Reads the first ``netem`` (delay, jitter, random loss, duplicate, corrupt,
        and netem's own ``rate`` if used) and the first ``tbf`` (its rate wins)
        wherever they sit in the device's tree. Anything this class does not model
        — correlations, reordering, Gilbert-Elliott or state loss models, slots,
        ECN, queue sizes — is ignored. tc prints these numbers with six
        significant digits, so values with more digits read back rounded.

        >>> Impairment.from_tc_json([{"kind": "netem", "handle": "1:", "root": True, "options": {
        ...     "limit": 1000, "delay": {"delay": 0.05, "jitter": 0, "correlation": 0},
        ...     "loss-random": {"loss": 0.1, "correlation": 0}}}])
        Impairment(delay=0.05, jitter=None, loss=0.1, rate=None, duplicate=None, corrupt=None)
        """
        items = [qdiscs] if isinstance(qdiscs, Mapping) else list(qdiscs)
        netem = _options(items, "netem")
        tbf = _options(items, "tbf")
        if netem is None and tbf is None:
            return cls()
        values: dict[str, Any] = {}
        if netem is not None:
            delay = _section(netem, "delay")
            values["delay"] = delay.get("delay")
            values["jitter"] = delay.get("jitter") if values["delay"] else None
            values["loss"] = _section(netem, "loss-random").get("loss")
            values["duplicate"] = _section(netem, "duplicate").get("duplicate")
            values["corrupt"] = _section(netem, "corrupt").get("corrupt")
            netem_rate = _section(netem, "rate").get("rate")
            values["rate"] = netem_rate * 8 if isinstance(netem_rate, int) and netem_rate else None
        if tbf is not None and isinstance(tbf.get("rate"), int) and tbf["rate"] > 0:
            values["rate"] = tbf["rate"] * 8
        return cls(**values)


def _options(items: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    for item in items:
        if isinstance(item, Mapping) and item.get("kind") == kind:
            options = item.get("options")
            return options if isinstance(options, Mapping) else {}
    return None


def _section(options: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    section = options.get(key)
    return section if isinstance(section, Mapping) else {}


W = TypeVar("W")


def plan_impairment(
    direction: Direction | str, *, inside: tuple[W, str], outside: tuple[W, str]
) -> tuple[tuple[W, str], ...]:
    """The ``(where, device)`` pairs whose egress qdisc carries an endpoint's impairment.

    ``inside`` is the endpoint's end of its veth pair, in its namespace;
    ``outside`` the other end (on the host or a bridge). A qdisc shapes what an
    interface *sends*, so ``"egress"`` (packets leaving the namespace) goes on
    ``inside``, ``"ingress"`` (packets entering it) on ``outside``, and
    ``"both"`` on both — each direction impaired once, a round trip twice.
    ``where`` is passed through untouched (a Namespace, a NetnsRef, a name…).

    >>> plan_impairment("ingress", inside=("c1", "eth0"), outside=("host", "veth1"))
    (('host', 'veth1'),)
    >>> plan_impairment("both", inside=("c1", "eth0"), outside=("host", "veth1"))
    (('c1', 'eth0'), ('host', 'veth1'))
    """
    chosen = parse_direction("direction", direction)
    interface_name("inside", inside[1])
    interface_name("outside", outside[1])
    return {"both": (inside, outside), "egress": (inside,), "ingress": (outside,)}[chosen]
