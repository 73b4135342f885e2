"""Labs' firewall: isolation between networks, outbound NAT, internal networks and published ports.

Every lab here is isolated, or built on ``playhost`` (a Host whose "root namespace" is a throwaway
one), so no rule or sysctl of the machine itself is ever touched.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_lab_firewall.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host, InvalidValue
from pynetns.lab import Lab


def test_explain_shows_isolation_nat_and_published_ports_without_root():
    lab = Lab("plan", host=Host(dry_run=True, firewall="nftables"), isolated=True)
    front = lab.network("front", subnet="10.40.0.0/24")
    back = lab.network("back", subnet="10.41.0.0/24", internal=True)
    lab.namespace("web", networks=[front])
    lab.namespace("db", networks=[back])
    portmap = lab.publish("web", 8080, 80)
    text = lab.explain()
    assert str(portmap) == "8080->10.40.0.2:80/tcp"
    assert "nft -f - <<'EOF'" in text and "dnat to 10.40.0.2:80" in text
    assert f'oifname != "{front.bridge}" ip saddr 10.40.0.0/24 masquerade' in text
    assert "10.41.0.0/24 masquerade" not in text  # internal: no NAT
    assert f'iifname "{back.bridge}" oifname "{front.bridge}" ct status & dnat == 0 drop' in text
    assert f'iifname "{back.bridge}" oifname != "{back.bridge}" drop' in text
    assert "hairpin on" in text and f"net.ipv4.conf.{front.bridge}.route_localnet=1" in text
    with pytest.raises(InvalidValue, match="already published"):
        lab.publish("web", 8080, 81)
    with pytest.raises(InvalidValue, match="no network"):
        lab.publish(lab.namespace("lonely"), 9090, 80)
    with pytest.raises(InvalidValue, match="not a namespace of this lab"):
        lab.publish("nobody", 9091, 80)
