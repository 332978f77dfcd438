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
anyecg_edge.benchmarks.bench --worker SPEC``), so its peak RSS is that model's alone and
one runtime's thread pools cannot disturb another's. Timing reuses `bench_runtime`'s
``time_calls`` (one window per call, cycling through real preprocessed windows).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.benchmarks.bench_runtime import latency_stats, time_calls

from anyecg_edge.datadir import data_dir

log = logging.getLogger(__name__)

FORMAT = "anyecg-edge-bench/1"
DEFAULT_DATA = data_dir()  # --data-dir / $ANYECG_DATA / beside the checkout
DEFAULT_MODELS = ("ecgfounder", "teacher", "student-s")
VARIANTS = (
    "torch-fp32",
    "onnxruntime-fp32",
    "onnxruntime-int8",
    "litert-fp32",
    "litert-int8",
    "tflite-runtime-int8",
)
# Architectures too large to be worth a LiteRT/int8 export by default (the baseline).
FOUNDATION_ARCHES = ("ecgfounder",)
FOUNDATION_VARIANTS = ("torch-fp32", "onnxruntime-fp32")
TEACHER_NAMES = ("teacher", "ecgfounder-lora")
_VERSIONS = (
    "anyecg-edge",
    "numpy",
    "scipy",
    "torch",
    "peft",
    "onnxruntime",
    "ai-edge-litert",
    "tflite-runtime",
    "onnx",
    "litert-torch",
    "ai-edge-quantizer",
)
_WINDOW_S = 10.0
_FS = 500.0


class BenchError(ValueError):
    """A bench option or model spec cannot be used (one-line message naming it)."""


# --------------------------------------------------------------------------- options


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    threads: int = 1
    iterations: int | None = None  # None: auto (>= min_iterations, ~budget_s per row)
    warmup: int | None = None
    batch: int = 32
    quick: bool = False
    runtimes: list[str] | None = None
    data_dir: Path | None = None
    work_dir: Path | None = None
    accuracy: dict[str, Path] = field(default_factory=dict)
    # A corpus: every row is evaluated on its split with the row's own runtime (the
    # accuracy columns are then the file's, not its checkpoint's evaluate --json).
    corpus: Path | None = None
    truth: Path | None = None  # the cohort's truth.json: planted / unplanted means
    eval_split: str = "test"
    stream_s: float | None = None  # None: 60 s (quick: 12 s); 0: no stream session
    stream_jsonl: Path | None = None
    stream_speed: float = 20.0
    budget_s: float = 6.0
    min_iterations: int = 300
    max_iterations: int = 3000

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise BenchError(f"--threads must be >= 1, got {self.threads}")
        if self.iterations is not None and self.iterations < 1:
            raise BenchError(f"--iterations must be >= 1, got {self.iterations}")
        if self.warmup is not None and self.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {self.warmup}")
        if self.batch < 1:
            raise BenchError(f"--batch must be >= 1, got {self.batch}")
        if self.stream_s is not None and self.stream_s < 0:
            raise BenchError(f"--stream-s must be >= 0, got {self.stream_s}")
        if not self.stream_speed > 0:
            raise BenchError(f"--stream-speed must be > 0, got {self.stream_speed}")
        for key, path in self.accuracy.items():
            if not Path(path).is_file():
                raise BenchError(f"--accuracy {key}={path}: evaluation JSON not found")
        if self.corpus is not None:
            if not (Path(self.corpus) / "index.parquet").is_file():
                raise BenchError(
                    f"--corpus {self.corpus}: no index.parquet (expected a corpus from "
                    "`anyecg-edge data build`)"
                )
            if self.accuracy:
                raise BenchError(
                    "--accuracy and --corpus: give one (with --corpus every row is evaluated "
                    "itself; --accuracy copies an evaluation file's numbers)"
                )
        if self.truth is not None:
            if self.corpus is None:
                raise BenchError("--truth needs --corpus (it labels the corpus's planted labs)")
            if not Path(self.truth).is_file():
                raise BenchError(f"--truth {self.truth}: file not found")
        if self.eval_split not in ("train", "val", "test"):
            raise BenchError(f"eval split must be train, val or test, got {self.eval_split!r}")
        if self.stream_jsonl is not None and not Path(self.stream_jsonl).is_file():
            raise BenchError(f"--stream-jsonl {self.stream_jsonl}: file not found")

    @property
    def warmup_calls(self) -> int:
        return self.warmup if self.warmup is not None else (3 if self.quick else 10)

    @property
    def stream_seconds(self) -> float:
        if self.stream_s is not None:
            return self.stream_s
        return 20.0 if self.quick else 60.0


# --------------------------------------------------------------------------- model specs


@dataclass
class ModelSpec:
    key: str  # the row's "model" name (stable across runs: --compare matches on it)
    kind: str  # arch | teacher | checkpoint | lora-run | file
    target: str  # architecture name or path
    variants: list[str] | None = None  # from "@..."; None = the kind's defaults


def split_tokens(items: Sequence[str]) -> list[str]:
    """Comma-separated and/or repeated option values -> tokens."""
    return [t.strip() for item in items for t in str(item).split(",") if t.strip()]


def match_variants(tokens: Sequence[str], candidates: Sequence[str], what: str) -> list[str]:
    """Variants named by ``tokens`` (whole names or their parts: ``int8``, ``litert``)."""
    chosen: list[str] = []
    for tok in tokens:
        t = tok.lower()
        hits = [v for v in VARIANTS if v == t or t in v.split("-") or v.startswith(t + "-")]
        if t == "tflite":  # the file type names LiteRT too
            hits = [v for v in VARIANTS if v.startswith("litert")]
        if not hits:
            raise BenchError(
                f"{what}: unknown runtime/variant {tok!r}; expected parts of {', '.join(VARIANTS)}"
            )
        chosen += [v for v in hits if v in candidates and v not in chosen]
    return [v for v in candidates if v in chosen]


def parse_model_spec(text: str) -> ModelSpec:
    """``[NAME=]TARGET[@VARIANTS]`` -> ModelSpec (see the module docstring)."""
    raw = text.strip()
    variants = None
    if "@" in raw:
        raw, _, var = raw.rpartition("@")
        variants = [v for v in var.split("+") if v]
        if not variants:
            raise BenchError(
                f"--models {text!r}: nothing after '@' (e.g. @torch or @onnxruntime-int8)"
            )
    name, sep, target = raw.partition("=")
    if not sep:
        name, target = "", raw
    name, target = name.strip(), target.strip()
    if not target:
        raise BenchError(f"--models {text!r}: empty model")
    if target.lower() in TEACHER_NAMES:
        return ModelSpec(name or "ecgfounder+lora", "teacher", "ecgfounder", variants)
    path = Path(target)
    if path.exists():
        suffix = path.suffix.lower()
        if suffix in (".onnx", ".tflite"):
            return ModelSpec(name or path.stem, "file", str(path), variants)
        if path.is_dir() and (path / "train_config.json").is_file() and (path / "adapter").is_dir():
            return ModelSpec(name or path.name, "lora-run", str(path), variants)
        if suffix in (".pt", ".pth") or (path.is_dir() and (path / "model.pt").is_file()):
            return ModelSpec(
                name or (path.name if path.is_dir() else path.stem),
                "checkpoint",
                str(path),
                variants,
            )
        raise BenchError(
            f"--models {target}: expected a .onnx/.tflite export, a .pt/.pth checkpoint, a folder "
            "with model.pt, or a LoRA run folder (train_config.json + adapter/)"
        )
    if "/" in target or target.endswith((".onnx", ".tflite", ".pt", ".pth")):
        raise BenchError(f"--models {target}: file not found")
    try:
        from anyecg_edge.training.models import list_models
    except ImportError:
        raise BenchError(
            f"--models {target}: registry architectures need torch "
            '(pip install "anyecg-edge[export]"); on a device pass exported .onnx/.tflite files'
        ) from None
    if target not in list_models():
        raise BenchError(
            f"--models {target}: not a registry model ({', '.join(list_models())}), 'teacher', "
            "or an existing file/folder"
        )
    return ModelSpec(name or target, "arch", target, variants)


def _is_foundation(arch: str | None) -> bool:
    return bool(arch) and any(str(arch).startswith(a) for a in FOUNDATION_ARCHES)


def role_of(kind: str, arch: str | None) -> str:
    if kind in ("teacher", "lora-run"):
        return "teacher"
    if _is_foundation(arch):
        return "foundation"
    if arch and str(arch).startswith("student"):
        return "student"
    return "other"


# --------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    info = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of everything that runs a model."""
    mem = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem = round(int(line.split()[1]) / 2**20, 1)
    versions: dict[str, str | None] = {}
    for name in _VERSIONS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count()
    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_available": available,
        "memory_gb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "versions": versions,
    }


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    statm = _read("/proc/self/statm").split()
    if len(statm) > 1:
        return int(statm[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak RSS of this process image. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork+exec, so a worker would report its parent's peak."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB else


# --------------------------------------------------------------------------- windows


def synthetic_ecg_mv(
    seconds: float, fs: float, *, hr_bpm: float = 72.0, seed: int = 0
) -> np.ndarray:
    """A plain synthetic sinus rhythm in mV (Gaussian P/QRS/T waves, baseline wander,
    noise): timing input where no recordings are at hand (latency is content-blind)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    x = 0.15 * np.sin(2 * np.pi * 0.25 * t) + 0.02 * rng.standard_normal(n)
    rr = 60.0 / hr_bpm
    beat = rng.uniform(0, rr)
    waves = (
        (-0.20, 0.025, 0.12),
        (-0.03, 0.010, -0.10),
        (0.0, 0.012, 1.1),
        (0.03, 0.010, -0.25),
        (0.25, 0.045, 0.30),
    )
    while beat < seconds:
        for dt, width, amp in waves:
            c = beat + dt
            lo, hi = max(0, int((c - 5 * width) * fs)), min(n, int((c + 5 * width) * fs) + 1)
            x[lo:hi] += amp * np.exp(-0.5 * ((t[lo:hi] - c) / width) ** 2)
        beat += rr * (1 + 0.03 * rng.standard_normal())
    return x.astype(np.float32)


def _record_paths(data_dir: Path) -> list[Path]:
    for folder in (data_dir / "cinc2021", data_dir):
        if folder.is_dir():
            found = sorted(p.with_suffix("") for p in folder.glob("*.hea"))
            if found:
                return found
    return []


def bench_windows(data_dir: Path | None, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(raw mV windows at 500 Hz, their preprocessed model inputs, where they came from):
    quality-passed 10 s windows of real records where available, else synthetic ECG."""
    from anyecg_edge.signal import assess_quality, extract_windows, preprocess

    raw: list[np.ndarray] = []
    used: list[str] = []
    records = _record_paths(Path(data_dir)) if data_dir is not None else []
    if records:
        from anyecg_edge.io import RecordError, list_leads, read_record

        for rec in records:
            try:
                leads = [lead for lead in list_leads(rec) if lead in ("I", "II", "V5", "MLII")]
                for lead in leads or list_leads(rec)[:1]:
                    r = read_record(rec, lead=lead)
                    if r.fs != _FS:
                        continue
                    for w in extract_windows(r.signal_mv, r.fs, _WINDOW_S)[0]:
                        if assess_quality(w, r.fs).ok:
                            raw.append(np.array(w, dtype=np.float32))
            except (RecordError, ValueError) as exc:  # a bad record is skipped, not fatal
                log.info("%s: %s; skipped", rec, exc)
                continue
            used.append(rec.name)
            if len(raw) >= n:
                break
    if len(raw) >= 8:
        source = f"{len(raw[:n])} quality-passed 10 s windows of {len(used)} records in {records[0].parent}"
    else:
        sig = synthetic_ecg_mv(n * _WINDOW_S, _FS)
        raw = list(extract_windows(sig, _FS, _WINDOW_S)[0])
        source = f"{n} synthetic 10 s windows (no records found under {data_dir})"
    x_raw = np.stack(raw[:n]).astype(np.float32)
    return x_raw, preprocess(x_raw, _FS).astype(np.float32), source


def preprocessing_times(raw_mv: np.ndarray, iterations: int) -> dict[str, Any]:
    """ms per 10 s window of what runs before the model on the device: the quality gate and
    the preprocessing chain, at 500 Hz and from a Polar H10's 130 Hz (resampling)."""
    from anyecg_edge.signal import assess_quality, preprocess, resample

    out: dict[str, Any] = {}
    at130 = np.stack([resample(w, _FS, 130.0) for w in raw_mv[: min(len(raw_mv), 16)]])
    cases = {
        "gate_500hz": (raw_mv, lambda w: assess_quality(w[0], _FS)),
        "preprocess_500hz": (raw_mv, lambda w: preprocess(w[0], _FS)),
        "gate+preprocess_500hz": (
            raw_mv,
            lambda w: (assess_quality(w[0], _FS), preprocess(w[0], _FS)),
        ),
        "gate+preprocess_130hz": (
            at130,
            lambda w: (assess_quality(w[0], 130.0), preprocess(w[0], 130.0)),
        ),
    }
    for name, (x, fn) in cases.items():
        out[name] = latency_stats(time_calls(fn, x, iterations, 3))
    return out


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    model: str
    runtime: str
    precision: str
    role: str
    load: dict[str, Any]  # what the worker loads
    info: dict[str, Any] = field(default_factory=dict)  # size, params, parity, source ...
    error: str | None = None

    @property
    def variant(self) -> str:
        return f"{self.runtime}-{self.precision}"


def _variant_choice(
    spec: ModelSpec,
    defaults: Sequence[str],
    supported: Sequence[str],
    global_filter: list[str] | None,
) -> list[str]:
    """The variants to measure for one model: its defaults, or what ``@...`` asks for among
    those it supports; then the global ``--runtimes`` filter."""
    chosen = [v for v in defaults if v in supported]
    if spec.variants is not None:
        chosen = match_variants(spec.variants, supported, f"--models {spec.key}")
        if not chosen:
            raise BenchError(
                f"--models {spec.key}@{'+'.join(spec.variants)}: not available for this model "
                f"(available here: {', '.join(supported)})"
            )
    if global_filter:
        chosen = match_variants(global_filter, chosen, "--runtimes")
    return chosen


def _tflite_runtime_available() -> bool:
    from anyecg_edge.runtime import available_runtimes

    return "tflite-runtime" in available_runtimes()


def _catalog_labs() -> list[str]:
    from anyecg_edge.labs import load_catalog

    return list(load_catalog().keys)


def _count(module: Any, window_samples: int) -> dict[str, Any]:
    from anyecg_edge.training.models import count_macs, count_params

    return {"params": count_params(module), "macs": count_macs(module, (1, 1, window_samples))}


def _parity_info(report: dict[str, Any]) -> dict[str, Any]:
    """Parity columns from a full parity report or from a manifest's flat parity summary."""
    calls, auroc, logits = (report.get(k) or {} for k in ("calls", "auroc", "logits"))
    return {
        "parity_passed": report.get("passed"),
        "parity_agreement": calls.get("agreement", report.get("agreement")),
        "parity_mean_auroc_delta": auroc.get("mean_delta", report.get("mean_auroc_delta")),
        "parity_max_abs_logit_error": logits.get(
            "max_abs_error", report.get("max_abs_logit_error")
        ),
    }


class _Quiet:
    """Parity warnings of random-init exports are expected; the rows carry the numbers."""

    def __enter__(self) -> None:
        self._loggers = [logging.getLogger(n) for n in ("anyecg_edge.quantization", "onnxruntime")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for lg, level in zip(self._loggers, self._levels, strict=True):
            lg.setLevel(level)


def prepare_candidates(
    specs: list[ModelSpec],
    opts: BenchOptions,
    work: Path,
    windows_npy: Path,
    say: Callable[[str], None],
) -> list[Candidate]:
    """Build checkpoints and exports as needed; one Candidate per row to measure."""
    out: list[Candidate] = []
    tflite_rt = None
    for spec in specs:
        if spec.kind == "file":
            out += _file_candidates(spec, opts)
            continue
        if spec.kind in ("teacher", "lora-run"):
            if not _variant_choice(spec, ("torch-fp32",), ("torch-fp32",), opts.runtimes):
                continue
            say(f"{spec.key}: building the LoRA teacher")
            out.append(_teacher_candidate(spec, work))
            continue
        # arch or checkpoint
        ckpt, arch, info = _checkpoint(spec, work, say)
        if tflite_rt is None:
            tflite_rt = _tflite_runtime_available()
        supported = [v for v in VARIANTS if tflite_rt or not v.startswith("tflite-runtime")]
        defaults = FOUNDATION_VARIANTS if _is_foundation(arch) else VARIANTS
        variants = _variant_choice(spec, defaults, supported, opts.runtimes)
        role = role_of(spec.kind, arch)
        exported: dict[str, tuple[Path | None, dict[str, Any], str | None]] = {}
        for variant in variants:
            runtime, precision = variant.rsplit("-", 1)
            if variant == "torch-fp32":
                out.append(
                    Candidate(
                        spec.key, "torch", "fp32", role,
                        {"kind": "torch-checkpoint", "path": str(ckpt)},
                        {**info, "file": str(ckpt), "size_bytes": ckpt.stat().st_size},
                    )
                )  # fmt: skip
                continue
            fmt = "onnx" if runtime == "onnxruntime" else "tflite"
            key = f"{fmt}-{precision}"
            if key not in exported:
                exported[key] = _export(
                    spec, ckpt, fmt, precision == "int8", work, windows_npy, say
                )
            path, extra, err = exported[key]
            load = {"kind": "runtime", "path": str(path), "runtime": runtime}
            size = path.stat().st_size if path is not None else None
            cand = Candidate(
                spec.key,
                runtime,
                precision,
                role,
                load,
                {**info, **extra, "file": str(path), "size_bytes": size},
            )
            cand.error = err
            out.append(cand)
    return out


def _checkpoint(
    spec: ModelSpec, work: Path, say: Callable[[str], None]
) -> tuple[Path, str, dict[str, Any]]:
    import torch
    from anyecg_edge.quantization.export import resolve_checkpoint
    from anyecg_edge.training.models import create_model
    from anyecg_edge.training.torch_model import load_model_checkpoint, save_model_checkpoint

    from anyecg_edge.runtime import ModelMetadata

    if spec.kind == "arch":
        labs = _catalog_labs()
        say(f"{spec.key}: random-init {spec.target} ({len(labs)} labs)")
        torch.manual_seed(0)
        module = create_model(spec.target, n_classes=len(labs)).eval()
        ckpt = save_model_checkpoint(
            work / f"{_safe(spec.key)}.pt", module, arch=spec.target,
            model_kwargs={"n_classes": len(labs)},
            metadata=ModelMetadata(labs=labs, extra={"bench": "random init (latency does not depend on weights)"}),
        )  # fmt: skip
        return (
            ckpt,
            spec.target,
            {"arch": spec.target, "weights": "random-init", **_count(module, 5000)},
        )
    ckpt = resolve_checkpoint(spec.target)
    module, meta = load_model_checkpoint(ckpt)
    return (
        ckpt,
        meta.arch or "?",
        {"arch": meta.arch, "weights": str(ckpt), **_count(module, meta.window_samples)},
    )


def _export(
    spec: ModelSpec,
    ckpt: Path,
    fmt: str,
    int8: bool,
    work: Path,
    windows_npy: Path,
    say: Callable[[str], None],
) -> tuple[Path | None, dict[str, Any], str | None]:
    from anyecg_edge.quantization.export import export_model

    prec = "int8" if int8 else "fp32"
    out = work / f"{_safe(spec.key)}_{prec}.{fmt}"
    say(f"{spec.key}: exporting {fmt} {prec}")
    t0 = time.perf_counter()
    try:
        with _Quiet():
            res = export_model(
                ckpt, fmt=fmt, out=out, int8=int8, calib=[str(windows_npy)],
                calib_size=512, heldout_size=64, allow_degraded=True,
            )  # fmt: skip
    except Exception as exc:  # one failing export must not hide the other rows
        return None, {}, f"export failed: {type(exc).__name__}: {exc}"
    return (
        res.path,
        {**_parity_info(res.report), "export_s": round(time.perf_counter() - t0, 1)},
        None,
    )


def _teacher_candidate(spec: ModelSpec, work: Path) -> Candidate:
    import torch
    from anyecg_edge.training.lora import LoraSettings, apply_lora, parameter_counts
    from anyecg_edge.training.models import create_model

    if spec.kind == "lora-run":
        run = Path(spec.target)
        cfg = json.loads((run / "train_config.json").read_text())
        n_labs = len(cfg.get("labs") or [])
        arch = cfg.get("arch") or "?"
        files = [p for p in (run / "adapter").glob("*") if p.is_file()]
        base = run / (cfg.get("base") or "base.pth")
        if cfg.get("init"):
            base = Path(cfg["init"]["path"])
        size = sum(p.stat().st_size for p in [*files, base] if p.is_file())
        counts = {}
        with contextlib.suppress(Exception):  # counts are informative; the timing is the row
            from anyecg_edge.training.lora import load_lora_model

            m = load_lora_model(run)
            trainable = sum(
                p.numel()
                for n, p in m.named_parameters()
                if "lora_" in n or ".modules_to_save." in n
            )
            counts = {
                "params": sum(p.numel() for p in m.parameters()),
                "trainable_params": trainable,
            }
            with contextlib.suppress(Exception):
                counts["macs"] = _count(m.get_base_model(), 5000)["macs"]
        info = {
            "arch": f"{arch}+LoRA",
            "weights": str(run),
            "file": str(run),
            "size_bytes": size,
            "labs": n_labs,
            **counts,
        }
        return Candidate(
            spec.key, "torch", "fp32", "teacher", {"kind": "torch-lora-run", "path": str(run)}, info
        )
    n_labs = len(_catalog_labs())
    torch.manual_seed(0)
    base = create_model("ecgfounder", n_classes=n_labs).eval()
    counts = _count(base, 5000)
    model = apply_lora(base, LoraSettings()).eval()
    trainable, total = parameter_counts(model)
    path = work / f"{_safe(spec.key)}_state.pt"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    info = {
        "arch": "ecgfounder+LoRA r8 (1x1 convs, SE linears; head trained)",
        "weights": "random-init",
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "params": total,
        "trainable_params": trainable,
        "macs": counts["macs"],
    }
    return Candidate(
        spec.key, "torch", "fp32", "teacher",
        {"kind": "torch-lora", "n_classes": n_labs, "state": str(path)}, info,
    )  # fmt: skip


def _file_candidates(spec: ModelSpec, opts: BenchOptions) -> list[Candidate]:
    from anyecg_edge.runtime import manifest_path

    path = Path(spec.target)
    man_path = manifest_path(path)
    if not man_path.is_file():
        raise BenchError(
            f"--models {path}: manifest {man_path.name} not found next to it (made by `anyecg-edge export`)"
        )
    try:
        man = json.loads(man_path.read_text())
    except json.JSONDecodeError as exc:
        raise BenchError(f"{man_path}: not valid JSON ({exc.msg})") from None
    precision = str(man.get("precision") or "fp32")
    if path.suffix.lower() == ".onnx":
        candidates = [f"onnxruntime-{precision}"]
    else:
        candidates = [f"litert-{precision}"]
        if _tflite_runtime_available():
            candidates.append(f"tflite-runtime-{precision}")
    variants = candidates[:1]
    if spec.variants is not None:
        variants = match_variants(spec.variants, candidates, f"--models {spec.key}")
        if not variants:
            raise BenchError(
                f"--models {spec.key}: {'+'.join(spec.variants)} does not apply to {path.name} ({', '.join(candidates)})"
            )
    if opts.runtimes:
        variants = match_variants(opts.runtimes, variants, "--runtimes")
    arch = man.get("arch")
    info: dict[str, Any] = {
        "arch": arch,
        "weights": str((man.get("source") or {}).get("checkpoint") or path),
        "file": str(path),
        "size_bytes": path.stat().st_size,
        **_parity_info(man.get("parity") or {}),
    }
    with contextlib.suppress(Exception):  # params/MACs need torch; a device has none
        from anyecg_edge.training.models import create_model

        kwargs = (man.get("source") or {}).get("model_kwargs") or {"n_classes": len(man["labs"])}
        info.update(
            _count(create_model(arch, **kwargs).eval(), int(round(man["fs"] * man["window_s"])))
        )
    role = role_of("file", arch)
    return [
        Candidate(
            spec.key,
            v.rsplit("-", 1)[0],
            precision,
            role,
            {"kind": "runtime", "path": str(path), "runtime": v.rsplit("-", 1)[0]},
            dict(info),
        )
        for v in variants
    ]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------- worker


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
    cmd = [sys.executable, "-m", "anyecg_edge.benchmarks.bench", "--worker", str(spec_path)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "worker timed out after 1800 s"}
    if not out_path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        return {"error": f"worker exited {proc.returncode}: {tail[-1] if tail else 'no output'}"}
    return json.loads(out_path.read_text())


# --------------------------------------------------------------------------- accuracy


@dataclass
class EvalSet:
    """A corpus split every row is evaluated on (``--corpus``): the row selection, targets
    and visits exactly as `anyecg-edge evaluate` takes them (CorpusDataset +
    evaluate.window_visits), read once here; the workers read the windows themselves."""

    corpus: Path
    split: str
    labs: list[str]  # every lab of the corpus, catalog order (targets' columns)
    targets: np.ndarray  # (n, n_labs) int8: 1 abnormal, 0 normal, -1 unmeasured
    visits: np.ndarray  # (n,) visit id (CSN) per window
    window_samples: int
    rows_npz: Path  # shard paths, shard code and offset per window (for the workers)
    truth: dict[str, Any] | None = None
    truth_path: Path | None = None

    def describe(self) -> str:
        return (
            f"{self.corpus} {self.split} split ({len(self.visits)} windows, "
            f"{len(np.unique(self.visits))} visits)"
        )


def load_eval_set(corpus: Path, split: str, work: Path, truth: Path | None = None) -> EvalSet:
    """The ``split`` of ``corpus`` for per-row evaluation (needs the training install)."""
    try:
        from anyecg_edge.training.data.corpus import CorpusError
        from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
        from anyecg_edge.training.evaluate import EvaluationError, window_visits
    except ImportError as exc:
        raise BenchError(
            f'--corpus needs the training install (pip install "anyecg-edge[train]"): {exc}'
        ) from None
    corpus = Path(corpus)
    try:
        labs = corpus_lab_keys(corpus, measured_only=False)
        ds = CorpusDataset(corpus, split, labs=labs)
        # window_visits follows this selection only when told the split (as evaluate_model does).
        ds._eval_splits = {split}
        if len(ds) == 0:
            raise BenchError(f"--corpus {corpus}: the {split} split has no windows")
        visits = window_visits(ds)
    except (CorpusError, EvaluationError, OSError) as exc:
        raise BenchError(f"--corpus {corpus}: {exc}") from None
    rows_npz = Path(work) / f"eval_{split}_rows.npz"
    np.savez(
        rows_npz,
        shards=np.array([str(ds.root / "shards" / n) for n in ds.shard_names]),
        code=ds.shard_code,
        offset=ds.offset,
    )
    truth_doc = None
    if truth is not None:
        try:
            truth_doc = json.loads(Path(truth).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"--truth {truth}: not a readable truth.json ({exc})") from None
    return EvalSet(
        corpus, split, labs, ds.targets, visits, ds.window_samples, rows_npz, truth_doc,
        None if truth is None else Path(truth),
    )  # fmt: skip


def score_row(eval_set: EvalSet, found: dict[str, Any]) -> dict[str, Any]:
    """Accuracy columns of one row from the logits its worker wrote (`eval_logits`), scored by
    the per-lab metric code of `anyecg-edge evaluate` (evaluate_predictions)."""
    from anyecg_edge.training.evaluate import evaluate_predictions

    labs = list(found["eval_labs"])
    logits = np.load(found["eval_logits"])
    cols = [eval_set.labs.index(k) for k in labs]
    res = evaluate_predictions(
        logits,
        eval_set.targets[:, cols],
        eval_set.visits,
        labs,
        calibration=found.get("eval_calibration"),
        thresholds=found.get("eval_thresholds"),
        n_boot=0,  # the table shows means; CIs are `evaluate`'s job
        truth=eval_set.truth,
    )
    s = res["summary"]
    truth = s.get("truth") or {}
    return {
        "auroc_mean": s.get("mean_auroc"),
        "auroc_planted_mean": truth.get("planted_mean_auroc"),
        "auroc_unplanted_mean": truth.get("unplanted_mean_auroc"),
        "auroc_buckets": s.get("buckets") or None,
        "auroc_labs": {k: v.get("auroc") for k, v in res["labs"].items()},
        "auroc_from": "this file",
        "eval_split": eval_set.split,
        "eval_source": f"{eval_set.describe()}, run with this row's runtime",
        "eval_labs_evaluated": s.get("n_labs_evaluated"),
        # Labs with too few abnormal/normal visits on this split: kept out of the means.
        "eval_labs_insufficient": list(s.get("labs_insufficient") or []),
        "eval_s": found.get("eval_s"),
    }


def read_evaluation(path: Path) -> dict[str, Any]:
    """Accuracy columns from an `anyecg-edge evaluate` JSON."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: not a readable evaluation JSON ({exc})") from None
    s = doc.get("summary") if isinstance(doc, dict) else None
    if not isinstance(s, dict) or "mean_auroc" not in s:
        raise BenchError(
            f"{path}: no summary.mean_auroc (expected `anyecg-edge evaluate --json` output)"
        )
    truth = s.get("truth") or {}
    buckets = s.get("buckets") or {}
    return {
        "auroc_mean": s.get("mean_auroc"),
        "auroc_planted_mean": truth.get("planted_mean_auroc"),
        "auroc_unplanted_mean": truth.get("unplanted_mean_auroc"),
        "auroc_buckets": buckets or None,
        # An `evaluate --json` file is about a checkpoint: on an export row it is the fp32
        # checkpoint's number, not the file's (pass --corpus for that).
        "auroc_from": "evaluation JSON",
        "eval_split": doc.get("split"),
        "eval_source": str(path),
    }


def _find_evaluation(cand: Candidate) -> Path | None:
    """An evaluation JSON next to the model's checkpoint/run (the latest by mtime)."""
    weights = cand.info.get("weights")
    if not weights or weights == "random-init":
        return None
    p = Path(weights)
    folder = p if p.is_dir() else p.parent
    found = [
        q for pat in ("eval*.json", "*evaluation*.json") for q in folder.glob(pat) if q.is_file()
    ]
    good = []
    for q in found:
        with contextlib.suppress(BenchError):
            read_evaluation(q)
            good.append(q)
    return max(good, key=lambda q: q.stat().st_mtime) if good else None


# --------------------------------------------------------------------------- headline


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


# --------------------------------------------------------------------------- streaming


def stream_record(data_dir: Path | None, work: Path) -> Path | None:
    """A long single-lead record to stream: MIT-BIH 100 where present, else a synthetic
    3-minute WFDB record (needs wfdb); None when neither is possible."""
    if data_dir is not None:
        for cand in (Path(data_dir) / "mitdb" / "100", Path(data_dir) / "100"):
            if cand.with_suffix(".hea").is_file():
                return cand
    try:
        import wfdb
    except ImportError:
        return None
    sig = synthetic_ecg_mv(180.0, _FS, seed=1)
    wfdb.wrsamp(
        "synthetic_ecg",
        fs=_FS,
        units=["mV"],
        sig_name=["II"],
        p_signal=sig[:, None].astype(np.float64),
        fmt=["16"],
        write_dir=str(work),
    )
    return work / "synthetic_ecg"


def stream_session(
    model_path: Path,
    record: Path,
    *,
    duration_s: float,
    speed: float = 20.0,
    hop_s: float = 1.0,
    profile: str = "polar",
    faults: str | None = None,
    jsonl: Path | None = None,
    threads: int = 1,
    live_console: Any = None,
) -> dict[str, Any]:
    """Stream ``record`` from a simulated wearable (bumble GATT link; a paced file replay
    where bumble is missing) through the engine with ``model_path``; JSONL lines go to
    ``jsonl``; a rich live view goes to ``live_console`` when given. Returns the summary."""
    import asyncio
    import importlib.util

    from anyecg_edge.firmware_bridge.faults import FaultSpec

    from anyecg_edge.runtime import load_model
    from anyecg_edge.stream.engine import StreamEngine
    from anyecg_edge.stream.sources import SourceSpec, load_record, run_ble, run_file

    model = load_model(model_path, threads=threads)
    have_ble = importlib.util.find_spec("bumble") is not None
    label = f"sim-{profile}:{record}" if have_ble else f"file:{record}"
    spec = SourceSpec.parse(label)
    fh = open(jsonl, "w", buffering=1) if jsonl is not None else None  # noqa: SIM115 (closed below)
    view = None

    def sink(item: dict[str, Any]) -> None:
        if fh is not None:
            fh.write(json.dumps(item, separators=(",", ":")) + "\n")
        if view is not None:
            view.update(item)

    engine = StreamEngine(model, hop_s=hop_s, sink=sink)
    live_ctx = None
    if live_console is not None:
        from anyecg_edge.stream.live import LiveView, live_display

        view = LiveView(engine, source=spec.label)
        live_ctx = live_display(view, console=live_console)  # logs print above, no stale panel
    engine.start()
    info: dict[str, Any] = {}
    try:
        if live_ctx is not None:
            live_ctx.__enter__()
        if have_ble:
            info = asyncio.run(
                run_ble(
                    spec, engine, speed=speed, duration_s=duration_s, faults=FaultSpec.parse(faults)
                )
            )
        else:
            info = run_file(
                load_record(record, lead=None, fs=None), engine, speed=speed, duration_s=duration_s
            )
    finally:
        summary = engine.close()
        if live_ctx is not None:
            live_ctx.__exit__(None, None, None)
        summary = {
            "source": spec.label,
            "model": str(model_path),
            "hop_s": hop_s,
            **summary,
            "source_info": info,
        }
        if fh is not None:
            fh.write(json.dumps({"summary": summary}, separators=(",", ":"), default=str) + "\n")
            fh.close()
    return summary


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


# --------------------------------------------------------------------------- run


def _model_label(row: dict[str, Any]) -> str:
    return f"{row['model']} · {row['runtime']} {row['precision']}"


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
        for cand in cands:
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
    try:
        stream_session(
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


# --------------------------------------------------------------------------- output


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


def main(argv: list[str] | None = None) -> int:
    """``python -m anyecg_edge.benchmarks.bench [bench options]`` (same as ``anyecg-edge
    bench``); ``--worker SPEC.json`` is the per-row measuring process."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"] and len(argv) == 2:
        return _worker_main(argv[1])
    from anyecg_edge.cli import cli

    cli.main(args=["bench", *argv], prog_name="anyecg-edge")
    return 0


if __name__ == "__main__":
    sys.exit(main())
