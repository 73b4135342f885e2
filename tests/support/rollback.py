"""Helpers shared by tests/unit/test_rollback.py and tests/kernel/test_rollback.py."""

from __future__ import annotations

from pynetns import (
    Host,
)
from pynetns.lab.lab import Lab


def small_lab(host: Host, isolated: bool = False) -> Lab:
    lab = Lab("rb", host=host, isolated=isolated)
    net = lab.network("net", subnet="10.77.0.0/24")
    web = lab.namespace("web", networks=[net])
    lab.namespace("db", networks=[net])
    lab.publish(web, 8080, 80)
    return lab
