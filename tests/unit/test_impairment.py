"""Link impairment: unit parsing, tc commands, reading tc's JSON back, and the real kernel.

The kernel tests build two namespaces joined by a veth pair (10.77.0.1 ↔ 10.77.0.2)
and send traffic only between them. Rate tests use tbf and run wherever tc does;
delay and loss need the kernel's netem qdisc and are skipped on kernels built
without it (``PYNETNS_REQUIRE_NETEM=1`` turns that skip into a failure).

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_impairment.py.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from pynetns import Host, InvalidName, InvalidValue, Namespace
from pynetns.backends.tc import Tc
from pynetns.impairment import (
    Impairment,
    format_duration,
    format_percent,
    format_rate,
    parse_duration,
    parse_fraction,
    parse_rate,
    plan_impairment,
)

DURATIONS = [
    ("50ms", 0.05),
    ("1.5s", 1.5),
    ("200us", 0.0002),
    ("200 us", 0.0002),
    (" 2msec ", 0.002),
    ("3msecs", 0.003),
    ("1sec", 1.0),
    ("2secs", 2.0),
    ("10usec", 0.00001),
    ("10usecs", 0.00001),
    ("7µs", 0.000007),
    ("5MS", 0.005),
    (".5ms", 0.0005),
    ("0.5ms", 0.0005),
    ("1.0000004s", 1.0),
    ("274s", 274.0),
    (0.05, 0.05),
    (1, 1.0),
    (datetime.timedelta(milliseconds=50), 0.05),
    ("0ms", None),
    (0, None),
    (0.0, None),
    (None, None),
]


BAD_DURATIONS = [
    ("50", "needs a unit, e.g. '50ms'"),
    ("50 minutes", "must be a duration such as"),
    ("5m", "must be a duration such as"),
    ("-5ms", "must be a duration such as"),
    ("5ms;reboot", "must be a duration such as"),
    ("1e3ms", "must be a duration such as"),
    ("", "must be a duration such as"),
    ("ms", "must be a duration such as"),
    (-0.1, "not negative"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (True, "must be a duration such as"),
    ([50], "must be a duration such as"),
    ("275s", "at most 274s"),
    (300, "at most 274s"),
    (datetime.timedelta(minutes=5), "at most 274s"),
    ("0.2us", "at least 1us"),
]


FRACTIONS = [
    (0.1, 0.1),
    ("10%", 0.1),
    ("10 %", 0.1),
    (" 0.5% ", 0.005),
    ("100%", 1.0),
    (1, 1.0),
    (1.0, 1.0),
    ("0.0001%", 0.000001),
    (0.1234567, 0.123457),
    ("0%", None),
    (0, None),
    (None, None),
]


BAD_FRACTIONS = [
    (10, "must be a fraction from 0 to 1 (write '10%' for percent)"),
    (1.5, "must be a fraction from 0 to 1"),
    (-0.1, "must be a fraction from 0 to 1"),
    (float("nan"), "must be a fraction from 0 to 1"),
    ("110%", "from 0% to 100%"),
    ("-1%", "must be a percentage"),
    ("10", "needs a '%' sign ('10%')"),
    ("ten%", "must be a percentage"),
    ("10 percent", "must be a percentage"),
    ("0.00001%", "at least 0.0001%"),
    (True, "must be a percentage"),
]


RATES = [
    ("1mbit", 1_000_000),
    ("100kbit", 100_000),
    ("1gbit", 1_000_000_000),
    ("1Mbit", 1_000_000),
    ("1 mbit", 1_000_000),
    ("1.5mbit", 1_500_000),
    ("500kbps", 4_000_000),  # tc: bps is bytes per second
    ("1bps", 8),
    ("8bit", 8),
    ("1kibit", 1024),
    ("1mibps", 8 * 1024 * 1024),
    ("100gbit", 100_000_000_000),
    (1_000_000, 1_000_000),
    (1e6, 1_000_000),
    (1001, 1000),  # whole bytes per second, as tc keeps it
    (None, None),
]


BAD_RATES = [
    (0, "must be a positive rate"),
    (-1, "must be a positive rate"),
    ("0mbit", "must be a positive rate"),
    (4, "at least 8bit"),
    ("1000", "needs a unit, e.g. '1000kbit'"),
    ("1mb", "must be a rate such as"),
    ("10%", "must be a rate such as"),
    ("fast", "must be a rate such as"),
    ("101gbit", "at most 100gbit"),
    (float("inf"), "must be a positive rate"),
    (True, "must be a rate such as"),
]


@pytest.mark.parametrize(("value", "expected"), DURATIONS)
def test_durations(value: Any, expected: float | None) -> None:
    assert parse_duration("delay", value) == expected


@pytest.mark.parametrize(("value", "message"), BAD_DURATIONS)
def test_bad_durations(value: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(message)) as caught:
        Impairment(delay=value)
    assert caught.value.field == "delay" and caught.value.value is value
    assert str(caught.value).startswith(f"delay={value!r}: ")


@pytest.mark.parametrize(("value", "expected"), FRACTIONS)
def test_fractions(value: Any, expected: float | None) -> None:
    assert parse_fraction("loss", value) == expected


@pytest.mark.parametrize("field", ["loss", "duplicate", "corrupt"])
@pytest.mark.parametrize(("value", "message"), BAD_FRACTIONS)
def test_bad_fractions(field: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(message)) as caught:
        Impairment(**{field: value})
    assert caught.value.field == field


@pytest.mark.parametrize(("value", "expected"), RATES)
def test_rates(value: Any, expected: int | None) -> None:
    assert parse_rate("rate", value) == expected


@pytest.mark.parametrize(("value", "message"), BAD_RATES)
def test_bad_rates(value: Any, message: str) -> None:
    with pytest.raises(InvalidValue, match=re.escape(message)) as caught:
        Impairment(rate=value)
    assert caught.value.field == "rate"


def test_invalid_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="loss=10: must be a fraction"):
        Impairment(loss=10)


@pytest.mark.parametrize(
    ("seconds", "word"), [(0.05, "50ms"), (2.0, "2s"), (1.5, "1500ms"), (0.00025, "250us"), (0.000001, "1us")]
)
def test_format_duration(seconds: float, word: str) -> None:
    assert format_duration(seconds) == word
    assert parse_duration("delay", word) == seconds


@pytest.mark.parametrize(
    ("fraction", "word"), [(0.1, "10%"), (0.005, "0.5%"), (1.0, "100%"), (0.000001, "0.0001%"), (0.123457, "12.3457%")]
)
def test_format_percent(fraction: float, word: str) -> None:
    assert format_percent(fraction) == word
    assert parse_fraction("loss", word) == fraction


@pytest.mark.parametrize(
    ("bits", "word"), [(1_000_000, "1mbit"), (1_500_000, "1500kbit"), (2 * 10**9, "2gbit"), (1024, "1024bit")]
)
def test_format_rate(bits: int, word: str) -> None:
    assert format_rate(bits) == word
    assert parse_rate("rate", word) == bits


def test_everything_normalised_and_written_like_tc() -> None:
    impairment = Impairment(delay="100ms", jitter=0.02, loss="10%", rate="1mbit", duplicate=0.01, corrupt="0.5 %")
    assert attrs.astuple(impairment) == (0.1, 0.02, 0.1, 1_000_000, 0.01, 0.005)
    assert impairment.netem_args() == (
        "delay", "100ms", "20ms", "loss", "10%", "duplicate", "1%", "corrupt", "0.5%",
    )  # fmt: skip
    assert impairment.args() == (*impairment.netem_args(), "rate", "1mbit")
    assert str(impairment) == "delay 100ms 20ms loss 10% duplicate 1% corrupt 0.5% rate 1mbit"
    assert impairment == Impairment(delay=0.1, jitter="20ms", loss=0.1, rate=1e6, duplicate="1%", corrupt=0.005)


def test_empty_and_zero_mean_none() -> None:
    assert not Impairment()
    assert Impairment(delay=0, loss="0%", duplicate=0.0) == Impairment()
    assert str(Impairment()) == "none"
    assert Impairment().netem_args() == ()
    assert Impairment(loss=0.5)
    assert Impairment(rate="1mbit").netem_args() == () and not Impairment(rate="1mbit").needs_netem
    assert Impairment(corrupt="1%").needs_netem


def test_jitter_needs_a_delay() -> None:
    with pytest.raises(InvalidValue, match=r"^jitter=0.005: needs a delay") as caught:
        Impairment(jitter="5ms")
    assert caught.value.field == "jitter"
    with pytest.raises(InvalidValue, match="needs a delay"):
        Impairment(delay="0ms", jitter="5ms")
    assert Impairment(delay="5ms", jitter="10ms").jitter == 0.01  # netem allows jitter > delay


def test_keyword_only_frozen_and_evolvable() -> None:
    impairment = Impairment(delay="50ms", rate="1mbit")
    with pytest.raises(TypeError):
        Impairment("50ms")  # type: ignore[call-arg]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        impairment.delay = 1.0  # type: ignore[misc]
    changed = attrs.evolve(impairment, loss="10%")
    assert changed == Impairment(delay=0.05, rate=1_000_000, loss=0.1)
    assert hash(changed) == hash(Impairment(delay=0.05, rate=1_000_000, loss=0.1))


# Real output of ``tc -j qdisc show`` (iproute2 6.1) on this project's test VM.
TBF_ONLY = [{"kind": "tbf", "handle": "1:", "root": True, "refcnt": 3,
             "options": {"rate": 125000, "burst": 16384, "lat": 50000}}]  # fmt: skip


DEFAULT = [{"kind": "noqueue", "handle": "0:", "root": True, "refcnt": 2, "options": {}}]


# netem as iproute2 6.1's q_netem.c prints it (this VM's kernel has no netem to show it).
NETEM_AND_TBF = [
    {"kind": "netem", "handle": "1:", "root": True, "refcnt": 2, "options": {
        "limit": 1000, "delay": {"delay": 0.05, "jitter": 0.005, "correlation": 0},
        "loss-random": {"loss": 0.1, "correlation": 0}, "duplicate": {"duplicate": 0.01, "correlation": 0},
        "corrupt": {"corrupt": 0.005, "correlation": 0}, "ecn": False, "gap": 0}},
    {"kind": "tbf", "handle": "2:", "parent": "1:1", "options": {"rate": 187500, "burst": 16384, "lat": 50000}},
]  # fmt: skip


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (DEFAULT, Impairment()),
        ([], Impairment()),
        (TBF_ONLY, Impairment(rate="1mbit")),
        (TBF_ONLY[0], Impairment(rate="1mbit")),
        (
            NETEM_AND_TBF,
            Impairment(delay="50ms", jitter="5ms", loss="10%", duplicate="1%", corrupt="0.5%", rate="1.5mbit"),
        ),
        (
            [{"kind": "netem", "handle": "8001:", "root": True, "options": {"limit": 1000, "delay": {
                "delay": 0.1, "jitter": 0, "correlation": 0}, "ecn": False, "gap": 0}}],
            Impairment(delay="100ms"),
        ),
        (  # netem's own rate, as another tool may set it
            [{"kind": "netem", "handle": "1:", "root": True, "options": {"limit": 1000, "rate": {"rate": 125000},
              "ecn": False, "gap": 0}}],
            Impairment(rate="1mbit"),
        ),
        (  # tbf on top, netem below (Mininet's layout)
            [{"kind": "tbf", "handle": "5:", "root": True, "options": {"rate": 250000, "burst": 15000, "lat": 1000}},
             {"kind": "netem", "handle": "10:", "parent": "5:1", "options": {"limit": 1000,
              "loss-random": {"loss": 1, "correlation": 0}}}],
            Impairment(rate="2mbit", loss=1),
        ),
        (  # models Impairment does not hold are ignored
            [{"kind": "netem", "handle": "1:", "root": True, "options": {"limit": 1000,
              "loss-gemodel": {"p": 0.02, "r": 0.25, "1-h": 0.9, "1-k": 0.99},
              "reorder": {"reorder": 0.25, "correlation": 0.5}, "slot": {"min-delay": 0.001, "max-delay": 0.002}}}],
            Impairment(),
        ),
    ],
)  # fmt: skip
def test_from_tc_json(shown: Any, expected: Impairment) -> None:
    assert Impairment.from_tc_json(shown) == expected


def test_from_tc_json_rounds_like_tc_prints() -> None:
    # tc prints floats with %g: six significant digits
    shown = [{"kind": "netem", "options": {"delay": {"delay": 1.23457, "jitter": 3.33333e-05},
                                           "loss-random": {"loss": 0.333333}}}]  # fmt: skip
    assert Impairment.from_tc_json(shown) == Impairment(delay=1.23457, jitter="33us", loss=0.333333)


PLACEHOLDER = ("tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "7fff:", "pfifo")


def test_tc_netem_only() -> None:
    assert Tc().impair("eth0", Impairment(delay="50ms", jitter="10ms", loss=0.1)) == (
        PLACEHOLDER,
        ("tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "netem",
         "delay", "50ms", "10ms", "loss", "10%"),
    )  # fmt: skip


def test_tc_rate_only_is_a_tbf_root() -> None:
    assert Tc().impair("eth0", Impairment(rate="1mbit")) == (
        PLACEHOLDER,
        ("tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:",
         "tbf", "rate", "1mbit", "burst", "16384", "latency", "50ms"),
    )  # fmt: skip


def test_tc_netem_with_tbf_child() -> None:
    commands = Tc().impair("eth0", Impairment(delay="50ms", duplicate="1%", corrupt="0.1%", rate="100mbit"))
    assert commands == (
        PLACEHOLDER,
        ("tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "netem",
         "delay", "50ms", "duplicate", "1%", "corrupt", "0.1%"),
        ("tc", "qdisc", "add", "dev", "eth0", "parent", "1:1", "handle", "2:",
         "tbf", "rate", "100mbit", "burst", "125000", "latency", "50ms"),
    )  # fmt: skip


def test_tc_netem_queue_grows_with_the_bandwidth_delay_product() -> None:
    netem = Tc().impair("eth0", Impairment(delay="200ms", jitter="10ms", rate="1gbit"))[1]
    limit = int(netem[netem.index("limit") + 1])
    assert limit == math.ceil(2 * 125_000_000 * 0.21 / 1514)
    assert "limit" not in Tc().impair("eth0", Impairment(delay="50ms", rate="1mbit"))[1]


def test_tc_clear_show_delete_and_netns() -> None:
    tc = Tc()
    assert tc.clear("eth0") == (PLACEHOLDER, ("tc", "qdisc", "del", "dev", "eth0", "root"))
    assert tc.impair("eth0", Impairment()) == tc.clear("eth0")
    assert tc.qdisc_delete("eth0", netns="c1") == ("tc", "-n", "c1", "qdisc", "del", "dev", "eth0", "root")
    assert tc.qdisc_show("eth0") == ("tc", "-j", "qdisc", "show", "dev", "eth0")
    assert tc.qdisc_show("eth0", netns="c1") == ("tc", "-n", "c1", "-j", "qdisc", "show", "dev", "eth0")
    assert all(argv[:3] == ("tc", "-n", "c1") for argv in tc.impair("eth0", Impairment(rate=8), netns="c1"))


@pytest.mark.parametrize("device", ["", "eth0; reboot", "-dev", "a" * 16, "eth 0"])
def test_tc_refuses_bad_device_names(device: str) -> None:
    tc = Tc()
    for build in (
        lambda: tc.impair(device, Impairment(delay="1ms")),
        lambda: tc.clear(device),
        lambda: tc.qdisc_show(device),
        lambda: tc.qdisc_delete(device),
    ):
        with pytest.raises(InvalidName):
            build()


def test_tc_refuses_bad_namespace_names() -> None:
    with pytest.raises(InvalidName, match="netns"):
        Tc().qdisc_show("eth0", netns="../etc")


def test_tc_commands_in_a_dry_run() -> None:
    host = Host(dry_run=True)
    namespace = Namespace("c1", host=host)
    for argv in Tc().impair("eth0", Impairment(delay="50ms")):
        namespace.run(argv)
    assert [str(call) for call in host.history] == [
        "ip netns exec c1 tc qdisc replace dev eth0 root handle 7fff: pfifo",
        "ip netns exec c1 tc qdisc replace dev eth0 root handle 1: netem delay 50ms",
    ]


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("both", (("c1", "eth0"), ("host", "veth1"))),
        ("egress", (("c1", "eth0"),)),
        ("ingress", (("host", "veth1"),)),
    ],
)
def test_plan_impairment(direction: str, expected: tuple[tuple[str, str], ...]) -> None:
    assert plan_impairment(direction, inside=("c1", "eth0"), outside=("host", "veth1")) == expected


@pytest.mark.parametrize("direction", ["in", "Both", "", None, "out"])
def test_plan_impairment_refuses_unknown_directions(direction: Any) -> None:
    with pytest.raises(InvalidValue, match="must be 'both', 'egress' or 'ingress'") as caught:
        plan_impairment(direction, inside=("c1", "eth0"), outside=("host", "veth1"))
    assert caught.value.field == "direction"


def test_plan_impairment_checks_device_names() -> None:
    with pytest.raises(InvalidName, match="outside"):
        plan_impairment("both", inside=("c1", "eth0"), outside=("host", "bad name"))


def test_shaping_is_a_host_role_checked_when_the_host_is_made() -> None:
    from pynetns import UnknownBackend
    from pynetns.backends import get_backend
    from pynetns.backends.base import ShapingBackend

    assert get_backend("tc") is Tc and isinstance(Host(dry_run=True).shaping, Tc)
    assert Host(dry_run=True, shaping=Tc()).shaping.name == "tc"
    with pytest.raises(InvalidValue, match="not a ShapingBackend; the ShapingBackends registered: tc"):
        Host(dry_run=True, shaping="iproute2")
    with pytest.raises(UnknownBackend, match="shaping='netem'"):
        Host(dry_run=True, shaping="netem")
    with pytest.raises(InvalidValue, match="ShapingBackend object"):
        Host(dry_run=True, shaping=object())  # type: ignore[arg-type]

    class Half(ShapingBackend):  # no impair_args, clear_args, …
        name = "half"

        def command(self, args: Sequence[str], *, netns: str | None = None) -> tuple[str, ...]:
            return tuple(args)

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def _link(host: Host, **options: Any) -> Any:
    from pynetns.impair import ImpairedLink

    return ImpairedLink(host, Namespace("c1", host=host), "eth0", Namespace("h1", host=host), "veth-c1", **options)


def test_a_dry_run_shows_the_tc_commands_as_one_plan_one_batch_per_namespace() -> None:
    host = Host(dry_run=True)
    link = _link(host)
    link.apply(Impairment(delay="50ms", rate="1mbit"), "both", netem=True)
    assert [call.argv for call in host.history] == [
        ("tc", "-n", "c1", "-batch", "-"),
        ("tc", "-n", "h1", "-batch", "-"),
    ]
    assert host.history[0].input == (
        "qdisc replace dev eth0 root handle 7fff: pfifo\n"
        "qdisc replace dev eth0 root handle 1: netem delay 50ms\n"
        "qdisc add dev eth0 parent 1:1 handle 2: tbf rate 1mbit burst 16384 latency 50ms\n"
    )
    assert link.mode == "netem"
    with host.capture() as calls:
        link.clear()  # the plan's undo: one qdisc del per device, last applied first
    assert [str(call) for call in calls] == ["tc -n h1 qdisc del dev veth-c1 root", "tc -n c1 qdisc del dev eth0 root"]
    assert link.impairment is None


def test_the_userspace_plan_has_tagged_queue_rules_from_the_firewall_backend() -> None:
    host = Host(dry_run=True, tag="pynetns:plan1", firewall="iptables")
    plan = _link(host).plan(Impairment(delay="50ms", rate="1mbit"), "both", netem=False)
    lines = [str(step) for step in plan]
    # rate through tbf, on both ends (no netem), then the queue rules inside c1, each with its undo
    assert [step.line for step in plan][:2] == [
        "qdisc replace dev eth0 root handle 7fff: pfifo",
        "qdisc replace dev eth0 root handle 1: tbf rate 1mbit burst 16384 latency 50ms",
    ]
    assert lines[-2:] == [
        "ip netns exec c1 iptables -w -t mangle -A POSTROUTING -o eth0 -m comment --comment "
        "'pynetns:plan1 impair eth0' -j NFQUEUE --queue-num 100 --queue-bypass",
        "ip netns exec c1 iptables -w -t mangle -A PREROUTING -i eth0 -m comment --comment "
        "'pynetns:plan1 impair eth0' -j NFQUEUE --queue-num 101 --queue-bypass",
    ]
    assert all(step.undo is not None and "-D" in step.undo.argv for step in list(plan)[-2:])


def test_duplicate_without_netem_is_refused_before_any_command() -> None:
    from pynetns import BackendUnavailable

    host = Host(dry_run=True)
    with pytest.raises(BackendUnavailable, match="duplicate and corrupt"):
        _link(host).apply(Impairment(duplicate="1%"), netem=False)
    assert host.history == []
