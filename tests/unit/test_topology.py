"""Topology files: TOML, JSON and YAML read to the same Topology, declared on a Lab, and refused with errors that
name the file, the field and the rule before anything is declared.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_topology.py.
"""

import ipaddress
import json
import pickle
import sys
from pathlib import Path

import pytest

from pynetns import BackendUnavailable, Host, InvalidInput, InvalidValue, Lab, SubnetOverlap
from pynetns.lab.topology import LinkSpec, NamespaceSpec, NetworkSpec, PublishSpec, Topology, TopologyError

DATA = Path(__file__).parent.parent / "data" / "topologies"


SHOP = Topology(
    name="shop",
    isolated=True,
    networks=[
        NetworkSpec("front", subnet="10.30.0.0/24", gateway="10.30.0.1", nat=True, internal=False, mtu=1500),
        NetworkSpec("back", subnet="10.31.0.0/24", internal=True),
    ],
    namespaces=[
        NamespaceSpec("web", [LinkSpec("web", "front"), LinkSpec("web", "back")]),
        NamespaceSpec("db", [LinkSpec("db", "back", ip="10.31.0.10", ifname="eth0")]),
        NamespaceSpec("cache"),
    ],
    links=[LinkSpec("cache", "back", ip="10.31.0.20")],
    publish=[PublishSpec("web", 8080, 80, protocol="tcp", host_ip="127.0.0.1")],
)


def dry_lab(**kwargs):
    return Lab(host=Host(dry_run=True), **kwargs)


def without_publish(topology):
    return Topology.from_dict({**topology.to_dict(), "publish": []}, source=topology.source)


@pytest.mark.parametrize("suffix", ["toml", "json", "yaml"])
def test_the_three_formats_read_to_the_same_topology(suffix):
    path = DATA / f"shop.{suffix}"
    topology = Topology.from_file(path)
    assert topology == SHOP
    assert topology.source == str(path)
    assert topology.networks[0].subnet == ipaddress.ip_network("10.30.0.0/24")
    assert topology.namespaces[1].networks[0].ip == ipaddress.ip_address("10.31.0.10")


def test_yml_suffix_format_override_and_text(tmp_path):
    (tmp_path / "shop.yml").write_text((DATA / "shop.yaml").read_text())
    (tmp_path / "shop.conf").write_text((DATA / "shop.json").read_text())
    assert Topology.from_file(tmp_path / "shop.yml") == SHOP
    assert Topology.from_file(str(tmp_path / "shop.conf"), format="json") == SHOP
    assert Topology.from_text((DATA / "shop.toml").read_text(), "TOML") == SHOP


def test_to_dict_round_trips_through_json():
    data = SHOP.to_dict()
    assert data["namespaces"]["web"] == {"networks": [{"network": "front"}, {"network": "back"}]}
    assert data["networks"]["back"] == {"subnet": "10.31.0.0/24", "nat": True, "internal": True, "isolate": True}
    assert Topology.from_text(json.dumps(data), "json") == SHOP
    assert Topology.from_dict(data) == SHOP


def test_empty_files_and_tables_mean_defaults():
    assert Topology.from_text("", "toml") == Topology()
    assert Topology.from_text("", "yaml") == Topology()
    empty = Topology.from_text("networks:\n  back:\nnamespaces:\n  cache:\n", "yaml")
    assert empty == Topology(networks=[NetworkSpec("back")], namespaces=[NamespaceSpec("cache")])
    assert Topology.from_dict({"name": None, "networks": {"back": {"subnet": None}}}) == Topology(
        networks=[NetworkSpec("back")]
    )


def test_values_are_normalised():
    topology = Topology.from_dict(
        {
            "networks": {"v6": {"subnet": "fd00:30::/64"}},
            "namespaces": {"web": {"networks": [{"network": "v6", "ip": "FD00:30::0A"}]}},
            "publish": [{"namespace": "web", "host_port": 53, "port": 53, "protocol": "UDP"}],
        }
    )
    assert topology.namespaces[0].networks[0].ip == ipaddress.ip_address("fd00:30::a")
    assert topology.publish[0].protocol == "udp"


def test_yaml_merge_keys_are_not_duplicates():
    text = "networks:\n  a: &defaults {mtu: 1400, internal: true}\n  b: {<<: *defaults, mtu: 1300}\n"
    topology = Topology.from_text(text, "yaml")
    assert topology.networks[1] == NetworkSpec("b", mtu=1300, internal=True)


def test_lab_declares_networks_namespaces_and_addresses():
    lab = Lab.from_topology(without_publish(SHOP), host=Host(dry_run=True))
    assert lab.name == "shop" and lab.isolated and lab.host_namespace is not None
    assert list(lab.networks) == ["front", "back"]
    front, back = lab.networks["front"], lab.networks["back"]
    assert (str(front.subnet), str(front.gateway), front.nat, front.mtu) == ("10.30.0.0/24", "10.30.0.1/24", True, 1500)
    assert (str(back.subnet), back.internal, back.nat) == ("10.31.0.0/24", True, False)
    assert list(lab.namespaces) == ["web", "db", "cache"]
    wiring = [(e.namespace, e.network.name, e.interface, str(e.ip)) for e in lab.endpoints]
    web, db, cache = (lab.namespaces[name] for name in ("web", "db", "cache"))
    assert wiring == [
        (web, "front", "eth0", "10.30.0.2/24"),
        (web, "back", "eth1", "10.31.0.2/24"),
        (db, "back", "eth0", "10.31.0.10/24"),
        (cache, "back", "eth0", "10.31.0.20/24"),
    ]
    assert "route add default via 10.30.0.1" in lab.explain()


def test_lab_isolated_can_be_overridden():
    topology = without_publish(SHOP)
    assert Lab.from_topology(topology, host=Host(dry_run=True), isolated=False).isolated is False
    assert Lab.from_topology(Topology(), host=Host(dry_run=True)).isolated is False
    assert Lab.from_topology(Topology(), host=Host(dry_run=True), isolated=True).isolated is True
    assert Lab.from_topology(Topology(), host=Host(dry_run=True)).name.startswith("lab-")
    with pytest.raises(InvalidValue, match="must be true or false"):
        Lab.from_topology(Topology(), host=Host(dry_run=True), isolated="yes")


def test_fixed_addresses_are_reserved_before_the_next_free_is_handed_out():
    topology = Topology.from_dict(
        {
            "networks": {"net": {"subnet": "10.40.0.0/24"}},
            "namespaces": {
                "a": {"networks": ["net"]},
                "b": {"networks": [{"network": "net", "ip": "10.40.0.2"}]},
                "c": {"networks": ["net"]},
            },
        }
    )
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert [str(endpoint.ip) for endpoint in lab.endpoints] == ["10.40.0.3/24", "10.40.0.2/24", "10.40.0.4/24"]


def test_networks_with_a_subnet_are_declared_before_picked_ones():
    # The lab would pick 172.17.0.0/16 for "auto" first, and then refuse "fixed".
    topology = Topology.from_dict({"networks": {"auto": {}, "fixed": {"subnet": "172.17.0.0/16"}}})
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert str(lab.networks["fixed"].subnet) == "172.17.0.0/16"
    assert str(lab.networks["auto"].subnet) == "172.18.0.0/16"


def test_ifnames_given_and_default():
    topology = Topology.from_dict(
        {
            "networks": {"a": {}, "b": {}, "c": {}},
            "namespaces": {"x": {"networks": [{"network": "a", "ifname": "lan"}, "b"]}},
            "links": [{"namespace": "x", "network": "c"}],
        }
    )
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert [endpoint.interface for endpoint in lab.endpoints] == ["lan", "eth1", "eth2"]


def test_declare_adds_to_an_existing_lab():
    lab = dry_lab()
    lab.network("mgmt", subnet="10.50.0.0/24")
    lab.namespace("admin", networks=["mgmt"])
    assert without_publish(SHOP).declare(lab) is lab
    assert list(lab.networks) == ["mgmt", "front", "back"]
    assert list(lab.namespaces) == ["admin", "web", "db", "cache"]
    assert not lab.isolated  # the file's isolated is for new labs only


@pytest.mark.parametrize(
    ("setup", "field", "rule"),
    [
        (lambda lab: lab.network("front"), "networks.front", "network front is already declared in lab {lab}"),
        (
            lambda lab: lab.network("other", subnet="10.31.0.0/16"),
            "networks.back.subnet",
            "10.31.0.0/24 overlaps subnet 10.31.0.0/16 of network other of lab {lab}",
        ),
        (lambda lab: lab.namespace("db"), "namespaces.db", "namespace db is already declared in lab {lab}"),
    ],
    ids=["network", "subnet", "namespace"],
)
def test_declare_refuses_clashes_with_the_lab_before_declaring_anything(setup, field, rule):
    lab = dry_lab(name="mine")
    setup(lab)
    before = (list(lab.networks), list(lab.namespaces), len(lab.endpoints))
    with pytest.raises(TopologyError) as caught:
        without_publish(SHOP).declare(lab)
    assert str(caught.value) == f"<Topology>: {field}: {rule.format(lab='mine')}"
    assert (list(lab.networks), list(lab.namespaces), len(lab.endpoints)) == before


def test_errors_of_the_lab_are_raised_as_they_are_with_a_note(monkeypatch):
    lab = dry_lab()
    refused = SubnetOverlap("subnet", "10.31.0.0/24", "overlaps 10.31.0.0/16, already in use")

    def network(name, **kwargs):
        if name == "back":
            raise refused
        return Lab.network(lab, name, **kwargs)

    monkeypatch.setattr(lab, "network", network)
    topology = Topology.from_file(DATA / "shop.toml")
    with pytest.raises(SubnetOverlap) as caught:
        without_publish(topology).declare(lab)
    assert caught.value is refused
    if sys.version_info >= (3, 11):
        assert caught.value.__notes__ == [f"while declaring networks.back from {DATA / 'shop.toml'}"]


def test_publish_declares_port_maps():
    lab = dry_lab()
    calls = []
    publish = lab.publish

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return publish(*args, **kwargs)

    lab.publish = spy
    SHOP.declare(lab)
    assert calls == [(("web", 8080, 80), {"protocol": "tcp", "host_ip": "127.0.0.1", "host_port_end": None})]
    assert [(str(portmap.address), portmap.host_port, portmap.port) for portmap in lab.published] == [
        ("10.30.0.2", 8080, 80)
    ]


def test_publish_udp_and_tcp_on_the_same_port_and_ranges():
    topology = Topology.from_dict(
        {
            "networks": {"front": {"subnet": "10.30.0.0/24"}},
            "namespaces": {"dns": {"networks": ["front"]}},
            "publish": [
                {"namespace": "dns", "host_port": 53, "port": 53, "protocol": "udp"},
                {"namespace": "dns", "host_port": 53, "port": 53},
                {"namespace": "dns", "host_port": 6000, "host_port_end": 6009, "port": 7000},
            ],
        }
    )
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert [(portmap.protocol, portmap.host_ports, portmap.ports) for portmap in lab.published] == [
        ("udp", (53, 53), (53, 53)),
        ("tcp", (53, 53), (53, 53)),
        ("tcp", (6000, 6009), (7000, 7009)),
    ]


def test_publish_on_a_network_targets_that_endpoint():
    topology = Topology.from_dict(
        {
            "networks": {"front": {"subnet": "10.30.0.0/24"}, "back": {"subnet": "10.31.0.0/24"}},
            "namespaces": {"web": {"networks": ["front", "back"]}},
            "publish": [{"namespace": "web", "network": "back", "host_port": 8443, "port": 443}],
        }
    )
    lab = dry_lab()
    calls = []
    publish = lab.publish

    def spy(*args, **kwargs):
        calls.append(args[0])
        return publish(*args, **kwargs)

    lab.publish = spy
    topology.declare(lab)
    assert calls == [lab.endpoints[1]] and str(lab.endpoints[1].ip) == "10.31.0.2/24"


NETS = '[networks.front]\nsubnet = "10.30.0.0/24"\n[networks.back]\nsubnet = "10.31.0.0/24"\n'


WEB = NETS + '[namespaces.web]\nnetworks = ["front"]\n'


PUBLISH = WEB + '[[publish]]\nnamespace = "web"\nhost_port = 8080\nport = 80\n'


REFUSED = [
    # unknown keys, with the closest valid key
    ("network = {}", "network", "unknown key; did you mean 'networks'?"),
    ('[networks.front]\nsubnett = "10.0.0.0/24"', "networks.front.subnett", "unknown key; did you mean 'subnet'?"),
    (
        '[networks.front]\ncolour = "red"',
        "networks.front.colour",
        "unknown key; expected one of: subnet, gateway, nat, internal, mtu, isolate, subnet6, ipv6",
    ),
    (
        NETS + '[namespaces.web]\nnetworks = [{netwrk = "front"}]',
        "namespaces.web.networks[0].netwrk",
        "unknown key; did you mean 'network'?",
    ),
    (NETS + "[namespaces.web]\nnetworkz = []", "namespaces.web.networkz", "unknown key; did you mean 'networks'?"),
    (PUBLISH + "hostport = 1", "publish[0].hostport", "unknown key; did you mean 'host_port'?"),
    # types: a bool is not an int, a string is not a bool
    ("[networks.front]\nmtu = true", "networks.front.mtu", "true must be an integer from 68 to 65535"),
    ("[networks.front]\nmtu = 10", "networks.front.mtu", "10 must be an integer from 68 to 65535"),
    ('[networks.front]\nmtu = "1500"', "networks.front.mtu", '"1500" must be an integer from 68 to 65535'),
    ("[networks.front]\nmtu = 1500.0", "networks.front.mtu", "1500.0 must be an integer from 68 to 65535"),
    ("[networks.front]\nnat = 1", "networks.front.nat", "1 must be true or false"),
    ('[networks.front]\ninternal = "false"', "networks.front.internal", '"false" must be true or false'),
    ('isolated = "yes"', "isolated", '"yes" must be true or false'),
    ("name = 5", "name", "5 must be a string"),
    ("networks = []", "networks", "must be a table of networks by name, not a list"),
    ('networks = "front"', "networks", "must be a table of networks by name, not a string"),
    ("namespaces = 1", "namespaces", "must be a table of namespaces by name, not an integer"),
    ("networks.front = 1", "networks.front", "must be a table of keys and values, not an integer"),
    ('[namespaces.web]\nnetworks = "front"', "namespaces.web.networks", "must be a list, not a string"),
    (
        NETS + "[namespaces.web]\nnetworks = [5]",
        "namespaces.web.networks[0]",
        "must be a network name or a table with 'network', not an integer",
    ),
    ("[links]\nnetwork = 'back'", "links", "must be a list, not a table"),
    ("links = [1]", "links[0]", "must be a table of keys and values, not an integer"),
    # names, addresses, subnets
    ('name = "a b"', "name", "\"a b\": only letters, digits, '_', '.' and '-', not starting with '-', not '.' or '..'"),
    (
        '[networks."a;b"]',
        'networks."a;b"',
        "\"a;b\": only letters, digits, '_', '.' and '-', not starting with '-', not '.' or '..'",
    ),
    (f"[namespaces.{'x' * 65}]", f"namespaces.{'x' * 65}", f'"{"x" * 65}" must be 1 to 64 bytes long'),
    (
        '[networks.front]\nsubnet = "10.30.0.300/24"',
        "networks.front.subnet",
        "'10.30.0.300/24' does not appear to be an IPv4 or IPv6 network",
    ),
    ('[networks.front]\nsubnet = "10.30.0.1/24"', "networks.front.subnet", "10.30.0.1/24 has host bits set"),
    ("[networks.front]\nsubnet = 5", "networks.front.subnet", "5 must be a CIDR string such as '172.17.0.0/16'"),
    (
        '[networks.front]\nsubnet = "10.30.0.4/31"',
        "networks.front.subnet",
        "10.30.0.4/31 is too small: a network needs a /30 or larger (a gateway and one address)",
    ),
    (
        '[networks.front]\nsubnet = "10.30.0.0/24"\ngateway = "10.31.0.1"',
        "networks.front.gateway",
        "10.31.0.1 is not in subnet 10.30.0.0/24",
    ),
    (
        '[networks.front]\nsubnet = "10.30.0.0/24"\ngateway = "10.30.0.0"',
        "networks.front.gateway",
        "10.30.0.0 is the network address of subnet 10.30.0.0/24",
    ),
    (
        '[networks.front]\nsubnet = "10.30.0.0/24"\ngateway = "fd00::1"',
        "networks.front.gateway",
        "fd00::1 is not in subnet 10.30.0.0/24",
    ),
    (
        '[networks.front]\ngateway = "10.30.0.1"',
        "networks.front.gateway",
        "10.30.0.1 is a gateway without a subnet; set the network's subnet too",
    ),
    (
        NETS + '[networks.third]\nsubnet = "10.30.0.128/25"',
        "networks.third.subnet",
        "10.30.0.128/25 overlaps subnet 10.30.0.0/24 of network front",
    ),
    # references and duplicates
    (
        NETS + '[namespaces.web]\nnetworks = ["frnt"]',
        "namespaces.web.networks[0]",
        "unknown network 'frnt'; did you mean 'front'?",
    ),
    (
        NETS + '[namespaces.web]\nnetworks = ["zzz"]',
        "namespaces.web.networks[0]",
        "unknown network 'zzz'; declared: front, back",
    ),
    (
        '[namespaces.web]\nnetworks = ["zzz"]',
        "namespaces.web.networks[0]",
        "unknown network 'zzz'; no networks are declared",
    ),
    (NETS + '[namespaces.web]\nnetworks = [{ip = "10.30.0.9"}]', "namespaces.web.networks[0].network", "is required"),
    (
        NETS + '[namespaces.db]\n[[links]]\nnamespace = "dbb"\nnetwork = "back"',
        "links[0].namespace",
        "unknown namespace 'dbb'; did you mean 'db'?",
    ),
    (
        NETS + '[namespaces.db]\n[[links]]\nnamespace = "db"\nnetwork = "bak"',
        "links[0].network",
        "unknown network 'bak'; did you mean 'back'?",
    ),
    (NETS + '[namespaces.db]\n[[links]]\nnetwork = "back"', "links[0].namespace", "is required"),
    (
        WEB + '[[links]]\nnamespace = "web"\nnetwork = "front"',
        "links[0].network",
        "namespace web is already connected to network front by namespaces.web.networks[0]",
    ),
    (
        NETS + '[namespaces.web]\nnetworks = ["front", "front"]',
        "namespaces.web.networks[1]",
        "namespace web is already connected to network front by namespaces.web.networks[0]",
    ),
    # fixed addresses
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.99.0.1" }]',
        "namespaces.db.networks[0].ip",
        "10.99.0.1 is not in subnet 10.31.0.0/24 of network back",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.31.0.1" }]',
        "namespaces.db.networks[0].ip",
        "10.31.0.1 is the gateway of network back",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.31.0.255" }]',
        "namespaces.db.networks[0].ip",
        "10.31.0.255 is the broadcast address of subnet 10.31.0.0/24 of network back",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.31.0.x" }]',
        "namespaces.db.networks[0].ip",
        "'10.31.0.x' does not appear to be an IPv4 or IPv6 address",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.31.0.9" }]\n'
        '[namespaces.web]\n[[links]]\nnamespace = "web"\nnetwork = "back"\nip = "10.31.0.9"',
        "links[0].ip",
        "10.31.0.9 is already taken in network back by namespaces.db.networks[0].ip",
    ),
    (
        '[networks.auto]\n[namespaces.db]\nnetworks = [{ network = "auto", ip = "10.31.0.9" }]',
        "namespaces.db.networks[0].ip",
        "network auto has no subnet; a fixed ip needs one",
    ),
    (
        '[networks.tiny]\nsubnet = "10.31.0.0/30"\n[namespaces.a]\nnetworks = ["tiny"]\n[namespaces.b]\n'
        'networks = ["tiny"]',
        "namespaces.b.networks[0]",
        "no free address left in subnet 10.31.0.0/30 of network tiny",
    ),
    # interface names
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ifname = "eth 0" }]',
        "namespaces.db.networks[0].ifname",
        "\"eth 0\": only letters, digits, '_', '.' and '-', not starting with '-', not '.' or '..'",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ifname = "sixteen-bytes-xx" }]',
        "namespaces.db.networks[0].ifname",
        '"sixteen-bytes-xx" must be 1 to 15 bytes long',
    ),
    (
        NETS
        + '[namespaces.db]\nnetworks = [{ network = "back", ifname = "lan" }, { network = "front", ifname = "lan" }]',
        "namespaces.db.networks[1].ifname",
        "lan is already used in namespace db by namespaces.db.networks[0]",
    ),
    (
        NETS + '[namespaces.db]\nnetworks = [{ network = "back", ifname = "eth1" }, "front"]',
        "namespaces.db.networks[1]",
        "its default eth1 is already used in namespace db by namespaces.db.networks[0]; give it an ifname",
    ),
    # published ports
    (PUBLISH.replace("\nport = 80", "\nport = 0"), "publish[0].port", "0 must be an integer port from 1 to 65535"),
    (
        PUBLISH.replace("\nport = 80", "\nport = 70000"),
        "publish[0].port",
        "70000 must be an integer port from 1 to 65535",
    ),
    (PUBLISH.replace("8080", "true"), "publish[0].host_port", "true must be an integer port from 1 to 65535"),
    (PUBLISH.replace("8080", '"8080"'), "publish[0].host_port", '"8080" must be an integer port from 1 to 65535'),
    (PUBLISH + 'protocol = "dccp"', "publish[0].protocol", "\"dccp\" must be 'tcp', 'udp' or 'sctp'"),
    (
        PUBLISH + 'host_ip = "localhost"',
        "publish[0].host_ip",
        "'localhost' does not appear to be an IPv4 or IPv6 address",
    ),
    (
        PUBLISH.replace('namespace = "web"', 'namespace = "wbe"'),
        "publish[0].namespace",
        "unknown namespace 'wbe'; did you mean 'web'?",
    ),
    (PUBLISH + 'network = "back"', "publish[0].network", "namespace web is not connected to network back"),
    (
        PUBLISH + "[namespaces.cache]\n[[publish]]\nnamespace = 'cache'\nhost_port = 81\nport = 80",
        "publish[1].namespace",
        "namespace cache is not connected to any network, so it has no address to publish",
    ),
    (
        PUBLISH + "[[publish]]\nnamespace = 'web'\nhost_port = 8080\nport = 81\nhost_ip = '127.0.0.1'",
        "publish[1].host_port",
        "8080/tcp overlaps host ports already published by publish[0]",
    ),
    (
        PUBLISH + "host_port_end = 8089\n[[publish]]\nnamespace = 'web'\nhost_port = 8085\nport = 81",
        "publish[1].host_port",
        "8085/tcp overlaps host ports already published by publish[0]",
    ),
    (
        PUBLISH + "[[publish]]\nnamespace = 'web'\nhost_port = 8070\nhost_port_end = 8080\nport = 81",
        "publish[1].host_port",
        "8070-8080/tcp overlaps host ports already published by publish[0]",
    ),
    (PUBLISH + "host_port_end = 8079", "publish[0].host_port_end", "8079 is below host_port 8080"),
    (
        PUBLISH.replace("\nport = 80", "\nport = 65535") + "host_port_end = 8081",
        "publish[0].port",
        "65535 would make the range of ports end above 65535",
    ),
    (WEB + "[[publish]]\nnamespace = 'web'\nport = 80", "publish[0].host_port", "is required"),
]


@pytest.mark.parametrize(("text", "field", "rule"), REFUSED, ids=[f"{i}-{case[1]}" for i, case in enumerate(REFUSED)])
def test_refused_with_file_field_and_rule(tmp_path, text, field, rule):
    path = tmp_path / "shop.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        Topology.from_file(path)
    error = caught.value
    assert (error.source, error.field, error.rule) == (str(path), field, rule)
    assert str(error) == f"{path}: {field}: {rule}"
    assert isinstance(error, InvalidInput) and isinstance(error, ValueError)


def test_the_issue_s_example_message():
    text = NETS + '[namespaces.db]\nnetworks = [{ network = "back", ip = "10.99.0.1", ifname = "eth0" }]'
    with pytest.raises(TopologyError) as caught:
        Topology.from_text(text, "toml", source="shop.toml")
    assert str(caught.value) == (
        "shop.toml: namespaces.db.networks[0].ip: 10.99.0.1 is not in subnet 10.31.0.0/24 of network back"
    )
    assert caught.value.value == "10.99.0.1"


@pytest.mark.parametrize(
    ("format", "text", "field", "rule", "line"),
    [
        ("toml", 'name = "shop"\n[networks.front]\nmtu = = 1', "line 3, column 7", "invalid TOML: Invalid value", 3),
        ("toml", 'name = "a"\nname = "b"\n', "line 2, column 11", "invalid TOML: Cannot overwrite a value", 2),
        ("toml", 'name = "a"\nname = "b"', "end of document", "invalid TOML: Cannot overwrite a value", None),
        (
            "json",
            '{\n  "networks": {,\n}',
            "line 2, column 16",
            "invalid JSON: Expecting property name enclosed in double quotes",
            2,
        ),
        (
            "yaml",
            "networks:\n  front: [\n",
            "line 3, column 1",
            "invalid YAML: expected the node content, but found '<stream end>'",
            3,
        ),
        ("json", "[1]", "(top level)", "must be a table of keys and values, not a list", None),
        ("yaml", "- 1", "(top level)", "must be a table of keys and values, not a list", None),
        ("json", '{"networks": {"a": {}, "a": {}}}', "networks.a", "is given twice", None),
        ("json", '{"networks": {"a": {"mtu": 1400, "mtu": 1500}}}', "networks.a.mtu", "is given twice", None),
        ("yaml", "networks:\n  a: {}\n  a: {}\n", "networks.a", "is given twice", None),
        ("yaml", "name: a\nname: b\n", "name", "is given twice", None),
        (
            "yaml",
            "networks:\n  front:\n    mtu: yes\n",
            "networks.front.mtu",
            "true must be an integer from 68 to 65535",
            None,
        ),
    ],
)
def test_syntax_and_structure_errors_name_the_line(tmp_path, format, text, field, rule, line):
    path = tmp_path / f"shop.{format}"
    path.write_text(text)
    with pytest.raises(TopologyError) as caught:
        Topology.from_file(path)
    assert str(caught.value) == f"{path}: {field}: {rule}"
    assert caught.value.line == line


def test_unknown_suffix_and_bad_encoding(tmp_path):
    ini = tmp_path / "shop.ini"
    ini.write_text("[networks]\n")
    with pytest.raises(TopologyError) as caught:
        Topology.from_file(ini)
    assert str(caught.value) == f"{ini}: format: 'ini' is not a topology format; use .toml, .json, .yaml, .yml"
    latin = tmp_path / "shop.toml"
    latin.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(TopologyError) as caught:
        Topology.from_file(latin)
    assert str(caught.value) == f"{latin}: byte 11: is not UTF-8 text"
    with pytest.raises(FileNotFoundError):
        Topology.from_file(tmp_path / "missing.toml")


def test_yaml_without_pyyaml_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install pyyaml") as caught:
        Topology.from_file(DATA / "shop.yaml")
    assert "shop.yaml" in str(caught.value)
    assert Topology.from_file(DATA / "shop.toml") == SHOP  # the others still work


def test_from_dict_names_dict_by_default_and_refuses_non_mappings():
    with pytest.raises(TopologyError, match=r"^<dict>: networks.front.mtu: 1 must be"):
        Topology.from_dict({"networks": {"front": {"mtu": 1}}})
    with pytest.raises(TopologyError, match=r"^<dict>: \(top level\): must be a table of keys and values, not null$"):
        Topology.from_dict(None)


def test_direct_construction_is_checked_too():
    with pytest.raises(TopologyError, match=r"^<Topology>: networks.a: network a is declared twice$"):
        Topology(networks=[NetworkSpec("a"), NetworkSpec("a")])
    with pytest.raises(TopologyError, match=r"^<Topology>: namespaces.x: namespace x is declared twice$"):
        Topology(namespaces=[NamespaceSpec("x"), NamespaceSpec("x")])
    with pytest.raises(TopologyError, match=r"^<Topology>: links\[0\].network: unknown network 'b'"):
        Topology(namespaces=[NamespaceSpec("x")], links=[LinkSpec("x", "b")])
    with pytest.raises(InvalidValue, match="joins namespace y, not x"):
        NamespaceSpec("x", [LinkSpec("y", "front")])
    with pytest.raises(InvalidInput, match=r"^mtu=1: must be"):
        NetworkSpec("a", mtu=1)
    assert NetworkSpec("a", subnet="10.1.0.0/24").gateway_ip == ipaddress.ip_address("10.1.0.1")
    assert NetworkSpec("a").gateway_ip is None


def test_topology_errors_pickle_with_their_evidence():
    error = TopologyError("shop.toml", "networks.front.mtu", True, "true must be an integer", line=3)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source, copy.field, copy.value, copy.rule, copy.line) == (
        "shop.toml",
        "networks.front.mtu",
        True,
        "true must be an integer",
        3,
    )
    assert str(copy) == str(error) == "shop.toml: networks.front.mtu: true must be an integer"


def test_specs_are_frozen_and_hashable():
    assert hash(SHOP) == hash(Topology.from_file(DATA / "shop.json"))
    with pytest.raises(AttributeError):
        SHOP.name = "other"


def test_a_network_isolate_option_from_a_file_reaches_the_lab():
    text = '[networks.a]\nisolate = false\n[networks.b]\nisolate = "strict"\n[networks.c]\n'
    topology = Topology.from_text(text, "toml")
    lab = Lab.from_topology(topology, host=Host(dry_run=True))
    assert [net.isolate for net in lab.networks.values()] == [False, "strict", True]
    assert Topology.from_dict(topology.to_dict()) == topology
    with pytest.raises(TopologyError, match=r"networks\.a\.isolate"):
        Topology.from_text('[networks.a]\nisolate = "loose"\n', "toml")
