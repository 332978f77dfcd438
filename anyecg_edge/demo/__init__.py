"""`anyecg-edge demo`: the whole mission end to end on a CPU, stage by stage.

pretrain a tiny Net1D stand-in for ECGFounder on its own synthetic cohort -> a second,
disjoint MC-MED-shaped cohort -> sharded corpus -> LoRA fine-tune of the pretrained base
-> evaluation report -> distillation into an edge student (teacher soft targets only) with
its fidelity to the teacher -> int8 ONNX + LiteRT exports that must pass the parity gate
-> predict on a record through the device runtime -> BLE streaming session against a
simulated Polar H10 (live view) -> bench report. Every stage runs the same code as the
CLI (the data/train/evaluate/export stages *are* CLI invocations, printed as ``$ ...``
lines a user can copy), writes its artefacts under OUT and returns a one-line result; a
stage whose input failed is skipped, never faked. Heavy imports stay inside the stages.

The frame (config, context) is in `demo.context`, the stages in `demo.stages`; this module
runs them and prints / writes the summary.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from anyecg_edge import RESEARCH_USE_NOTE
from anyecg_edge.demo.context import DemoConfig, DemoContext, DemoError, find_shared_data
from anyecg_edge.demo.stages import GPU_LINE, STAGES, Stage
from anyecg_edge.fileio import write_json

__all__ = [
    "GPU_LINE",
    "STAGES",
    "DemoConfig",
    "DemoContext",
    "DemoError",
    "Stage",
    "StageResult",
    "find_shared_data",
    "run_demo",
]

# Subfolders of OUT this demo creates (and clears when it runs again).
_SUBDIRS = (
    "foundation", "pretrain", "cohort", "corpus", "runs", "exports", "predict", "stream", "bench",
)  # fmt: skip


@dataclass
class StageResult:
    name: str
    status: str  # ok | failed | skipped | pending
    seconds: float
    summary: str
    artefacts: list[Path] = field(default_factory=list)


def run_demo(
    out: Path, console: Console | None = None, config: DemoConfig | None = None
) -> list[StageResult]:
    """Run every stage into OUT (its demo subfolders cleared first), print and write the
    summary (``demo_summary.json``); SystemExit(1) when a stage failed or was skipped."""
    # Wide enough for the summary table when piped to a file (rich would use 80 columns).
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for sub in _SUBDIRS:  # a fresh run: nothing of an earlier one is taken for this one's
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    ctx = DemoContext(out=out, cfg=cfg, console=console, data=find_shared_data())
    t_demo = time.perf_counter()
    results = _run_stages(ctx)
    total = time.perf_counter() - t_demo
    _print_summary(ctx, results, total)
    write_json(
        out / "demo_summary.json",
        {
            "total_s": round(total, 1),
            "config": asdict(cfg),
            "stages": [{**r.__dict__, "artefacts": [str(p) for p in r.artefacts]} for r in results],
            "printed_commands": ctx.printed,
        },
        default=str,
    )
    if any(r.status in ("failed", "skipped") for r in results):
        raise SystemExit(1)
    return results


def _run_stages(ctx: DemoContext) -> list[StageResult]:
    """Each stage in order; one whose input is missing is skipped, a failure is recorded
    and the next stage still runs."""
    console = ctx.console
    results: list[StageResult] = []
    for stage in STAGES:
        console.rule(f"[bold]{stage.name}")
        missing = [n for n in stage.needs if n not in ctx.state]
        if missing:
            results.append(
                StageResult(stage.name, "skipped", 0.0, f"skipped: needs {', '.join(missing)}")
            )
            console.print(f"[yellow]skipped: an earlier stage did not produce {missing[0]}[/]")
            continue
        t0 = time.perf_counter()
        try:
            summary, artefacts = stage.fn(ctx)
            status = "ok"
        except Exception as exc:  # a failed stage must not hide the others
            summary, artefacts, status = f"{type(exc).__name__}: {exc}", [], "failed"
        result = StageResult(stage.name, status, time.perf_counter() - t0, summary, artefacts)
        results.append(result)
        console.print(("[red]" if status == "failed" else "") + summary, highlight=False)
        for path in artefacts:
            console.print(f"  → {path}", highlight=False)
    return results


def _print_summary(ctx: DemoContext, results: list[StageResult], total: float) -> None:
    """Every artefact, the report to open, and the table of stages."""
    console, out = ctx.console, ctx.out
    console.rule("[bold]artefacts")
    for r in results:
        for path in r.artefacts:
            console.print(f"{r.name}: {path}", highlight=False)
    report = out / "bench" / "report.html"
    if report.is_file():
        console.print(f"[bold]open the report: {report.resolve()}[/]", highlight=False)
    table = Table(title=f"AnyECG-Edge demo — {total:.0f} s — artefacts in {out}")
    for col in ("stage", "status", "s", "result"):
        table.add_column(col, overflow="fold")
    for r in results:
        colour = {"ok": "green", "failed": "red", "skipped": "yellow", "pending": "yellow"}[
            r.status
        ]
        table.add_row(r.name, f"[{colour}]{r.status}[/]", f"{r.seconds:.1f}", r.summary)
    console.print(table)
    console.print(f"[yellow]{RESEARCH_USE_NOTE}[/]")
