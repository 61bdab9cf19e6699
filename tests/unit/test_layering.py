"""Layering: no two modules of ``stream_monitor`` import each other, directly or through others.

Every module is parsed with :mod:`ast` and every import counts: top-level ones, those inside
functions (lazy imports) and those under ``if TYPE_CHECKING:``, because each of them hides a
cycle rather than removing it. An import of ``pkg.mod`` is an edge to ``pkg.mod`` only; the
parent package's ``__init__`` that Python runs first is not an edge, or every package whose
``__init__`` re-exports its submodules would count as a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import stream_monitor

Graph = dict[str, set[str]]


def _module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package's is its
    ``__init__.py``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for every import anywhere in ``node``."""
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            for alias in n.names:
                yield alias.name, None
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                # Relative: strip one component per level past the current package.
                base = module.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (n.level - 1)]
                target = ".".join([*base, n.module] if n.module else base)
            else:
                target = n.module or ""
            for alias in n.names:
                yield target, alias.name


def import_graph(root: Path, package: str) -> Graph:
    """The import graph of the package at ``root``: module -> modules of the same package it
    imports (anywhere in the file)."""
    modules = _module_names(root, package)
    graph: Graph = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for target, name in _imported(tree, module, path.name == "__init__.py"):
            if name is not None and f"{target}.{name}" in modules:
                dep = f"{target}.{name}"  # ``from pkg import submodule``
            else:
                # The longest known prefix: ``import pkg.mod.attr`` -> pkg.mod.
                parts = target.split(".")
                while parts and ".".join(parts) not in modules:
                    parts.pop()
                if not parts:
                    continue  # outside the package
                dep = ".".join(parts)
            if dep != module:
                graph[module].add(dep)
    return graph


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for comp in components:
        # The shortest path from the component's first module back to itself, inside it.
        members, start = set(comp), comp[0]
        prev: dict[str, str] = {}
        frontier = [start]
        while start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        v = prev[start]
        while v != start:
            path.append(v)
            v = prev[v]
        path.append(start)
        cycles.append(path[::-1])
    return cycles


def test_stream_monitor_has_no_import_cycles() -> None:
    root = Path(stream_monitor.__file__).parent
    graph = import_graph(root, "stream_monitor")
    assert len(graph) > 40, sorted(graph)  # the walk found the package
    assert "stream_monitor.monitor.model" in graph["stream_monitor.monitor.partition"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_lazy_and_type_checking_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("A = 1\n\ndef f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..c import C\n"
    )
    (pkg / "c.py").write_text("import os\nimport pkg.a\n")
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []


#: The rooms of docs/architecture.md, bottom to top, and the rooms each may import (besides
#: itself and the package root, which holds only the version). A room is a subpackage or a
#: top-level module.
ROOMS: dict[str, set[str]] = {
    "errors": set(),
    "stats": set(),
    "config": {"stats", "errors"},
    "kafka": {"config", "errors"},
    "state": {"errors"},
    "checkpoint": {"errors", "kafka"},
    "events": {"kafka", "errors"},
    "reference": {"stats", "events", "config", "errors"},
    "alerts": {"events", "config", "kafka", "checkpoint", "errors"},
    "monitor": {"stats", "reference", "events", "alerts", "config"},
    "metrics": {"monitor", "alerts", "events", "stats"},
    "alignment": {"config", "monitor"},
    "gc_tuning": set(),
    "blas_threads": set(),
    "assignment": {
        "checkpoint", "config", "kafka", "metrics", "monitor", "reference", "state",
    },
    "app": {
        "alerts", "alignment", "assignment", "blas_threads", "checkpoint", "config", "errors",
        "events", "gc_tuning", "kafka", "metrics", "monitor", "reference", "state", "stats",
    },
    "backtest": {
        "alerts", "alignment", "blas_threads", "config", "errors", "events", "gc_tuning",
        "kafka", "monitor", "reference",
    },
    "simulate": {"kafka"},
    "client": {"events", "kafka", "errors"},
    "logs": set(),
    "cli": {
        "alerts", "app", "backtest", "config", "errors", "events", "kafka", "logs", "reference",
        "simulate",
    },
    "__main__": {"cli"},
}  # fmt: skip


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_room_imports_only_the_rooms_below_it() -> None:
    """No upward imports: each edge between rooms is one docs/architecture.md allows; a new
    room (subpackage or top-level module) must be placed in the table first."""
    graph = import_graph(Path(stream_monitor.__file__).parent, "stream_monitor")
    rooms = {_room(m) for m in graph} - {"stream_monitor"}
    assert rooms == set(ROOMS), f"rooms not in the table: {sorted(rooms - set(ROOMS))}"
    upward = sorted(
        f"{module} -> {dep}"
        for module, deps in graph.items()
        for dep in deps
        if _room(dep) not in {_room(module), "stream_monitor"}
        and _room(dep) not in ROOMS[_room(module)]
    )
    assert not upward, "imports the architecture does not allow:\n" + "\n".join(upward)
    # the table itself has no cycle: it is an order from the bottom up
    assert not find_cycles({r: set(d) for r, d in ROOMS.items()})
