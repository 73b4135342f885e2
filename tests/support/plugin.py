"""Helpers shared by tests/unit/test_plugin.py and tests/kernel/test_plugin.py."""

from __future__ import annotations

INNER_TIMEOUT = 110.0
