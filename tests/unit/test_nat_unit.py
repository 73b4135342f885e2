"""Published ports and NAT without root: validation, script generation, injection refusal, bookkeeping."""

from __future__ import annotations

from typing import Any

import pytest

from pynetns import CommandError, Host, InvalidInput, Masquerade, Namespace, PortInUse, PortMap, PynetnsError
from pynetns.backends import get_backend
from pynetns.backends.base import FirewallBackend, FirewallRule, FirewallState
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.backends.recording import RecordingRunner
from pynetns.runner import CompletedCommand
from tests.support.nat import NFT_LIST, dry, nft_listing, scripts


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host_port": 0},
        {"host_port": 65536},
        {"host_port": -1},
        {"host_port": "8080"},
        {"host_port": 8080.0},
        {"host_port": True},
        {"port": 0},
        {"port": 70000},
        {"address": "10.0.0.300"},
        {"address": "10.0.0.2\nflush ruleset"},
        {"address": "10.0.0.2; flush ruleset"},
        {"address": "example.com"},
        {"address": "127.0.0.1"},
        {"host_ip": "1.2.3.4/24"},
        {"host_ip": "::1"},
        {"protocol": "dccp"},
        {"protocol": "tcp;"},
        {"host_port_end": 8000},
        {"port": 65535, "host_port_end": 8081},
    ],
)
def test_bad_values_are_refused_before_any_command(kwargs: dict[str, Any]) -> None:
    host, gw = dry()
    values: dict[str, Any] = {"host_port": 8080, "address": "10.0.0.2", "port": 80, **kwargs}
    with pytest.raises(InvalidInput):
        PortMap(**values, namespace=gw, host=host).create()
    assert host.history == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subnet": "10.0.0.0/24\nflush ruleset"},
        {"subnet": "10.0.0.1/24"},
        {"bridge": 'br0"; flush ruleset'},
        {"bridge": "br0\n"},
        {"bridge": "a-much-too-long-name"},
    ],
)
def test_bad_masquerade_values_are_refused(kwargs: dict[str, Any]) -> None:
    host, gw = dry()
    values: dict[str, Any] = {"subnet": "10.0.0.0/24", "bridge": "br0", **kwargs}
    with pytest.raises(InvalidInput):
        Masquerade(**values, namespace=gw, host=host).create()
    assert host.history == []


@pytest.mark.parametrize("backend", [Nftables(), Iptables()])
@pytest.mark.parametrize(
    "field, value",
    [
        ("iif", "br0\nflush ruleset"),
        ("oif", 'br0" ; flush ruleset'),
        ("saddr", "10.0.0.0/8; flush ruleset"),
        ("to_address", "10.0.0.2\nadd rule ip filter input drop"),
        ("protocol", "tcp; flush ruleset"),
    ],
)
def test_a_backend_checks_every_token_again(backend: FirewallBackend, field: str, value: str) -> None:
    rule = FirewallRule(
        "dnat", "pynetns:unit x", protocol="tcp", dport=(80, 80), action="dnat", to_address="10.0.0.2", to_port=(80, 80)
    )
    rule = FirewallRule(**{**_fields(rule), field: value})
    with pytest.raises(InvalidInput):
        backend.script(4, "nat", FirewallState(), add=[rule])


def _fields(rule: FirewallRule) -> dict[str, Any]:
    return {attribute.name: getattr(rule, attribute.name) for attribute in type(rule).__attrs_attrs__}


@pytest.mark.parametrize("comment", ['pynetns:x "; flush ruleset', "pynetns:x\nflush ruleset", "other x", "pynetns;x"])
def test_a_comment_cannot_carry_a_rule(comment: str) -> None:
    with pytest.raises(InvalidInput):
        FirewallRule("dnat", comment)


def test_a_tag_with_a_newline_never_reaches_nft() -> None:
    with pytest.raises(InvalidInput):  # refused when the Host is made
        Host(dry_run=True, firewall="nftables", tag="pynetns:x\nflush ruleset")
    host = Host(dry_run=True, firewall="nftables")
    with pytest.raises(InvalidInput):  # and where an object carries its own tag
        PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host), host=host, tag="pynetns:x\nflush").create()
    assert not any("flush" in (call.input or "") for call in host.history)


def test_every_script_line_is_a_known_nft_command() -> None:
    host, gw = dry()
    PortMap(
        8080, "10.0.0.2", 80, protocol="udp", host_ip="192.168.1.1", host_port_end=8089, namespace=gw, host=host
    ).create()
    Masquerade("10.0.0.0/24", "br0", namespace=gw, host=host).create()
    for script in scripts(host):
        for line in script.splitlines():
            assert line.split()[:2] in (["add", "table"], ["add", "chain"], ["add", "rule"]), line
            assert ";" not in line.split("{")[0] and "flush" not in line


def test_nftables_create_is_one_transaction_with_one_rule_per_range() -> None:
    host, gw = dry()
    PortMap(8000, "10.0.0.2", 7000, host_port_end=8002, namespace=gw, host=host).create()
    (script,) = scripts(host)
    dnat = [line for line in script.splitlines() if line.startswith("add rule ip pynetns published")]
    assert dnat == [
        "add rule ip pynetns published tcp dport 8000-8002 counter dnat to tcp dport map "
        "{ 8000 : 10.0.0.2 . 7000, 8001 : 10.0.0.2 . 7001, 8002 : 10.0.0.2 . 7002 } "
        'comment "pynetns:unit portmap/tcp/any/8000-8002"'
    ]
    assert 'add rule ip pynetns records counter comment "pynetns saved net.ipv4.ip_forward=0"' in script
    assert "ip netns exec gw sysctl -w net.ipv4.ip_forward=1" in [str(call) for call in host.history]


def test_iptables_create_uses_its_own_chains_and_comments() -> None:
    host, gw = dry("iptables")
    PortMap(8080, "10.0.0.2", 80, host_ip="192.168.1.1", namespace=gw, host=host).create()
    (script,) = scripts(host)
    call = next(call for call in host.history if call.input)
    assert call.argv == ("ip", "netns", "exec", "gw", "iptables-restore", "--noflush", "-w")
    lines = script.splitlines()
    assert lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert (
        "-A PYNETNS-DNAT -d 192.168.1.1 -p tcp -m tcp --dport 8080 -m comment --comment "
        '"pynetns:unit portmap/tcp/192.168.1.1/8080-8080" -j DNAT --to-destination 10.0.0.2:80'
    ) in lines
    for line in lines[1:-1]:
        assert line.startswith(("-N PYNETNS-", "-A PYNETNS-")) or '"pynetns jump"' in line, line


def test_delete_removes_exactly_its_rules_by_handle() -> None:
    host, gw = dry()
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(
        NFT_LIST,
        nft_listing(
            ("published", 7, "pynetns:unit portmap/tcp/any/8080-8080"),
            ("postrouting", 8, "pynetns:unit portmap/tcp/any/8080-8080 lnet=br0"),
            ("published", 9, "pynetns:unit portmap/tcp/any/9090-9090"),
            ("records", 3, "pynetns saved net.ipv4.ip_forward=0"),
            ("records", 4, "pynetns saved net.ipv4.conf.br0.route_localnet=0"),
            ("prerouting", 5, "pynetns jump"),
        ),
    )
    mapping = PortMap(8080, "10.0.0.2", 80, namespace=gw, host=host)
    assert mapping.exists()
    assert mapping.counters().packets == 3
    mapping.delete()
    (script,) = scripts(host)
    assert script.splitlines() == [
        "delete rule ip pynetns published handle 7",
        "delete rule ip pynetns postrouting handle 8",
        "delete rule ip pynetns records handle 4",
    ]
    # route_localnet goes back; ip_forward stays on for the mapping of 9090
    commands = [str(call) for call in host.history]
    assert "ip netns exec gw sysctl -w net.ipv4.conf.br0.route_localnet=0" in commands
    assert not any("ip_forward=0" in command for command in commands)


def test_the_last_delete_removes_the_table_and_restores_ip_forward() -> None:
    host, gw = dry()
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(
        NFT_LIST,
        nft_listing(
            ("postrouting", 7, "pynetns:unit masq/br0/10.0.0.0/24"),
            ("records", 3, "pynetns saved net.ipv4.ip_forward=0"),
        ),
    )
    Masquerade("10.0.0.0/24", "br0", namespace=gw, host=host).delete()
    assert scripts(host) == ["delete table ip pynetns\n"]
    assert "ip netns exec gw sysctl -w net.ipv4.ip_forward=0" in [str(call) for call in host.history]


def test_a_port_pynetns_maps_is_refused_before_any_change() -> None:
    host, gw = dry()
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(NFT_LIST, nft_listing(("published", 7, "pynetns:other portmap/tcp/any/8070-8090")))
    with pytest.raises(PortInUse) as caught:
        PortMap(8080, "10.0.0.2", 80, host_ip="10.1.1.1", namespace=gw, host=host).create()
    assert caught.value.holder == "pynetns:other (portmap/tcp/any/8070-8090)"
    assert scripts(host) == []
    # another protocol, or ports outside the range, are free
    PortMap(8080, "10.0.0.2", 80, protocol="udp", namespace=gw, host=host).create()
    PortMap(8091, "10.0.0.2", 80, namespace=gw, host=host).create()


def test_a_listening_process_is_named() -> None:
    host, gw = dry()
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(
        ("ip", "netns", "exec", "gw", "ss"), 'LISTEN 0 5 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=42,fd=3))\n'
    )
    with pytest.raises(PortInUse, match="python3"):
        PortMap(8080, "10.0.0.2", 80, namespace=gw, host=host).create()
    PortMap(8080, "10.0.0.2", 80, host_ip="10.1.1.1", namespace=gw, host=host).create()


def test_iptables_listing_is_parsed_with_counters_and_deleted_by_spec() -> None:
    saved = "\n".join(
        [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":PYNETNS-DNAT - [0:0]",
            '[5:300] -A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "pynetns jump" -j PYNETNS-DNAT',
            "[1:60] -A PREROUTING -s 10.9.0.0/16 -j ACCEPT",
            '[5:300] -A PYNETNS-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "pynetns:unit portmap/tcp/any/'
            '8080-8080" -j DNAT --to-destination 10.0.0.2:80',
            "COMMIT",
        ]
    )
    backend = Iptables("nft")
    state = backend.parse(4, "nat", [saved])
    assert state.chains == {"PYNETNS-DNAT"} and state.busy == {"PREROUTING"}
    (mapping,) = state.owned()
    assert (mapping.packets, mapping.bytes) == (5, 300)
    lines = backend.script(4, "nat", state, remove=[mapping])
    assert lines[1] == (
        "-D PYNETNS-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "
        '"pynetns:unit portmap/tcp/any/8080-8080" -j DNAT --to-destination 10.0.0.2:80'
    )
    teardown = backend.script(4, "nat", state, teardown=True)
    assert "-X PYNETNS-DNAT" in teardown and "-X PREROUTING" not in teardown


def test_firewall_is_chosen_lazily_and_by_name() -> None:
    assert get_backend("nftables") is Nftables and get_backend("iptables") is Iptables
    assert isinstance(Host(dry_run=True).firewall, Nftables)
    assert isinstance(Host(dry_run=True, firewall="iptables").firewall, Iptables)
    mine = Iptables("legacy")
    assert Host(dry_run=True, firewall=mine).firewall is mine
    with pytest.raises(PynetnsError):
        _ = Host(dry_run=True, firewall="iproute2").firewall
    host = Host(dry_run=True, firewall="nftables")
    assert host.history == []


@pytest.mark.parametrize(
    "text, variant", [("iptables v1.8.9 (nf_tables)", "nft"), ("iptables v1.8.9 (legacy)", "legacy")]
)
def test_iptables_says_whether_it_is_legacy_or_nf_tables(text: str, variant: str) -> None:
    backend = Iptables.detect(lambda argv: CompletedCommand(tuple(argv), 0, text + "\n"))
    assert backend.variant == variant
    assert ("legacy" if variant == "legacy" else "nf_tables") in backend.describe()
    assert backend.batch_command(4) == (f"iptables-{variant}-restore", "--noflush", "-w")
    assert backend.batch_command(6)[0] == f"ip6tables-{variant}-restore"


def test_a_backend_missing_a_method_fails_at_construction() -> None:
    class Half(FirewallBackend):
        name = "half"

        def batch_command(self, family: Any) -> tuple[str, ...]:
            return ("true",)

    with pytest.raises(TypeError):
        Half()  # type: ignore[abstract]


def test_a_failed_create_raises_its_own_error_with_the_undo_failures_attached() -> None:
    class Failing(RecordingRunner):
        """The write fails; after it, reading the firewall (for the undo) fails too."""

        written = False

        def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
            if "-f" in argv:
                self.written = True
                return CompletedCommand(argv, 1, "", "Error: Could not process rule: Invalid argument")
            if self.written and "list" in argv:
                return CompletedCommand(argv, 1, "", "Error: Could not process rule: Operation not permitted")
            return super()._execute(argv, input, timeout)

    host = Host(runner=Failing(), firewall="nftables", tag="pynetns:unit")
    with pytest.raises(CommandError) as caught:
        PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host), host=host).create()
    assert "Invalid argument" in str(caught.value)  # the write's error, not the undo's
    (undo,) = caught.value.undo_errors  # type: ignore[attr-defined]
    assert "Operation not permitted" in str(undo)
