"""EDF (``.edf``), read here with numpy only.

wfdb's ``read_edf`` averages faster channels down to the slowest rate (with an arithmetic
slip), which would corrupt ECG in the usual mixed-rate EDF files, so it is not used. EDF+D
(discontinuous) files are refused; BDF is not supported."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anyecg_edge.io.base import (
    Record,
    RecordError,
    check_fs_arg,
    choose_lead,
    finish_record,
    log,
    one_line,
)
from anyecg_edge.io.units import check_units_arg, conversion_note, unit_scale

_EDF_MAX_SIGNALS = 4096


@dataclass
class _EdfHeader:
    labels: list[str]
    units: list[str]
    phys_min: np.ndarray
    phys_max: np.ndarray
    dig_min: np.ndarray
    dig_max: np.ndarray
    samples_per_record: np.ndarray
    n_records: int
    record_s: float
    header_bytes: int


def _edf_header(path: Path) -> _EdfHeader:
    src = str(path)
    try:
        with path.open("rb") as f:
            fixed = f.read(256)
            if len(fixed) < 256:
                raise RecordError(f"{src}: too short for an EDF header (256 bytes)")
            if fixed[:8].decode("latin-1").strip() != "0":
                raise RecordError(
                    f"{src}: not an EDF file (version field {fixed[:8]!r}, expected '0'; "
                    "BDF unsupported)"
                )
            ns_txt = fixed[252:256].decode("latin-1").strip()
            ns = int(ns_txt)
            if not 0 < ns <= _EDF_MAX_SIGNALS:  # (a huge count would allocate before reading)
                raise RecordError(
                    f"{src}: EDF header declares {ns} signals; expected 1 to {_EDF_MAX_SIGNALS}"
                )
            var = f.read(256 * ns)
    except RecordError:
        raise
    except (ValueError, OSError) as exc:
        raise RecordError(f"{src}: not a readable EDF file: {one_line(exc)}") from None
    if len(var) < 256 * ns:
        raise RecordError(f"{src}: EDF header truncated ({ns} signals declared)")
    reserved = fixed[192:236].decode("latin-1").strip()
    if reserved.startswith("EDF+D"):
        raise RecordError(
            f"{src}: discontinuous EDF+D files are not supported (gaps between records)"
        )

    def fields(offset: int, width: int) -> list[str]:
        return [
            var[offset + i * width : offset + (i + 1) * width].decode("latin-1").strip()
            for i in range(ns)
        ]

    widths = [16, 80, 8, 8, 8, 8, 8, 80, 8, 32]
    offs = np.concatenate(([0], np.cumsum(np.array(widths) * ns)))
    labels = fields(offs[0], 16)
    units = fields(offs[2], 8)
    try:
        pmin, pmax, dmin, dmax = (
            np.array([float(v) for v in fields(offs[k], 8)]) for k in (3, 4, 5, 6)
        )
        spr = np.array([int(v) for v in fields(offs[8], 8)])
        header_bytes = int(fixed[184:192].decode("latin-1").strip())
        n_records = int(fixed[236:244].decode("latin-1").strip())
        record_s = float(fixed[244:252].decode("latin-1").strip())
    except ValueError as exc:
        raise RecordError(f"{src}: malformed EDF header field: {one_line(exc)}") from None
    if not math.isfinite(record_s) or record_s <= 0:
        raise RecordError(f"{src}: EDF data-record duration is {record_s} s; expected > 0")
    if (spr <= 0).any():
        # 0 made the rate 0 Hz and the record layout divide by zero
        bad = [labels[i] for i in np.flatnonzero(spr <= 0)]
        raise RecordError(
            f"{src}: EDF samples per data record must be >= 1; {', '.join(bad)} has "
            f"{int(spr[spr <= 0][0])}"
        )
    for name, arr in (("physical", (pmin, pmax)), ("digital", (dmin, dmax))):
        if not all(np.isfinite(a).all() for a in arr):
            raise RecordError(f"{src}: EDF {name} minimum/maximum must be finite numbers")
    if header_bytes != 256 * (ns + 1):
        raise RecordError(
            f"{src}: EDF header size field says {header_bytes} bytes; {ns} signals need "
            f"{256 * (ns + 1)}"
        )
    if n_records < 0:  # -1 while recording: infer from the file size
        n_records = (path.stat().st_size - header_bytes) // (2 * int(spr.sum()))
    return _EdfHeader(labels, units, pmin, pmax, dmin, dmax, spr, n_records, record_s, header_bytes)


def _edf_leads(h: _EdfHeader) -> list[int]:
    return [i for i, lab in enumerate(h.labels) if lab != "EDF Annotations"]


def read(path: Path, lead: str | None, fs: float | None, units: str | None) -> Record:
    src = str(path)
    h = _edf_header(path)
    chans = _edf_leads(h)
    names = [h.labels[i] for i in chans]
    k, note = choose_lead(names, lead, src)
    ch = chans[k]
    ch_fs = check_fs_arg(fs, h.samples_per_record[ch] / h.record_s, src)
    scale, unit_str = unit_scale(h.units[ch], src, names[k])
    check_units_arg(units, unit_str, src, names[k])
    total = int(h.samples_per_record.sum())
    raw = np.fromfile(path, dtype="<i2", offset=h.header_bytes)
    n_rec = min(h.n_records, raw.size // total)
    if n_rec <= 0:
        raise RecordError(f"{src}: EDF file holds no complete data record")
    cut = ""
    if n_rec < h.n_records:
        # A recording cut by a crash or a full disk: read what it holds, and say so.
        cut = (
            f"the EDF file holds {n_rec} of the {h.n_records} data records its header "
            f"declares ({n_rec * h.record_s:g} of {h.n_records * h.record_s:g} s): cut short"
        )
        log.warning("%s: %s", src, cut)
    data = raw[: n_rec * total].reshape(n_rec, total)
    start = int(h.samples_per_record[:ch].sum())
    digital = data[:, start : start + int(h.samples_per_record[ch])].reshape(-1).astype(np.float64)
    dspan = h.dig_max[ch] - h.dig_min[ch]
    if dspan == 0:
        raise RecordError(f"{src}: EDF channel {names[k]!r} has digital min == max")
    gain = (h.phys_max[ch] - h.phys_min[ch]) / dspan
    values = h.phys_min[ch] + (digital - h.dig_min[ch]) * gain
    return finish_record(
        values, scale, ch_fs, names[k], src, [note, cut, conversion_note(unit_str, scale)]
    )


def leads(path: Path) -> list[str]:
    """Signal labels, without the EDF+ annotation channel."""
    h = _edf_header(path)
    return [h.labels[i] for i in _edf_leads(h)]
