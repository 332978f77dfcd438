"""Reader for MC-MED (PhysioNet, credentialed): visits, labs, splits and lead-II waveforms.

Layout and pitfalls are in DESIGN.md section 4. What this module guarantees:

* **Dates** are parsed exactly at second resolution into ``datetime64[s]`` (MC-MED's
  shifted years 2205-2295 overflow pandas' ``datetime64[ns]`` past 2262-04-11). An empty
  cell is a *missing* time (NaT), allowed only in columns where MC-MED has gaps; a
  non-empty cell that is not a date raises :class:`MCMEDError` naming the file, the
  1-based CSV line and the column -- never a silent NaT. ``on_bad_date='skip'`` turns
  that into a counted skip of the row instead (reason ``bad <column>``).
* **labs.csv** (~750 MB) is streamed in chunks with a real CSV parser (component names
  contain quoted commas and newlines). ``Component_value`` strings go through
  :func:`anyecg_edge.labs.parse_lab_value` ('>10.0', '<0.1', '12.3 (H)', 'Canceled');
  names are mapped to catalog indicators through its synonyms. Rows that cannot be used
  (canceled, non-numeric, unknown component, missing order time) are skipped and counted
  by reason in :class:`LabReadStats`.
* **Splits**: ``split_{scheme}_{train,val,test}.csv`` hold one CSN per line, no header.
* **Waveforms**: ``waveforms/{CSN[-3:]}/{CSN}/II/{CSN}_{seg}.hea/.dat``, segments numbered
  from 1 (a new one after each gap); a segment's start is its header's base_date and
  base_time.

Modules: `mcmed_csv` (errors, dates, CSV chunks, IDs), `mcmed_labs` (labs.csv),
`mcmed_waveforms` (lead-II segments), this one (visits, splits; re-exports the others).
"""

from __future__ import annotations

import os
import re
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
    to_datetime64,
)
from anyecg_edge.training.data.mcmed_labs import (
    LAB_REQUIRED,
    LabReadStats,
    iter_lab_chunks,
    read_labs,
)
from anyecg_edge.training.data.mcmed_waveforms import (
    ECG_FS_HZ,
    ECG_LEAD,
    SegmentInfo,
    check_segment,
    list_segments,
    read_segment,
    read_segment_header,
    waveform_dir,
)

__all__ = [
    "ECG_LEAD",
    "ECG_FS_HZ",
    "LAB_REQUIRED",
    "MCMEDError",
    "LabReadStats",
    "SegmentInfo",
    "parse_datetimes",
    "to_datetime64",
    "read_visits",
    "read_splits",
    "iter_lab_chunks",
    "read_labs",
    "waveform_dir",
    "read_segment_header",
    "list_segments",
    "check_segment",
    "read_segment",
]

SPLITS = ("train", "val", "test")

VISIT_REQUIRED = ("MRN", "CSN")
# Columns parsed as dates when present; every one may hold empty cells (missing times).
VISIT_TIME_COLUMNS = ("Arrival_time", "Roomed_time", "Dispo_time", "Admit_time", "Departure_time")


# ----------------------------------------------------------------------------- visits


def read_visits(mcmed_dir: str | os.PathLike, *, chunksize: int = 200_000):
    """``visits.csv`` as a DataFrame: MRN, CSN (str) + other columns; times as datetime64[s].

    Line numbers in errors are CSV record numbers + 1 (the header is line 1).
    """
    import pandas as pd

    path = _require_file(Path(mcmed_dir) / "visits.csv")
    header = _read_header(path)
    _check_columns(path, header, VISIT_REQUIRED)
    parts = []
    line = 2
    for chunk in _csv_chunks(path, header, chunksize):
        n = len(chunk)
        cols: dict[str, Any] = {}
        for c in header:
            vals = chunk[c].to_numpy(dtype=object)
            if c in VISIT_REQUIRED:
                cols[c] = _ids(vals, file=path, column=c, first_line=line)
            elif c in VISIT_TIME_COLUMNS:
                cols[c] = parse_datetimes(vals, file=path, column=c, first_line=line)
            else:
                cols[c] = vals
        parts.append(pd.DataFrame(cols))
        line += n
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=header)
    dup = df["CSN"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise MCMEDError(
            f"{path}: line {i + 2}, column CSN: duplicate CSN "
            f"{df['CSN'].iat[i]!r} (expected one row per visit)"
        )
    return df


# ----------------------------------------------------------------------------- splits


def read_splits(mcmed_dir: str | os.PathLike, scheme: str = "random") -> dict[str, str] | None:
    """CSN -> 'train'/'val'/'test' from ``split_{scheme}_*.csv``; None if none exist.

    Each file has one CSN per line and no header. A CSN listed in two splits is an error;
    a partial set (e.g. only train and test) is read as is.
    """
    if scheme not in ("random", "chrono"):
        raise MCMEDError(f"split scheme must be 'random' or 'chrono', got {scheme!r}")
    root = Path(mcmed_dir)
    paths = {s: root / f"split_{scheme}_{s}.csv" for s in SPLITS}
    if not any(p.is_file() for p in paths.values()):
        return None
    out: dict[str, str] = {}
    for split, p in paths.items():
        if not p.is_file():
            continue
        with open(p, encoding="utf-8-sig") as f:
            for lineno, raw in enumerate(f, start=1):
                csn = raw.strip().strip('"')
                if not csn:
                    continue
                if csn.endswith(".0") and csn[:-2].isdigit():
                    csn = csn[:-2]
                if not re.fullmatch(r"[0-9A-Za-z_-]*[0-9][0-9A-Za-z_-]*", csn):
                    raise MCMEDError(
                        f"{p}: line {lineno}: {raw.strip()!r} is not a CSN "
                        "(expected one CSN per line, no header)"
                    )
                prev = out.get(csn)
                if prev is not None and prev != split:
                    raise MCMEDError(f"{p}: line {lineno}: CSN {csn} is also in the {prev} split")
                out[csn] = split
    return out
