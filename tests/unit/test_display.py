"""Rich displays: text and HTML views, diagrams, commands — on dry runs, on a scripted kernel, on the real one.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_display.py.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from pynetns import Bridge, Host, LocalRunner, Masquerade, Namespace, PortMap, Veth, display, views
from pynetns.display.diagrams import quote
from pynetns.lab.lab import Lab
from pynetns.runner import CompletedCommand, Runner
from tests.support.display import well_formed


class Scripted(Runner):
    """A kernel that answers from a table: argv prefix → (returncode, stdout, stderr); anything else fails.

    Unlike ``Host(dry_run=True)`` it is not a dry run, so views really inspect.
    """

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        super().__init__()
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
        self.calls.append(argv)
        for prefix in sorted(self.answers, key=len, reverse=True):
            if argv[: len(prefix)] == prefix:
                return CompletedCommand(argv, *self.answers[prefix])
        return CompletedCommand(argv, 1, "", 'Cannot open network namespace "x": No such file or directory')

    def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
        raise AssertionError(f"no process may start: {argv}")


def veth_json(name: str, address: str | None, *, state: str = "UP", index: int = 2) -> dict[str, Any]:
    return {
        "ifindex": index,
        "link_index": 7,
        "ifname": name,
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "mtu": 1500,
        "operstate": state,
        "link_type": "ether",
        "address": "02:00:00:00:00:02",
        "link_netnsid": 0,
        "linkinfo": {"info_kind": "veth"},
        "addr_info": [] if address is None else [{"family": "inet", "local": address, "prefixlen": 24}],
    }


LO = {
    "ifindex": 1,
    "ifname": "lo",
    "flags": ["LOOPBACK", "UP"],
    "mtu": 65536,
    "operstate": "UNKNOWN",
    "link_type": "loopback",
    "address": "00:00:00:00:00:00",
    "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}],
}


def dry_lab(**kwargs: Any) -> Lab:
    lab = Lab("shop", host=Host(dry_run=True), **kwargs)
    front = lab.network("front", subnet="10.20.0.0/24")
    back = lab.network("back", subnet="10.30.0.0/24", internal=True, mtu=1400)
    lab.namespace("web", networks=[front, back])
    lab.namespace("db", networks=[back])
    lab.namespace("none")
    lab.publish("web", 8080, 80)
    # a mapping to an address no endpoint has (drawn as a bare address)
    lab.published.append(PortMap(5353, "10.30.0.9", 53, protocol="udp", namespace=lab.host_namespace, host=lab.host))
    return lab


@pytest.mark.parametrize("isolated", [False, True], ids=["host", "isolated"])
def test_a_dry_run_lab_is_shown_as_declared_without_running_anything(isolated: bool) -> None:
    lab = dry_lab(isolated=isolated)
    text = display.text_lab(lab)
    page = display.html_lab(lab)
    pictured = display.diagram(lab)
    views = [
        display.text_network(lab.networks["front"]),
        display.html_network(lab.networks["back"]),
        display.text_endpoint(lab.endpoints[0]),
        display.html_endpoint(lab.endpoints[1]),
        display.text_namespace(lab.namespaces["web"]),
        display.html_namespace(lab.namespaces["db"]),
        display.text_portmap(lab.published[0]),
        display.html_portmap(lab.published[1]),
        display.text_masquerade(Masquerade("10.20.0.0/24", "br0", host=lab.host)),
        display.html_masquerade(Masquerade("10.20.0.0/24", "br0", host=lab.host)),
    ]
    assert lab.host.history == []  # nothing ran: neither inspection nor dot
    for view in [text, page, *views]:
        assert display.DRY_RUN in view
    web, db = lab.namespaces["web"], lab.namespaces["db"]
    for expected in (
        "10.20.0.0/24",
        "gateway 10.30.0.1/24",
        "internal",
        "mtu 1400",
        web.name,
        db.name,
        "eth1 10.30.0.2/24 (declared)",
        "8080->10.20.0.2:80/tcp",
        "5353->10.30.0.9:53/udp",
        lab.endpoints[0].host_interface,
        "to apply: 2 networks, 3 endpoints (lab.explain() shows",
    ):
        assert expected in text
    assert f"in host namespace {lab.host_namespace.name}" in text if isolated else "in the host" in text
    assert "table" in well_formed(page)
    assert "10.30.0.3/24" in page and "to apply: 2 networks" in page
    for view in views:
        if view.startswith("<"):
            well_formed(view)
    dot = pictured.dot
    assert str(pictured) == dot and dot.startswith('graph "shop" {') and dot.rstrip().endswith("}")
    assert dot.count("subgraph cluster_") == 4 and '"lo only\\n(no network)"' in dot
    first = lab.endpoints[0]
    assert f'label="{first.host_interface} ↔ eth0"' in dot
    assert "host -- pub0 [dir=forward]" in dot and 'addr1 [label="10.30.0.9"' in dot


def test_views_of_a_dry_run_bridge_veth_and_namespace_never_run_commands(dry_host: Host) -> None:
    c1 = Namespace("c1", host=dry_host)
    bridge = Bridge("br0", address="172.17.0.1/16", host=dry_host)
    veth = Veth("veth1", "eth0", peer_namespace=c1, master=bridge, peer_address="172.17.0.2/16", host=dry_host)
    assert display.text_veth(veth) == ("Veth veth1 in host <-> eth0 in c1, on bridge br0: dry run: not inspected")
    assert display.text_bridge(bridge) == "Bridge br0 in host, address 172.17.0.1/16: dry run: not inspected"
    assert display.text_namespace(c1) == "Namespace c1 (named): dry run: not inspected"
    for item in (c1, bridge, veth):
        page = item._repr_html_()
        well_formed(page)
        assert display.DRY_RUN in page
    assert dry_host.history == []


def test_ipython_pretty_uses_the_text_views(dry_host: Host) -> None:
    pretty = pytest.importorskip("IPython.lib.pretty")
    c1 = Namespace("c1", host=dry_host)
    assert pretty.pretty(c1) == display.text_namespace(c1)
    assert pretty.pretty(Bridge("br0", host=dry_host)).startswith("Bridge br0 in host")
    assert repr(c1) == "Namespace('c1', named)"  # __repr__ stays short
    lab = dry_lab()
    assert pretty.pretty(display.commands(lab.plan())) == lab.explain()
    assert pretty.pretty(display.diagram(lab)) == display.diagram(lab).dot


def test_commands_show_explain_and_a_dry_run_history(dry_host: Host) -> None:
    lab = dry_lab()
    shown = display.commands(lab.plan())
    assert shown == lab.explain() and isinstance(shown, str)
    page = shown._repr_html_()
    assert page.startswith("<pre") and "&lt;&lt;&#x27;EOF&#x27;" in page and "<<" not in page
    Namespace("web", host=dry_host).create()
    assert display.commands(dry_host.history) == "ip netns add web\nip -n web link set lo alias pynetns:dry-run up\n"


def scripted_host(answers: dict[tuple[str, ...], tuple[int, str, str]]) -> tuple[Host, Scripted]:
    runner = Scripted(answers)
    return Host(runner=runner), runner


def test_a_live_namespace_shows_interfaces_state_and_routes() -> None:
    routes = [
        {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0"},
        {"dst": "10.0.0.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link"},
    ]
    host, runner = scripted_host(
        {
            ("ip", "-n", "web", "-d", "-j", "addr", "show"): (0, json.dumps([LO, veth_json("eth0", "10.0.0.2")]), ""),
            ("ip", "-n", "web", "-j", "-4", "route", "show"): (0, json.dumps(routes), ""),
        }
    )
    web = Namespace("web", host=host)
    text = display.text_namespace(web)
    assert text.splitlines() == [
        "Namespace web (named)",
        "  lo               UNKNOWN  00:00:00:00:00:00 127.0.0.1/8",
        "  eth0@if7         UP       02:00:00:00:00:02 10.0.0.2/24",
        "  routes:",
        "    default via 10.0.0.1 dev eth0",
        "    10.0.0.0/24 dev eth0",
    ]
    page = display.html_namespace(web)
    well_formed(page)
    for expected in ("<code>eth0</code>", "10.0.0.2/24", ">UP<", "peer if7 (netnsid 0)", "default via 10.0.0.1"):
        assert expected in page
    assert all(call[0] == "ip" for call in runner.calls)


def test_missing_objects_are_shown_as_not_created() -> None:
    host, runner = scripted_host({("ip", "-j", "netns", "list"): (0, "[]", "")})
    ghost = Namespace("ghost", host=host)
    assert display.text_namespace(ghost) == "Namespace ghost (named): not created"
    assert "(not created)" in display.html_namespace(ghost)
    bridge = Bridge("br9", namespace=ghost, host=host)
    assert display.text_bridge(bridge) == "Bridge br9 in ghost: not created"
    veth = Veth("v9", "eth0", namespace=ghost, peer_namespace=ghost, host=host)
    assert display.text_veth(veth).endswith(": not created")
    firewalled = Host(runner=runner, firewall="nftables")
    portmap = PortMap(8080, "10.0.0.2", 80, namespace=Namespace("ghost", host=firewalled), host=firewalled)
    assert display.text_portmap(portmap) == "PortMap 8080->10.0.0.2:80/tcp in ghost: not created"
    assert display.text_masquerade(Masquerade("10.0.0.0/24", "br9", host=firewalled)).endswith(": not created")
    lab = Lab("later", host=host, isolated=True)
    lab.namespace("web", networks=[lab.network("front", subnet="10.40.0.0/24")])
    runner.calls.clear()
    text = display.text_lab(lab)
    assert text.splitlines()[0].endswith(": not created") and "eth0 10.40.0.2/24 (declared)" in text
    assert runner.calls == [("ip", "-j", "netns", "list")]  # one look, not one per namespace
    well_formed(display.html_lab(lab))
    assert display.text_network(lab.networks["front"]).endswith(
        ": not created\n  web:eth0  10.40.0.2/24  <->  " + lab.endpoints[0].host_interface
    )


def test_odd_names_from_the_kernel_are_escaped() -> None:
    odd = '<img src=x onerror="alert(1)">&'
    host, _ = scripted_host(
        {
            ("ip", "-n", "web", "-d", "-j", "addr", "show"): (0, json.dumps([veth_json(odd, "10.0.0.2")]), ""),
            ("ip", "-n", "web", "-j", "-4", "route", "show"): (0, json.dumps([{"dst": "default", "dev": odd}]), ""),
            ("ip", "-j", "netns", "list"): (0, '[{"name": "web"}]', ""),
        }
    )
    web = Namespace("web", host=host)
    page = display.html_namespace(web)
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;" in page
    assert "not inspected" in page  # the odd route device is refused by validation, and the view says so
    assert "img" not in well_formed(page)
    listed = display.html_namespace(
        Namespace(
            "web",
            host=scripted_host(
                {
                    ("ip", "-n", "web", "-d", "-j", "addr", "show"): (0, json.dumps([veth_json(odd, "10.0.0.2")]), ""),
                }
            )[0],
        )
    )
    assert "<img" not in listed and "img" not in well_formed(listed)


def test_dot_labels_are_quoted() -> None:
    assert quote('a "b" \\N', "two\nlines") == '"a \\"b\\" \\\\N\\ntwo lines"'


def test_views_never_raise(dry_host: Host) -> None:
    lab = dry_lab()
    lab._state.namespaces = None  # type: ignore[assignment]  # a broken lab
    text = display.text_lab(lab)
    assert text.startswith("<Lab") and "could not display: TypeError" in text  # the repr itself failed too
    page = display.html_lab(lab)
    assert page.startswith("<pre") and "&lt;Lab&gt;" in page
    well_formed(page)
    broken = display.diagram(lab)
    assert "could not draw" in broken.dot and "could not draw" in broken.table

    class Failing(Runner):
        def _execute(self, argv: tuple[str, ...], input: str | None, timeout: float | None) -> CompletedCommand:
            raise OSError("the machine went away")

        def _spawn(self, argv: tuple[str, ...], stdin: Any, stdout: Any, stderr: Any) -> Any:
            raise OSError("the machine went away")

    gone = Namespace("web", host=Host(runner=Failing()))
    assert display.text_namespace(gone) == "Namespace web (named): not inspected: the machine went away"
    portmap = PortMap(8080, "10.0.0.2", 80, host=Host(runner=Failing(), firewall="nftables"))
    assert display.text_portmap(portmap).endswith(": not inspected: the machine went away")


def test_views_of_a_dry_run_lab_make_no_runner_and_start_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every view of a dry-run lab (text, HTML, the diagram's source and tables) reads declarations only."""
    lab = dry_lab(isolated=True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"display made a runner or started a process: {args[1:]}")

    monkeypatch.setattr(LocalRunner, "__init__", refuse)
    monkeypatch.setattr(LocalRunner, "_execute", refuse)
    monkeypatch.setattr(LocalRunner, "_spawn", refuse)
    bridge = Bridge("br0", host=lab.host)
    veth = Veth("veth1", "eth0", peer_namespace=lab.namespaces["web"], master=bridge, host=lab.host)
    objects = [
        lab,
        *lab.networks.values(),
        *lab.endpoints,
        *lab.namespaces.values(),
        *lab.published,
        bridge,
        veth,
        Masquerade("10.20.0.0/24", "br0", host=lab.host),
    ]
    for item in objects:
        shown = [item._repr_html_(), views.render(item, "text")]
        assert all(view is not None and "could not display" not in view for view in shown), shown
    pictured = lab.diagram()
    assert isinstance(pictured, display.Diagram) and pictured.dot.startswith('graph "shop"') and pictured.table
    assert lab.host.history == []


def test_a_diagram_draws_through_the_default_hosts_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dot`` runs through ``default_host().runner`` (the local machine), not the lab's dry-run Host."""
    local = Scripted({("dot", "-Tsvg"): (0, '<?xml version="1.0"?><svg>drawn</svg>', "")})
    monkeypatch.setattr(display.diagrams, "default_host", lambda: Host(runner=local))
    lab = dry_lab()
    pictured = display.diagram(lab)
    assert pictured.svg() == '<?xml version="1.0"?><svg>drawn</svg>'
    assert pictured._repr_html_() == "<div><svg>drawn</svg></div>"
    assert local.calls == [("dot", "-Tsvg")] and lab.host.history == []
    mine = Scripted({})
    assert display.diagram(lab, runner=mine)._repr_svg_() is None  # dot failed there: no picture
    assert mine.calls == [("dot", "-Tsvg")]


def test_a_diagram_without_dot_is_tables_and_the_dot_source(tmp_path: Any) -> None:
    lab = dry_lab(isolated=True)
    pictured = display.diagram(lab, runner=LocalRunner(path=[str(tmp_path)]))  # no dot in an empty folder
    assert pictured.svg() is None and pictured._repr_svg_() is None
    page = pictured._repr_html_()
    tags = well_formed(page)
    assert "svg" not in tags and "table" in tags and "pre" in tags
    assert "apt-get install graphviz" in page and "graph &quot;shop&quot; {" in page
    assert lab.endpoints[2].host_interface in page and "10.30.0.3/24" in page
    assert lab.host.history == []


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot (apt-get install graphviz)")
def test_a_diagram_with_dot_is_an_svg() -> None:
    lab = dry_lab(isolated=True)
    pictured = display.diagram(lab)
    svg = pictured.svg()
    assert svg is not None and "<svg" in svg and "</svg>" in svg
    for expected in ("10.20.0.2:80/tcp", lab.networks["front"].bridge, "10.30.0.3/24", "eth1"):
        assert expected in svg
    assert pictured._repr_svg_() == svg
    page = pictured._repr_html_()
    assert page.startswith("<div><svg") and "<?xml" not in page and "DOCTYPE" not in page
    assert "svg" in well_formed(page)
    assert lab.host.history == []  # dot ran locally, not through the lab's (dry-run) host
