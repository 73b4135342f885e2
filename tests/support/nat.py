"""NAT test helpers: a dry host and what its nft listings look like (the NAT unit tests and the bad-input tests)."""

from __future__ import annotations

import json
from typing import Any

from pynetns import Host, Namespace
from pynetns.backends.recording import RecordingRunner

NFT_LIST = ("ip", "netns", "exec", "gw", "nft", "-j", "-a", "list", "table", "ip", "pynetns")


def dry(firewall: str = "nftables") -> tuple[Host, Namespace]:
    host = Host(dry_run=True, firewall=firewall, tag="pynetns:unit")
    assert isinstance(host.runner, RecordingRunner)
    host.runner.respond(("ip", "netns", "exec", "gw", "sysctl", "-n"), "0\n")
    return host, Namespace("gw", host=host)


def scripts(host: Host) -> list[str]:
    return [call.input for call in host.history if call.input is not None]


def nft_listing(*rules: tuple[str, int, str]) -> str:
    items: list[dict[str, Any]] = [{"table": {"family": "ip", "name": "pynetns", "handle": 1}}]
    for chain in ("published", "postrouting", "records", "prerouting", "output"):
        items.append({"chain": {"family": "ip", "table": "pynetns", "name": chain, "handle": 2}})
    for chain, handle, comment in rules:
        items.append(
            {
                "rule": {
                    "family": "ip",
                    "table": "pynetns",
                    "chain": chain,
                    "handle": handle,
                    "comment": comment,
                    "expr": [{"counter": {"packets": 3, "bytes": 180}}],
                }
            }
        )
    return json.dumps({"nftables": items})
