"""Every benchmark under benchmarks/ with a command-line `main` is reachable from the one CLI
(`anyecg-edge bench-tool NAME`), and each name answers its own --help through it."""

from __future__ import annotations

import ast
from pathlib import Path

from click.testing import CliRunner

from anyecg_edge.cli import cli
from anyecg_edge.commands.bench import BENCH_TOOLS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _modules_with_main() -> set[str]:
    found = set()
    for path in BENCHMARKS.glob("*.py"):
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            found.add(path.stem)
    return found


def test_every_benchmark_main_is_a_bench_tool() -> None:
    listed = {module for module, _ in BENCH_TOOLS.values()}
    missing = _modules_with_main() - listed - {"bench"}  # bench.py is `anyecg-edge bench` itself
    assert not missing, f"benchmarks with a main but no bench-tool name: {sorted(missing)}"


def test_bench_tool_help_lists_each_tool_on_one_line() -> None:
    result = CliRunner().invoke(cli, ["bench-tool", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    for name in BENCH_TOOLS:
        assert f"  {name} " in result.output, (name, result.output)


def test_soak_record_answers_help_through_bench_tool() -> None:
    result = CliRunner().invoke(cli, ["bench-tool", "soak-record", "--help"])
    assert result.exit_code == 0, result.output
    assert "--hours" in result.output and "--speed" in result.output
