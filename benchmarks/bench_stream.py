"""Streaming soak: hours of signal through the streaming engine, memory sampled throughout.

    python -m anyecg_edge.benchmarks.bench_stream [--hours 24] [--hop 10] [--model M.onnx]
    python -m anyecg_edge.benchmarks.bench_stream --sim polar --faults "drop=0.02,disconnect=45" \\
        --minutes 10 --speed 20

Soak (default): MIT-BIH record 100 (30 min, 360 Hz) is replayed end to end, looped, for
``--hours`` of signal, as fast as the engine takes it (lossless, 100 ms blocks), through
the full per-window path (ring buffer -> quality gate -> preprocess/resample to 500 Hz ->
model -> smoothing). Reported: windows produced vs expected ((hours*3600 - 10) / hop + 1),
wall time and x-real-time, per-window latency (p50/p99: block arrival -> result, which at
full speed includes waiting behind the previous windows) and compute time, and the
process RSS sampled every 0.25 s: after warm-up, peak, at the end, and the growth.

``--sim PROFILE``: the same, but through a simulated wearable over bumble's in-process
GATT link with fault injection (paced at ``--speed``), reporting link events too.

Model: ``--model`` (an exported .onnx/.tflite with its manifest); default a tiny random
ONNX conv net (needs the onnx package) so the numbers show the engine's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.benchmarks.bench_machine import rss_mb

from anyecg_edge.datadir import data_dir

DATA = data_dir() / "mitdb" / "100"  # --data-dir / $ANYECG_DATA / beside the checkout


class _RssSampler(threading.Thread):
    def __init__(self, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - t0, rss_mb()))
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.samples.append((self.samples[-1][0] if self.samples else 0.0, rss_mb()))


def write_tiny_onnx(
    path: Path,
    labs: list[str] | None = None,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
) -> Path:
    """A small conv -> relu -> mean -> linear ONNX model over (n, 1, 5000), plus the
    manifest the device runtime needs next to it: a stand-in that keeps the stream's own
    costs visible (also the streaming tests' model)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from anyecg_edge.runtime import ModelMetadata

    labs = list(labs) if labs is not None else [f"lab_{i}" for i in range(8)]
    rng = np.random.default_rng(seed)
    k = len(labs)
    inits = {
        "W": rng.normal(0, 0.2, (4, 1, 64)).astype(np.float32),
        "B": np.zeros(4, np.float32),
        "G": rng.normal(0, 1.0, (4, k)).astype(np.float32),
        "c": rng.normal(0, 0.1, (k,)).astype(np.float32),
        "axes": np.array([2], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["ecg", "W", "B"], ["c1"], kernel_shape=[64], strides=[16]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ReduceMean", ["r1", "axes"], ["m"], keepdims=0),
        helper.make_node("Gemm", ["m", "G", "c"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("ecg", TensorProto.FLOAT, ["n", 1, 5000])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", k])],
        initializer=[numpy_helper.from_array(v, name) for name, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    meta = ModelMetadata(labs=labs, thresholds=dict(thresholds or {}))
    Path(str(path) + ".manifest.json").write_text(json.dumps(meta.to_dict()))
    return path


def _memory(sampler: _RssSampler, warm_fraction: float = 0.05) -> dict[str, float]:
    t = np.array([s[0] for s in sampler.samples])
    rss = np.array([s[1] for s in sampler.samples])
    warm = rss[t >= warm_fraction * t[-1]][0] if t[-1] > 0 else rss[0]
    return {
        "rss_after_warmup_mb": round(float(warm), 1),
        "rss_peak_mb": round(float(rss.max()), 1),
        "rss_end_mb": round(float(rss[-1]), 1),
        "rss_growth_after_warmup_mb": round(float(rss[-1] - warm), 2),
        "rss_samples": int(rss.size),
    }


def soak(model_path: Path, hours: float, hop_s: float, threads: int) -> dict[str, Any]:
    from anyecg_edge.io import read_record
    from anyecg_edge.runtime import load_model
    from anyecg_edge.stream.engine import StreamEngine
    from anyecg_edge.stream.sources import run_file

    model = load_model(model_path, threads=threads)
    record = read_record(DATA)
    n_events = 0

    def sink(item: dict) -> None:
        nonlocal n_events
        n_events += "event" in item

    sampler = _RssSampler()
    sampler.start()
    engine = StreamEngine(model, hop_s=hop_s, lossless=True, sink=sink).start()
    t0 = time.perf_counter()
    run_file(record, engine, speed=0, duration_s=hours * 3600, loop=True)
    summary = engine.close()
    wall = time.perf_counter() - t0
    sampler.stop()
    expected = int((hours * 3600 - 10) // hop_s) + 1
    return {
        "mode": "soak",
        "record": str(DATA),
        "signal_hours": hours,
        "hop_s": hop_s,
        "windows": summary["windows"],
        "windows_expected": expected,
        "windows_ok": summary["windows"] == expected,
        "accepted": summary["accepted"],
        "rejected": summary["rejected"],
        "events": n_events,
        "wall_s": round(wall, 1),
        "x_real_time": round(hours * 3600 / wall, 1),
        "latency_ms": summary["latency_ms"],
        "compute_ms": summary["compute_ms"],
        **_memory(sampler),
    }


def sim(
    model_path: Path,
    profile: str,
    faults: str,
    minutes: float,
    speed: float,
    hop_s: float,
    threads: int,
) -> dict[str, Any]:
    from anyecg_edge.firmware_bridge.faults import FaultSpec

    from anyecg_edge.runtime import load_model
    from anyecg_edge.stream.engine import StreamEngine
    from anyecg_edge.stream.sources import SourceSpec, run_ble

    model = load_model(model_path, threads=threads)
    sampler = _RssSampler()
    sampler.start()
    engine = StreamEngine(model, hop_s=hop_s).start()
    t0 = time.perf_counter()
    info = asyncio.run(
        run_ble(
            SourceSpec.parse(f"sim-{profile}:{DATA}"), engine, speed=speed,
            duration_s=minutes * 60, faults=FaultSpec.parse(faults),
        )
    )  # fmt: skip
    summary = engine.close()
    wall = time.perf_counter() - t0
    sampler.stop()
    return {
        "mode": "sim",
        "profile": profile,
        "faults": faults,
        "signal_minutes": minutes,
        "speed": speed,
        "hop_s": hop_s,
        "wall_s": round(wall, 1),
        **{k: summary[k] for k in ("windows", "accepted", "rejected", "dropped", "skipped_gap")},
        "events": summary["events"],
        "latency_ms": summary["latency_ms"],
        "link": {k: info[k] for k in ("decoder", "sequencer", "fs_estimated_hz", "client")},
        **_memory(sampler),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hours", type=float, default=24.0, help="soak: hours of signal")
    ap.add_argument("--hop", type=float, default=10.0, help="window hop in s")
    ap.add_argument("--model", type=Path, default=None, help="exported model (default: tiny ONNX)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sim", choices=["polar", "movesense", "anyecg"], default=None)
    ap.add_argument("--faults", default="drop=0.02,disconnect=45")
    ap.add_argument("--minutes", type=float, default=10.0, help="sim: minutes of signal")
    ap.add_argument("--speed", type=float, default=20.0, help="sim: x real time")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if not DATA.with_suffix(".hea").exists():
        raise SystemExit(f"bench_stream: {DATA}.hea not found (the shared recordings folder)")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model or write_tiny_onnx(Path(tmp) / "tiny.onnx")
        if args.sim:
            result = sim(
                model_path, args.sim, args.faults, args.minutes, args.speed, args.hop, args.threads
            )
        else:
            result = soak(model_path, args.hours, args.hop, args.threads)
    result["model"] = str(args.model or "tiny random ONNX conv net (engine cost only)")
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
