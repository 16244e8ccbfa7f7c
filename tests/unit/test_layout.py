"""The layout is the data flow: no import cycles, and no stage imports a later one.

The import graph is built from the source with `ast` (imports inside functions included, since
they run too) over every module of `visitshare`, `producers`, `consumers` and `dags`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from visitshare.settings import REPO_ROOT

ROOTS = ("visitshare", "producers", "consumers", "dags")

# Stages in data-flow order; a module may import its own stage and earlier ones only.
STAGES = [
    (
        "base",
        ("visitshare.settings", "visitshare.clock", "visitshare.errors", "visitshare.console"),
    ),
    ("db", ("visitshare.db", "visitshare.processes")),
    ("contracts", ("visitshare.contracts",)),
    ("producing", ("visitshare.producing", "producers")),
    ("landing", ("visitshare.landing", "visitshare.lake", "consumers.landing")),
    ("quality", ("visitshare.quality",)),
    ("release", ("visitshare.release",)),
    ("access", ("visitshare.access", "consumers.partner_reader")),
    ("orchestration", ("visitshare.orchestration", "dags")),
    ("interfaces", ("visitshare.cli", "visitshare.bench")),
]
# Only these may import the top-level `producers` / `consumers` packages from `visitshare`.
MAY_IMPORT_SERVICES = ("visitshare.cli", "visitshare.bench", "visitshare.orchestration")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (REPO_ROOT / root).rglob("*.py"):
            if "__pycache__" not in path.parts:
                found[_module_name(path)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `name` is or lies inside (None: not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import name`: the module pkg.name if there is one, else pkg itself.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for t in targets:
                resolved = _resolve(t, modules)
                if resolved and resolved != module:
                    graph[module].add(resolved)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _stage(module: str) -> int:
    if module in ROOTS:  # the top-level packages themselves import nothing
        return 0
    for rank, (_, prefixes) in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_imports_inside_functions(graph):
    # visitshare.cli.landing imports consumers.landing inside a command function.
    assert "consumers.landing" in graph["visitshare.cli.landing"]


def test_no_import_cycles(graph):
    assert _cycles(graph) == []


def test_cycle_detection_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_belongs_to_a_stage(graph):
    for module in graph:
        _stage(module)


def test_no_stage_imports_a_later_stage(graph):
    backwards = [
        f"{m} ({STAGES[_stage(m)][0]}) imports {t} ({STAGES[_stage(t)][0]})"
        for m, targets in graph.items()
        for t in targets
        if _stage(t) > _stage(m)
    ]
    assert backwards == []


def test_core_package_reaches_services_only_from_its_interfaces(graph):
    offenders = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        if m.startswith("visitshare") and not m.startswith(MAY_IMPORT_SERVICES)
        for t in targets
        if t.startswith(("producers", "consumers"))
    ]
    assert offenders == []
