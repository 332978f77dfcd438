"""Preprocessing latency per 10 s window: the fast path vs the authors' literal chain.

Run: ``python -m anyecg_edge.benchmarks.bench_preprocess [--iterations N] [--json]``

Uses real windows: lead I of the CinC 2021 records (500 Hz, 10 s) and 10 s windows of
MIT-BIH 100 (360 Hz, so the fast path also resamples). Every call is timed on its own
(``time.perf_counter_ns``); p50/p95 are over all calls. The batch rows time one call on
all CinC windows at once (how the corpus builder runs) and report it per window. The
numpy/scipy routines used here are single-threaded, so this is single-thread latency.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from anyecg_edge.datadir import data_dir
from anyecg_edge.signal import (
    assess_quality,
    assess_quality_batch,
    authors_preprocess,
    preprocess,
)

# Reported by the public ECGFounder edge port (one x86 thread), for comparison.
EDGE_PORT_PREPROCESS_MS = 6.9
TARGET_MS = 1.0

DEFAULT_DATA = data_dir()  # --data-dir / $ANYECG_DATA / beside the checkout


def load_windows(data_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(CinC lead-I windows at 500 Hz, MIT-BIH 100 MLII 10 s windows at 360 Hz), in mV."""
    try:
        import wfdb  # optional dependency, only to read the benchmark data
    except ImportError:
        raise SystemExit(
            'bench_preprocess needs "wfdb" to read its data: pip install "anyecg-edge[edge]"'
        ) from None
    cinc = sorted((data_dir / "cinc2021").glob("*.hea"))
    if not cinc:
        raise SystemExit(f"no CinC 2021 records under {data_dir / 'cinc2021'} (use --data-dir)")
    w500 = []
    for hea in cinc:
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        w500.append(rec.p_signal[:, rec.sig_name.index("I")].copy())
    w360 = []
    mit = data_dir / "mitdb" / "100"
    if Path(str(mit) + ".hea").is_file():
        x = wfdb.rdrecord(str(mit), channels=[0], sampto=360 * 600).p_signal[:, 0]
        w360 = [x[i : i + 3600].copy() for i in range(0, x.size - 3599, 3600)]
    return w500, w360


def _time_calls(fn, windows, fs, iterations: int) -> np.ndarray:
    for w in windows[:5]:  # warm-up: coefficient caches, page faults
        fn(w, fs)
    out = []
    for _ in range(iterations):
        for w in windows:
            t0 = time.perf_counter_ns()
            fn(w, fs)
            out.append(time.perf_counter_ns() - t0)
    return np.asarray(out, dtype=np.float64) / 1e6


def _time_batches(fn, batch: np.ndarray, fs, iterations: int) -> np.ndarray:
    """ms per window of ``fn(batch, fs)`` on all windows at once (the corpus builder's way)."""
    fn(batch[:5], fs)  # warm-up
    out = []
    for _ in range(max(iterations, 3)):
        t0 = time.perf_counter_ns()
        fn(batch, fs)
        out.append((time.perf_counter_ns() - t0) / batch.shape[0])
    return np.asarray(out, dtype=np.float64) / 1e6


def _stats(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "calls": int(ms.size),
    }


def run_benchmark(data_dir: Path = DEFAULT_DATA, iterations: int = 20) -> dict:
    """Time fast vs authors' preprocessing (and the quality gate) on real windows."""
    w500, w360 = load_windows(data_dir)
    max_err = max(
        float(np.max(np.abs(preprocess(w, 500) - authors_preprocess(w, 500)))) for w in w500
    )
    res = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "windows_500hz": len(w500),
        "windows_360hz": len(w360),
        "max_abs_diff_z": max_err,
        "fast": _stats(_time_calls(preprocess, w500, 500, iterations)),
        "authors": _stats(_time_calls(authors_preprocess, w500, 500, iterations)),
        "quality_gate": _stats(_time_calls(assess_quality, w500, 500, iterations)),
        "fast_batch": _stats(_time_batches(preprocess, np.stack(w500), 500, iterations)),
        "quality_gate_batch": _stats(
            _time_batches(assess_quality_batch, np.stack(w500), 500, iterations)
        ),
    }
    if w360:
        res["fast_from_360hz"] = _stats(_time_calls(preprocess, w360, 360, iterations))
    res["speedup_p50"] = res["authors"]["p50_ms"] / res["fast"]["p50_ms"]
    res["edge_port_ms"] = EDGE_PORT_PREPROCESS_MS
    res["target_ms"] = TARGET_MS
    return res


def _print(res: dict) -> None:
    print(
        f"preprocessing latency per 10 s window, one thread ({res['machine']}, "
        f"Python {res['python']}); {res['windows_500hz']} CinC lead-I windows"
        + (f", {res['windows_360hz']} MIT-BIH windows" if res["windows_360hz"] else "")
    )
    rows = [
        ("preprocess (fast, 500 Hz)", res["fast"]),
        ("authors_preprocess (scipy chain)", res["authors"]),
    ]
    if "fast_from_360hz" in res:
        rows.append(("preprocess (fast, 360 Hz + resample)", res["fast_from_360hz"]))
    rows.append(("assess_quality (gate, 500 Hz)", res["quality_gate"]))
    for name, s in rows:
        print(
            f"  {name:<38} p50 {s['p50_ms']:7.3f} ms   p95 {s['p95_ms']:7.3f} ms   ({s['calls']} calls)"
        )
    n = res["windows_500hz"]
    for name, s in (
        ("preprocess, 2-D batch", res["fast_batch"]),
        ("assess_quality_batch", res["quality_gate_batch"]),
    ):
        print(
            f"  {name:<38} p50 {s['p50_ms']:7.3f} ms   p95 {s['p95_ms']:7.3f} ms   "
            f"per window ({s['calls']} calls of {n} windows)"
        )
    print(f"  speed-up, authors/fast (p50)           {res['speedup_p50']:.2f}x")
    print(f"  max |fast - authors| over the windows   {res['max_abs_diff_z']:.2e} z (limit 1e-3)")
    print(
        f"  reference: public ECGFounder edge port  {res['edge_port_ms']:.1f} ms; "
        f"target <= {res['target_ms']:.1f} ms -> "
        + ("met" if res["fast"]["p95_ms"] <= res["target_ms"] else "NOT met")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_preprocess", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--iterations", type=int, default=20, help="passes over all windows (default 20)"
    )
    ap.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA, help="folder with cinc2021/ and mitdb/"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    res = run_benchmark(args.data_dir, args.iterations)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        _print(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
