"""A lab's topology as a picture: the DOT source (pure) and the :class:`Diagram` that Graphviz draws.

>>> print(quote('a "b"', "two\\nlines"))
"a \\"b\\"\\ntwo lines"
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable
from ..host import default_host
from .html import BOX, note, pre
from .snapshot import LabSnapshot, published
from .text import both, end_state, network_details

if TYPE_CHECKING:
    from ..lab.lab import Lab
    from ..runner import Runner

__all__ = ["Diagram", "dot_source", "quote"]

log = logging.getLogger(__name__)


def quote(*lines: object) -> str:
    """A DOT quoted string, one label line per argument."""
    escaped = [
        str(line).replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ") for line in lines
    ]
    return '"' + "\\n".join(escaped) + '"'


def dot_source(lab: Lab, snapshot: LabSnapshot) -> str:
    """One cluster per namespace, bridges with their gateway, veth edges, published ports."""
    out = [
        f"graph {quote(lab.name)} {{",
        '  graph [rankdir=LR, fontname="Helvetica", fontsize=11, bgcolor="white"];',
        '  node [fontname="Helvetica", fontsize=10, shape=box, style=rounded];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    ports = published(lab)
    if lab.host_namespace is None:
        host_label = quote("host (root namespace)")
    else:
        host_label = quote(f"host namespace {lab.host_namespace.name}", "(isolated lab)")
    out += ["  subgraph cluster_host {", f"    label={host_label}; style=dashed;"]
    if ports:
        out.append(f"    host [label={quote('host')}, shape=box3d, style=solid];")
    bridges = {}
    for index, net in enumerate(lab.networks.values()):
        bridges[net.name] = f"br{index}"
        extra = [end_state(snapshot.side, net.bridge)] if snapshot.side.inspected else []
        options = ", ".join(network_details(net)[3:])
        label = quote(
            f"bridge {net.bridge}",
            f"{net.name} {both(net.subnets)}",
            f"gateway {both(net.gateways)}",
            *([options] if options else []),
            *extra,
        )
        out.append(f'    br{index} [label={label}, shape=box, style="rounded,bold"];')
    for index, portmap in enumerate(ports):
        out.append(f"    pub{index} [label={quote(str(portmap))}, shape=cds, style=solid];")
    out.append("  }")
    nodes: dict[int, str] = {}
    for number, (name, namespace) in enumerate(lab.namespaces.items()):
        seen = snapshot.namespace(name)
        out += [f"  subgraph cluster_ns{number} {{", f"    label={quote(name, namespace.name)}; style=rounded;"]
        mine = [ep for ep in lab.endpoints if ep.namespace is namespace]
        for position, ep in enumerate(mine):
            node = nodes[id(ep)] = f"ns{number}_{position}"
            extra = [end_state(seen, ep.interface)] if seen.inspected else []
            out.append(f"    {node} [label={quote(ep.interface, *ep.addresses, *extra)}, shape=ellipse, style=solid];")
        if not mine:
            out.append(f"    ns{number}_lo [label={quote('lo only', '(no network)')}, shape=plaintext];")
        out.append("  }")
    for ep in lab.endpoints:
        label = quote(f"{ep.host_interface} ↔ {ep.interface}")
        out.append(f"  {bridges[ep.network.name]} -- {nodes[id(ep)]} [label={label}];")
    for index, portmap in enumerate(ports):
        target = next((nodes[id(ep)] for ep in lab.endpoints if portmap.address in [a.ip for a in ep.addresses]), None)
        if target is None:
            target = f"addr{index}"
            out.append(f"  {target} [label={quote(portmap.address)}, shape=plaintext];")
        out.append(f"  host -- pub{index} [dir=forward];")
        out.append(f"  pub{index} -- {target} [dir=forward, style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"


class Diagram:
    """A lab's topology: its DOT source, an SVG drawn by Graphviz's ``dot`` when installed, else HTML tables.

    ``str(diagram)`` is the DOT source; in a notebook it shows as a picture,
    or without Graphviz as tables followed by the DOT source.

    ``runner`` is where ``dot`` runs. By default it is the local machine's:
    ``pynetns.default_host().runner``, looked up when the picture is first
    asked for; the diagram never makes a runner of its own. ``dot`` is a
    renderer, not a kernel command: it reads the DOT text, changes nothing and
    draws for the person looking at the picture, so it runs here even when
    the lab's own Host is a dry run (a non-root user exploring a dry-run lab
    gets the picture; the dry run's history stays empty) or drives another
    machine (the picture is wanted where it is shown, and that machine need
    not have Graphviz). Pass ``runner=`` to draw elsewhere, or with a
    ``LocalRunner(path=...)`` that finds a particular ``dot``.
    """

    def __init__(self, name: str, dot: str, table: str = "", *, runner: Runner | None = None) -> None:
        self.name = name
        self.dot = dot
        self.table = table
        self._runner = runner
        self._svg: str | None = None
        self._drawn = False

    def __str__(self) -> str:
        return self.dot

    def __repr__(self) -> str:
        return f"<Diagram of {self.name}: {self.dot.count(chr(10))} lines of DOT>"

    def svg(self) -> str | None:
        """The picture as SVG (``dot -Tsvg``, once), or None when Graphviz's ``dot`` is not installed.

        A DOT source that ``dot`` rejects raises :class:`~pynetns.errors.CommandError`.
        """
        if not self._drawn:
            runner = self._runner if self._runner is not None else default_host().runner
            try:
                drawn = runner.run(["dot", "-Tsvg"], input=self.dot, timeout=60).stdout
            except BackendUnavailable:
                log.debug("Graphviz's dot is not installed; no SVG")
                drawn = ""
            self._svg = drawn if "<svg" in drawn else None
            self._drawn = True
        return self._svg

    def _svg_or_none(self) -> str | None:
        try:
            return self.svg()
        except Exception:
            log.debug("dot could not draw %s", self.name, exc_info=True)
            return None

    def _repr_svg_(self) -> str | None:
        return self._svg_or_none()

    def _repr_html_(self) -> str:
        svg = self._svg_or_none()
        if svg is not None:
            return f"<div>{svg[svg.index('<svg') :]}</div>"
        hint = note("Graphviz's dot is not installed (apt-get install graphviz): no picture, the DOT source below")
        source = f"<details><summary>DOT source</summary>{pre(self.dot)}</details>"
        return f'<div style="{BOX}">{self.table}<div>{hint}</div>{source}</div>'

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.dot)
