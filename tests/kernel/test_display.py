"""Rich displays: text and HTML views, diagrams, commands — on dry runs, on a scripted kernel, on the real one.

This file: the root tests, on real namespaces; the ones without root are in tests/unit/test_display.py.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

from pynetns import Bridge, Host, Namespace, Route, Veth, display, wait_until
from pynetns.lab.lab import Lab
from tests.support.display import well_formed


@pytest.mark.root
def test_a_real_namespace_bridge_and_veth(names: Callable[[str], str], host: Host, hostns: Namespace) -> None:
    c1 = Namespace(names("c1"), host=host)
    assert display.text_namespace(c1) == f"Namespace {c1.name} (named): not created"
    bridge = Bridge(names("br"), address="10.62.0.1/24", namespace=hostns, host=host)
    veth = Veth(
        names("ve"), "eth0", namespace=hostns, peer_namespace=c1, master=bridge, peer_address="10.62.0.2/24", host=host
    )
    with c1, bridge, veth:
        Route("default", via="10.62.0.1", namespace=c1).create()
        wait_until(lambda: c1.interface("eth0").state == "UP", what="eth0 up")
        text = display.text_namespace(c1)
        assert "eth0@if" in text and "10.62.0.2/24" in text and "default via 10.62.0.1 dev eth0" in text
        assert any(line.split()[:2] == ["lo", "UNKNOWN"] for line in text.splitlines()[1:])
        page = display.html_namespace(c1)
        well_formed(page)
        assert "10.62.0.2/24" in page and ">UP<" in page
        shown = display.text_bridge(bridge)
        assert "10.62.0.1/24" in shown and f"ports: {veth.name} UP" in shown
        well_formed(display.html_bridge(bridge))
        shown = display.text_veth(veth)
        assert f"[{hostns.name}] {veth.name}@if" in shown and f"[{c1.name}] eth0@if" in shown
        assert "(declared 10.62.0.2/24)" in shown
        page = display.html_veth(veth)
        well_formed(page)
        assert c1.name in page and hostns.name in page and "10.62.0.2/24" in page
    assert display.text_namespace(c1).endswith(": not created")
    assert display.text_bridge(bridge).endswith(": not created")
    assert display.text_veth(veth).endswith(": not created")


@pytest.mark.root
def test_a_real_isolated_lab(host: Host) -> None:
    with Lab(host=host, isolated=True) as lab:
        front = lab.network("front", subnet="10.63.0.0/24")
        web = lab.namespace("web", networks=[front])
        db = lab.namespace("db", networks=[front])
        lab.namespace("none")
        assert display.text_lab(lab).splitlines()[0].endswith(": not created")
        lab.apply()
        wait_until(lambda: all(ns.interface("eth0").state == "UP" for ns in (web, db)), what="eth0 up")
        lab.publish(web, 8080, 80)
        lab.apply()
        hostns = lab.host_namespace
        assert hostns is not None
        wait_until(lambda: hostns.interface(front.bridge).state == "UP", what="the bridge up")
        # one SYN from db to the gateway's published port is enough to count
        db.run(
            ["python3", "-c", "import socket; s = socket.socket(); s.settimeout(1); s.connect_ex(('10.63.0.1', 8080))"],
            check=False,
        )
        text = display.text_lab(lab)
        page = display.html_lab(lab)
        pictured = display.diagram(lab)
        front_view = display.html_network(front)
        endpoint_view = display.text_endpoint(lab.endpoints[0])
        portmap_view = display.html_portmap(lab.published[0])
    lines = text.splitlines()
    assert lines[0] == f"Lab {lab.name} (id {lab.id}, isolated in {hostns.name})"
    assert f"  front  10.63.0.0/24  gateway 10.63.0.1/24  bridge {front.bridge}  nat  UP" in lines
    assert any(line.startswith("    eth0 UP 10.63.0.2/24") for line in lines)
    assert "    route default via 10.63.0.1 dev eth0" in lines
    assert "  none (pn" in text and any(line.startswith("    lo UNKNOWN 127.0.0.1/8") for line in lines)
    assert (
        f"  web:eth0 10.63.0.2/24  <->  {lab.endpoints[0].host_interface} on bridge {front.bridge} (front), "
        f"in host namespace {hostns.name}  [UP / UP]" in lines
    )
    counted = next(line for line in lines if "8080->10.63.0.2:80/tcp" in line)
    assert "packet" in counted and not counted.endswith(" 0 packets, 0 bytes") and "to apply" not in text
    well_formed(page)
    assert ">UP<" in page and "10.63.0.3/24" in page and "default via 10.63.0.1" in page
    assert "\\nUP" in pictured.dot and 'pub0 [label="8080->10.63.0.2:80/tcp"' in pictured.dot
    if shutil.which("dot") is not None:
        assert "10.63.0.2:80/tcp" in (pictured.svg() or "")
    well_formed(portmap_view)
    assert "1 packet" in portmap_view or " packets, " in portmap_view
    well_formed(front_view)
    assert "bridge UP" in front_view and lab.endpoints[1].host_interface in front_view
    inside, outside = (line.split() for line in endpoint_view.splitlines()[1:])
    assert inside[:3] == ["eth0", "UP", "10.63.0.2/24"] and outside[:2] == [lab.endpoints[0].host_interface, "UP"]
    after = display.text_lab(lab)
    assert after.splitlines()[0].endswith(": destroyed") and "to apply" not in after


@pytest.mark.root
def test_a_bridge_shows_its_admin_state_right_after_apply(host: Host) -> None:
    """Set up last thing in apply(): UP at once, whatever its carrier (``UP (NO-CARRIER)`` while it settles)."""
    with Lab(host=host, isolated=True) as lab:
        front = lab.network("front", subnet="10.64.0.0/24")
        lab.namespace("web", networks=[front])
        lab.apply()
        shown = display.text_lab(lab).splitlines()
        line = next(line for line in shown if line.startswith("  front  10.64.0.0/24"))
        assert line.rpartition("  nat  ")[2] in ("UP", "UP (NO-CARRIER)"), line
        assert "bridge UP" in display.text_network(front)
