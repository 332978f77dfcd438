"""Export stage 2: which real windows calibrate and which check parity (never the same
record when avoidable), and a sanity check of the calibration set."""

from __future__ import annotations

import logging
from pathlib import Path

from anyecg_edge.quantization.errors import ExportError
from anyecg_edge.quantization.windows import (
    WindowSet,
    is_corpus,
    load_windows,
    split_heldout,
    subsample,
)

from anyecg_edge.runtime import ModelMetadata

log = logging.getLogger("anyecg_edge.quantization.export")  # the export's messages, one logger


def export_windows(
    meta: ModelMetadata,
    calib: list[str],
    heldout: list[str],
    calib_size: int,
    heldout_size: int,
    need_calib: bool,
) -> tuple[WindowSet | None, WindowSet]:
    """(calibration windows or None, held-out windows) from the export's --calib / --heldout."""
    if need_calib and not calib:
        raise ExportError("--int8 (static) needs --calib: records, a corpus or a .npy of windows")
    if not calib and not heldout:
        raise ExportError(
            "parity needs real windows: pass --calib (records, a corpus or a .npy) and/or --heldout"
        )
    calib_ws = held_ws = None
    if calib:
        corpus = all(is_corpus(Path(c)) for c in calib)
        # Load the whole pool first: the held-out split is by record, before subsampling.
        pool = load_windows(
            calib, meta, role="calib", max_windows=None if not corpus else calib_size
        )
        if heldout:
            calib_ws = pool
        elif corpus:
            calib_ws = pool
            held_ws = load_windows(calib, meta, role="heldout", max_windows=heldout_size)
        else:
            calib_ws, held_ws = split_heldout(pool)
        calib_ws = subsample(calib_ws, calib_size)
    if heldout:
        held_ws = load_windows(heldout, meta, role="heldout", max_windows=heldout_size)
    assert held_ws is not None
    held_ws = subsample(held_ws, heldout_size)
    if calib_ws is not None:
        overlap = set(calib_ws.groups) & set(held_ws.groups)
        if overlap:
            log.warning(
                "%d record(s) give both calibration and held-out windows (e.g. %s): "
                "parity is optimistic",
                len(overlap),
                sorted(overlap)[0],
            )
    return calib_ws, held_ws


def calibration_warnings(ws: WindowSet) -> list[str]:
    """Warnings for a calibration set that does not look like preprocessed windows."""
    s = ws.stats()
    notes = []
    if abs(s["mean"]) > 0.2 or not 0.5 <= s["std"] <= 1.5:
        notes.append(
            f"calibration windows have mean {s['mean']:g} and std {s['std']:g}; preprocessed "
            "windows are z-scores (mean ~0, std ~1): are they raw or broken?"
        )
    flat = float((ws.x.std(axis=1) < 1e-6).mean())
    if flat > 0.1:
        notes.append(f"{flat:.0%} of the calibration windows are constant")
    return notes
