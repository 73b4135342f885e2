"""The backend registry: name → class, or a ``"module:Class"`` string imported on first use.

Built-in names are registered here; third parties add theirs through the
entry-point group ``pynetns.backends`` (scanned lazily, on the first unknown
name) or :func:`register`. Registering a taken name needs ``clobber=True``.

>>> get_backend("iproute2").__name__
'Iproute2'
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from ..errors import UnknownBackend

__all__ = ["ENTRY_POINT_GROUP", "available", "get_backend", "register"]

ENTRY_POINT_GROUP = "pynetns.backends"

_registry: dict[str, Any] = {
    "iproute2": "pynetns.backends.iproute2:Iproute2",
    "nsenter": "pynetns.backends.nsenter:Nsenter",
    "recording": "pynetns.backends.recording:RecordingRunner",
    "nftables": "pynetns.backends.nftables:Nftables",
    "iptables": "pynetns.backends.iptables:Iptables",
    "tc": "pynetns.backends.tc:Tc",
    "unshare": "pynetns.backends.unshare:Unshare",
}
_scanned = False


def register(name: str, backend: type | str, *, clobber: bool = False) -> None:
    """Register ``backend`` (a class or ``"module:Class"``) under ``name``."""
    if name in _registry and not clobber and _registry[name] != backend:
        raise ValueError(f"a backend named {name!r} is already registered; pass clobber=True to replace it")
    _registry[name] = backend


def available() -> list[str]:
    """Every registered backend name, entry points included."""
    _scan_entry_points()
    return sorted(_registry)


def get_backend(name: str) -> type:
    """The backend class registered as ``name``; :class:`UnknownBackend` if none is."""
    if name not in _registry:
        _scan_entry_points()
    try:
        target = _registry[name]
    except KeyError:
        raise UnknownBackend(f"no backend named {name!r}; known: {', '.join(sorted(_registry))}") from None
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
        _registry[name] = target
    return target  # type: ignore[no-any-return]


def _scan_entry_points() -> None:
    global _scanned
    if _scanned:
        return
    _scanned = True
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _registry.setdefault(entry.name, entry.value)
