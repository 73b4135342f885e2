"""Bad input is refused with a named error before any command runs."""

import ipaddress

import pytest

from pynetns import (
    Bridge,
    Host,
    InvalidAddress,
    InvalidName,
    InvalidValue,
    Namespace,
    PynetnsError,
    Route,
    Veth,
    validation,
)

INJECTIONS = ["a;b", "$(id)", "-h", "x\ny", "a b", "`id`", "a|b", "..", ".", "", "a/b", "名前", "a'b", 'a"b', "#x"]


@pytest.mark.parametrize("value", [*INJECTIONS, "sixteen-bytes-xx", 7, None])
def test_interface_names_refused(value):
    with pytest.raises(InvalidName) as caught:
        validation.interface_name("name", value)
    assert caught.value.field == "name"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, PynetnsError)


@pytest.mark.parametrize("value", ["eth0", "veth-1a2b.3_c", "a", "fifteen-bytes-x"])
def test_interface_names_accepted(value):
    assert validation.interface_name("name", value) == value


@pytest.mark.parametrize("value", [*INJECTIONS, "x" * 65])
def test_namespace_names_refused(value):
    with pytest.raises(InvalidName):
        Namespace(value, host=Host(dry_run=True))


def test_error_names_field_and_rule():
    with pytest.raises(InvalidName, match=r"peer='a;b': only letters, digits"):
        Veth("veth0", "a;b", host=Host(dry_run=True))


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (validation.interface_address, "10.0.0.1"),  # no prefix length
        (validation.interface_address, "10.0.0.300/24"),
        (validation.interface_address, "10.0.0.1/33"),
        (validation.interface_address, "10.0.0.1/24\nflush ruleset"),
        (validation.ip_address, "10.0.0.1/24"),
        (validation.ip_address, "fe80::1;"),
        (validation.network, "10.0.0.1/24"),  # host bits set
        (validation.mac_address, "01:00:5e:00:00:01"),  # multicast
        (validation.mac_address, "02:42:ac:11:00"),
    ],
)
def test_addresses_refused(check, value):
    with pytest.raises(InvalidAddress):
        check("field", value)


def test_addresses_normalised():
    assert validation.interface_address("a", "172.17.0.2/16") == ipaddress.ip_interface("172.17.0.2/16")
    assert validation.mac_address("m", "02:42:AC:11:00:02") == "02:42:ac:11:00:02"
    assert validation.route_destination("d", "default") == "default"
    assert validation.route_destination("d", "10.1.2.3/32") == "10.1.2.3"


@pytest.mark.parametrize("value", [67, 65536, -1, 1500.0, "1500", True])
def test_mtu_refused(value):
    with pytest.raises(InvalidValue):
        Bridge("br0", mtu=value, host=Host(dry_run=True))


@pytest.mark.parametrize("value", [0, 65536, -1, 80.0, "80", True])
def test_port_refused(value):
    with pytest.raises(InvalidValue):
        validation.port("port", value)


@pytest.mark.parametrize("value", ["net.ipv4.ip_forward\n", "a b", "../../etc", "", "net..x"])
def test_sysctl_keys_refused(value):
    with pytest.raises(InvalidValue):
        validation.sysctl_key("key", value)


def test_route_needs_gateway_or_device():
    with pytest.raises(InvalidValue, match="gateway"):
        Route("default", host=Host(dry_run=True))


def test_nothing_runs_for_refused_input():
    host = Host(dry_run=True)
    for build in (
        lambda: Bridge("br;reboot", host=host),
        lambda: Veth("v0", "eth0", peer_address="10.0.0.2", host=host),
        lambda: Route("default", via="10.0.0.1;x", host=host),
        lambda: Namespace("$(id)", host=host),
    ):
        with pytest.raises(PynetnsError):
            build().create()
    assert host.history == []
