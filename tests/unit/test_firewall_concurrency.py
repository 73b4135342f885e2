"""Many processes changing one host namespace's firewall at once: nothing lost, nothing left behind.

One throwaway namespace plays the host; every worker process drives it through
``LocalRunner(wrap=("nsenter", "--net=/run/netns/<it>"))``, as the ``playhost`` fixture does, so the
machine's own ruleset and sysctls are never touched. The workers start together (they poll for a
start file) and each checks its own objects are still there before deleting them.

Size: 8 processes x 3 rounds by default; ``PYNETNS_SWEEP=N`` multiplies the rounds by N.

This file: the tests that need neither root nor a kernel; the root ones are in
tests/kernel/test_firewall_concurrency.py.
"""

from __future__ import annotations

from pynetns import Host
from pynetns.backends.base import NetnsRef
from pynetns.backends.iptables import Iptables
from pynetns.backends.nftables import Nftables
from pynetns.locking import held


def test_a_named_site_has_a_lock_of_its_own_and_the_root_site_shares_the_hosts() -> None:
    host = Host()
    with host.lock(site=NetnsRef.named("a-long-namespace-name-" + "x" * 40)):
        assert not held(host.netns_key)
    with host.lock(site=NetnsRef.named("gw")):
        assert held(f"{host.netns_key}/named/gw") and not held(host.netns_key)
        with host.lock(site=NetnsRef.root()):  # another key: taken alongside
            assert held(host.netns_key)
    assert not held(f"{host.netns_key}/named/gw")


def test_iptables_teardown_removes_every_copy_of_a_jump_and_a_table_is_vacant_only_when_nothing_is_in_it() -> None:
    jump = '-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "pynetns jump" -j PYNETNS-DNAT'
    backend = Iptables("nft")
    state = backend.parse(
        4, "nat", [f"*nat\n:PREROUTING ACCEPT [0:0]\n:PYNETNS-DNAT - [0:0]\n{jump}\n{jump}\nCOMMIT\n"]
    )
    assert backend.script(4, "nat", state, teardown=True).count("-D" + jump[2:]) == 2
    chain = (
        '{"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "hook": "prerouting", "policy": "accept"}}'
    )
    listing = '{"nftables": [{"metainfo": {}}, {"table": {"family": "ip", "name": "nat"}}, %s]}'
    assert backend.table_vacant(4, "nat", listing % chain)
    assert not backend.table_vacant(4, "nat", listing % chain.replace("accept", "drop"))
    assert not backend.table_vacant(4, "nat", listing % f'{chain}, {{"rule": {{"chain": "PREROUTING"}}}}')
    assert not backend.table_vacant(4, "nat", listing % '{"chain": {"name": "DOCKER"}}')
    assert backend.table_commands(6, "nat") == (
        ("nft", "-j", "list", "table", "ip6", "nat"),
        ("nft", "delete", "table", "ip6", "nat"),
    )
    assert Iptables("legacy").table_commands(4, "nat") is None and Nftables().table_commands(4, "nat") is None
