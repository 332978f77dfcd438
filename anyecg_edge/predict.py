"""Record-level prediction on the device side: read -> windows -> quality -> preprocess -> model.

Pure numpy; the model is any `anyecg_edge.runtime.Model` (ONNX Runtime, LiteRT, or the torch
adapter used on a workstation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anyecg_edge import RESEARCH_USE_NOTE
from anyecg_edge.estimates import interval_bounds, lab_entry
from anyecg_edge.io import Record, RecordError
from anyecg_edge.runtime import Model, ModelError, ModelMetadata
from anyecg_edge.signal import (
    QualityReport,
    SignalError,
    assess_quality_batch,
    extract_windows,
    preprocess,
    raw_window_samples,
)


@dataclass
class WindowQuality:
    start_s: float
    ok: bool
    reasons: list[str]
    heart_rate_bpm: float | None


@dataclass
class RecordPrediction:
    record: str
    lead: str
    fs: float
    duration_s: float
    windows: list[WindowQuality]
    labs: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    # How the record was read: lead chosen, unit converted, file cut short ("" if nothing).
    record_note: str = ""

    @property
    def n_used(self) -> int:
        return sum(w.ok for w in self.windows)

    def to_dict(self) -> dict[str, Any]:
        reasons = sorted({r for w in self.windows for r in w.reasons})
        return {
            "record": self.record,
            "lead": self.lead,
            "fs": self.fs,
            "duration_s": round(self.duration_s, 3),
            "record_note": self.record_note,
            "status": "ok" if self.n_used else "rejected",
            "quality": {
                "windows_total": len(self.windows),
                "windows_used": self.n_used,
                "reasons": reasons,
                "windows": [w.__dict__ for w in self.windows],
            },
            "labs": self.labs,
            "model": self.model,
            "note": RESEARCH_USE_NOTE,
        }


def raw_model_windows(
    signal_mv: np.ndarray, fs: float, meta: ModelMetadata, hop_s: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``extract_windows`` with the raw length that preprocesses to at least the model's
    window at any rate (:func:`~anyecg_edge.signal.raw_window_samples`: 1301 samples at a
    Polar's measured 130.04 Hz, not 1300); :func:`model_window` cuts the rest."""
    n_raw = raw_window_samples(meta.window_samples, fs, meta.fs)
    return extract_windows(signal_mv, fs, n_raw / fs, hop_s)


def model_window(
    windows_mv: np.ndarray, fs: float, meta: ModelMetadata, mains_hz: float | None
) -> np.ndarray:
    """Raw windows from :func:`raw_model_windows` preprocessed to exactly the model's input
    (windows, window_samples) at ``meta.fs``."""
    x = preprocess(windows_mv, fs, mains_hz=mains_hz, target_fs=int(meta.fs))
    return x[:, : meta.window_samples]


def model_inputs(
    windows_mv: np.ndarray,
    fs: float,
    meta: ModelMetadata,
    mains_hz: float | None | str = "model",
) -> tuple[list[QualityReport], np.ndarray | None]:
    """Gate raw windows and preprocess the accepted ones into what the model is fed.

    ``windows_mv``: raw mV windows (windows, samples) at ``fs``. Each row is gated on
    raw mV (:func:`~anyecg_edge.signal.assess_quality_batch`, equal to one window at a
    time), then the accepted rows are preprocessed like the training corpus (batched,
    equal to row by row) to ``meta.fs``, with the notch at ``mains_hz`` ("model": the
    manifest's ``meta.mains_hz``; None: no notch). Returns one report per row and the
    accepted rows' float32 model inputs (accepted, window_samples), or None if no row
    was accepted.
    """
    mains = meta.mains_hz if mains_hz == "model" else mains_hz
    w64 = np.asarray(windows_mv, dtype=np.float64)  # once, for both gate and preprocess
    reports = assess_quality_batch(w64, fs)
    ok = np.fromiter((r.ok for r in reports), dtype=bool, count=len(reports))
    if not ok.any():
        return reports, None
    return reports, model_window(w64[ok], fs, meta, mains)


def predict_record(
    record: Record,
    model: Model,
    *,
    hop_s: float | None = None,
    mains_hz: float | None | str = "model",
) -> RecordPrediction:
    """Estimate per-lab abnormality probabilities for one record.

    Each 10 s window is gated on raw mV, preprocessed exactly like the training corpus
    (:func:`model_inputs`), and scored; the record estimate is the mean over accepted
    windows. Each lab entry (:func:`anyecg_edge.estimates.lab_entry`) carries the call
    (None when the lab is not calibrated), the threshold, the calibration-uncertainty
    interval and the window-to-window spread.
    """
    meta = model.metadata
    try:
        raw_windows, starts = raw_model_windows(record.signal_mv, record.fs, meta, hop_s)
    except SignalError as exc:
        raise RecordError(f"{record.source} (lead {record.lead}): {exc}") from None
    reports, accepted = model_inputs(raw_windows, record.fs, meta, mains_hz)
    qualities: list[WindowQuality] = []
    for report, start in zip(reports, starts, strict=True):
        hr = report.metrics.get("heart_rate_bpm")
        qualities.append(
            WindowQuality(
                start_s=round(float(start) / record.fs, 3),
                ok=report.ok,
                reasons=list(report.reasons),
                heart_rate_bpm=None if hr is None or not np.isfinite(hr) else round(float(hr), 1),
            )
        )

    result = RecordPrediction(
        record=record.source,
        lead=record.lead,
        fs=record.fs,
        duration_s=record.duration_s,
        record_note=record.note,
        windows=qualities,
        model={
            "source": model.source,
            "backend": model.backend,
            "precision": model.precision,
            "calibrated": meta.all_calibrated,
            "labs_not_calibrated": [k for k in meta.labs if not meta.is_calibrated(k)],
            "interval": None
            if meta.interval_level is None
            else {"level": meta.interval_level, **meta.uncertainty},
        },
    )
    if accepted is None:
        return result

    logits = model.logits(accepted[:, None, :])
    finite = np.isfinite(logits)
    if not finite.all():
        # A NaN/inf output would become a NaN "probability" (and invalid JSON): refused.
        labs = [lab for lab, ok in zip(model.labs, finite.all(axis=0), strict=True) if not ok]
        n_bad = int((~finite.all(axis=1)).sum())
        raise ModelError(
            f"{model.source}: non-finite model output (NaN/inf) in {n_bad} of {len(logits)} "
            f"windows, labs {', '.join(labs[:5])}{' ...' if len(labs) > 5 else ''}"
        )
    probs = model.calibrate(logits)
    mean = probs.mean(axis=0)
    boot = model.bootstrap_probabilities(logits)
    # The record estimate is the mean over windows; so is each bootstrap calibration's.
    bounds = interval_bounds(None if boot is None else boot.mean(axis=0), meta.interval_level)
    thresholds = model.thresholds()
    for j, name in enumerate(model.labs):
        column = probs[:, j]
        entry = lab_entry(meta, j, float(mean[j]), float(thresholds[j]), bounds)
        entry["spread"] = {  # window-to-window variation (not a confidence interval)
            "n_windows": int(column.size),
            "std": round(float(column.std()), 4),
            "min": round(float(column.min()), 4),
            "max": round(float(column.max()), 4),
        }
        result.labs[name] = entry
    return result
