"""MC-MED's lead-II waveforms (see :mod:`.mcmed`): a visit's WFDB segments, their headers
(fs, length, start), the checks a segment must pass and its samples in mV.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anyecg_edge.training.data.mcmed_csv import MCMEDError

__all__ = [
    "ECG_FS_HZ",
    "ECG_LEAD",
    "SegmentInfo",
    "check_segment",
    "list_segments",
    "read_segment",
    "read_segment_header",
    "waveform_dir",
]

ECG_LEAD = "II"
ECG_FS_HZ = 500.0


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
