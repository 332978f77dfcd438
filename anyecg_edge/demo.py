"""`anyecg-edge demo`: the fullest end-to-end run that exists, stage by stage.

Each stage writes its artefacts under OUT and returns a one-line result; stages that are
not built yet are listed as pending with the issue that brings them (never faked).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from anyecg_edge import RESEARCH_USE_NOTE

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@dataclass
class StageResult:
    name: str
    status: str  # ok | failed | pending
    seconds: float
    summary: str
    artefacts: list[Path]


def _find_shared_data() -> Path:
    for candidate in (Path.cwd().parent / "shared" / "data", SHARED_DATA):
        if (candidate / "cinc2021").is_dir():
            return candidate
    raise FileNotFoundError(
        "real recordings not found: expected ../shared/data/cinc2021 next to the project"
    )


def stage_foundation(out: Path) -> tuple[str, list[Path]]:
    """Exact ECGFounder: build, save in the authors' checkpoint format, reload strictly."""
    import torch

    from anyecg_edge.training.ecgfounder import load_ecgfounder, save_authors_format
    from anyecg_edge.training.models import count_macs, count_params, create_model

    torch.manual_seed(0)
    model = create_model("ecgfounder", n_classes=150)
    path = save_authors_format(model, out / "ecgfounder_random_authors_format.pth")
    loaded = load_ecgfounder(path)
    x = torch.randn(1, 1, 5000)
    with torch.inference_mode():
        err = (loaded(x) - model.eval()(x)).abs().max().item()
    macs = count_macs(loaded, (1, 5000))
    return (
        f"ECGFounder 1-lead: {count_params(loaded):,} params, {macs / 1e9:.2f} GMAC/window; "
        f"authors'-format checkpoint reloads strictly (max |diff| {err:.1e})",
        [path],
    )


def stage_predict(out: Path) -> tuple[str, list[Path]]:
    """Device path on real records with an (untrained, random-init) student checkpoint."""
    import torch

    from anyecg_edge.io import read_record
    from anyecg_edge.labs import load_catalog
    from anyecg_edge.predict import predict_record
    from anyecg_edge.runtime import ModelMetadata
    from anyecg_edge.training.models import count_params, create_model
    from anyecg_edge.training.torch_model import TorchModel, save_model_checkpoint

    data = _find_shared_data()
    labs = list(load_catalog().keys)
    torch.manual_seed(0)
    student = create_model("student-s", n_classes=len(labs))
    ckpt = save_model_checkpoint(
        out / "student-s_untrained.pt",
        student,
        arch="student-s",
        model_kwargs={"n_classes": len(labs)},
        metadata=ModelMetadata(labs=labs),
    )
    model = TorchModel.load(ckpt)
    artefacts = [ckpt]
    lines = []
    for rel, lead in (("cinc2021/E07500", "I"), ("mitdb/100", "MLII")):
        rec = read_record(data / rel, lead=lead)
        t0 = time.perf_counter()
        result = predict_record(rec, model).to_dict()
        ms = 1000 * (time.perf_counter() - t0) / max(1, result["quality"]["windows_total"])
        path = out / f"predict_{Path(rel).name}.json"
        path.write_text(json.dumps(result, indent=2))
        artefacts.append(path)
        q = result["quality"]
        lines.append(
            f"{rel} ({rec.fs:g} Hz): {q['windows_used']}/{q['windows_total']} windows, {ms:.1f} ms/window"
        )
    return f"student-s ({count_params(student):,} params, untrained): " + "; ".join(
        lines
    ), artefacts


PENDING = [
    ("synthetic cohort → corpus", 4),
    ("LoRA fine-tune → evaluate → distill", 5),
    ("int8 ONNX + LiteRT export with parity", 6),
    ("BLE stream from the simulated Polar H10", 7),
    ("bench report", 8),
]

STAGES: list[tuple[str, Callable[[Path], tuple[str, list[Path]]]]] = [
    ("ECGFounder exact model + checkpoint", stage_foundation),
    ("predict on real records (device path)", stage_predict),
]


def run_demo(out: Path, console: Console | None = None) -> list[StageResult]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    results: list[StageResult] = []
    for name, fn in STAGES:
        console.rule(f"[bold]{name}")
        t0 = time.perf_counter()
        try:
            summary, artefacts = fn(out)
            status = "ok"
        except Exception as exc:  # a demo stage failing must not hide the others
            summary, artefacts, status = f"{type(exc).__name__}: {exc}", [], "failed"
        result = StageResult(name, status, time.perf_counter() - t0, summary, artefacts)
        results.append(result)
        console.print(summary)
        for path in artefacts:
            console.print(f"  → {path}")
    for name, issue in PENDING:
        results.append(StageResult(name, "pending", 0.0, f"not built yet (issue {issue})", []))

    table = Table(title=f"AnyECG-Edge demo — artefacts in {out}")
    for col in ("stage", "status", "s", "result"):
        table.add_column(col)
    for r in results:
        colour = {"ok": "green", "failed": "red", "pending": "yellow"}[r.status]
        table.add_row(r.name, f"[{colour}]{r.status}[/]", f"{r.seconds:.1f}", r.summary)
    console.print(table)
    console.print(f"[yellow]{RESEARCH_USE_NOTE}[/]")
    (out / "demo_summary.json").write_text(
        json.dumps(
            [{**r.__dict__, "artefacts": [str(p) for p in r.artefacts]} for r in results], indent=2
        )
    )
    if any(r.status == "failed" for r in results):
        raise SystemExit(1)
    return results
