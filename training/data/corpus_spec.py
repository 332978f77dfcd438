"""What a segment corpus is (see `anyecg_edge.training.data.corpus` for the layout): its
format tag and index columns, the build configuration that decides its content, and the
label-alignment rule that picks each window's lab results. Shared by the build's main
process (`corpus`) and its workers (`corpus_unit`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.mcmed import ECG_FS_HZ, MCMEDError

from anyecg_edge.fileio import atomic_open, write_json

__all__ = [
    "FORMAT",
    "INDEX_COLUMNS",
    "CorpusConfig",
    "CorpusError",
    "lab_columns",
    "parse_duration_s",
]

FORMAT = "anyecg-edge-corpus/1"
INDEX_COLUMNS = (
    "segment_id",
    "csn",
    "mrn",
    "split",
    "shard",
    "offset",
    "start_time",
    "quality",
    "quality_ok",
    "heart_rate_bpm",
    "record",
    "sample_offset",
)
SPLIT_ORDER = ("train", "val", "test")
_SPLIT_PRIORITY = {"train": 0, "val": 1, "test": 2}
_MAX_LISTED_SKIPS = 1000  # per unit and in the manifest; counts are always complete
_MISSING = np.iinfo(np.int64).min
# Rows per row group of index.parquet (~2 MB with the ~230 lab columns): far fewer
# column chunks to write than a group per unit, small enough that the build (holding one
# group before writing it) and a reader (CorpusDataset, a group at a time) stay flat.
_INDEX_ROW_GROUP = 2048


class CorpusError(MCMEDError):
    """The corpus cannot be built as asked (bad option, incompatible existing out_dir)."""


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that decides the corpus content (the resume check compares it)."""

    window_s: float = 10.0
    stride_s: float = 10.0
    before_s: float = 1800.0
    after_s: float = 900.0
    policy: str = "order"
    split_scheme: str = "random"
    mains_hz: float | None = 50.0
    target_fs: float = 500.0
    expected_fs: float = ECG_FS_HZ
    shard_size: int = 4096
    visits_per_unit: int = 16
    seed: int = 0
    keep_rejected: bool = False
    dtype: str = "float16"
    lab_keys: tuple[str, ...] = ()

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.target_fs))


def parse_duration_s(text: str | float | int) -> float:
    """'30m' / '15min' / '1h' / '90s' / '1800' -> seconds (for the CLI's --before/--after)."""
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h|hr)?\s*", str(text).lower())
        if m is None:
            raise CorpusError(f"duration {text!r} not understood (expected e.g. 90s, 30m, 1h)")
        v = (
            float(m.group(1))
            * {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}[m.group(2)]
        )
    if not math.isfinite(v) or v < 0:
        raise CorpusError(f"duration must be >= 0 seconds, got {text!r}")
    return v


def lab_columns(lab_keys: Iterable[str]) -> list[str]:
    """Index columns of the labs: ``<key>`` (abnormal 1/0/NaN) then ``<key>_value`` each."""
    cols = []
    for k in lab_keys:
        cols += [k, f"{k}_value"]
    return cols


# ----------------------------------------------------------------------------- files


def _atomic_write_json(path: Path, obj: Any) -> None:
    write_json(path, obj, sort_keys=False)


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _unit_name(unit: int) -> str:
    return f"u{unit:06d}"


# ----------------------------------------------------------------------------- labels


def _select_labels(
    t_ms: np.ndarray,
    labs: dict[str, np.ndarray],
    n_labs: int,
    cfg: CorpusConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window: keep mask, chosen abnormal flags (W, L) and values (W, L), NaN if none.

    ``t_ms`` are window starts (ms since epoch); ``labs`` holds a visit's result rows
    sorted by (lab, order time): lab (int), order_ms, result_ms (_MISSING if none),
    value, abnormal.
    """
    w = t_ms.size
    abn = np.full((w, n_labs), np.nan, dtype=np.float32)
    val = np.full((w, n_labs), np.nan, dtype=np.float32)
    if w == 0 or labs["lab"].size == 0:
        return np.zeros(w, dtype=bool), abn, val
    order = labs["order_ms"].astype(np.float64)
    dist = np.abs(t_ms[:, None].astype(np.float64) - order[None, :])  # (W, R)
    if cfg.policy == "order":
        win_ms = cfg.window_s * 1000.0
        lo = order - cfg.before_s * 1000.0
        hi = order + cfg.after_s * 1000.0
        res = labs["result_ms"]
        hi = np.where(res != _MISSING, np.minimum(hi, res.astype(np.float64)), -np.inf)
        ok = (t_ms[:, None] >= lo[None, :]) & (t_ms[:, None] + win_ms <= hi[None, :])
        dist = np.where(ok, dist, np.inf)
    lab = labs["lab"]
    starts = np.flatnonzero(np.diff(lab, prepend=-1))  # a run per lab (sorted by lab)
    # Per window and lab: the nearest result, the first one on ties (= earliest order),
    # for all labs at once: group minima, then the first column reaching its minimum.
    best = np.minimum.reduceat(dist, starts, axis=1)  # (W, labs present)
    group = np.repeat(np.arange(starts.size), np.diff(starts, append=lab.size))
    col = np.where(dist == best[:, group], np.arange(lab.size), lab.size)
    first = np.minimum.reduceat(col, starts, axis=1)
    has = np.isfinite(best)  # no usable result for that lab: stays NaN
    first[~has] = 0
    keys = lab[starts].astype(np.int64)
    abn[:, keys] = np.where(has, labs["abnormal"][first], np.nan)
    val[:, keys] = np.where(has, labs["value"][first], np.nan)
    keep = np.isfinite(abn).any(axis=1)
    return keep, abn, val


def _candidates(n_samples: int, fs: float, cfg: CorpusConfig) -> tuple[int, int, int]:
    """(number of windows, window samples, hop samples) of a segment at its own rate."""
    win = int(round(cfg.window_s * fs))
    hop = max(1, int(round(cfg.stride_s * fs)))
    n = 0 if n_samples < win else (n_samples - win) // hop + 1
    return n, win, hop
