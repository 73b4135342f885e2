"""Impairing a lab's links (delay, jitter, loss, rate) on the real kernel, with netem or without it.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_lab_impair.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host, InvalidValue, Lab
from pynetns.backends.recording import RecordingRunner


def test_the_netem_path_puts_netem_and_tbf_on_the_right_ends():
    runner = RecordingRunner()  # every probe succeeds: netem is "there"
    with Lab(host=Host(runner=runner), isolated=True) as lab:
        net = lab.network("n", subnet="10.61.0.0/24", nat=False)
        lab.namespace("a", networks=[net])
        lab.apply()
        endpoint = lab.endpoints[0]
        with lab.host.capture() as calls:
            endpoint.impair(delay="100ms", jitter="10ms", loss="10%", rate="1mbit", direction="both")
        inside, outside = endpoint.namespace.name, lab.host_namespace.name
        # one plan: one tc -batch per namespace, every qdisc of that side in it
        batches = {call.argv: call.input or "" for call in calls if call.argv[-2:] == ("-batch", "-")}
        assert set(batches) == {("tc", "-n", inside, "-batch", "-"), ("tc", "-n", outside, "-batch", "-")}
        inside_lines = batches[("tc", "-n", inside, "-batch", "-")]
        assert "qdisc replace dev eth0 root handle 1: netem delay 100ms 10ms loss 10%" in inside_lines
        outside_lines = batches[("tc", "-n", outside, "-batch", "-")]
        assert f"qdisc replace dev {endpoint.host_interface} root handle 1: netem" in outside_lines
        assert all("tbf rate 1mbit" in lines for lines in batches.values())
        assert not any("nfqueue" in str(call) for call in calls)
        assert endpoint.impairment is not None and endpoint.impairment_mode == "netem"
        with lab.host.capture() as calls:
            endpoint.impair(delay="5ms", direction="egress")
        # the old plan undone (both sides), the new one on the inside only
        assert [str(call) for call in calls[-3:-1]] == [
            f"tc -n {outside} qdisc del dev {endpoint.host_interface} root",
            f"tc -n {inside} qdisc del dev eth0 root",
        ]
        assert calls[-1].argv == ("tc", "-n", inside, "-batch", "-")
        endpoint.clear_impairment()
        assert endpoint.impairment is None


def test_bad_values_are_refused_before_anything_runs():
    runner = RecordingRunner()
    with Lab(host=Host(runner=runner), isolated=True) as lab:
        net = lab.network("n", subnet="10.62.0.0/24", nat=False)
        lab.namespace("a", networks=[net])
        endpoint = lab.endpoints[0]
        with pytest.raises(InvalidValue, match="apply"):
            endpoint.impair(delay="10ms")
        lab.apply()
        before = len(runner.history)
        for bad in ({"delay": "fast"}, {"loss": "150%"}, {"jitter": "5ms"}, {"rate": 0}, {"direction": "up"}):
            with pytest.raises(InvalidValue):
                endpoint.impair(**bad)
        assert len(runner.history) == before
