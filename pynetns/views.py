"""How pynetns' objects show themselves: a hook the :mod:`pynetns.display` package fills in.

Objects inherit :class:`Viewable`; notebooks and IPython call its ``_repr_html_`` and
``_repr_pretty_``, which ask the renderers registered for the object's class (or a base
class). The objects know nothing of their views: ``import pynetns`` registers them.

>>> class Thing(Viewable):
...     def __repr__(self) -> str:
...         return "<Thing>"
>>> register(Thing, text=lambda thing: "a thing")
>>> Thing()._repr_html_() is None, render(Thing(), "text")
(True, 'a thing')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

__all__ = ["Viewable", "register", "register_view", "render", "view"]

Kind = Literal["html", "text"]
_RENDERERS: dict[tuple[type, Kind], Callable[[Any], str]] = {}
_VIEWS: dict[str, Callable[..., Any]] = {}


def register(cls: type, *, html: Callable[[Any], str] | None = None, text: Callable[[Any], str] | None = None) -> None:
    """Show instances of ``cls`` (and its subclasses) with these renderers."""
    if html is not None:
        _RENDERERS[(cls, "html")] = html
    if text is not None:
        _RENDERERS[(cls, "text")] = text


def render(obj: object, kind: Kind) -> str | None:
    """``obj`` rendered as ``kind`` by the renderer of its nearest class that has one, or None."""
    for cls in type(obj).__mro__:
        renderer = _RENDERERS.get((cls, kind))
        if renderer is not None:
            return renderer(obj)
    return None


def register_view(name: str, make: Callable[..., Any]) -> None:
    """Name a view (``"diagram"``) that objects ask for by name (``lab.diagram()``)."""
    _VIEWS[name] = make


def view(name: str, obj: object, **options: Any) -> Any:
    """The view ``name`` of ``obj``; :mod:`pynetns.display` registers them on import."""
    make = _VIEWS.get(name)
    if make is None:
        raise LookupError(f"no view {name!r} is registered (pynetns.display registers them on import)")
    return make(obj, **options)


class Viewable:
    """Base of the objects with rich displays (notebook HTML, IPython text)."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # IPython asks each class of the MRO in turn, and settles for repr() at the first defining __repr__
        cls._repr_pretty_ = Viewable._repr_pretty_  # type: ignore[method-assign]

    def _repr_html_(self) -> str | None:
        return render(self, "html")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        text = None if cycle else render(self, "text")
        p.text(repr(self) if text is None else text)
