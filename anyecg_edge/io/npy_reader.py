"""NumPy ``.npy``: a 1-D array of one lead's samples (``fs`` and, unless mV, ``units`` given)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anyecg_edge.io.base import Record, RecordError, check_fs_value, finish_record, one_line
from anyecg_edge.io.units import conversion_note, infer_unit, unit_scale


def read(path: Path, lead: str | None, fs: float | None, units: str | None) -> Record:
    src = str(path)
    if fs is None:
        raise RecordError(f"{src}: .npy arrays carry no sampling rate; pass fs (--fs) in Hz")
    fs_val = check_fs_value(fs, src)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise RecordError(f"{src}: not a readable .npy array: {one_line(exc)}") from None
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)  # (1, n) or (n, 1): one lead
    if arr.ndim != 1:
        raise RecordError(
            f"{src}: expected a 1-D array of one lead's samples, got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iuf":
        raise RecordError(f"{src}: expected a numeric array, got dtype {arr.dtype}")
    label = str(lead) if lead is not None else "unnamed"
    values = np.asarray(arr, dtype=np.float64)
    if units == "auto":
        scale, _, unit_note = infer_unit(values, fs_val, src, label)
    else:
        scale, unit_str = unit_scale(units, src, label)
        unit_note = conversion_note(unit_str, scale)
    return finish_record(values, scale, fs_val, label, src, [unit_note])
