"""MC-MED's CSV conventions shared by its readers (:mod:`.mcmed`): the error type, exact
date parsing at second resolution, chunked all-string CSV reading, ID columns.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MCMEDError", "parse_datetimes", "to_datetime64"]

_NAT = np.datetime64("NaT", "s")
# Fallback formats for cells that are not ISO-8601 (numpy's parser handles ISO itself).
_FALLBACK_FORMATS = (
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d-%b-%Y %H:%M:%S",
    "%Y%m%d%H%M%S",
)


class MCMEDError(ValueError):
    """MC-MED input that cannot be read: the message names the file, row/field and expectation."""


# ----------------------------------------------------------------------------- dates


def _parse_one(text: str) -> np.datetime64 | None:
    """One non-empty date string -> datetime64[s], or None when no known format fits."""
    try:
        v = np.datetime64(text, "s")
    except ValueError:
        v = None
    if v is not None and not np.isnat(v):
        return v
    import datetime as dt

    for fmt in _FALLBACK_FORMATS:
        try:
            parsed = dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        return np.datetime64(parsed.replace(microsecond=0), "s")
    return None


def parse_datetimes(
    values: Any,
    *,
    file: str | os.PathLike,
    column: str,
    first_line: int = 2,
    allow_missing: bool = True,
    bad: list[int] | None = None,
) -> np.ndarray:
    """Parse date strings exactly into ``datetime64[s]`` (no ns overflow, no silent NaT).

    ``values``: strings (ISO 'YYYY-MM-DD HH:MM:SS[.fff]' fast path, a few US formats as a
    fallback). Empty cells / None / NaN are missing (NaT) when ``allow_missing``, else an
    error. A non-empty cell that is not a date raises :class:`MCMEDError` naming
    ``file``, its CSV line (``first_line`` is the line of ``values[0]``) and ``column``;
    if a list is passed as ``bad``, the positions of such cells are appended to it and
    they come back as NaT instead (the caller counts and skips those rows).
    """
    arr = np.asarray(values, dtype=object)
    out = np.full(arr.shape[0], _NAT)
    if arr.size == 0:
        return out
    text = np.array(
        [
            "" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v).strip()
            for v in arr
        ],
        dtype=object,
    )
    empty = text == ""
    for literal in ("NaT", "nan", "NaN", "NULL", "null", "None"):
        empty |= text == literal
    if empty.any() and not allow_missing:
        i = int(np.flatnonzero(empty)[0])
        raise MCMEDError(
            f"{file}: line {first_line + i}, column {column}: empty date "
            "(expected a date such as '2240-05-12 13:45:00')"
        )
    idx = np.flatnonzero(~empty)
    if idx.size == 0:
        return out
    try:
        parsed = np.array(text[idx].astype(str), dtype="datetime64[s]")
        ok = ~np.isnat(parsed)
    except ValueError:
        parsed, ok = None, None
    if parsed is not None and ok.all():
        out[idx] = parsed
        return out
    # Slow path: some cell is not ISO. Parse one by one to find it (and try fallbacks).
    for i in idx:
        v = _parse_one(text[i])
        if v is None:
            if bad is None:
                raise MCMEDError(
                    f"{file}: line {first_line + int(i)}, column {column}: cannot parse "
                    f"date {text[i]!r} (expected e.g. '2240-05-12 13:45:00')"
                )
            bad.append(int(i))
            continue
        out[i] = v
    return out


def to_datetime64(seconds: int | np.integer) -> np.datetime64:
    """Seconds since 1970-01-01 -> datetime64[s] (exact for MC-MED's shifted years)."""
    return np.datetime64(int(seconds), "s")


# ----------------------------------------------------------------------------- csv helpers


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise MCMEDError(f"{path}: file not found (expected MC-MED's {path.name})")
    return path


def _read_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            return next(csv.reader(f))
        except StopIteration:
            raise MCMEDError(f"{path}: file is empty (expected a CSV header row)") from None


def _check_columns(path: Path, header: list[str], required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise MCMEDError(
            f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header[:20])})"
        )


def _csv_chunks(path: Path, usecols: list[str], chunksize: int):
    import pandas as pd

    # All strings, nothing turned into NaN behind our back ('NA' is a valid string here).
    return pd.read_csv(
        path,
        usecols=usecols,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        chunksize=chunksize,
        engine="c",
        encoding="utf-8-sig",
    )


def _ids(values: Any, *, file: Path, column: str, first_line: int) -> np.ndarray:
    """ID column (CSN/MRN) as stripped strings; an empty ID is an error."""
    arr = np.array([str(v).strip() for v in values], dtype=object)
    empty = np.flatnonzero(arr == "")
    if empty.size:
        raise MCMEDError(
            f"{file}: line {first_line + int(empty[0])}, column {column}: "
            "empty ID (expected a number)"
        )
    # 12345.0 from a spreadsheet round-trip is the same CSN as 12345.
    return np.array(
        [v[:-2] if v.endswith(".0") and v[:-2].isdigit() else v for v in arr], dtype=object
    )
