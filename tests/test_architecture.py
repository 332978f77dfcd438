"""The import contract of ARCHITECTURE.md, checked on the source (AST) and in a process.

* The device side (``anyecg_edge/`` outside the command-line front ends, and
  ``firmware_bridge/``) never imports torch, ``training``, ``quantization`` or
  ``benchmarks`` -- not even inside a function; the front ends (``cli``, ``commands``,
  ``demo``, ``api``) only inside functions, so the device side installs and runs without them.
* Layers import downwards only (module-level imports): the core (signal, io, labs, ...)
  imports nothing above it; the stream engine nothing from the BLE bridge; no library
  module imports the CLI.
* No import cycles among project modules (any import, lazy ones included: a lazy cycle
  is still two modules that cannot be understood one without the other). The three
  the issue found (cli <-> commands/bench|demo, runtime/base <-> manifest,
  training/trainer <-> evaluate) are gone.

The graph is built from the source, not from an installed package: ``package-dir`` in
pyproject.toml maps the top-level folders into ``anyecg_edge``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Installed name -> folder (pyproject's package-dir).
PACKAGE_DIRS = {
    "anyecg_edge": "anyecg_edge",
    "anyecg_edge.training": "training",
    "anyecg_edge.quantization": "quantization",
    "anyecg_edge.firmware_bridge": "firmware_bridge",
    "anyecg_edge.benchmarks": "benchmarks",
}
TRAINING_SIDE = ("anyecg_edge.training", "anyecg_edge.quantization", "anyecg_edge.benchmarks")
# Libraries that only the training / export side may load.
TRAINING_LIBS = ("torch", "torchvision", "peft", "transformers", "litert_torch", "ai_edge_torch")
# Device-side modules that dispatch to the training side (lazily, inside a function).
FRONT_ENDS = (
    "anyecg_edge.__main__",
    "anyecg_edge.cli",
    "anyecg_edge.commands",
    "anyecg_edge.demo",
    "anyecg_edge.api",
)


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function (runs when called, not when the module loads)


def _under(name: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@cache
def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if pkg == "anyecg_edge" and parts and f"anyecg_edge.{parts[0]}" in PACKAGE_DIRS:
                continue  # a mapped folder, not a sub-folder of anyecg_edge/
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = path
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:  # the 'if TYPE_CHECKING' body never runs
                yield from _walk(sub, lazy)
            continue
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield child, inner
        yield from _walk(child, inner)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import in ``module``'s source, resolved to the module it names."""
    path = project_modules()[module]
    mods = project_modules()
    out: list[Import] = []
    for node, lazy in _walk(ast.parse(path.read_text(encoding="utf-8")), False):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package_of(module, path).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in mods else base)  # `from pkg import submodule`
        for target in targets:
            out.append(Import(module, target, node.lineno, lazy))  # type: ignore[attr-defined]
    return tuple(out)


def _reexport(imp: Import) -> bool:
    """A package's __init__ loading one of its own modules on first use of a name (PEP 562):
    the package's public face, not a dependency of the package on that module (which may
    import a constant from its package)."""
    path = project_modules()[imp.source]
    return imp.lazy and path.name == "__init__.py" and imp.target.startswith(imp.source + ".")


def internal_graph(*, lazy: bool = True) -> dict[str, set[str]]:
    mods = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m in mods:
        for imp in imports_of(m):
            if imp.target not in mods or imp.target == m or _reexport(imp):
                continue
            if lazy or not imp.lazy:
                graph[m].add(imp.target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.add(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        comps.append(comp)
    return comps


def _device_side(module: str) -> bool:
    return not _under(module, TRAINING_SIDE)


def _where(imp: Import) -> str:
    rel = project_modules()[imp.source].relative_to(REPO)
    return f"{rel}:{imp.line} imports {imp.target}" + (" (in a function)" if imp.lazy else "")


# --- the graph itself is read right -----------------------------------------------------------
def test_the_graph_sees_the_packages_and_their_imports():
    mods = project_modules()
    for name in ("anyecg_edge.cli", "anyecg_edge.stream.engine", "anyecg_edge.training.trainer",
                 "anyecg_edge.firmware_bridge.devices.polar", "anyecg_edge.labs"):  # fmt: skip
        assert name in mods
    # relative and `from package import submodule` forms resolve to the module
    targets = {i.target for i in imports_of("anyecg_edge.firmware_bridge.devices")}
    assert "anyecg_edge.firmware_bridge.devices.polar" in targets
    lazy = [
        i
        for i in imports_of("anyecg_edge.commands.train")
        if i.target.startswith("anyecg_edge.training")
    ]
    assert lazy and all(i.lazy for i in lazy)
    # TYPE_CHECKING-only imports are not imports
    assert not any(
        i.target == "anyecg_edge.io" for i in imports_of("anyecg_edge.firmware_bridge.simulator")
    )
    # the cycle finder finds a planted cycle and nothing in a chain
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


# --- device side independent of training ------------------------------------------------------
def test_device_side_never_imports_torch_or_training_code():
    bad = []
    for m in project_modules():
        if not _device_side(m):
            continue
        front = _under(m, FRONT_ENDS)
        for imp in imports_of(m):
            training = _under(imp.target, TRAINING_SIDE) or _under(imp.target, TRAINING_LIBS)
            if training and not (front and imp.lazy):
                bad.append(_where(imp))
    assert not bad, "the device side imports training-side code:\n" + "\n".join(bad)


def test_device_side_loads_without_torch_in_a_process():
    """What the AST cannot see (an import through a third module, __import__): import every
    device-side module, including the front ends, and check torch was never loaded."""
    names = sorted(
        m for m in project_modules()
        if _device_side(m) and m != "anyecg_edge.__main__"
    )  # fmt: skip
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {TRAINING_LIBS!r} "
        f"or m.startswith({TRAINING_SIDE!r}))\n"
        "print(len(sys.modules), bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]


# --- layers -----------------------------------------------------------------------------------
# Module-level imports a layer may not make (lazy imports are the front ends' business).
LAYER_RULES = {
    # the core: data, signal processing, lab catalog, small helpers
    ("anyecg_edge.signal", "anyecg_edge.io", "anyecg_edge.labs", "anyecg_edge.jsonsafe",
     "anyecg_edge.fileio", "anyecg_edge.datadir", "anyecg_edge.progress",
     "anyecg_edge.native_stderr"): (
        "anyecg_edge.runtime", "anyecg_edge.stream", "anyecg_edge.firmware_bridge",
        "anyecg_edge.predict", "anyecg_edge.estimates", "anyecg_edge.api",
    ),
    # the model runtime and the estimates built from its output
    ("anyecg_edge.runtime", "anyecg_edge.estimates"): (
        "anyecg_edge.stream", "anyecg_edge.firmware_bridge", "anyecg_edge.predict",
        "anyecg_edge.api",
    ),
    # the stream engine consumes blocks; where they come from is the sources' concern
    ("anyecg_edge.stream.engine", "anyecg_edge.stream.types", "anyecg_edge.stream.ring",
     "anyecg_edge.stream.latency"): ("anyecg_edge.firmware_bridge",),
    # the BLE bridge feeds the stream; it runs nothing of the model
    ("anyecg_edge.firmware_bridge",): (
        "anyecg_edge.runtime", "anyecg_edge.predict", "anyecg_edge.estimates",
        "anyecg_edge.stream.engine", "anyecg_edge.stream.sources",
    ),
}  # fmt: skip
# Nothing but the front ends imports the CLI.
CLI = ("anyecg_edge.cli", "anyecg_edge.commands")


def test_layers_import_downwards_only():
    bad = []
    for m in project_modules():
        for layer, forbidden in LAYER_RULES.items():
            if _under(m, layer):
                bad += [
                    _where(i) for i in imports_of(m) if not i.lazy and _under(i.target, forbidden)
                ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_library_module_imports_the_cli():
    bad = [
        _where(i)
        for m in project_modules()
        if not _under(m, CLI + ("anyecg_edge.__main__",))
        for i in imports_of(m)
        if _under(i.target, CLI)
    ]
    assert not bad, "library modules importing the CLI:\n" + "\n".join(bad)


# --- cycles -----------------------------------------------------------------------------------
def test_no_import_cycles():
    cycles = [sorted(c) for c in strongly_connected(internal_graph(lazy=True))]
    assert not cycles, f"import cycles: {cycles}"
