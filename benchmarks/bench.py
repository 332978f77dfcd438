"""`anyecg-edge bench`: every model side by side on this machine, in one run (issue 8).

For each model and runtime: latency per 10 s window at batch 1 (p50/p95/p99, warm-up
excluded), batch throughput, peak RSS, model file size, params and MACs, parity of the
exports and accuracy columns, plus the preprocessing time per window, machine info and
(for the report) a short streaming session.

Accuracy: with ``--corpus C`` every row's own file is evaluated on C's test split with the
row's own runtime, in its worker after the timing (windows read from the shards with numpy
memory maps; no torch for an export row), and scored by `evaluate`'s evaluate_predictions
in the parent. Without it, a row copies the mean AUROC of an ``evaluate --json`` file
(``--accuracy`` or one next to its checkpoint): for an export that is its fp32
checkpoint's number, and the table's column says so.

Models (``--models``, comma-separated or repeated; default ``ecgfounder,teacher,student-s``):

* a registry architecture (``ecgfounder``, ``net1d-tiny``, ``student-s``, ``student-xs``)
  at random init -- latency does not depend on the weights -- exported here to ONNX
  Runtime and LiteRT (fp32 and int8, calibrated on the bench windows);
* ``teacher``: ECGFounder with LoRA adapters (peft, as trained) at random init;
* ``[NAME=]PATH``: a torch checkpoint (``.pt``/``.pth``, or a folder with ``model.pt``;
  exported like an architecture), a LoRA run folder (``train lora`` output), or an
  exported ``.onnx``/``.tflite`` file with its manifest (needs no torch: the way to bench
  on a device).

A spec may end in ``@VARIANTS`` (``+``-separated, e.g. ``ecgfounder@torch`` or
``student-s@onnxruntime-int8+litert-int8``); ``--runtimes`` filters every model the same
way. Variants: torch-fp32, onnxruntime-fp32, onnxruntime-int8, litert-fp32, litert-int8,
tflite-runtime-int8 (only where tflite-runtime imports); a token selects each variant it
names a part of (``int8``, ``litert``, ...).

Each row is measured in its own fresh Python process (``python -m
anyecg_edge.benchmarks.bench_worker SPEC``), so its peak RSS is that model's alone and
one runtime's thread pools cannot disturb another's. Timing reuses `bench_runtime`'s
``time_calls`` (one window per call, cycling through real preprocessed windows).

Layout (this module runs the bench and re-exports the names other code uses):
`bench_spec` (options, model specs), `bench_machine` (CPU, memory, versions, RSS),
`bench_data` (timing windows, synthetic ECG, the record to stream), `bench_candidates`
(checkpoints and exports to measure), `bench_worker` (the per-row process),
`bench_accuracy` (corpus evaluation, evaluation files), `bench_results` (headline, tables,
stream JSONL, JSON). The streaming session is `anyecg_edge.stream.session`'s, as for
``anyecg-edge stream``. Entry point: ``anyecg-edge bench``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.benchmarks.bench_accuracy import (
    EvalSet,
    _find_evaluation,
    load_eval_set,
    read_evaluation,
    score_row,
)
from anyecg_edge.benchmarks.bench_candidates import (
    Candidate,
    _file_candidates,
    _tflite_runtime_available,
    _variant_choice,
    prepare_candidates,
)
from anyecg_edge.benchmarks.bench_data import (
    bench_windows,
    preprocessing_times,
    stream_record,
    synthetic_ecg_mv,
)
from anyecg_edge.benchmarks.bench_machine import machine_info, peak_rss_mb, rss_mb
from anyecg_edge.benchmarks.bench_results import (
    _model_label,
    accuracy_note,
    headline,
    headline_text,
    load_stream_jsonl,
    print_result,
    table_columns,
    table_rows,
    write_json,
)
from anyecg_edge.benchmarks.bench_spec import (
    DEFAULT_DATA,
    DEFAULT_MODELS,
    FORMAT,
    FOUNDATION_VARIANTS,
    VARIANTS,
    BenchError,
    BenchOptions,
    ModelSpec,
    _is_foundation,
    match_variants,
    parse_model_spec,
    split_tokens,
)
from anyecg_edge.benchmarks.bench_worker import measure, run_worker

from anyecg_edge.progress import report as progress_report

__all__ = [
    "DEFAULT_MODELS", "FORMAT", "BenchError", "BenchOptions", "Candidate", "EvalSet",
    "ModelSpec", "headline", "headline_text", "load_eval_set", "load_stream_jsonl",
    "machine_info", "match_variants", "measure", "parse_model_spec", "peak_rss_mb",
    "print_result", "read_evaluation", "rss_mb", "run_bench", "split_tokens",
    "synthetic_ecg_mv", "table_columns", "table_rows", "write_json",
]  # fmt: skip


def run_bench(opts: BenchOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole bench; returns the result document (see `FORMAT`)."""
    t_start = time.perf_counter()
    specs = [parse_model_spec(t) for t in split_tokens(opts.models or DEFAULT_MODELS)]
    if not specs:
        raise BenchError("--models: no model given")
    keys = list(dict.fromkeys(s.key for s in specs))
    if opts.runtimes:
        match_variants(opts.runtimes, VARIANTS, "--runtimes")  # validate early
    unknown = sorted(set(opts.accuracy) - set(keys))
    if unknown:
        raise BenchError(
            f"--accuracy {unknown[0]}=...: no model is named {unknown[0]!r} (names: {', '.join(keys)})"
        )
    asked = [t for spec in specs for t in (spec.variants or [])] + list(opts.runtimes or [])
    if any(t.lower().startswith("tflite-runtime") for t in asked) and not (
        _tflite_runtime_available()
    ):
        raise BenchError(
            "tflite-runtime is not installed here (it is the LiteRT fallback for numpy<2 "
            "devices: pip install tflite-runtime in such an environment)"
        )
    planned: list[tuple[str, str]] = []
    for spec in specs:  # bad variants and clashing names fail here, before any work
        if spec.kind in ("teacher", "lora-run"):
            vs = _variant_choice(spec, ("torch-fp32",), ("torch-fp32",), opts.runtimes)
        elif spec.kind == "file":
            vs = [f"{c.runtime}-{c.precision}" for c in _file_candidates(spec, opts)]
        else:
            defaults = FOUNDATION_VARIANTS if _is_foundation(spec.target) else VARIANTS
            vs = _variant_choice(spec, defaults, VARIANTS, opts.runtimes)
        for v in vs:
            if (spec.key, v) in planned:
                raise BenchError(
                    f"--models: two rows named {spec.key!r} {v}; give one another name (NAME=...)"
                )
            planned.append((spec.key, v))
    machine = machine_info()
    data_dir = opts.data_dir if opts.data_dir is not None else DEFAULT_DATA
    with contextlib.ExitStack() as stack:
        if opts.work_dir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anyecg-bench-")))
        else:
            work = Path(opts.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            for stale in work.glob("worker_*.json"):
                stale.unlink()
        n_windows = 24 if opts.quick else 160
        raw, pre, win_source = bench_windows(data_dir, n_windows)
        windows_npy = work / "windows.npy"
        np.save(windows_npy, pre)
        say(f"windows: {win_source}")
        prep = preprocessing_times(raw, 20 if opts.quick else 200)
        eval_set = None
        if opts.corpus is not None:
            eval_set = load_eval_set(opts.corpus, opts.eval_split, work, opts.truth)
            say(f"accuracy: every row evaluated on {eval_set.describe()}")
        cands = prepare_candidates(specs, opts, work, windows_npy, say)
        if not cands:
            raise BenchError("nothing to measure: --runtimes/@variants removed every row")
        rows: list[dict[str, Any]] = []
        for i_cand, cand in enumerate(cands):
            progress_report("bench rows", i_cand, len(cands))  # a bar when the CLI opened one
            base = {
                "model": cand.model,
                "runtime": cand.runtime,
                "precision": cand.precision,
                "role": cand.role,
                **cand.info,
                "preprocess_p50_ms": prep["gate+preprocess_500hz"]["p50_ms"],
            }
            if cand.error:
                rows.append({**base, "error": cand.error})
                say(f"{_model_label(base)}: {cand.error}")
                continue
            # Random weights say nothing about accuracy: such rows are timed, not evaluated.
            evaluate = eval_set is not None and cand.info.get("weights") != "random-init"
            say(f"{_model_label(base)}: measuring" + (" + evaluating" if evaluate else ""))
            found = run_worker(cand, opts, windows_npy, work, eval_set if evaluate else None)
            row = {**base, **{k: v for k, v in found.items() if not k.startswith("eval_")}}
            rows.append(row)
            if row.get("error"):
                say(f"{_model_label(base)}: {row['error']}")
            elif eval_set is not None:
                if "eval_labs" in found:
                    try:
                        row.update(score_row(eval_set, found))
                    except ValueError as exc:  # EvaluationError: e.g. non-finite outputs
                        row["eval_note"] = str(exc).splitlines()[0][:300]
                        say(f"{_model_label(base)}: not evaluated ({row['eval_note']})")
                else:
                    row["eval_note"] = found.get("eval_note") or "random-init weights"
                    say(f"{_model_label(base)}: not evaluated ({row['eval_note']})")
            else:
                acc_path = opts.accuracy.get(cand.model) or _find_evaluation(cand)
                if acc_path is not None:
                    row.update(read_evaluation(acc_path))
        ref = next(
            (
                r
                for r in rows
                if r["role"] == "foundation" and r["runtime"] == "torch" and r.get("p50_ms")
            ),
            None,
        )
        for r in rows:
            if ref is not None and r.get("p50_ms"):
                r["speedup_vs_foundation_p50"] = round(ref["p50_ms"] / r["p50_ms"], 2)
        head = headline(rows)

        stream = None
        if opts.stream_jsonl is not None:
            stream = load_stream_jsonl(opts.stream_jsonl)
        elif opts.stream_seconds > 0:
            stream = _bench_stream(rows, opts, data_dir, work, say)
    return {
        "format": FORMAT,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            **machine,
            "load_avg_1m_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "settings": {
            "threads": opts.threads,
            "iterations": opts.iterations
            if opts.iterations is not None
            else (
                "10 (quick)"
                if opts.quick
                else f"auto: {opts.min_iterations}-{opts.max_iterations} calls, ~{opts.budget_s:g} s per row"
            ),
            "warmup": opts.warmup_calls,
            "batch": min(opts.batch, 8) if opts.quick else opts.batch,
            "quick": opts.quick,
            "models": [s.key for s in specs],
            "windows": win_source,
            "window": "10 s x 500 Hz, 1 lead, preprocessed (batch 1 per call)",
            "accuracy": accuracy_note(eval_set),
            "accuracy_from": "this file" if eval_set is not None else "evaluation JSON",
            "eval": None
            if eval_set is None
            else {
                "corpus": str(eval_set.corpus),
                "split": eval_set.split,
                "windows": int(len(eval_set.visits)),
                "visits": int(len(np.unique(eval_set.visits))),
                "truth": None if eval_set.truth_path is None else str(eval_set.truth_path),
            },
        },
        "preprocess": prep,
        "rows": rows,
        "headline": head,
        "stream": stream,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def _bench_stream(
    rows: list[dict[str, Any]],
    opts: BenchOptions,
    data_dir: Path,
    work: Path,
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    device_rows = [
        r for r in rows if r["runtime"] != "torch" and not r.get("error") and r.get("file")
    ]
    if not device_rows:
        say("stream: no exported model among the rows; no streaming session")
        return None
    pick = min(
        device_rows, key=lambda r: (r["precision"] != "int8", r["role"] != "student", r["p50_ms"])
    )
    record = stream_record(data_dir, work)
    if record is None:
        say("stream: no record to stream (no recordings and no wfdb to write a synthetic one)")
        return None
    jsonl = work / "stream.jsonl"
    say(
        f"stream: {opts.stream_seconds:g} s of {record.name} from a simulated Polar H10 at {opts.stream_speed:g}x through {_model_label(pick)}"
    )
    from anyecg_edge.stream.session import simulated_session

    try:
        simulated_session(
            Path(pick["file"]),
            record,
            duration_s=opts.stream_seconds,
            speed=opts.stream_speed,
            jsonl=jsonl,
            threads=opts.threads,
        )
    except Exception as exc:  # the latency rows stand without it
        say(f"stream: failed ({type(exc).__name__}: {exc})")
        return {"error": f"{type(exc).__name__}: {exc}"}
    doc = load_stream_jsonl(jsonl)
    doc["model"] = _model_label(pick)
    return doc
