"""The guard of the house: pynetns' imports form layers, with no circle and no edge pointing up.

Every ``import`` and ``from ... import`` of every module is read with ``ast`` — relative ones,
lazy ones inside functions and those under ``if TYPE_CHECKING:`` included — and checked against
the rules of the design (DESIGN.md, "Layers"):

- no import circle, inside an area or across areas;
- the core (the flat modules and ``backends/``) imports no feature folder; ``firewall/`` imports no
  ``lab/``, ``impair/``, ``display/``, ``cli/``; ``impair/`` no ``lab/``, ``display/``, ``cli/``;
  ``lab/`` no ``display/``, ``cli/``; nothing below the package face imports the face (``pynetns``);
- only ``backends/`` imports a concrete backend (``pynetns.backends.base`` and the registry
  ``pynetns.backends`` are open to all); ``host.py`` composes backends through the registry;
- models never import ``display/`` (it registers itself on the ``pynetns.views`` hook);
- the userspace impairment engine (``impair/nfqueue/``) imports only the standard library and
  ``pynetns.errors``, so ``python -m`` of it stays small.

A failure prints each offending edge as ``file:line: importer -> imported``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent.parent / "pynetns"

#: the feature folders, each with its public face in ``__init__.py``
FEATURES = ("firewall", "impair", "lab", "display", "cli")
#: the package face and its entry points: they may import anything
FACE = ("pynetns", "pynetns.__main__", "pynetns.pytest_plugin")
#: the backend modules anyone may import: the base classes and the registry
OPEN_BACKENDS = ("pynetns.backends", "pynetns.backends.base")
#: (importer, imported) edges to a concrete backend that are allowed, and why
CONCRETE_BACKEND_EXCEPTIONS = {
    # a dry-run Host records instead of running: it makes the RecordingRunner (a runner, not a
    # command-making backend) and keeps its history; every command-making backend comes from the registry
    ("pynetns.host", "pynetns.backends.recording"),
}
#: the areas each area must not import
FORBIDDEN = {
    "core": {*FEATURES, "face"},
    "backends": {*FEATURES, "face"},
    "firewall": {"lab", "impair", "display", "cli", "face"},
    "impair": {"lab", "display", "cli", "face"},
    "lab": {"display", "cli", "face"},
    "display": {"cli", "face"},
    "cli": set(),
    "face": set(),
}
AREAS = tuple(FORBIDDEN)
MODELS = ("core", "backends", "firewall", "impair", "lab")
#: modules under impair/nfqueue/ that drive the engine from pynetns (start it, write its queue
#: rules) rather than run it: they may import the rest of pynetns. Every other module there is
#: the engine (today the whole package is one __init__.py, being split by the impair helper)
NFQUEUE_CLIENTS = {"client", "launcher", "rules"}

#: rules other helpers of the redesign are fixing right now; the lead removes a mark when merging
PENDING: dict[tuple[str, str], str] = {}


@attrs.frozen
class Edge:
    importer: str
    imported: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.importer} -> {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_imports(root: Path) -> tuple[set[str], list[Edge]]:
    """Every module of the package at ``root`` and every import in it (absolute names, internal or not).

    ``from X import name`` names the module ``X.name`` when that is a module, else ``X``.
    """
    files = {module_name(root, path): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        shown = str(path.relative_to(root.parent))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges += [Edge(name, alias.name, shown, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                for alias in node.names:
                    target = f"{source}.{alias.name}"
                    edges.append(Edge(name, target if target in modules else source, shown, node.lineno))
    return modules, edges


def internal(edges: Iterable[Edge], modules: set[str]) -> list[Edge]:
    """The edges between modules of the package, each to the longest module its name starts with."""
    found = []
    for edge in edges:
        parts = edge.imported.split(".")
        for end in range(len(parts), 0, -1):
            target = ".".join(parts[:end])
            if target in modules:
                if target != edge.importer:
                    found.append(attrs.evolve(edge, imported=target))
                break
    return found


def area(module: str) -> str:
    if module in FACE:
        return "face"
    parts = module.split(".")
    if parts[1] in FEATURES:
        return parts[1]
    if parts[1] == "backends":
        return "backends"
    return "core"


def cycles(modules: set[str], edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


MODULES, ALL_EDGES = read_imports(PACKAGE)
EDGES = internal(ALL_EDGES, MODULES)


def rule(kind: str, name: str) -> object:
    reason = PENDING.get((kind, name))
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(name, marks=marks, id=name)


def fail_on(edges: list[Edge], what: str) -> None:
    if edges:
        listing = "\n".join(f"  {edge}" for edge in sorted(set(edges), key=lambda e: (e.file, e.line, e.imported)))
        print(f"{what}:\n{listing}")
        pytest.fail(f"{what}:\n{listing}", pytrace=False)


# -- the rules -------------------------------------------------------------------


@pytest.mark.parametrize("name", [rule("cycle", name) for name in (*AREAS, "across")])
def test_no_import_cycle(name: str) -> None:
    """No circle of imports among the modules of one area (``across``: a circle spanning areas)."""
    offending = []
    for component in cycles(MODULES, EDGES):
        areas = {area(module) for module in component}
        if (name == "across" and len(areas) > 1) or areas == {name}:
            offending += [e for e in EDGES if e.importer in component and e.imported in component]
    fail_on(offending, f"import circle(s) in {name}")


@pytest.mark.parametrize("name", [rule("upward", name) for name in AREAS])
def test_no_upward_import(name: str) -> None:
    """An area imports only what sits below it (the core: no feature folder, nobody the package face)."""
    offending = [e for e in EDGES if area(e.importer) == name and area(e.imported) in FORBIDDEN[name]]
    fail_on(offending, f"{name} imports a layer above it")


@pytest.mark.parametrize("name", [rule("concrete", name) for name in AREAS if name != "backends"])
def test_only_backends_import_a_concrete_backend(name: str) -> None:
    """Commands are made by backends that a Host chose: nobody outside backends/ picks one by import."""
    offending = [
        e
        for e in EDGES
        if area(e.importer) == name
        and area(e.imported) == "backends"
        and e.imported not in OPEN_BACKENDS
        and (e.importer, e.imported) not in CONCRETE_BACKEND_EXCEPTIONS
    ]
    fail_on(offending, f"{name} imports a concrete backend")


@pytest.mark.parametrize("name", [rule("display", name) for name in MODELS])
def test_models_never_import_display(name: str) -> None:
    """Models know nothing of their views: display/ registers itself on the pynetns.views hook."""
    offending = [e for e in EDGES if area(e.importer) == name and area(e.imported) == "display"]
    fail_on(offending, f"{name} imports display/")


def nfqueue_engine() -> list[str]:
    return sorted(
        module
        for module in MODULES
        if module.startswith("pynetns.impair.nfqueue") and module.rpartition(".")[2] not in NFQUEUE_CLIENTS
    )


@pytest.mark.parametrize("name", [rule("nfqueue", "engine")])
def test_nfqueue_engine_imports_only_stdlib_and_errors(name: str) -> None:
    """The userspace engine runs alone (``python -m``): the standard library, pynetns.errors, itself."""
    engine = nfqueue_engine()
    assert engine, "no module under pynetns/impair/nfqueue/"
    allowed = {"pynetns", "pynetns.impair", "pynetns.errors", *engine}
    offending = []
    for edge in ALL_EDGES:
        if edge.importer not in engine or edge.imported == "__future__":
            continue
        top = edge.imported.partition(".")[0]
        if top == "pynetns":
            target = next(e.imported for e in internal([edge], MODULES))
            if target not in allowed:
                offending.append(attrs.evolve(edge, imported=target))
        elif top not in sys.stdlib_module_names:
            offending.append(edge)
    fail_on(offending, "the nfqueue engine imports beyond the standard library and pynetns.errors")


# -- the reader itself -------------------------------------------------------------


def test_the_reader_sees_relative_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("from .a import thing\n")
    (root / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from .sub import c\n    import pkg.sub\n"
    )
    (root / "b.py").write_text("from . import a\nimport json\n")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "c.py").write_text("from ..b import B\n")
    modules, edges = read_imports(root)
    assert modules == {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
    assert {(e.importer, e.imported, e.line) for e in internal(edges, modules)} == {
        ("pkg", "pkg.a", 1),
        ("pkg.a", "pkg.b", 3),  # under TYPE_CHECKING
        ("pkg.a", "pkg.sub.c", 5),  # lazy, inside a function, `from .sub import c` names the module
        ("pkg.a", "pkg.sub", 6),
        ("pkg.b", "pkg.a", 1),  # `from . import a`
        ("pkg.sub.c", "pkg.b", 1),
    }
    assert ("pkg.b", "json") in {(e.importer, e.imported) for e in edges}
    found = cycles(modules, internal(edges, modules))
    assert found == [["pkg.a", "pkg.b", "pkg.sub.c"]]  # a -> sub.c -> b -> a
    assert str(Edge("pkg.b", "pkg.a", "pkg/b.py", 1)) == "pkg/b.py:1: pkg.b -> pkg.a"


def test_the_areas() -> None:
    assert area("pynetns") == area("pynetns.pytest_plugin") == "face"
    assert area("pynetns.namespace") == area("pynetns.views") == "core"
    assert area("pynetns.backends") == area("pynetns.backends.iproute2") == "backends"
    assert area("pynetns.lab.journal") == "lab"
    assert area("pynetns.impair.nfqueue") == "impair"
