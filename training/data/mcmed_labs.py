"""MC-MED's ``labs.csv`` (see :mod:`.mcmed`): streamed in chunks, values parsed, names mapped
to catalog indicators, unusable rows counted by reason.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.data.mcmed_csv import (
    MCMEDError,
    _check_columns,
    _csv_chunks,
    _ids,
    _read_header,
    _require_file,
    parse_datetimes,
)

__all__ = ["LAB_REQUIRED", "LabReadStats", "iter_lab_chunks", "read_labs"]

LAB_REQUIRED = ("CSN", "Order_time", "Result_time", "Component_name", "Component_value")


@dataclass
class LabReadStats:
    """Counts from reading labs.csv; ``skipped`` maps a reason to a row count."""

    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    unknown_components: Counter = field(default_factory=Counter)
    censored: int = 0
    missing_result_time: int = 0

    def as_dict(self, top_unknown: int = 50) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "kept": self.kept,
            "censored_values": self.censored,
            "missing_result_time": self.missing_result_time,
            "skipped": {k: v for k, v in sorted(self.skipped.items()) if v},
            "unknown_components_top": dict(self.unknown_components.most_common(top_unknown)),
            "unknown_components_distinct": len(self.unknown_components),
        }


_LAB_OUT_COLUMNS = (
    "CSN",
    "lab_key",
    "Component_name",
    "value",
    "censored",
    "abnormal",
    "Order_time",
    "Result_time",
)


def iter_lab_chunks(
    mcmed_dir: str | os.PathLike,
    catalog: Any = None,
    *,
    chunksize: int = 250_000,
    stats: LabReadStats | None = None,
    on_bad_date: str = "error",
) -> Iterator[Any]:
    """Stream ``labs.csv`` as cleaned DataFrame chunks of usable results.

    Columns: CSN (str), lab_key (catalog key), Component_name (as written), value
    (float64; a censored result keeps its bound), censored ('<', '>' or ''), abnormal
    (bool: ``Lab.abnormal_label``, the catalog's range and direction),
    Order_time, Result_time (datetime64[s]; Result_time may be NaT). Rows that are not
    usable are counted in ``stats.skipped`` by reason: 'canceled', 'non-numeric value',
    'empty value', 'unknown component', 'censored value straddles the reference bound'
    (e.g. '<5' when the range ends at 3.5), 'missing Order_time', 'result before order',
    'bad <column>' (only with ``on_bad_date='skip'``).
    """
    import pandas as pd

    from anyecg_edge.labs import load_catalog

    if on_bad_date not in ("error", "skip"):
        raise MCMEDError(f"on_bad_date must be 'error' or 'skip', got {on_bad_date!r}")
    catalog = load_catalog() if catalog is None else catalog
    stats = LabReadStats() if stats is None else stats
    path = _require_file(Path(mcmed_dir) / "labs.csv")
    header = _read_header(path)
    _check_columns(path, header, LAB_REQUIRED)
    usecols = list(LAB_REQUIRED)
    if "Component_result" in header:
        usecols.append("Component_result")
    parser = _ValueParser(catalog, stats)
    line = 2  # CSV record number + 1; equals the file line when no field holds a newline
    for chunk in _csv_chunks(path, usecols, chunksize):
        n = len(chunk)
        stats.rows += n
        first = line
        line += n
        names = chunk["Component_name"].to_numpy(dtype=object)
        texts = chunk["Component_value"].to_numpy(dtype=object)
        if "Component_result" in chunk:
            alt = chunk["Component_result"].to_numpy(dtype=object)
            empty = np.array([not str(t).strip() for t in texts])
            texts = np.where(empty, alt, texts)
        keys, keep = parser.keys(names)
        values, cens, abnormal = parser.values(keys, texts, keep)
        otime, rtime = _times(chunk, path, first, keep, stats, skip_bad=on_bad_date == "skip")
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            continue
        csn = _ids(
            chunk["CSN"].to_numpy(dtype=object)[idx], file=path, column="CSN", first_line=first
        )
        k = keys[idx]
        v = values[idx]
        c = cens[idx]
        stats.censored += int(sum(1 for x in c if x))
        stats.kept += int(idx.size)
        yield pd.DataFrame(
            {
                "CSN": csn,
                "lab_key": k,
                "Component_name": names[idx],
                "value": v,
                "censored": c,
                "abnormal": abnormal[idx],
                "Order_time": otime[idx],
                "Result_time": rtime[idx],
            }
        )


class _ValueParser:
    """Component names -> catalog keys and value strings -> (value, censoring, abnormal),
    through caches of the distinct names / strings (a chunk has few of each); unusable
    rows are dropped from ``keep`` and counted in ``stats``."""

    def __init__(self, catalog: Any, stats: LabReadStats) -> None:
        self.catalog = catalog
        self.stats = stats
        self.name_cache: dict[str, str | None] = {}
        self.value_cache: dict[str, Any] = {}
        self.abn_cache: dict[tuple[str, str], bool | None] = {}

    def keys(self, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(catalog key per row, None for an unknown component; the rows to keep)."""
        for name in set(names.tolist()) - self.name_cache.keys():
            lab = self.catalog.lookup(name)
            self.name_cache[name] = None if lab is None else lab.key
        keys = np.array([self.name_cache[nm] for nm in names], dtype=object)
        unknown = np.array([k is None for k in keys], dtype=bool)
        for name in names[unknown]:
            self.stats.unknown_components[" ".join(str(name).split())] += 1
        self.stats.skipped["unknown component"] += int(unknown.sum())
        return keys, ~unknown

    def values(
        self, keys: np.ndarray, texts: np.ndarray, keep: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(value, censoring '<' / '>' / '', abnormal) of the kept rows; ``keep`` loses the
        rows whose value is unusable or whose censored bound straddles the range."""
        from anyecg_edge.labs import parse_lab_value

        if len(self.value_cache) > 500_000:  # free text can be unbounded
            self.value_cache.clear()
            self.abn_cache.clear()
        for text in set(texts.tolist()) - self.value_cache.keys():
            self.value_cache[text] = parse_lab_value(text)
        n = len(keys)
        values = np.full(n, np.nan)
        cens = np.full(n, "", dtype=object)
        abnormal = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(keep).tolist():
            pv = self.value_cache[texts[i]]
            if not pv.ok or pv.value is None or not math.isfinite(pv.value):
                keep[i] = False
                self.stats.skipped[_skip_reason(pv)] += 1
                continue
            pair = (keys[i], texts[i])
            label = self.abn_cache.get(pair)
            if label is None and pair not in self.abn_cache:
                label = self.catalog.by_key(keys[i]).abnormal_label(pv)
                self.abn_cache[pair] = label
            if label is None:  # e.g. '<5' for a lab whose low bound is 3.5
                keep[i] = False
                self.stats.skipped["censored value straddles the reference bound"] += 1
                continue
            values[i] = pv.value
            cens[i] = pv.censored or ""
            abnormal[i] = label
        return values, cens, abnormal


def _times(
    chunk: Any, path: Path, first: int, keep: np.ndarray, stats: LabReadStats, *, skip_bad: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Order_time and Result_time of a chunk; ``keep`` loses rows with a bad date (only with
    ``skip_bad``, else that raises), no order time, or a result before its order."""
    bad_o: list[int] = []
    bad_r: list[int] = []
    otime = parse_datetimes(
        chunk["Order_time"].to_numpy(dtype=object),
        file=path,
        column="Order_time",
        first_line=first,
        bad=bad_o if skip_bad else None,
    )
    rtime = parse_datetimes(
        chunk["Result_time"].to_numpy(dtype=object),
        file=path,
        column="Result_time",
        first_line=first,
        bad=bad_r if skip_bad else None,
    )
    for col, bad in (("Order_time", bad_o), ("Result_time", bad_r)):
        b = np.asarray(bad, dtype=np.int64)
        if b.size:
            hit = keep[b]
            stats.skipped[f"bad {col}"] += int(hit.sum())
            keep[b] = False
    miss_o = keep & np.isnat(otime)
    stats.skipped["missing Order_time"] += int(miss_o.sum())
    keep &= ~miss_o
    early = keep & ~np.isnat(rtime) & (rtime < otime)
    stats.skipped["result before order"] += int(early.sum())
    keep &= ~early
    stats.missing_result_time += int((keep & np.isnat(rtime)).sum())
    return otime, rtime


def _skip_reason(pv: Any) -> str:
    status = str(pv.status)
    return {"canceled": "canceled", "empty": "empty value", "non_numeric": "non-numeric value"}.get(
        status, f"unusable value ({status})"
    )


def read_labs(
    mcmed_dir: str | os.PathLike,
    catalog: Any = None,
    *,
    chunksize: int = 250_000,
    on_bad_date: str = "error",
) -> tuple[Any, LabReadStats]:
    """All usable lab results (see :func:`iter_lab_chunks`) in one DataFrame + the stats."""
    import pandas as pd

    stats = LabReadStats()
    parts = list(
        iter_lab_chunks(
            mcmed_dir, catalog, chunksize=chunksize, stats=stats, on_bad_date=on_bad_date
        )
    )
    if not parts:
        empty = {c: pd.Series(dtype=object) for c in _LAB_OUT_COLUMNS}
        return pd.DataFrame(empty), stats
    return pd.concat(parts, ignore_index=True), stats
