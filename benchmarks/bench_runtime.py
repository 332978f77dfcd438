"""Single-thread latency per 10 s window: fp32 vs int8 in ONNX Runtime and LiteRT (+ torch).

Run: ``python -m anyecg_edge.benchmarks.bench_runtime [--model CKPT] [--iterations N] [--json]``

Exports the model four ways with `anyecg_edge.quantization.export.export_model` (ONNX fp32,
ONNX int8 QDQ, LiteRT fp32, LiteRT full int8; calibration and parity on real CinC 2021
windows), loads each through the device runtime (`anyecg_edge.runtime.load_model`,
``threads=1``) and times ``predict_logits`` on one window per call (int8 I/O conversion
included) with ``time.perf_counter_ns``, cycling through held-out windows. The torch fp32
model (``torch.set_num_threads(1)``) is the reference. Without ``--model`` a stand-in
student (quantization/standin.py) is trained for a few seconds first.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from anyecg_edge.datadir import data_dir

DEFAULT_DATA = data_dir()  # --data-dir / $ANYECG_DATA / beside the checkout
VARIANTS = {
    "onnx-fp32": ("onnx", False, "onnxruntime fp32"),
    "onnx-int8": ("onnx", True, "onnxruntime int8"),
    "tflite-fp32": ("tflite", False, "litert fp32"),
    "tflite-int8": ("tflite", True, "litert int8"),
}


def time_calls(fn, windows: np.ndarray, iterations: int, warmup: int) -> np.ndarray:
    """Milliseconds per call of ``fn(windows[i:i+1])`` (one window per call, cycling through
    ``windows``), after ``warmup`` untimed calls. Shared with `bench.py`."""
    n = len(windows)
    for i in range(warmup):
        fn(windows[i % n : i % n + 1])
    out = np.empty(iterations, dtype=np.float64)
    for i in range(iterations):
        w = windows[i % n : i % n + 1]
        t0 = time.perf_counter_ns()
        fn(w)
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def latency_stats(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
    }


def run_benchmark(
    model: Path | None,
    data_dir: Path,
    *,
    iterations: int,
    warmup: int,
    threads: int,
    work_dir: Path,
    arch: str = "student-s",
    variants: list[str] | None = None,
) -> dict[str, Any]:
    import torch
    from anyecg_edge.quantization.export import export_model
    from anyecg_edge.quantization.windows import record_windows, split_heldout
    from anyecg_edge.training.torch_model import TorchModel

    from anyecg_edge.runtime import ModelMetadata, load_model

    cinc = data_dir / "cinc2021"
    if not cinc.is_dir():
        raise SystemExit(f"no CinC 2021 records under {cinc} (use --data-dir)")
    ws = record_windows([cinc], ModelMetadata(labs=["x"]))
    if model is None:
        from anyecg_edge.quantization.standin import save_standin

        model = save_standin(work_dir / "standin" / "model.pt", ws.x, arch=arch)
    _, held = split_heldout(ws)
    windows = held.x[:, None, :]

    torch.set_num_threads(threads)
    ref = TorchModel.load(model if model.is_file() else model / "model.pt")
    rows: list[dict[str, Any]] = [
        {
            "name": "torch fp32",
            "runtime": "torch",
            "precision": "fp32",
            "bytes": None,
            **latency_stats(time_calls(ref.predict_logits, windows, iterations, warmup)),
        }
    ]
    for key in variants or list(VARIANTS):
        fmt, int8, name = VARIANTS[key]
        out = work_dir / f"model_{'int8' if int8 else 'fp32'}.{fmt}"
        res = export_model(
            model, fmt=fmt, out=out, int8=int8, calib=[str(cinc)], allow_degraded=True
        )
        m = load_model(res.path, threads=threads)
        r = res.report
        rows.append(
            {
                "name": name,
                "runtime": m.backend,
                "precision": r["precision"],
                "bytes": r["model_bytes"],
                "parity_passed": r["passed"],
                "agreement": r["calls"]["agreement"],
                "mean_auroc_delta": r["auroc"]["mean_delta"],
                "max_abs_logit_error": r["logits"]["max_abs_error"],
                **latency_stats(time_calls(m.predict_logits, windows, iterations, warmup)),
            }
        )
    torch_p50 = rows[0]["p50_ms"]
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        r["speedup_vs_torch_p50"] = round(torch_p50 / r["p50_ms"], 2)
        fp32 = by_name.get(r["name"].replace("int8", "fp32"))
        if r["precision"] == "int8" and fp32 is not None:
            r["speedup_vs_fp32_p50"] = round(fp32["p50_ms"] / r["p50_ms"], 2)
    return {
        "model": str(model),
        "arch": ref.metadata.arch,
        "threads": threads,
        "iterations": iterations,
        "windows": len(windows),
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "results": rows,
    }


def _print(res: dict[str, Any]) -> None:
    print(
        f"{res['arch']} ({res['model']}), {res['threads']} thread(s), "
        f"{res['iterations']} calls of one 10 s window each, {res['windows']} held-out windows"
    )
    head = f"{'backend':<18}{'KiB':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'x torch':>9}{'x fp32':>8}{'agree':>9}{'dAUROC':>9}"
    print(head)
    print("-" * len(head))
    for r in res["results"]:
        kib = f"{r['bytes'] / 1024:.0f}" if r["bytes"] else "-"
        vs_fp32 = f"{r['speedup_vs_fp32_p50']:.2f}" if "speedup_vs_fp32_p50" in r else "-"
        agree = f"{r['agreement']:.4f}" if "agreement" in r else "-"
        dauc = f"{r['mean_auroc_delta']:.5f}" if r.get("mean_auroc_delta") is not None else "-"
        print(
            f"{r['name']:<18}{kib:>8}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}{r['p99_ms']:>9.3f}"
            f"{r['speedup_vs_torch_p50']:>9.2f}{vs_fp32:>8}{agree:>9}{dauc:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_runtime", description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="torch checkpoint or folder")
    ap.add_argument("--arch", default="student-s", help="stand-in arch without --model")
    ap.add_argument("--iterations", type=int, default=300, help="timed calls per backend")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls first")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with cinc2021/")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the exports here")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(VARIANTS),
        help="time only these exports (repeatable; default all four)",
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--iterations and --threads must be >= 1, --warmup >= 0")
    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        work = args.out_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        res = run_benchmark(
            args.model,
            args.data_dir,
            iterations=args.iterations,
            warmup=args.warmup,
            threads=args.threads,
            work_dir=work,
            arch=args.arch,
            variants=args.only,
        )
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
