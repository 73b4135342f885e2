"""The firewall's commands come from backends: partitions per variant with the owner tag, the probes, a
preview that runs nothing."""

from __future__ import annotations

from typing import Any

import pytest

from pynetns import Host, InvalidValue, Lab, Namespace, PynetnsError
from pynetns.backends import get_backend
from pynetns.backends.iproute2 import Iproute2
from pynetns.backends.iptables import PARTITION_CHAIN, Iptables
from pynetns.backends.nftables import PARTITION_TABLE, Nftables
from pynetns.backends.recording import RecordingRunner
from pynetns.firewall import Isolation, Masquerade, PortMap, create_all, preview
from pynetns.runner import CompletedCommand

TAG = "pynetns:unit-1"


class RefusingRunner(RecordingRunner):
    """A runner that fails the test on any command it is asked to run."""

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        raise AssertionError(f"ran {argv}")

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise AssertionError(f"started {argv}")


# -- partitions ---------------------------------------------------------------


def test_nftables_partition_carries_the_tag_and_both_versions():
    argv, script = Nftables().partition_block(["10.0.0.3", "fd00::0003", "10.0.0.3"], TAG)
    assert argv == ("nft", "-f", "-")
    assert script.splitlines() == [
        f"add table inet {PARTITION_TABLE}",
        f"flush table inet {PARTITION_TABLE}",
        f"add chain inet {PARTITION_TABLE} input {{ type filter hook input priority -10; policy accept; }}",
        f'add rule inet {PARTITION_TABLE} input ip saddr {{ 10.0.0.3 }} counter drop comment "{TAG} partition"',
        f'add rule inet {PARTITION_TABLE} input ip6 saddr {{ fd00::3 }} counter drop comment "{TAG} partition"',
    ]
    assert Nftables().partition_unblock(TAG) == (("nft", "delete", "table", "inet", PARTITION_TABLE), None)


@pytest.mark.parametrize(
    ("variant", "program"),
    [("nft", "iptables-nft-restore"), ("legacy", "iptables-legacy-restore"), (None, "iptables-restore")],
)
def test_iptables_partition_honours_the_variant_and_the_tag(variant, program):
    backend = Iptables(variant)
    argv, script = backend.partition_block(["10.0.0.3", "10.0.0.4"], TAG)
    assert argv == (program, "--noflush", "-w")
    jump = f'INPUT -m comment --comment "{TAG} partition" -j {PARTITION_CHAIN}'
    assert script.splitlines() == [
        "*filter",
        f":{PARTITION_CHAIN} - [0:0]",
        f"-I {jump}",
        f'-A {PARTITION_CHAIN} -s 10.0.0.3 -m comment --comment "{TAG} partition" -j DROP',
        f'-A {PARTITION_CHAIN} -s 10.0.0.4 -m comment --comment "{TAG} partition" -j DROP',
        "COMMIT",
    ]
    assert f"-I {jump}" not in backend.partition_block(["10.0.0.3"], TAG, first=False)[1]
    argv, script = backend.partition_unblock(TAG)
    assert argv == (program, "--noflush", "-w")
    assert script.splitlines() == ["*filter", f"-D {jump}", f"-F {PARTITION_CHAIN}", f"-X {PARTITION_CHAIN}", "COMMIT"]


@pytest.mark.parametrize("backend", [Nftables(), Iptables("nft")])
def test_partition_refuses_bad_input_before_any_script(backend):
    with pytest.raises(InvalidValue, match="at least one address"):
        backend.partition_block([], TAG)
    with pytest.raises(InvalidValue):
        backend.partition_block(["10.0.0.3; flush ruleset"], TAG)
    with pytest.raises(InvalidValue):
        backend.partition_block(["10.0.0.3"], 'pynetns:x" ; drop')
    if isinstance(backend, Iptables):
        with pytest.raises(InvalidValue, match="must all be IPv4"):
            backend.partition_block(["fd00::3"], TAG)  # one rule set per version: IPv6 goes with family=6
        with pytest.raises(InvalidValue, match="must all be IPv6"):
            backend.partition_block(["fd00::3", "10.0.0.3"], TAG, family=6)
        argv, script = backend.partition_block(["fd00::0003"], TAG, family=6)
        assert argv == ("ip6tables-nft-restore", "--noflush", "-w") and "-s fd00::3 " in script
        assert backend.partition_unblock(TAG, family=6)[0] == argv


# -- probes ---------------------------------------------------------------------


def test_path_probes_are_made_by_the_link_backend():
    links = Iproute2()
    assert links.route_get("10.0.0.2") == ("-j", "route", "get", "10.0.0.2")
    assert links.neigh_show("10.0.0.2", "br0") == ("-j", "neigh", "show", "to", "10.0.0.2", "dev", "br0")
    assert links.fdb_show("br0") == ("bridge", "-j", "fdb", "show", "br", "br0")
    assert links.ping("10.0.0.2", 4) == ("ping", "-c1", "-W1", "10.0.0.2")
    assert links.ping("fd00::2", 6) == ("ping", "-6", "-c1", "-W1", "fd00::2")


def test_forward_probes_per_xtables_flavour():
    xtables = get_backend("iptables")
    assert xtables("nft").forward_probe(4) == ("nft", "-j", "list", "chain", "ip", "filter", "FORWARD")
    assert xtables("nft").forward_probe(6) == ("nft", "-j", "list", "chain", "ip6", "filter", "FORWARD")
    assert xtables("legacy").forward_probe(6) == ("cat", "/proc/net/ip6_tables_names")
    assert xtables(None).forward_probe(4) is None and Nftables().forward_probe(4) is None
    assert xtables("legacy").forward_found(4, "nat\nfilter\n") and not xtables("legacy").forward_found(4, "nat\n")
    assert xtables("nft").forward_found(4, '{"nftables": [{"chain": {"name": "FORWARD"}}]}')


def test_the_read_phase_finds_the_hairpin_port_through_the_backends_probes():
    host = Host(dry_run=True, firewall=Nftables())
    runner = host.runner
    assert isinstance(runner, RecordingRunner)
    runner.respond(["ip", "-j", "route", "get"], stdout='[{"dev": "br0"}]')
    runner.respond(["ip", "-d", "-j", "addr", "show", "dev", "br0"], stdout='[{"linkinfo": {"info_kind": "bridge"}}]')
    runner.respond(["ip", "-j", "neigh", "show"], stdout='[{"lladdr": "02:00:00:00:00:02"}]')
    runner.respond(["bridge", "-j", "fdb"], stdout='[{"mac": "02:00:00:00:00:02", "ifname": "veth7"}]')
    create_all([PortMap(8080, "10.0.0.2", 80, host=host)])
    ran = [call.argv for call in runner.history]
    assert ("ping", "-c1", "-W1", "10.0.0.2") in ran
    assert ("ip", "link", "set", "dev", "veth7", "type", "bridge_slave", "hairpin", "on") in ran
    script = next(call.input for call in runner.history if call.input and "published" in call.input)
    assert "hp=veth7" in script and "lnet=br0" in script


# -- a preview runs nothing -------------------------------------------------------


def test_preview_runs_no_command():
    host = Host(runner=RefusingRunner(), firewall=Iptables("nft"))
    where = Namespace("gw", host=host)
    objects = [
        PortMap(8080, "10.0.0.2", 80, namespace=where),
        PortMap(5353, "fd00::2", 53, "udp", namespace=where),
        Masquerade("10.0.0.0/24", "br0", namespace=where),
        *Isolation.both("br0", ["br1"], namespace=where),
    ]
    calls = preview(objects)
    assert calls and all(
        call.argv[-3:] == ("iptables-nft-restore", "--noflush", "-w")
        or call.argv[-3:] == ("ip6tables-nft-restore", "--noflush", "-w")
        for call in calls
    )
    assert any("DNAT --to-destination 10.0.0.2:80" in (call.input or "") for call in calls)


def test_lab_plan_and_explain_run_no_command():
    host = Host(runner=RefusingRunner(), firewall=Nftables())
    lab = Lab("quiet", host=host)
    net = lab.network("front", subnet="10.20.0.0/24")
    web = lab.namespace("web", networks=[net])
    lab.namespace("other", networks=[lab.network("back", subnet="10.21.0.0/24")])
    lab.publish(web, 8080, 80)
    text = lab.explain()
    assert "dnat to 10.20.0.2:80" in text and "hairpin on" in text
    assert lab.plan()


def test_listeners_and_conntrack_commands_come_from_backends():
    assert Iproute2().listeners("udp") == ("ss", "-H", "-l", "-n", "-p", "-u")
    assert Nftables().conntrack_delete(4, "udp", 53, "10.0.0.1") == (
        "conntrack", "-D", "-f", "ipv4", "-p", "udp", "--orig-port-dst", "53", "--orig-dst", "10.0.0.1",
    )  # fmt: skip
    assert Iptables("legacy").conntrack_delete(6, "udp", 53, None)[3] == "ipv6"
    with pytest.raises(InvalidValue):
        Nftables().conntrack_delete(4, "udp", 53, "10.0.0.1 -D")
    host = Host(dry_run=True, firewall=Nftables())
    create_all([PortMap(5353, "10.0.0.2", 53, "udp", host_ip="192.0.2.1", host_port_end=5354, host=host)])
    flushed = [call.argv for call in host.history if call.argv[0] == "conntrack"]
    assert [argv[7] for argv in flushed] == ["5353", "5354"] and all("192.0.2.1" in argv for argv in flushed)


class SmallBuffer(RecordingRunner):
    """A kernel that refuses a batch of more than 250 lines, as nft in a user namespace does."""

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        if input is not None and input.count("\n") > 250:
            return CompletedCommand(argv, 1, "", "netlink: Error: Could not process rule: Message too long\n")
        return super()._execute(argv, input, timeout)


def test_a_batch_too_large_for_the_kernel_is_written_in_parts_in_order():
    host = Host(runner=SmallBuffer(), firewall="nftables", tag=TAG)
    gw = Namespace("gw", host=host)
    create_all([PortMap(20000 + n, f"10.0.{n // 250}.{n % 250 + 2}", 80, namespace=gw, host=host) for n in range(150)])
    scripts = [call.input for call in host.runner.history if call.input is not None]
    whole, *parts = [script for script in scripts if "add rule ip pynetns published" in script]
    assert whole.count("\n") > 250 and len(parts) >= 2
    assert "".join(parts) == whole  # the same lines, in the same order
    assert all(part.count("\n") <= 250 for part in parts)


def test_a_backend_whose_scripts_cannot_be_cut_raises_the_kernels_refusal():
    host = Host(runner=SmallBuffer(), firewall="iptables", tag=TAG)
    gw = Namespace("gw", host=host)
    with pytest.raises(PynetnsError, match="Message too long"):
        create_all(
            [PortMap(20000 + n, f"10.0.{n // 250}.{n % 250 + 2}", 80, namespace=gw, host=host) for n in range(150)]
        )
