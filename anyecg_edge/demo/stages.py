"""The demo's stages, in order (`STAGES`): each runs the same code as the CLI (most *are*
CLI invocations, printed as copyable ``$ ...`` lines), writes under OUT and returns a
one-line result and its artefacts. Heavy imports stay inside the stages."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyecg_edge.demo.context import DemoContext, DemoError
from anyecg_edge.fileio import write_json

GPU_LINE = (
    "torchrun --nproc_per_node 8 -m anyecg_edge.cli train lora "
    "--init 1_lead_ECGFounder.pth --corpus /data/mcmed_corpus --out runs/lora_ecgfounder "
    "--device cuda --precision bf16 --compile --batch-size 8192 --workers 8 --epochs 10"
)


def _cohort_record(ctx: DemoContext) -> Path:
    records = sorted(ctx.path("cohort", "waveforms").rglob("*.hea"))
    if not records:
        raise DemoError("the synthetic cohort has no waveform records")
    # The longest one (the stream wants more than a few windows).
    return max(records, key=lambda p: p.with_suffix(".dat").stat().st_size).with_suffix("")


def _stream_record(ctx: DemoContext) -> tuple[Path, str]:
    if ctx.data is not None:
        return ctx.data / "mitdb" / "100", "MIT-BIH 100 (real, 360 Hz)"
    return _cohort_record(ctx), "a synthetic cohort segment (500 Hz)"


def _fmt_count(v: Any) -> str:
    return "?" if v is None else f"{v:,}"


def _fmt_auroc(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def stage_foundation(ctx: DemoContext) -> tuple[str, list[Path]]:
    """Exact ECGFounder: build, save in the authors' checkpoint format, reload strictly."""
    import torch

    from anyecg_edge.training.ecgfounder import load_ecgfounder, save_authors_format
    from anyecg_edge.training.models import count_macs, count_params, create_model

    torch.manual_seed(0)
    model = create_model("ecgfounder", n_classes=150)
    path = save_authors_format(
        model, ctx.path("foundation", "ecgfounder_random_authors_format.pth")
    )
    loaded = load_ecgfounder(path)
    x = torch.randn(1, 1, 5000)
    with torch.inference_mode():
        err = (loaded(x) - model.eval()(x)).abs().max().item()
    macs = count_macs(loaded, (1, 1, 5000))
    ctx.state["founder"] = path
    return (
        f"ECGFounder 1-lead (random init): {count_params(loaded):,} params, {macs / 1e9:.2f} GMAC "
        f"per window; authors'-format checkpoint reloads strictly (max |diff| {err:.1e})",
        [path],
    )


def stage_pretrain(ctx: DemoContext) -> tuple[str, list[Path]]:
    """The stand-in for ECGFounder's pretraining: every weight of the tiny Net1D trained on
    a cohort of other patients, saved in the authors' checkpoint format (merged.pth)."""
    c = ctx.cfg
    cohort, corpus, run = (ctx.path("pretrain", p) for p in ("cohort", "corpus", "base"))
    ctx.run_cli(
        "-q", "data", "synth", "--out", cohort, "--visits", c.pretrain_visits, "--seed",
        c.seed + 1000, "--segments-per-visit", 1, 1, "--segment-s", *c.pretrain_segment_s,
        "--no-defects",
    )  # fmt: skip
    ctx.run_cli(
        "-q", "data", "build", "--mcmed", cohort, "--out", corpus, "--window",
        c.pretrain_window_s, "--no-progress",
    )  # fmt: skip
    ctx.run_cli(
        "-q", "train", "lora", "--full", "--merge", "--arch", c.teacher_arch, "--corpus", corpus,
        "--out", run, "--epochs", 1000, "--max-steps", c.pretrain_steps, "--batch-size",
        c.lora_batch, "--lr",
        c.pretrain_lr, "--eval-every", c.pretrain_steps, "--patience", 0, "--seed", c.seed,
        "--threads", c.threads,
    )  # fmt: skip
    ctx.state["base"] = run / "merged.pth"
    m = _metrics(run)
    return (
        f"{c.teacher_arch} pretrained (every weight, {m.get('steps', '?')} steps) on "
        f"{c.pretrain_visits} visits of other patients (seed {c.seed + 1000}) - the stand-in "
        f"for ECGFounder's pretraining; val mean AUROC "
        f"{_fmt_auroc(m.get('best_val_mean_auroc'))}; authors'-format checkpoint merged.pth",
        [run / "merged.pth", run / "metrics.json"],
    )


def stage_cohort(ctx: DemoContext) -> tuple[str, list[Path]]:
    c = ctx.cfg
    out = ctx.path("cohort")
    ctx.run_cli(
        "-q", "data", "synth", "--out", out, "--visits", c.visits, "--seed", c.seed,
        "--segments-per-visit", *c.segments_per_visit, "--segment-s", *c.segment_s,
    )  # fmt: skip
    truth = json.loads((out / "truth.json").read_text())
    ctx.state["cohort"] = out
    ctx.state["truth"] = out / "truth.json"
    return (
        f"{truth['n_visits']} visits, {truth['n_visits_with_waveforms']} with lead-II waveforms "
        f"({truth['n_segments']} WFDB segments), {truth['n_lab_rows']} lab rows; planted labs: "
        f"{', '.join(truth['planted_keys'])} (MC-MED layout: visits.csv, labs.csv, waveforms/)",
        [out, out / "truth.json"],
    )


def stage_corpus(ctx: DemoContext) -> tuple[str, list[Path]]:
    out = ctx.path("corpus")
    ctx.run_cli("-q", "data", "build", "--mcmed", ctx.path("cohort"), "--out", out, "--no-progress")
    man = json.loads((out / "manifest.json").read_text())
    counts = man.get("counts", {})
    splits = man.get("splits") or {}
    split_txt = ", ".join(
        f"{k} {v.get('windows', v) if isinstance(v, dict) else v}" for k, v in splits.items()
    )
    ctx.state["corpus"] = out
    return (
        f"{counts.get('windows', '?')} labelled 10 s windows"
        + (f" ({split_txt})" if split_txt else "")
        + " in shards + index.parquet",
        [out / "manifest.json", out / "index.parquet"],
    )


def _metrics(run: Path) -> dict[str, Any]:
    p = run / "metrics.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def stage_lora(ctx: DemoContext) -> tuple[str, list[Path]]:
    c = ctx.cfg
    run = ctx.path("runs", "teacher")
    ctx.run_cli(
        "-q", "train", "lora", "--init", ctx.state["base"], "--corpus", ctx.state["corpus"],
        "--out", run, "--max-steps", c.lora_steps, "--batch-size", c.lora_batch,
        "--lr", c.lora_lr, "--eval-every", c.lora_steps, "--patience", 0, "--seed", c.seed,
        "--threads", c.threads,
    )  # fmt: skip
    ctx.console.print(
        "[bold]Full size on GPUs[/] (ECGFounder weights, MC-MED corpus; ~11,600 segments/s per "
        "H100 measured, benchmarks/README.md):"
    )
    ctx.console.print(f"[bold magenta]  $ {GPU_LINE}[/]", highlight=False)
    ctx.state["teacher"] = run
    m = _metrics(run)
    return (
        f"LoRA (new head) on the pretrained {c.teacher_arch}, base frozen, "
        f"{_fmt_count(m.get('trainable_params'))} of {_fmt_count(m.get('total_params'))} "
        f"weights trained, {m.get('steps', '?')} steps: best val mean AUROC "
        f"{_fmt_auroc(m.get('best_val_mean_auroc'))}. GPU full size: {GPU_LINE}",
        [run / "adapter", run / "model.pt", run / "metrics.json"],
    )


def _evaluate(ctx: DemoContext, run: Path) -> tuple[dict[str, Any], Path, Path]:
    out = run / "evaluation.json"
    ctx.run_cli(
        "-q", "evaluate", "--model", run, "--corpus", ctx.state["corpus"], "--split", "test",
        "--json", out, "--truth", ctx.state["truth"], "--bootstrap", ctx.cfg.bootstrap,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    report = out.parent / f"{out.stem}_report"
    html = report / "report.html"
    return doc["summary"], out, html if html.is_file() else report


def _eval_line(s: dict[str, Any]) -> str:
    t = s.get("truth") or {}
    b = s.get("buckets") or {}
    return (
        f"test mean AUROC {_fmt_auroc(s.get('mean_auroc'))}; planted labs "
        f"{_fmt_auroc(t.get('planted_mean_auroc'))}, unplanted {_fmt_auroc(t.get('unplanted_mean_auroc'))}; "
        f"buckets {', '.join(f'{k}: {v}' for k, v in b.items())}"
    )


def stage_evaluate_teacher(ctx: DemoContext) -> tuple[str, list[Path]]:
    s, js, rep = _evaluate(ctx, ctx.state["teacher"])
    ctx.state["teacher_eval"] = s
    return "teacher: " + _eval_line(s), [js, rep]


def stage_distill(ctx: DemoContext) -> tuple[str, list[Path]]:
    c = ctx.cfg
    run = ctx.path("runs", "student")
    ctx.run_cli(
        "-q", "train", "distill", "--teacher", ctx.state["teacher"], "--corpus",
        ctx.state["corpus"], "--out", run, "--student", c.student, "--max-steps",
        c.distill_steps, "--batch-size", c.distill_batch, "--lr", c.distill_lr,
        "--alpha", c.distill_alpha, "--temperature", c.distill_temperature,
        "--qat-steps", c.qat_steps, "--eval-every", c.distill_steps, "--patience", 0,
        "--seed", c.seed, "--threads", c.threads,
    )  # fmt: skip
    ctx.state["student"] = run
    s, js, rep = _evaluate(ctx, run)
    ctx.state["student_eval"] = s
    t = ctx.state.get("teacher_eval") or {}
    gap = ""
    tp, sp = (
        (t.get("truth") or {}).get("planted_mean_auroc"),
        (s.get("truth") or {}).get("planted_mean_auroc"),
    )
    if tp is not None and sp is not None:
        gap = f"; planted mean vs teacher {sp - tp:+.3f}"
    m = _metrics(run)
    f = m.get("fidelity") or {}
    fid = (
        f"; fidelity to the teacher on {f.get('n_windows')} {f.get('split')} windows: AUROC vs "
        f"its calls {_fmt_auroc(f.get('mean_auroc_vs_teacher'))}, mean |dp| "
        f"{_fmt_auroc(f.get('mean_abs_dp'))}"
        if f
        else ""
    )
    ctx.state["student_fidelity"] = f
    return (
        f"{c.student} (loss: labels x{c.distill_alpha:g}, teacher soft targets "
        f"x{1 - c.distill_alpha:g} at T={c.distill_temperature:g}): " + _eval_line(s) + gap + fid,
        [run / "model.pt", run / "metrics.json", js, rep],
    )


def stage_export(ctx: DemoContext) -> tuple[str, list[Path]]:
    c = ctx.cfg
    parts, files = [], []
    for fmt, ext in (("onnx", "onnx"), ("tflite", "tflite")):
        out = ctx.path("exports", f"student_int8.{ext}")
        args = [
            "-q", "export", "--model", ctx.state["student"], "--format", fmt, "--int8",
            "--calib", ctx.state["corpus"], "--calib-size", c.calib_size, "--out", out,
        ]  # fmt: skip
        if c.allow_degraded:
            args.append("--allow-degraded")
        ctx.run_cli(*args)
        parity = json.loads(Path(f"{out}.parity.json").read_text())
        verdict = (
            "passed"
            if parity.get("passed")
            else "OUTSIDE tolerance (kept: --allow-degraded, quick demo)"
        )
        parts.append(
            f"{fmt} {out.stat().st_size / 1024:.0f} KB, parity {verdict}: agreement "
            f"{parity['calls']['agreement']:.3f}, mean AUROC delta {parity['auroc']['mean_delta']:.4f}"
        )
        files += [out, Path(f"{out}.manifest.json"), Path(f"{out}.parity.json")]
        ctx.state[f"export_{fmt}"] = out
    return "int8: " + "; ".join(parts), files


def stage_predict(ctx: DemoContext) -> tuple[str, list[Path]]:
    """The device path (no torch): record -> gate -> windows -> int8 ONNX -> lab estimates."""
    from anyecg_edge.io import read_record
    from anyecg_edge.predict import predict_record
    from anyecg_edge.runtime import load_model

    model = load_model(ctx.state["export_onnx"], threads=1)
    if ctx.data is not None:
        target, lead = ctx.data / "mitdb" / "100", "MLII"
    else:
        target, lead = _cohort_record(ctx), None
    rec = read_record(target, lead=lead)
    t0 = time.perf_counter()
    result = predict_record(rec, model).to_dict()
    n = max(1, result["quality"]["windows_total"])
    ms = 1000 * (time.perf_counter() - t0) / n
    path = ctx.path("predict", f"predict_{target.name}.json")
    write_json(path, result)  # as `predict --json` writes it: strict JSON, atomic
    q = result["quality"]
    top = sorted(result["labs"].items(), key=lambda kv: -kv[1]["probability"])[:3]
    return (
        f"{target.name} ({rec.fs:g} Hz, lead {rec.lead}): {q['windows_used']}/{q['windows_total']} "
        f"windows passed the gate, {ms:.2f} ms/window end to end; top: "
        + ", ".join(f"{k} {v['probability']:.2f}" for k, v in top),
        [path],
    )


def stage_stream(ctx: DemoContext) -> tuple[str, list[Path]]:
    from anyecg_edge.stream.session import simulated_session

    c = ctx.cfg
    record, what = _stream_record(ctx)
    jsonl = ctx.path("stream", "stream.jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    model = ctx.state["export_tflite"]
    argv = [
        "stream", "--source", f"sim-polar:{record}", "--model", str(model), "--hop", "1",
        "--duration", f"{c.stream_s:g}", "--speed", f"{c.stream_speed:g}",
        *(["--faults", c.stream_faults] if c.stream_faults else []), "--jsonl", str(jsonl),
    ]  # fmt: skip
    ctx.printed["stream"] = argv  # in demo_summary.json: the tests run it as printed
    ctx.console.print(
        f"streaming {c.stream_s:g} s of {what} from a simulated Polar H10 (bumble GATT link, "
        f"{c.stream_speed:g}x real time, faults: {c.stream_faults or 'none'}) into {model.name}; "
        f"equivalent: [cyan]anyecg-edge {shlex.join(argv)}[/]",
        highlight=False,
    )
    s = simulated_session(
        model, record, duration_s=c.stream_s, speed=c.stream_speed, faults=c.stream_faults,
        jsonl=jsonl, live_console=ctx.console,
    )  # fmt: skip
    ctx.state["stream_jsonl"] = jsonl
    lat = s["latency_ms"]
    ev = s.get("events") or {}
    return (
        f"{s['windows']} windows ({s['accepted']} scored, {s['rejected']} gated, "
        f"{s['skipped_gap']} skipped at gaps) from {s['stream_s']:.0f} s in {s['wall_s']:.1f} s; "
        f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms; events "
        + (", ".join(f"{k} {v}" for k, v in ev.items()) or "none"),
        [jsonl],
    )


def stage_bench(ctx: DemoContext) -> tuple[str, list[Path]]:
    from anyecg_edge.benchmarks.bench import (
        BenchOptions,
        headline_text,
        print_result,
        run_bench,
    )
    from anyecg_edge.benchmarks.report import write_report

    c = ctx.cfg
    models = []
    if c.bench_founder and ctx.state.get("founder"):
        models.append(f"ecgfounder={ctx.state['founder']}@torch")
    models += [
        f"teacher={ctx.state['teacher']}",
        f"student={ctx.state['student']}@torch",
        f"student={ctx.state['export_onnx']}",
        f"student={ctx.state['export_tflite']}",
    ]
    out = ctx.path("bench")
    argv = [
        "bench", "--threads", "1", *(a for m in models for a in ("--models", m)),
        *(["--quick"] if c.bench_quick else ["--iterations", str(c.bench_iterations)]),
        "--stream-jsonl", str(ctx.state["stream_jsonl"]), "--corpus", str(ctx.state["corpus"]),
        "--truth", str(ctx.state["truth"]), "--report", str(out),
        "--json", str(out / "bench.json"),
    ]  # fmt: skip
    ctx.printed["bench"] = argv
    ctx.console.print(f"[cyan]$ anyecg-edge {shlex.join(argv)}[/]", highlight=False)
    opts = BenchOptions(
        models=models, threads=1, iterations=c.bench_iterations, quick=c.bench_quick,
        stream_jsonl=ctx.state.get("stream_jsonl"), data_dir=ctx.data, work_dir=out / "work",
        corpus=ctx.state["corpus"], truth=ctx.state["truth"],
    )  # fmt: skip
    res = run_bench(opts, say=lambda m: ctx.console.print(f"[dim]{m}[/]", highlight=False))
    print_result(res, ctx.console)
    files = write_report(res, out)  # bench.json, the plots, report.md/.html
    errors = [r for r in res["rows"] if r.get("error")]
    if errors:
        raise DemoError(f"{len(errors)} bench row(s) failed: {errors[0]['error']}")
    ctx.state["headline"] = res["headline"]
    return headline_text(res["headline"], 1), [files["html"], files["md"], *files["png"]]


@dataclass
class Stage:
    name: str
    fn: Callable[[DemoContext], tuple[str, list[Path]]]
    needs: tuple[str, ...] = ()


STAGES = [
    Stage("ECGFounder exact model + checkpoint", stage_foundation),
    Stage("pretrained base (stand-in for ECGFounder)", stage_pretrain),
    Stage("synthetic cohort (MC-MED layout)", stage_cohort),
    Stage("corpus of 10 s windows", stage_corpus, ("cohort",)),
    Stage("LoRA fine-tune of the pretrained base", stage_lora, ("corpus", "base")),
    Stage("evaluation report (teacher)", stage_evaluate_teacher, ("teacher",)),
    Stage("distillation + evaluation (student)", stage_distill, ("teacher",)),
    Stage("int8 ONNX + LiteRT exports with parity", stage_export, ("student",)),
    Stage("predict on a record (device runtime)", stage_predict, ("export_onnx",)),
    Stage("BLE stream from a simulated Polar H10", stage_stream, ("export_tflite",)),
    Stage("bench report", stage_bench, ("export_onnx", "export_tflite", "stream_jsonl", "corpus")),
]
