"""Bad input is refused with a PynetnsError that says what to do, before any command runs.

Each refusal is checked against a dry-run Host's history (or a real Host's ``capture()``): empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pynetns import Bridge, Host, InvalidInput, Lab, Masquerade, Namespace, PortMap, Topology, TopologyError
from pynetns.backends.iproute2 import Iproute2
from pynetns.backends.nsenter import Nsenter
from pynetns.backends.recording import RecordingRunner
from pynetns.errors import (
    AlreadyExists,
    BackendUnavailable,
    CommandError,
    InvalidAddress,
    InvalidValue,
    NotFound,
    PortInUse,
    UnknownBackend,
)
from pynetns.runner import Call
from tests.support.nat import NFT_LIST, dry, nft_listing, scripts


@pytest.fixture
def quiet() -> Iterator[Host]:
    """A dry-run Host that must have run nothing by the end of the test."""
    host = Host(dry_run=True, firewall="nftables")
    yield host
    assert host.history == [], [str(call) for call in host.history]


# -- argv --------------------------------------------------------------------------------------


BAD_ARGV = ["id; reboot", b"id", bytearray(b"id"), [], (), ["ping", 1], ["ping", "a\x00b"], None, 42]


@pytest.mark.parametrize("argv", BAD_ARGV, ids=repr)
def test_run_and_popen_refuse_anything_but_a_list_of_arguments(quiet: Host, argv: object) -> None:
    web = Namespace("web", host=quiet)
    with pytest.raises(InvalidValue) as caught:
        web.run(argv)  # type: ignore[arg-type]
    assert caught.value.field == "argv" and "argument" in caught.value.rule
    with pytest.raises(InvalidValue):
        web.popen(argv)  # type: ignore[arg-type]
    assert web.processes == []


def test_a_shell_string_is_refused_on_a_real_host_too() -> None:
    host = Host()
    web = Namespace("web", host=host)
    with host.capture() as calls, pytest.raises(InvalidValue, match="not a string"):
        web.run("id; reboot")  # type: ignore[arg-type]
    for where in (Namespace.host(host), Namespace.from_pid(1, host=host)):
        with host.capture() as more, pytest.raises(InvalidValue, match="not be empty"):
            where.run([])
        calls += more
    assert calls == []


def test_a_good_argv_still_runs() -> None:
    host = Host(dry_run=True)
    Namespace("web", host=host).run(("ping", "-c1", "10.0.0.2"))
    Namespace("web", host=host).popen(iter(["sleep", "1"]))  # any iterable of strings
    assert host.history == [
        Call(("ip", "netns", "exec", "web", "ping", "-c1", "10.0.0.2")),
        Call(("ip", "netns", "exec", "web", "sleep", "1")),
    ]


# -- subnets -----------------------------------------------------------------------------------


NOT_FOR_HOSTS = [
    "127.0.0.0/24",
    "127.0.0.0/8",
    "224.0.0.0/24",
    "239.1.0.0/16",
    "0.0.0.0/0",
    "0.0.0.0/8",
    "0.0.0.0/1",
    "128.0.0.0/1",
    "169.254.0.0/16",
    "169.254.10.0/24",
    "240.0.0.0/24",
    "255.255.255.0/24",
    "::/0",
    "::1/128",
    "::/120",
    "fe80::/10",
    "fe80::/64",
    "ff00::/8",
    "ff02::/64",
    "::ffff:0:0/104",
]


@pytest.mark.parametrize("subnet", NOT_FOR_HOSTS)
def test_a_subnet_that_is_not_unicast_is_refused_at_declaration(quiet: Host, subnet: str) -> None:
    lab = Lab("bad", host=quiet, isolated=True)
    with pytest.raises(InvalidAddress) as caught:
        lab.network("net", subnet=subnet)
    assert caught.value.field == "subnet" and "must be a unicast subnet" in str(caught.value)
    assert "10.0.0.0/8" in str(caught.value)  # says what is acceptable
    assert lab.networks == {}
    with pytest.raises(TopologyError, match=r"lab\.toml: networks\.net\.subnet: .*unicast"):
        Topology.from_dict({"networks": {"net": {"subnet": subnet}}}, source="lab.toml")


@pytest.mark.parametrize(
    "subnet",
    [
        "10.0.0.0/24",
        "172.16.5.0/24",
        "192.168.9.0/24",
        "100.64.0.0/24",
        "203.0.113.0/24",
        "fd00:1::/64",
        "2001:db8::/64",
    ],
)
def test_unicast_subnets_are_accepted(quiet: Host, subnet: str) -> None:
    lab = Lab("good", host=quiet, isolated=True)
    assert str(lab.network("net", subnet=subnet).subnet) == subnet
    Topology.from_dict({"networks": {"net": {"subnet": subnet}}})


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1/8", "224.0.0.1/24", "0.0.0.0/0", "255.255.255.255/32", "240.0.0.1/24", "::1/128", "::/0", "ff02::1/64"],
)
def test_a_bridge_gateway_must_be_unicast(quiet: Host, address: str) -> None:
    with pytest.raises(InvalidAddress, match="unicast"):
        Bridge("br0", address=address, host=quiet)


def test_a_link_local_bridge_gateway_is_fine(quiet: Host) -> None:
    assert str(Bridge("br0", address="fe80::1/64", host=quiet).address) == "fe80::1/64"
    assert str(Bridge("br1", address="169.254.1.1/16", host=quiet).address) == "169.254.1.1/16"


# -- topology files nested too deeply ----------------------------------------------------------


DEEP = 100_000
NESTED = {
    "json": '{"networks": ' + "[" * DEEP + "]" * DEEP + "}",
    "toml": "networks = " + "[" * DEEP + "]" * DEEP + "\n",
    "yaml": "networks: " + "[" * DEEP + "]" * DEEP + "\n",
}


@pytest.mark.parametrize("kind", sorted(NESTED))
@pytest.mark.parametrize("depth", [600, DEEP])
def test_a_topology_nested_too_deeply_is_an_error_naming_the_file(tmp_path: Path, kind: str, depth: int) -> None:
    if kind == "yaml":
        pytest.importorskip("yaml")
    text = NESTED[kind].replace("[" * DEEP, "[" * depth).replace("]" * DEEP, "]" * depth)
    path = tmp_path / f"deep.{kind}"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        Topology.from_file(path)
    assert caught.value.source == str(path) and str(caught.value).startswith(f"{path}: ")
    assert isinstance(caught.value, ValueError)


def test_a_deep_structure_given_as_a_dict_is_an_error_too() -> None:
    deep: object = []
    for _ in range(5000):
        deep = {"x": deep}
    with pytest.raises(TopologyError, match="<dict>"):
        Topology.from_dict({"networks": {"net": {"subnet": deep}}})


# -- the Host: its tag and its backends --------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    [
        "pynetns:a b",
        "pynetns:a\nb",
        "pynetns:",
        "pynetns:" + "a" * 41,
        "other:x",
        "pynetns:a;b",
        'pynetns:a"b',
        "pynetns:ä",
        42,
        b"pynetns:x",
    ],
    ids=repr,
)
def test_a_bad_tag_is_refused_when_the_host_is_made(tag: object) -> None:
    with pytest.raises(InvalidValue, match="'pynetns:' followed by 1 to 40"):
        Host(dry_run=True, tag=tag)  # type: ignore[arg-type]


def test_an_object_with_a_bad_tag_of_its_own_is_refused_when_it_is_made(quiet: Host) -> None:
    for make in (
        lambda: Bridge("br0", host=quiet, tag="pynetns:a b"),
        lambda: PortMap(8080, "10.0.0.2", 80, host=quiet, tag="pynetns:x\nflush ruleset"),
        lambda: Masquerade("10.0.0.0/24", "br0", host=quiet, tag="other"),
    ):
        with pytest.raises(InvalidValue, match="'pynetns:' followed by"):
            make()


def test_good_tags_are_kept() -> None:
    for tag in ("pynetns:x", "pynetns:" + "a" * 40, "pynetns:web-1.test_2"):
        assert Host(dry_run=True, tag=tag).tag == tag
    assert Host(dry_run=True).tag == "pynetns:dry-run"
    assert Host(runner=RecordingRunner()).tag == "pynetns:dry-run"


@pytest.mark.parametrize(
    ("role", "choice", "named"),
    [
        ("links", "nftables", "LinkBackend"),
        ("links", "nsenter", "LinkBackend"),
        ("links", "recording", "LinkBackend"),
        ("enter", "iproute2", "EnterBackend"),
        ("firewall", "iproute2", "FirewallBackend"),
        ("firewall", "recording", "FirewallBackend"),
        ("links", Nsenter(), "LinkBackend"),
        ("enter", Iproute2(), "EnterBackend"),
        ("firewall", Iproute2(), "FirewallBackend"),
        ("links", Iproute2, "LinkBackend"),  # a class, not a backend object
        ("links", 42, "LinkBackend"),
        ("shaping", "iproute2", "ShapingBackend"),
        ("shaping", "nftables", "ShapingBackend"),
        ("shaping", Iproute2(), "ShapingBackend"),
    ],
    ids=lambda value: value if isinstance(value, str) else getattr(value, "__name__", type(value).__name__),
)
def test_a_backend_in_the_wrong_role_is_refused_when_the_host_is_made(role: str, choice: object, named: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        Host(dry_run=True, **{role: choice})  # type: ignore[arg-type]
    message = str(caught.value)
    assert caught.value.field == role and named in message
    expected = {"links": "iproute2", "enter": "nsenter", "firewall": "iptables, nftables", "shaping": "tc"}[role]
    assert f"registered: {expected}" in message  # the choices that fit the role


def test_an_unknown_backend_name_lists_the_choices_of_its_role() -> None:
    with pytest.raises(UnknownBackend, match=r"links='iproute3'.*LinkBackends registered: iproute2"):
        Host(dry_run=True, links="iproute3")
    with pytest.raises(InvalidValue, match="Runner"):
        Host(runner="local")  # type: ignore[arg-type]


def test_right_backends_are_accepted() -> None:
    host = Host(dry_run=True, links=Iproute2(), enter="nsenter", firewall="iptables")
    assert host.links.name == "iproute2" and host.enter.name == "nsenter" and host.history == []


# -- refusals found before any command are not command errors ----------------------------------


def test_an_object_that_exists_already_is_an_already_exists_not_a_command_error() -> None:
    host, gw = dry()
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(NFT_LIST, nft_listing(("postrouting", 7, "pynetns:unit masq/br0/10.0.0.0/24")))
    with pytest.raises(AlreadyExists) as caught:
        Masquerade("10.0.0.0/24", "br0", namespace=gw, host=host).create()
    assert not isinstance(caught.value, CommandError) and "masq/br0/10.0.0.0/24 already exists" in str(caught.value)
    assert caught.value.argv == ()  # no invented command
    assert scripts(host) == []


def test_deleting_an_object_that_is_not_there_is_a_not_found_not_a_command_error() -> None:
    host = Host(dry_run=True, firewall="nftables", tag="pynetns:mine")
    portmap = PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host), host=host)
    with pytest.raises(NotFound) as caught:
        portmap.delete()
    assert not isinstance(caught.value, CommandError) and isinstance(caught.value, LookupError)
    assert "portmap/tcp/any/8080-8080 does not exist" in str(caught.value)


def test_a_port_held_is_a_port_in_use_not_a_command_error() -> None:
    host = Host(dry_run=True, firewall="nftables")
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(
        ("ip", "netns", "exec", "gw", "ss"), 'LISTEN 0 5 0.0.0.0:8080 0.0.0.0:* users:(("python3",pid=42,fd=3))\n'
    )
    with pytest.raises(PortInUse) as caught:
        PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host), host=host).create()
    error = caught.value
    assert not isinstance(error, CommandError) and "python3" in str(error) and error.holder
    assert error.argv[-6:] == ("ss", "-H", "-l", "-n", "-p", "-t") and "0.0.0.0:8080" in error.evidence
    assert scripts(host) == []


# -- ss failing is an error, not a skipped check -----------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "expected", "message"),
    [
        ('exec of "ss" failed: No such file or directory\n', BackendUnavailable, "iproute2"),
        ("Cannot open netlink socket: Protocol not supported\n", CommandError, "netlink"),
    ],
)
def test_when_ss_fails_no_port_is_published(stderr: str, expected: type[Exception], message: str) -> None:
    host = Host(dry_run=True, firewall="nftables")
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(("ip", "netns", "exec", "gw", "ss"), stderr=stderr, returncode=1)
    with pytest.raises(expected, match=message):
        PortMap(8080, "10.0.0.2", 80, namespace=Namespace("gw", host=host), host=host).create()
    assert scripts(host) == []  # nothing written: the check did not pass for "no listener"


def test_invalid_input_is_a_value_error() -> None:
    assert issubclass(InvalidInput, ValueError) and issubclass(TopologyError, InvalidInput)
