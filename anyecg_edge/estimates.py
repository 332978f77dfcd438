"""Per-lab estimate entries: one place that turns a model's probabilities into what predict,
stream and the Python API report (probability, call, threshold, interval, spread).

A lab is *called* (``abnormal`` true/false) only when the model's manifest calibrated it on
enough validation data; otherwise ``abnormal`` is None and ``status`` "not calibrated". The
``interval`` is the central ``interval_level`` range of the probability over the manifest's
bootstrap calibrations (calibration uncertainty); ``spread`` is the window-to-window
variation of the probability. Research estimates, not diagnoses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from anyecg_edge.runtime import ModelMetadata

__all__ = ["NOT_CALIBRATED", "call_status", "interval_bounds", "lab_entry"]

NOT_CALIBRATED = "not calibrated"


def interval_bounds(boot_p: np.ndarray | None, level: float | None) -> np.ndarray | None:
    """(2, n_labs) lower/upper quantiles over bootstrap probabilities (k, n_labs); NaN for
    labs without bootstrap fits; None without any."""
    if boot_p is None or level is None or boot_p.size == 0:
        return None
    q = (1.0 - level) / 2.0
    out = np.full((2, boot_p.shape[1]), np.nan)
    ok = np.isfinite(boot_p).all(axis=0)
    if ok.any():
        out[:, ok] = np.quantile(boot_p[:, ok], [q, 1.0 - q], axis=0)
    return out


def call_status(p: float, threshold: float) -> tuple[bool | None, str]:
    """(abnormal, status) for a probability against a threshold (NaN: not calibrated)."""
    if not np.isfinite(threshold):
        return None, NOT_CALIBRATED
    flag = bool(p >= threshold)
    return flag, "abnormal" if flag else "normal"


def lab_entry(
    meta: ModelMetadata,
    j: int,
    p: float,
    threshold: float,
    bounds: np.ndarray | None,
    *,
    compact: bool = False,
) -> dict[str, Any]:
    """The entry of lab ``meta.labs[j]``: ``compact`` (stream JSONL) keeps the numbers and
    the call; the full form (predict) adds the catalog's name, unit and range."""
    lab = meta.labs[j]
    abnormal, status = call_status(p, threshold)
    interval = None
    if bounds is not None and np.isfinite(bounds[:, j]).all():
        interval = [round(float(bounds[0, j]), 4), round(float(bounds[1, j]), 4)]
    entry: dict[str, Any] = {
        "probability": round(float(p), 4),
        "interval": interval,
        "abnormal": abnormal,
        "status": status,
    }
    if compact:
        return entry
    entry["threshold"] = None if abnormal is None else round(float(threshold), 4)
    entry["calibrated"] = abnormal is not None
    entry["interval_level"] = meta.interval_level if interval else None
    from anyecg_edge.labs import load_catalog

    catalog = load_catalog()
    info = catalog.lookup(lab) or catalog.get(lab)
    entry["display_name"] = info.display_name if info else lab
    entry["unit"] = meta.units.get(lab) or (info.unit if info else None)
    entry["reference_range"] = [info.low, info.high] if info else None
    return entry
