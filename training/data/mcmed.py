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
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ECG_LEAD",
    "ECG_FS_HZ",
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

ECG_LEAD = "II"
ECG_FS_HZ = 500.0
SPLITS = ("train", "val", "test")

VISIT_REQUIRED = ("MRN", "CSN")
LAB_REQUIRED = ("CSN", "Order_time", "Result_time", "Component_name", "Component_value")
# Columns parsed as dates when present; every one may hold empty cells (missing times).
VISIT_TIME_COLUMNS = ("Arrival_time", "Roomed_time", "Dispo_time", "Admit_time", "Departure_time")

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


# ----------------------------------------------------------------------------- labs


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

    from anyecg_edge.labs import load_catalog, parse_lab_value

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
    name_cache: dict[str, str | None] = {}
    value_cache: dict[str, Any] = {}
    abn_cache: dict[tuple[str, str], bool | None] = {}
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
        # Map through caches of the distinct names/strings: a chunk has few of each.
        for name in set(names.tolist()) - name_cache.keys():
            lab = catalog.lookup(name)
            name_cache[name] = None if lab is None else lab.key
        if len(value_cache) > 500_000:  # free text can be unbounded
            value_cache.clear()
            abn_cache.clear()
        for text in set(texts.tolist()) - value_cache.keys():
            value_cache[text] = parse_lab_value(text)
        keys = np.array([name_cache[nm] for nm in names], dtype=object)
        unknown = np.array([k is None for k in keys], dtype=bool)
        for name in names[unknown]:
            stats.unknown_components[" ".join(str(name).split())] += 1
        stats.skipped["unknown component"] += int(unknown.sum())
        keep = ~unknown
        values = np.full(n, np.nan)
        cens = np.full(n, "", dtype=object)
        abnormal = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(keep).tolist():
            pv = value_cache[texts[i]]
            if not pv.ok or pv.value is None or not math.isfinite(pv.value):
                keep[i] = False
                stats.skipped[_skip_reason(pv)] += 1
                continue
            pair = (keys[i], texts[i])
            label = abn_cache.get(pair)
            if label is None and pair not in abn_cache:
                label = catalog.by_key(keys[i]).abnormal_label(pv)
                abn_cache[pair] = label
            if label is None:  # e.g. '<5' for a lab whose low bound is 3.5
                keep[i] = False
                stats.skipped["censored value straddles the reference bound"] += 1
                continue
            values[i] = pv.value
            cens[i] = pv.censored or ""
            abnormal[i] = label
        bad_o: list[int] = []
        bad_r: list[int] = []
        sink_o = bad_o if on_bad_date == "skip" else None
        sink_r = bad_r if on_bad_date == "skip" else None
        otime = parse_datetimes(
            chunk["Order_time"].to_numpy(dtype=object),
            file=path,
            column="Order_time",
            first_line=first,
            bad=sink_o,
        )
        rtime = parse_datetimes(
            chunk["Result_time"].to_numpy(dtype=object),
            file=path,
            column="Result_time",
            first_line=first,
            bad=sink_r,
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


# ----------------------------------------------------------------------------- waveforms


@dataclass(frozen=True)
class SegmentInfo:
    """One WFDB segment of a visit's lead-II recording (from its header alone)."""

    csn: str
    seg: int
    record: Path  # header path without '.hea'
    fs: float
    n_samples: int
    start: np.datetime64  # datetime64[ms]: base_date + base_time (may carry milliseconds)
    signal_lines: tuple[str, ...] = ()  # the header's signal specification lines

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


def waveform_dir(mcmed_dir: str | os.PathLike, csn: str, lead: str = ECG_LEAD) -> Path:
    """``waveforms/{CSN[-3:]}/{CSN}/{lead}``."""
    csn = str(csn)
    return Path(mcmed_dir) / "waveforms" / csn[-3:] / csn / lead


_TIME_RE = re.compile(r"^(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")
_DATE_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def read_segment_header(hea: str | os.PathLike, *, csn: str = "", seg: int = 0) -> SegmentInfo:
    """Parse the record line of a single-signal WFDB header (fs, length, base date/time).

    Raises MCMEDError naming the file and field when something required is missing.
    Parsed by hand (a few microseconds) because the build reads one header per segment.
    """
    hea = Path(hea)
    try:
        with open(hea, encoding="latin-1") as f:
            lines = [ln.strip() for ln in f]
    except OSError as e:
        raise MCMEDError(f"{hea}: cannot read header ({e.strerror})") from None
    rec_line = next((ln for ln in lines if ln and not ln.startswith("#")), None)
    if rec_line is None:
        raise MCMEDError(f"{hea}: empty header (expected a WFDB record line)")
    parts = rec_line.split()
    if len(parts) < 4:
        raise MCMEDError(
            f"{hea}: record line {rec_line!r} lacks fs and length "
            "(expected 'name nsig fs nsamp [base_time base_date]')"
        )
    fs_txt = parts[2].split("/")[0].split("(")[0]
    try:
        fs = float(fs_txt)
        n_samples = int(parts[3])
    except ValueError:
        raise MCMEDError(f"{hea}: record line {rec_line!r}: cannot read fs/length") from None
    if len(parts) < 6:
        raise MCMEDError(
            f"{hea}: no base_time/base_date on the record line "
            "(expected 'HH:MM:SS DD/MM/YYYY': MC-MED segments need their start)"
        )
    mt, md = _TIME_RE.match(parts[4]), _DATE_RE.match(parts[5])
    if mt is None or md is None:
        raise MCMEDError(
            f"{hea}: base time/date {parts[4]} {parts[5]!r} not in 'HH:MM:SS DD/MM/YYYY' form"
        )
    day, month, year = (int(g) for g in md.groups())
    hh, mm = int(mt.group(1)), int(mt.group(2))
    sec = float(mt.group(3))
    try:
        day0 = np.datetime64(f"{year:04d}-{month:02d}-{day:02d}", "D")
    except ValueError:
        raise MCMEDError(f"{hea}: base_date {parts[5]} is not a valid date") from None
    if hh > 23 or mm > 59 or sec >= 61:
        raise MCMEDError(f"{hea}: base_time {parts[4]} is not a valid time of day")
    ms = int(round(((hh * 60 + mm) * 60 + sec) * 1000))
    start = day0.astype("datetime64[ms]") + np.timedelta64(ms, "ms")
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    return SegmentInfo(
        csn=str(csn),
        seg=int(seg),
        record=hea.with_suffix(""),
        fs=fs,
        n_samples=n_samples,
        start=start,
        signal_lines=tuple(body[1:]),
    )


def list_segments(
    mcmed_dir: str | os.PathLike, csn: str, lead: str = ECG_LEAD
) -> tuple[list[SegmentInfo], list[tuple[str, str]]]:
    """A visit's segments sorted by number, plus (record, reason) for unreadable headers.

    Returns ``([], [])`` when the visit has no recording of ``lead`` (many MC-MED visits).
    """
    d = waveform_dir(mcmed_dir, csn, lead)
    if not d.is_dir():
        return [], []
    segs, errors = [], []
    prefix = f"{csn}_"
    for hea in d.glob("*.hea"):
        stem = hea.stem
        if not stem.startswith(prefix) or not stem[len(prefix) :].isdigit():
            errors.append(
                (
                    str(hea.with_suffix("")),
                    f"unexpected record name (expected {csn}_<segment number>)",
                )
            )
            continue
        try:
            segs.append(read_segment_header(hea, csn=csn, seg=int(stem[len(prefix) :])))
        except MCMEDError as e:
            errors.append((str(hea.with_suffix("")), str(e)))
    segs.sort(key=lambda s: s.seg)
    return segs, errors


def _dat_not_found(dat: Path, info: SegmentInfo) -> str:
    return f"{dat}: data file not found (header {info.record}.hea names it)"


def check_segment(info: SegmentInfo, *, expected_fs: float | None = ECG_FS_HZ) -> str | None:
    """Cheap checks without reading samples: None if fine, else a one-line problem.

    The header's fs must be ``expected_fs``; a single-signal format-16 data file must
    hold at least the header's number of samples (a truncated download fails here).
    """
    if expected_fs is not None and abs(info.fs - expected_fs) > 1e-6:
        return (
            f"{info.record}.hea: fs {info.fs:g} Hz, expected {expected_fs:g} Hz "
            f"for MC-MED lead {ECG_LEAD}"
        )
    if len(info.signal_lines) == 1:
        f = info.signal_lines[0].split()
        if len(f) >= 2 and f[1] == "16":
            dat = info.record.parent / f[0]
            try:
                size = dat.stat().st_size
            except OSError:
                return _dat_not_found(dat, info)
            if size < 2 * info.n_samples:
                return f"{dat}: truncated: holds {size // 2} samples, header says {info.n_samples}"
    return None


def read_segment(
    info: SegmentInfo, *, expected_fs: float | None = ECG_FS_HZ, checked: bool = False
) -> np.ndarray:
    """Samples of one segment in mV (float32, NaN where WFDB marks samples invalid).

    Raises MCMEDError with :func:`check_segment`'s message when the header's fs is not
    ``expected_fs`` (MC-MED's lead II is 500 Hz: another rate means a broken header, not
    a resampling job) or the data file is missing or shorter than its header says
    (truncated download). ``checked=True``: the caller has just run ``check_segment``
    on ``info`` (with this ``expected_fs``) and got None, so it is not repeated.
    """
    from anyecg_edge.io import RecordError, read_record

    problem = None if checked else check_segment(info, expected_fs=expected_fs)
    if problem is not None:
        raise MCMEDError(problem)
    x = _read_fmt16(info)
    if x is None:  # not the plain layout: the general reader handles (or refuses) it
        try:
            rec = read_record(info.record.with_suffix(".hea"), lead=ECG_LEAD)
        except (RecordError, OSError, ValueError) as e:
            msg = str(e)  # RecordError already names the file
            raise MCMEDError(msg if str(info.record) in msg else f"{info.record}: {msg}") from None
        x = np.asarray(rec.signal_mv, dtype=np.float32).reshape(-1)
    if x.size != info.n_samples:
        raise MCMEDError(
            f"{info.record}.dat: {x.size} samples, header says {info.n_samples} "
            "(truncated or corrupt data file)"
        )
    return x


_GAIN_RE = re.compile(r"^([0-9.eE+-]+)(?:\((-?\d+)\))?(?:/(\S+))?$")
_UNIT_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_WFDB_INVALID_16 = -32768


def _read_fmt16(info: SegmentInfo) -> np.ndarray | None:
    """Fast path for a single-signal, format-16 WFDB record (MC-MED's lead-II files).

    Same numbers as wfdb.rdrecord(physical=True) -> float32, without its per-record
    overhead (~5 ms, mostly header parsing through pandas). None when the header is not
    that simple layout (multi-signal, other formats, byte offsets, skew, a lead name
    other than II); the caller then uses the general reader. The data file's presence
    and length are :func:`check_segment`'s to check.
    """
    if len(info.signal_lines) != 1:
        return None
    f = info.signal_lines[0].split()
    if len(f) < 3 or f[1] != "16":
        return None
    desc = " ".join(f[8:]) if len(f) > 8 else ""
    if desc.upper() not in ("II", "MLII"):
        return None
    m = _GAIN_RE.match(f[2])
    if m is None:
        return None
    gain = float(m.group(1)) or 200.0  # WFDB: gain 0 means the default 200 adu/unit
    adc_zero = int(f[4]) if len(f) > 4 else 0
    baseline = adc_zero if m.group(2) is None else int(m.group(2))  # default: adc_zero
    scale = _UNIT_MV.get((m.group(3) or "mV").lower())
    if scale is None:
        return None
    # check_segment (run by read_segment) has seen the data file hold n_samples; a file
    # cut since then reads short and fails read_segment's length check.
    dat = info.record.parent / f[0]
    try:
        d = np.fromfile(dat, dtype="<i2", count=info.n_samples)
    except OSError:
        raise MCMEDError(_dat_not_found(dat, info)) from None
    # (d - baseline) / gain * scale in float64, in place (same arithmetic, fewer copies).
    x = d.astype(np.float64)
    x -= baseline
    x /= gain
    if scale != 1.0:
        x *= scale
    invalid = d == _WFDB_INVALID_16
    if invalid.any():
        x[invalid] = np.nan
    return x.astype(np.float32)
