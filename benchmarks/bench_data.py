"""bench: the timing windows (real records or synthetic ECG), the preprocessing timings
and the record a streaming session replays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.benchmarks.bench_runtime import latency_stats, time_calls
from anyecg_edge.benchmarks.bench_spec import _FS, _WINDOW_S

log = logging.getLogger(__name__)


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
