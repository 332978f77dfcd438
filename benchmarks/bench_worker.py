"""bench: the per-row measuring process (``python -m anyecg_edge.benchmarks.bench_worker
SPEC.json``): load one model, time it, evaluate it on the corpus windows when asked."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from anyecg_edge.benchmarks.bench_machine import peak_rss_mb, rss_mb
from anyecg_edge.benchmarks.bench_runtime import latency_stats, time_calls
from anyecg_edge.benchmarks.bench_spec import BenchError, BenchOptions

if TYPE_CHECKING:
    from anyecg_edge.benchmarks.bench_accuracy import EvalSet
    from anyecg_edge.benchmarks.bench_candidates import Candidate


def _worker_load(
    spec: dict[str, Any], threads: int
) -> tuple[Callable[[np.ndarray], Any], str, float, Callable[[], Any]]:
    """(one call on windows (n, 1, samples), backend name, RSS before the model was loaded,
    a function giving the model's ModelMetadata -- labs, calibration, window -- or None).

    The metadata comes through a function so that what it loads (a LoRA run's model.pt)
    is read after the timing and the peak RSS, not counted in them."""
    kind = spec["kind"]
    if kind == "runtime":
        if spec["runtime"] == "tflite-runtime":
            sys.modules["ai_edge_litert"] = None  # type: ignore[assignment]  # force the fallback
        from anyecg_edge.runtime import load_model

        # Import the runtime package first, so the RSS delta is the model's own.
        with contextlib.suppress(ImportError):
            if spec["runtime"] == "onnxruntime":
                import onnxruntime  # noqa: F401
            elif spec["runtime"] == "litert":
                import ai_edge_litert.interpreter  # noqa: F401
            else:
                import tflite_runtime.interpreter  # noqa: F401
        rss0 = rss_mb()
        model = load_model(spec["path"], threads=threads)
        if spec["runtime"] == "tflite-runtime" and model.backend != "tflite-runtime":
            raise BenchError(
                f"{spec['path']}: tflite-runtime did not load it (got {model.backend})"
            )
        return model.predict_logits, model.backend, rss0, lambda: model.metadata

    import torch

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
    if kind == "torch-checkpoint":
        from anyecg_edge.training.torch_model import TorchModel

        rss0 = rss_mb()
        model = TorchModel.load(spec["path"])
        return model.predict_logits, "torch", rss0, lambda: model.metadata
    from anyecg_edge.training.lora import LoraSettings, apply_lora, load_lora_model
    from anyecg_edge.training.models import create_model

    rss0 = rss_mb()
    if kind == "torch-lora":
        module = apply_lora(create_model("ecgfounder", n_classes=spec["n_classes"]), LoraSettings())
        module.load_state_dict(torch.load(spec["state"], map_location="cpu", weights_only=True))
    elif kind == "torch-lora-run":
        module = load_lora_model(spec["path"])
    else:
        raise BenchError(f"worker: unknown model kind {kind!r}")
    module = module.eval()

    @torch.inference_mode()
    def call(x: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    def lora_metadata() -> Any:
        # The run's model.pt holds the labs, calibration and thresholds of this adapter
        # model (its merged weights); the random-init teacher has none.
        if kind != "torch-lora-run":
            return None
        from anyecg_edge.training.torch_model import load_model_checkpoint

        return load_model_checkpoint(Path(spec["path"]) / "model.pt")[1]

    return call, "torch", rss0, lora_metadata


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one model and time it (runs in the worker process)."""
    threads = int(spec["threads"])
    t0 = time.perf_counter()
    fn, backend, rss0, metadata = _worker_load(spec["load"], threads)
    load_s = time.perf_counter() - t0
    windows = np.load(spec["windows"])[:, None, :].astype(np.float32)
    warmup = int(spec["warmup"])
    iterations = spec.get("iterations")
    if iterations is None:
        # Auto: enough calls for stable tail percentiles, bounded by a time budget.
        est = time_calls(fn, windows, max(3, warmup), 0)
        per_call = float(np.median(est[1:])) if len(est) > 1 else float(est[0])
        iterations = int(
            np.clip(
                spec["budget_s"] * 1000 / max(per_call, 1e-3),
                spec["min_iterations"],
                spec["max_iterations"],
            )
        )
        warmup = 0
    samples = time_calls(fn, windows, int(iterations), warmup)
    stats = latency_stats(samples)
    # Batch throughput: one call on `batch` windows, repeated for ~tp_budget_s.
    b = int(spec["batch"])
    xb = np.ascontiguousarray(np.resize(windows, (b, *windows.shape[1:])))
    fn(xb)
    tp: list[float] = []
    t_start = time.perf_counter()
    while len(tp) < spec["tp_min_calls"] or (
        time.perf_counter() - t_start < spec["tp_budget_s"] and len(tp) < 50
    ):
        t1 = time.perf_counter_ns()
        fn(xb)
        tp.append((time.perf_counter_ns() - t1) / 1e6)
    batch_ms = float(np.median(tp))
    row = {
        "backend": backend,
        "threads": threads,
        **stats,
        "min_ms": round(float(samples.min()), 4),
        "max_ms": round(float(samples.max()), 4),
        "iterations": int(iterations),
        "warmup": int(spec["warmup"]),
        "batch": b,
        "batch_ms": round(batch_ms, 3),
        "throughput_wps": round(b * 1000.0 / batch_ms, 1),
        "load_s": round(load_s, 3),
        "model_rss_mb": round(rss_mb() - rss0, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "samples_ms": [round(float(v), 4) for v in samples],
    }
    if spec.get("eval"):  # after the timing and the peak RSS: neither includes it
        row.update(eval_logits(spec["eval"], fn, metadata))
    return row


def _corpus_windows(rows_npz: Path, batch: int) -> Iterator[np.ndarray]:
    """Preprocessed windows (batch, 1, samples) float32 of the rows `EvalSet` selected, read
    from the corpus shards with numpy memory maps (no torch, no pyarrow in the worker)."""
    z = np.load(rows_npz)
    paths, codes, offsets = z["shards"], z["code"], z["offset"]
    maps: dict[int, np.ndarray] = {}
    for start in range(0, len(codes), batch):
        c, o = codes[start : start + batch], offsets[start : start + batch]
        x = None
        for code in np.unique(c).tolist():
            arr = maps.get(code)
            if arr is None:
                arr = maps[code] = np.load(str(paths[code]), mmap_mode="r")
            m = c == code
            if x is None:
                x = np.empty((len(c), 1, arr.shape[1]), dtype=np.float32)
            x[m, 0] = arr[np.asarray(o[m], dtype=np.int64)]
        assert x is not None
        yield x


def eval_logits(
    spec: dict[str, Any], fn: Callable[[np.ndarray], Any], metadata: Callable[[], Any]
) -> dict[str, Any]:
    """Logits of this row's own callable (its runtime) on the corpus split (in the worker).

    Writes the logits of the model outputs that are corpus labs to ``spec["logits"]`` and
    returns what the parent needs to score them (`score_row`), or ``eval_note`` saying why
    the row cannot be evaluated on this corpus."""
    meta = metadata()
    if meta is None:
        return {"eval_note": "no lab outputs to evaluate (random-init model)"}
    corpus_labs = set(spec["labs"])
    labs = [k for k in meta.labs if k in corpus_labs]
    if not labs:
        return {"eval_note": f"none of the model's {len(meta.labs)} outputs is a lab of the corpus"}
    if meta.window_samples != int(spec["window_samples"]):
        return {
            "eval_note": f"the model takes {meta.window_samples}-sample windows, the corpus "
            f"has {spec['window_samples']}"
        }
    t0 = time.perf_counter()
    logits = np.concatenate(
        [
            np.asarray(fn(x), dtype=np.float32)
            for x in _corpus_windows(Path(spec["rows"]), int(spec["batch"]))
        ]
    )
    if logits.shape[1] != len(meta.labs):
        return {"eval_note": f"the model gives {logits.shape[1]} outputs for {len(meta.labs)} labs"}
    cols = [meta.labs.index(k) for k in labs]
    np.save(spec["logits"], logits[:, cols])
    return {
        "eval_labs": labs,
        "eval_calibration": {k: list(meta.calibration[k]) for k in labs if k in meta.calibration},
        "eval_thresholds": {k: float(meta.thresholds[k]) for k in labs if k in meta.thresholds},
        "eval_logits": str(spec["logits"]),
        "eval_s": round(time.perf_counter() - t0, 2),
    }


def _worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING)
    try:
        row = measure(spec)
    except Exception as exc:  # reported to the parent as the row's error
        row = {"error": f"{type(exc).__name__}: {exc}"}
    Path(spec["out"]).write_text(json.dumps(row))
    return 0


def run_worker(
    cand: Candidate,
    opts: BenchOptions,
    windows_npy: Path,
    work: Path,
    eval_set: EvalSet | None = None,
) -> dict[str, Any]:
    """Measure one candidate in a fresh Python process; returns its row fields."""
    idx = len(list(work.glob("worker_??.json")))
    spec_path = work / f"worker_{idx:02d}.json"
    out_path = work / f"worker_{idx:02d}.out.json"
    spec = {
        "load": cand.load,
        "threads": opts.threads,
        "windows": str(windows_npy),
        "warmup": opts.warmup_calls,
        "iterations": opts.iterations
        if opts.iterations is not None
        else (10 if opts.quick else None),
        "budget_s": opts.budget_s,
        "min_iterations": opts.min_iterations,
        "max_iterations": opts.max_iterations,
        "batch": min(opts.batch, 8) if opts.quick else opts.batch,
        "tp_min_calls": 1 if opts.quick else 2,
        "tp_budget_s": 0.0 if opts.quick else 2.0,
        "out": str(out_path),
    }
    if eval_set is not None:
        spec["eval"] = {
            "rows": str(eval_set.rows_npz),
            "labs": eval_set.labs,
            "window_samples": eval_set.window_samples,
            "batch": 64,
            "logits": str(work / f"worker_{idx:02d}.logits.npy"),
        }
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    # One thread pool size everywhere (BLAS/OpenMP under torch and numpy too).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(opts.threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, "-m", "anyecg_edge.benchmarks.bench_worker", str(spec_path)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "worker timed out after 1800 s"}
    if not out_path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        return {"error": f"worker exited {proc.returncode}: {tail[-1] if tail else 'no output'}"}
    return json.loads(out_path.read_text())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m anyecg_edge.benchmarks.bench_worker SPEC.json")
    sys.exit(_worker_main(sys.argv[1]))
