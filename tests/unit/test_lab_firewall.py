"""Labs' firewall: isolation between networks, outbound NAT, internal networks and published ports.

Every lab here is isolated, or built on ``playhost`` (a Host whose "root namespace" is a throwaway
one), so no rule or sysctl of the machine itself is ever touched.

This file: the tests that need neither root nor a kernel; the root ones are in tests/kernel/test_lab_firewall.py.
"""

from __future__ import annotations

import pytest

from pynetns import Host, InvalidValue, LabDestroyed, NotFound
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


def test_isolate_modes_decide_which_pairs_of_networks_are_kept_apart():
    """Docker's isolation (both isolate: published ports stay open), none, and netavark's strict (ports too)."""
    lab = Lab("modes", host=Host(dry_run=True, firewall="nftables"), isolated=True)
    docker = lab.network("docker", subnet="10.40.0.0/24")
    docker2 = lab.network("docker2", subnet="10.41.0.0/24", isolate=True)
    open1 = lab.network("open1", subnet="10.42.0.0/24", isolate=False)
    open2 = lab.network("open2", subnet="10.43.0.0/24", isolate=False)
    strict = lab.network("strict", subnet="10.44.0.0/24", isolate="strict")
    text = lab.explain()

    def dropped(one, other, ports_open):
        pair = f'iifname "{one.bridge}" oifname "{other.bridge}"'
        return f"{pair} ct status & dnat == 0 drop" in text if ports_open else f"{pair} drop" in text

    def apart(one, other):
        return any(f'iifname "{a.bridge}" oifname "{b.bridge}"' in text for a, b in ((one, other), (other, one)))

    assert dropped(docker2, docker, ports_open=True) and dropped(docker, docker2, ports_open=True)
    assert not apart(open1, open2) and not apart(open1, docker) and not apart(open2, docker2)
    for other in (docker, docker2, open1, open2):  # strict: from every other network, DNATed connections included
        assert dropped(strict, other, ports_open=False) and dropped(other, strict, ports_open=False)
        assert not dropped(strict, other, ports_open=True)
    with pytest.raises(InvalidValue, match='must be true, false or "strict"'):
        lab.network("bad", isolate="yes")
    with pytest.raises(InvalidValue, match='must be true, false or "strict"'):
        lab.network("bad", isolate=1)


def test_unpublish_frees_the_host_port_for_a_new_mapping():
    lab = Lab("unpub", host=Host(dry_run=True, firewall="nftables"), isolated=True)
    front = lab.network("front", subnet="10.40.0.0/24")
    lab.namespace("web", networks=[front])
    lab.namespace("api", networks=[front])
    first = lab.publish("web", 8080, 80)
    lab.unpublish(first)
    assert lab.published == [] and "dnat to" not in lab.explain()
    second = lab.publish("api", 8080, 80)  # the same host port: free again
    assert lab.published == [second] and "dnat to 10.40.0.3:80" in lab.explain()
    with pytest.raises(NotFound, match="is not published in lab unpub"):
        lab.unpublish(first)
    with pytest.raises(InvalidValue, match="already published"):
        lab.publish("web", 8080, 81)
    lab.destroy()
    with pytest.raises(LabDestroyed):
        lab.unpublish(second)
