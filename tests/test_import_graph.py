"""Import graph (issue 17): no library module imports the CLI, and the cycles the review
found stay gone. Every import counts, also those inside functions (a lazy import is still a
dependency: it only moves the failure to run time).

The graph is read from the sources (ast), so the test needs nothing installed beyond the
checkout and takes well under a second."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.device  # no torch

REPO = Path(__file__).resolve().parents[1]
# Import name -> folder (pyproject's package-dir).
PACKAGES = {
    "anyecg_edge": "anyecg_edge",
    "anyecg_edge.training": "training",
    "anyecg_edge.quantization": "quantization",
    "anyecg_edge.firmware_bridge": "firmware_bridge",
    "anyecg_edge.benchmarks": "benchmarks",
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, folder in PACKAGES.items():
        for f in (REPO / folder).rglob("*.py"):
            parts = list(f.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its body)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                deps.add(base)
                deps.update(f"{base}.{a.name}" for a in node.names)
        found = {resolve(d) for d in deps if d.startswith("anyecg_edge")}
        graph[name] = {d for d in found if d is not None and d != name}
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def test_no_library_module_imports_the_cli() -> None:
    graph = import_graph()
    importers = sorted(m for m, deps in graph.items() if "anyecg_edge.cli" in deps)
    assert importers == ["anyecg_edge.__main__"], importers


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("anyecg_edge.cli", "anyecg_edge.commands.bench"),
        ("anyecg_edge.cli", "anyecg_edge.commands.demo"),
        ("anyecg_edge.runtime.base", "anyecg_edge.runtime.manifest"),
        ("anyecg_edge.training.trainer", "anyecg_edge.training.evaluate"),
        ("anyecg_edge.stream.session", "anyecg_edge.commands.stream"),
        ("anyecg_edge.benchmarks.bench", "anyecg_edge.commands.bench"),
    ],
)
def test_no_import_cycle_between(a: str, b: str) -> None:
    graph = import_graph()
    assert a in graph and b in graph
    assert not (_reaches(graph, a, b) and _reaches(graph, b, a)), f"{a} <-> {b}"


def test_the_graph_sees_lazy_imports() -> None:
    """(so that the checks above can fail: cli -> commands.bench is a function-level import)"""
    graph = import_graph()
    assert "anyecg_edge.commands.bench" in graph["anyecg_edge.cli"]
    assert _reaches(graph, "anyecg_edge.commands.demo", "anyecg_edge.demo")
