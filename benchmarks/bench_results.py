"""bench: the headline ratio, the result tables (console, Markdown, HTML share them), the
stream JSONL reader and the result JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anyecg_edge.benchmarks.bench_spec import BenchError

if TYPE_CHECKING:
    from anyecg_edge.benchmarks.bench_accuracy import EvalSet


def _model_label(row: dict[str, Any]) -> str:
    return f"{row['model']} · {row['runtime']} {row['precision']}"


def headline(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest int8 student vs ECGFounder fp32 (torch, and ONNX Runtime where measured)."""
    ok = [r for r in rows if not r.get("error") and r.get("p50_ms")]
    refs = [r for r in ok if r["role"] == "foundation" and r["precision"] == "fp32"]
    ints = [r for r in ok if r["precision"] == "int8" and r["role"] == "student"] or [
        r for r in ok if r["precision"] == "int8" and r["role"] != "foundation"
    ]
    if not refs or not ints:
        return None
    best = min(ints, key=lambda r: r["p50_ms"])
    ref = next((r for r in refs if r["runtime"] == "torch"), refs[0])
    out = {
        "student": f"{best['model']} {best['runtime']} int8",
        "student_p50_ms": best["p50_ms"],
        "reference": f"{ref['model']} {ref['runtime']} fp32",
        "reference_p50_ms": ref["p50_ms"],
        "speedup_p50": round(ref["p50_ms"] / best["p50_ms"], 1),
        "speedup_p99": round(ref["p99_ms"] / best["p99_ms"], 1),
        "goal_speedup": 100.0,
        "goal_student_ms": 0.5,
    }
    out["meets_speedup_goal"] = out["speedup_p50"] >= out["goal_speedup"]
    out["meets_latency_goal"] = best["p50_ms"] <= out["goal_student_ms"]
    others = {
        f"{r['model']} {r['runtime']} fp32": round(r["p50_ms"] / best["p50_ms"], 1) for r in refs
    }
    out["speedup_vs"] = others
    return out


def headline_text(h: dict[str, Any] | None, threads: int) -> str:
    if h is None:
        return "no int8 student and ECGFounder fp32 rows in this run: no speed-up ratio"
    others = {k: v for k, v in h["speedup_vs"].items() if k != h["reference"]}
    vs = "".join(f"; {v:,.0f}x vs {k}" for k, v in others.items())
    goal = "met" if h["meets_speedup_goal"] else "NOT met"
    lat = "met" if h["meets_latency_goal"] else "NOT met"
    return (
        f"{h['student']}: {h['student_p50_ms']:.3f} ms per 10 s window (p50, {threads} thread) vs "
        f"{h['reference']} {h['reference_p50_ms']:.1f} ms -> {h['speedup_p50']:,.0f}x faster "
        f"(p99: {h['speedup_p99']:,.0f}x{vs}). Goal >= 100x: {goal}; goal <= 0.5 ms: {lat}."
    )


def load_stream_jsonl(path: Path) -> dict[str, Any]:
    """Per-window latency series, events and the final summary of a `stream --jsonl` file."""
    t: list[float] = []
    lat: list[float] = []
    ok: list[bool] = []
    events: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                raise BenchError(f"{path}:{i}: not a JSON line") from None
            if "summary" in item:
                summary = item["summary"]
            elif "event" in item:
                events.append({"event": item["event"], "t": item.get("t")})
            elif "latency_ms" in item and "t" in item:
                t.append(float(item["t"]))
                lat.append(float(item["latency_ms"]))
                ok.append(bool((item.get("quality") or {}).get("ok", True)))
    if not t:
        raise BenchError(f"{path}: no window lines (with 't' and 'latency_ms') in this JSONL")
    keep = (
        "source",
        "model",
        "windows",
        "accepted",
        "rejected",
        "dropped",
        "skipped_gap",
        "latency_ms",
        "compute_ms",
        "stream_s",
        "wall_s",
        "speed",
        "events",
    )
    return {
        "jsonl": str(path),
        "summary": {k: summary[k] for k in keep if k in summary},
        "series": {"t": t, "latency_ms": lat, "quality_ok": ok},
        "events": events,
    }


def _fmt_bytes(n: Any) -> str:
    if not n:
        return "-"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def _fmt_count(n: Any) -> str:
    if n is None:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f} G"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


_BASE_COLUMNS = (
    "model", "runtime", "prec", "size", "params", "MACs", "p50 ms", "p95 ms", "p99 ms",
    "x ECGF", "win/s", "RSS MB",
)  # fmt: skip


def accuracy_note(eval_set: EvalSet | None) -> str:
    """Where the AUROC column comes from, in words (printed under the table, in the report)."""
    if eval_set is None:
        return (
            "AUROC: copied from each model's `evaluate --json` file (--accuracy, or an eval*.json "
            "next to its checkpoint), so an export row shows its fp32 checkpoint's number, not "
            "its own; `bench --corpus C` evaluates every file with its runtime"
        )
    truth = f"; planted/unplanted labs from {eval_set.truth_path}" if eval_set.truth_path else ""
    return (
        f"AUROC: every row's own file evaluated with its own runtime on {eval_set.describe()}, "
        f"scored like `anyecg-edge evaluate` (mean over labs with an AUROC){truth}"
    )


def _with_truth(rows: list[dict[str, Any]]) -> bool:
    return any(r.get("auroc_planted_mean") is not None for r in rows)


def table_columns(res: dict[str, Any]) -> list[str]:
    """The summary table's header; the AUROC column says where its numbers come from."""
    s = res.get("settings") or {}
    if s.get("accuracy_from") == "this file":
        auroc = f"AUROC this file ({(s.get('eval') or {}).get('split', 'test')})"
    else:  # results written before --corpus existed read the same as today's JSON mode
        auroc = "AUROC fp32 ckpt evaluate"
    extra = ["planted", "unplanted"] if _with_truth(res["rows"]) else []
    return [*_BASE_COLUMNS, auroc, *extra, "parity dAUC"]


def table_rows(res: dict[str, Any]) -> list[list[str]]:
    """The summary table as strings (shared by the console, Markdown and HTML), in the
    columns of `table_columns`."""
    truth = _with_truth(res["rows"])
    width = len(table_columns(res))
    out = []
    for r in res["rows"]:
        if r.get("error"):
            head = [
                r["model"],
                r["runtime"],
                r["precision"],
                _fmt_bytes(r.get("size_bytes")),
                _fmt_count(r.get("params")),
                _fmt_count(r.get("macs")),
                "error: " + r["error"][:60],
            ]
            out.append(head + [""] * (width - len(head)))
            continue
        acc = [_fmt(r.get("auroc_mean"))]
        if truth:
            acc += [_fmt(r.get("auroc_planted_mean")), _fmt(r.get("auroc_unplanted_mean"))]
        out.append(
            [
                r["model"],
                r.get("backend") or r["runtime"],
                r["precision"],
                _fmt_bytes(r.get("size_bytes")),
                _fmt_count(r.get("params")),
                _fmt_count(r.get("macs")),
                _fmt(r.get("p50_ms")),
                _fmt(r.get("p95_ms")),
                _fmt(r.get("p99_ms")),
                _fmt(r.get("speedup_vs_foundation_p50"), ",.1f"),
                _fmt(r.get("throughput_wps"), ",.0f"),
                _fmt(r.get("peak_rss_mb"), ".0f"),
                *acc,
                _fmt(r.get("parity_mean_auroc_delta"), ".4f"),
            ]
        )
    return out


def print_result(res: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    m = res["machine"]
    s = res["settings"]
    console.print(
        f"[bold]{m['cpu']}[/] ({m['cores_available']}/{m['cores_logical']} cores, {m['memory_gb']} GB, "
        f"load {m['load_avg_1m']} -> {m['load_avg_1m_end']}), {m['os']}; {s['threads']} thread(s), "
        f"iterations {s['iterations']}, warm-up {s['warmup']}, batch {s['batch']}"
    )
    console.print(f"windows: {s['windows']}")
    table = Table(
        title="Per 10 s window at batch 1 (warm-up excluded); throughput at batch "
        + str(s["batch"])
    )
    for col in table_columns(res):
        table.add_column(col, justify="left" if col in ("model", "runtime", "prec") else "right")
    for row in table_rows(res):
        table.add_row(*row)
    console.print(table)
    if s.get("accuracy"):
        console.print(s["accuracy"], highlight=False)
    for r in res["rows"]:
        if r.get("eval_note"):
            console.print(f"  {_model_label(r)}: not evaluated ({r['eval_note']})", highlight=False)
    p = res["preprocess"]
    console.print(
        "before the model (same for every row): gate + preprocess "
        f"{p['gate+preprocess_500hz']['p50_ms']:.2f} ms/window at 500 Hz, "
        f"{p['gate+preprocess_130hz']['p50_ms']:.2f} ms from a Polar H10's 130 Hz (p50)"
    )
    console.print("[bold]" + headline_text(res["headline"], s["threads"]) + "[/]")
    st = res.get("stream")
    if st and not st.get("error"):
        lat = st["summary"].get("latency_ms") or {}
        console.print(
            f"stream: {st['summary'].get('source', '?')}: {st['summary'].get('windows', len(st['series']['t']))} windows, "
            f"latency p50 {_fmt(lat.get('p50'), '.2f')} ms, p99 {_fmt(lat.get('p99'), '.2f')} ms, events {st['summary'].get('events', {})}"
        )


def write_json(res: dict[str, Any], path: Path) -> Path:
    from anyecg_edge.fileio import write_json as write_json_atomic

    # Atomic (a half-written bench JSON would be read by --compare) and never NaN.
    return write_json_atomic(path, res, indent=1, default=str)
