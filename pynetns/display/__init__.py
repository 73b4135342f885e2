"""Rich displays: notebook HTML, multi-line terminal text, and a lab's topology as a picture.

Each object is shown as declared and, when it is live, as the kernel sees it:
interfaces with their addresses and state, routes, port-map counters, which
veth end sits where. A view never raises: an object not created yet (or
deleted) is shown as declared with a note, and on ``Host(dry_run=True)`` no
command runs to inspect it.

Each view takes a snapshot through the object's Host (:mod:`.snapshot`, the only
I/O here), then renders it with the pure :mod:`.text` or :mod:`.html`;
:mod:`.diagrams` draws a lab. Importing this package registers the views with
:mod:`pynetns.views`.

>>> from pynetns import Host
>>> from pynetns.lab.lab import Lab
>>> host = Host(dry_run=True)
>>> lab = Lab("demo", host=host)
>>> web = lab.namespace("web", networks=[lab.network("front", subnet="10.20.0.0/24")])
>>> print(text_lab(lab))  # doctest: +ELLIPSIS
Lab demo (id ...): dry run: not inspected
networks:
  front  10.20.0.0/24  gateway 10.20.0.1/24  bridge pn...b1  nat
namespaces:
  web (pn...-web)
    eth0 10.20.0.2/24 (declared)
veth pairs:
  web:eth0 10.20.0.2/24  <->  pn...v2 on bridge pn...b1 (front), in the host
to apply: 1 network, 1 endpoint (lab.explain() shows the commands)
>>> print(diagram(lab).dot)  # doctest: +ELLIPSIS
graph "demo" {
...
  br0 -- ns0_0 [label="pn...v2 ↔ eth0"];
}
>>> host.history
[]
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

from ..firewall import Masquerade, PortMap
from ..lab import Endpoint, Lab, Network, Partition
from ..links import Bridge, Veth
from ..namespace import Namespace
from ..runner import Commands, Runner, commands
from ..views import register, register_view
from . import html, snapshot, text
from .diagrams import Diagram, dot_source, quote
from .snapshot import DRY_RUN, NOT_CREATED

__all__ = [
    "DRY_RUN",
    "NOT_CREATED",
    "Commands",
    "Diagram",
    "commands",
    "diagram",
    "html_bridge",
    "html_endpoint",
    "html_lab",
    "html_masquerade",
    "html_namespace",
    "html_network",
    "html_partition",
    "html_portmap",
    "html_veth",
    "text_bridge",
    "text_endpoint",
    "text_lab",
    "text_masquerade",
    "text_namespace",
    "text_network",
    "text_partition",
    "text_portmap",
    "text_veth",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _short_repr(obj: object) -> str:
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__}>"


def _never_raises(render: Callable[[_T], str]) -> Callable[[_T], str]:
    """A view that shows its object's repr and the error instead of raising (a bug, or a very odd kernel)."""

    @functools.wraps(render)
    def guarded(obj: _T) -> str:
        try:
            return render(obj)
        except Exception as error:
            log.debug("could not display %s", _short_repr(obj), exc_info=True)
            shown = f"{_short_repr(obj)}\n(could not display: {type(error).__name__}: {error})"
            return html.pre(shown) if render.__name__.startswith("html") else shown

    return guarded


# -- each view: a snapshot (through the object's Host), then a pure renderer ------


@_never_raises
def text_namespace(namespace: Namespace) -> str:
    """Interfaces like ``ip -br addr``, then routes; ``dry run: not inspected`` on a dry run."""
    return text.render_namespace(namespace, snapshot.namespace_snapshot(namespace))


@_never_raises
def html_namespace(namespace: Namespace) -> str:
    """A table of interfaces with addresses and state, and one of routes."""
    return html.render_namespace(namespace, snapshot.namespace_snapshot(namespace))


@_never_raises
def text_bridge(bridge: Bridge) -> str:
    """The bridge as the kernel shows it, then its ports."""
    return text.render_bridge(bridge, snapshot.bridge_snapshot(bridge))


@_never_raises
def html_bridge(bridge: Bridge) -> str:
    return html.render_bridge(bridge, snapshot.bridge_snapshot(bridge))


@_never_raises
def text_veth(veth: Veth) -> str:
    """Both ends, each in its namespace, with state and addresses."""
    return text.render_veth(veth, snapshot.veth_snapshot(veth))


@_never_raises
def html_veth(veth: Veth) -> str:
    return html.render_veth(veth, snapshot.veth_snapshot(veth))


@_never_raises
def text_portmap(portmap: PortMap) -> str:
    """The mapping and its counters (packets and bytes DNATed so far)."""
    return text.render_portmap(portmap, snapshot.counters(portmap))


@_never_raises
def html_portmap(portmap: PortMap) -> str:
    return html.render_portmap(portmap, snapshot.counters(portmap))


@_never_raises
def text_masquerade(masquerade: Masquerade) -> str:
    return text.render_masquerade(masquerade, snapshot.firewall_note(masquerade))


@_never_raises
def html_masquerade(masquerade: Masquerade) -> str:
    return html.render_masquerade(masquerade, snapshot.firewall_note(masquerade))


@_never_raises
def text_network(net: Network) -> str:
    """The network's bridge, then each endpoint with the state of its host end."""
    return text.render_network(net, snapshot.network_side(net))


@_never_raises
def html_network(net: Network) -> str:
    return html.render_network(net, snapshot.network_side(net))


@_never_raises
def text_endpoint(endpoint: Endpoint) -> str:
    """Where each end of the endpoint's veth sits, and its state."""
    return text.render_endpoint(endpoint, snapshot.endpoint_snapshot(endpoint))


@_never_raises
def html_endpoint(endpoint: Endpoint) -> str:
    return html.render_endpoint(endpoint, snapshot.endpoint_snapshot(endpoint))


@_never_raises
def text_lab(lab: Lab) -> str:
    """Networks, namespaces with their interfaces and routes, veth pairs, published ports, what is to apply."""
    return text.render_lab(lab, snapshot.lab_snapshot(lab))


@_never_raises
def html_lab(lab: Lab) -> str:
    return html.render_lab(lab, snapshot.lab_snapshot(lab))


@_never_raises
def text_partition(partition: Partition) -> str:
    """The groups, who reaches whom as a matrix, and the cut directions (no I/O: a partition is data)."""
    return text.render_partition(partition)


@_never_raises
def html_partition(partition: Partition) -> str:
    return html.render_partition(partition)


def diagram(lab: Lab, *, runner: Runner | None = None) -> Diagram:
    """The lab's topology: one cluster per namespace, bridges with their gateway, veth edges, published ports.

    Never raises: a lab that cannot be drawn gives a diagram saying why. ``runner`` is where
    Graphviz's ``dot`` runs (see :class:`Diagram`: the local machine by default).
    """
    try:
        state = snapshot.lab_snapshot(lab)
        return Diagram(lab.name, dot_source(lab, state), html.topology(lab, state), runner=runner)
    except Exception as error:
        log.debug("could not draw %s", _short_repr(lab), exc_info=True)
        shown = f"could not draw {_short_repr(lab)}: {type(error).__name__}: {error}"
        dot = f"graph {{\n  error [label={quote(shown)}, shape=plaintext];\n}}\n"
        return Diagram(getattr(lab, "name", "lab"), dot, html.pre(shown), runner=runner)


# -- the objects' rich displays (pynetns.views) ------------------------------------

for _cls, _html, _text in (
    (Namespace, html_namespace, text_namespace),
    (Bridge, html_bridge, text_bridge),
    (Veth, html_veth, text_veth),
    (PortMap, html_portmap, text_portmap),
    (Masquerade, html_masquerade, text_masquerade),
    (Network, html_network, text_network),
    (Endpoint, html_endpoint, text_endpoint),
    (Lab, html_lab, text_lab),
    (Partition, html_partition, text_partition),
):
    register(_cls, html=_html, text=_text)
register(Commands, html=html.pre, text=str)
register_view("diagram", diagram)
