"""Where an object lives: one namespace (``None``: the root namespace) of one Host.

The base of the objects pynetns creates (links, routes, firewall rules). It sits below them,
so they share it without importing one another.

>>> to_namespace("web").name
'web'
>>> to_namespace(None) is None
True
"""

from __future__ import annotations

from typing import Any

from .backends.base import NetnsRef
from .host import Host
from .namespace import Namespace, resolve_host
from .validation import owner_tag
from .views import Viewable

__all__ = ["Placed", "to_namespace"]


def to_namespace(value: Namespace | str | None) -> Namespace | None:
    """Accept a :class:`Namespace`, a namespace name, or ``None`` (the root namespace)."""
    if value is None or isinstance(value, Namespace):
        return value
    return Namespace(value)


class Placed(Viewable):
    """Base of objects living in one namespace (``None``: the root namespace) of one host."""

    namespace: Namespace | None
    host: Host

    def _place(self) -> None:
        if getattr(self, "tag", None) is not None:  # it goes into batch lines and rule comments: one safe word
            owner_tag("tag", self.tag)  # type: ignore[attr-defined]
        explicit = self.host
        placed = [getattr(self, field, None) for field in ("namespace", "peer_namespace")]
        found = next((namespace.host for namespace in placed if namespace is not None), None)
        self.host = resolve_host(explicit if explicit is not None else found)
        for field in ("namespace", "peer_namespace"):
            value = getattr(self, field, None)
            if value is not None and explicit is not None and value.host is not explicit and value.owned:
                setattr(self, field, Namespace(value.name, host=explicit))

    @staticmethod
    def _ref(namespace: Namespace | None) -> NetnsRef:
        return NetnsRef.root() if namespace is None else namespace.ref

    @property
    def where(self) -> NetnsRef:
        """The namespace this object lives in, for backends."""
        return self._ref(self.namespace)

    def _in(self, namespace: Namespace | None) -> Namespace:
        return Namespace.host(self.host) if namespace is None else namespace

    def _tag(self, tag: str | None) -> str:
        return self.host.tag if tag is None else tag

    def create(self) -> None:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        """``with obj:`` creates it and always deletes it."""
        self.create()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.delete()
