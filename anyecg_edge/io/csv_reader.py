"""CSV / TSV / TXT tables: a header row naming the leads (with optional units) or one
unnamed column; time/index columns skipped; empty cells are missing samples."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from anyecg_edge.io.base import (
    Record,
    RecordError,
    check_fs_value,
    choose_lead,
    finish_record,
    one_line,
)
from anyecg_edge.io.units import (
    UNIT_TO_MV,
    check_units_arg,
    conversion_note,
    infer_unit,
    unit_scale,
)

_TIME_COLUMNS = {"time", "t", "time_s", "times", "timestamp", "seconds", "sample", "samples"}
_TIME_COLUMNS |= {"index", "idx", "ms", "time_ms", "sample_index"}

_HEADER_UNIT = re.compile(
    r"^(?P<name>.+?)\s*(?:[\(\[]\s*(?P<u1>[^\)\]]+?)\s*[\)\]]|_(?P<u2>(?i:mv|uv|µv|μv)|V))$"
)


def _split_header_cell(cell: str) -> tuple[str, str | None]:
    cell = cell.strip()
    m = _HEADER_UNIT.match(cell)
    if m:
        unit = m.group("u1") or m.group("u2")
        if unit.replace(" ", "").lower() in UNIT_TO_MV:
            return m.group("name").strip(), unit
    return cell, None


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _csv_rows(path: Path) -> tuple[list[list[str]], int]:
    """All non-comment rows and the 1-based line number of the first one."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise RecordError(f"{path}: cannot read: {one_line(exc)}") from None
    lines = text.splitlines()
    first = 0
    while first < len(lines) and (
        not lines[first].strip() or lines[first].lstrip().startswith("#")
    ):
        first += 1
    if first == len(lines):
        raise RecordError(f"{path}: CSV file is empty (expected a header row or numbers)")
    head = lines[first]
    delim = max((",", ";", "\t"), key=head.count)
    if head.count(delim) == 0:
        delim = ","
    rows = list(csv.reader(lines[first:], delimiter=delim))
    return rows, first + 1


def _csv_layout(
    path: Path, rows: list[list[str]]
) -> tuple[list[str], list[str | None], int, list[int]]:
    """(lead names, units per lead, index of first data row, column index per lead)."""
    header = [c.strip() for c in rows[0]]
    has_header = not all(_is_number(c) or c == "" for c in header)
    if has_header:
        names, units, cols = [], [], []
        for j, cell in enumerate(header):
            name, unit = _split_header_cell(cell)
            if name.lower() in _TIME_COLUMNS or not name:
                continue
            names.append(name)
            units.append(unit)
            cols.append(j)
        if not names:
            raise RecordError(f"{path}: CSV header {header!r} names no lead columns")
        return names, units, 1, cols
    if len(header) != 1:
        raise RecordError(
            f"{path}: CSV has {len(header)} columns but no header row naming the leads "
            "(add a first row such as 'I,II')"
        )
    return ["unnamed"], [None], 0, [0]


def _decimal_comma_hint(row: list[str], ncols: int) -> str:
    """A one-column file written with decimal commas ("0,125") reads as two cells a row."""
    if ncols != 1 or len(row) != 2:
        return ""
    whole, frac = row
    if whole.strip().lstrip("+-").isdigit() and frac.strip().isdigit():
        return f" ({','.join(row)!r} looks like a decimal comma: write numbers with '.')"
    return ""


def _csv_column(path: Path, rows, start: int, col: int, ncols: int, line0: int, name: str):
    n = len(rows) - start
    out = np.empty(n, dtype=np.float64)
    for k in range(n):
        row = rows[start + k]
        if len(row) != ncols:
            if not any(c.strip() for c in row):  # blank line
                out[k] = np.nan
                continue
            raise RecordError(
                f"{path}: line {line0 + start + k} has {len(row)} cells, expected {ncols}"
                + _decimal_comma_hint(row, ncols)
            )
        cell = row[col].strip()
        if cell == "":
            out[k] = np.nan
            continue
        try:
            out[k] = float(cell)
        except ValueError:
            raise RecordError(
                f"{path}: line {line0 + start + k}, column {col + 1} ({name!r}): "
                f"{cell!r} is not a number"
            ) from None
    # Trailing blank lines are not samples.
    while n and np.isnan(out[n - 1]) and not any(c.strip() for c in rows[start + n - 1]):
        n -= 1
    return out[:n]


def read(path: Path, lead: str | None, fs: float | None, units: str | None) -> Record:
    src = str(path)
    if fs is None:
        raise RecordError(f"{src}: CSV files carry no sampling rate; pass fs (--fs) in Hz")
    fs_val = check_fs_value(fs, src)
    rows, line0 = _csv_rows(path)
    names, col_units, start, cols = _csv_layout(path, rows)
    if names == ["unnamed"] and lead is not None:
        idx, note, label = 0, f"single unnamed column taken as lead {lead}", str(lead)
    else:
        idx, note = choose_lead(names, lead, src)
        label = names[idx]
    file_unit = col_units[idx]
    if file_unit is not None:
        check_units_arg(units, file_unit, src, label)
        unit = file_unit
    else:
        unit = units if units is not None else "mV"
    if unit != "auto":  # a bad unit name fails before the file is parsed
        scale, unit_str = unit_scale(unit, src, label)
    values = _csv_column(path, rows, start, cols[idx], len(rows[0]), line0, label)
    if unit == "auto":
        scale, _, unit_note = infer_unit(values, fs_val, src, label)
    else:
        unit_note = conversion_note(unit_str, scale)
    return finish_record(values, scale, fs_val, label, src, [note, unit_note])


def leads(path: Path) -> list[str]:
    """Lead column names (['unnamed'] for a single column without header)."""
    rows, _ = _csv_rows(path)
    return _csv_layout(path, rows)[0]
