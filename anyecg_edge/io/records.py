"""Read one ECG lead from a record file (WFDB, CSV, EDF) as float32 millivolts.

Formats, chosen by extension / presence:

* WFDB: ``path`` with or without ``.hea`` (also ``.dat``/``.mat`` beside a ``.hea``),
  read with ``wfdb`` (an optional dependency: ``pip install "anyecg-edge[edge]"``).
* CSV (``.csv``, ``.tsv``, ``.txt``): needs an explicit ``fs``. Either a header row
  naming the leads (``I,II`` or with units ``II_mV``, ``II (uV)``, ``II [mV]``) or a
  single unnamed column. Time/index columns (``time``, ``t``, ``timestamp``,
  ``sample``...) are skipped. Empty cells are missing samples (NaN).
* NumPy (``.npy``): a 1-D array of one lead's samples; needs an explicit ``fs`` (and
  ``units`` if not mV).
* EDF (``.edf``): read by a small reader here (numpy only). wfdb's ``read_edf``
  averages faster channels down to the slowest rate (with an arithmetic slip), which
  would corrupt ECG in the usual mixed-rate EDF files, so it is not used. EDF+D
  (discontinuous) files are refused; BDF is not supported.

Physical units are converted to mV from the header (mV, uV/µV, V, nV). Files without
one (an unlabelled CSV column, ``.npy``) are in mV unless ``units`` says otherwise;
``units="auto"`` infers mV, uV or V from the amplitude and refuses when it is ambiguous. Lead names
match case-insensitively, ignoring an ``ECG``/``EKG``/``lead`` prefix, and MIT-BIH's
``MLII`` stands in for ``II`` (and vice versa). Every failure raises
:class:`RecordError` with one line naming the file and what was expected.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.preprocess import check_fs

__all__ = [
    "Record",
    "RecordError",
    "MissingDependencyError",
    "list_leads",
    "read_record",
    "to_millivolts",
    "SUPPORTED_FORMATS",
    "UNIT_CHOICES",
]

log = logging.getLogger(__name__)

SUPPORTED_FORMATS = (
    "a WFDB record (.hea + signal file), a .csv/.tsv/.txt table, a 1-D .npy array or an .edf file"
)

#: What ``units`` (``--units``) may say for files that do not state their unit.
UNIT_CHOICES = ("mV", "uV", "V", "auto")

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_WFDB_SIGNAL_SUFFIXES = {".dat", ".mat"}
_TIME_COLUMNS = {"time", "t", "time_s", "times", "timestamp", "seconds", "sample", "samples"}
_TIME_COLUMNS |= {"index", "idx", "ms", "time_ms", "sample_index"}

# Scale to mV per unit spelling (lower-cased). 'µ' (micro sign) and 'μ' (Greek mu) both occur.
_UNIT_TO_MV = {
    "mv": 1.0,
    "millivolt": 1.0,
    "millivolts": 1.0,
    "uv": 1e-3,
    "µv": 1e-3,
    "μv": 1e-3,
    "microvolt": 1e-3,
    "microvolts": 1e-3,
    "v": 1e3,
    "volt": 1e3,
    "volts": 1e3,
    "nv": 1e-6,
}

# Preference when the caller names no lead: the single-lead ECGFounder was pretrained on
# lead I; MC-MED and most monitors give lead II (MIT-BIH: MLII).
_AUTO_LEAD_ORDER = ("i", "ii")


class RecordError(ValueError):
    """A record file cannot be read as asked; the message is one line naming the file."""


class MissingDependencyError(RecordError, ImportError):
    """An optional package needed for this file format is not installed."""


@dataclass
class Record:
    """One ECG lead read from a file.

    ``signal_mv`` is float32 1-D in millivolts (NaN where the file marks samples
    missing); ``fs`` in Hz; ``lead`` the lead's name as written in the file;
    ``source`` the file path; ``units`` the unit of ``signal_mv`` (always 'mV');
    ``note`` says how the lead was chosen and what was converted, if anything.
    """

    signal_mv: np.ndarray
    fs: float
    lead: str
    source: str
    units: str = "mV"
    note: str = ""

    @property
    def duration_s(self) -> float:
        """Length of the signal in seconds."""
        return self.signal_mv.shape[0] / self.fs


# ---------------------------------------------------------------------------------------
# helpers


def _import_wfdb():
    try:
        import wfdb  # optional and heavy (pulls pandas/matplotlib): import on use
    except ImportError:
        raise MissingDependencyError(
            'reading WFDB records needs the optional "wfdb" package: '
            'pip install "anyecg-edge[edge]"'
        ) from None
    return wfdb


def _unit_scale(unit: str | None, src: str, channel: str) -> tuple[float, str]:
    """(factor to mV, unit as written) for a header unit; None/'' means mV (WFDB default)."""
    if unit is None or not str(unit).strip():
        return 1.0, "mV"
    key = str(unit).strip().replace(" ", "").lower()
    if key not in _UNIT_TO_MV:
        raise RecordError(
            f"{src}: channel {channel!r} has units {unit!r}; expected mV, uV (µV) or V"
        )
    return _UNIT_TO_MV[key], str(unit).strip()


def _norm_lead(name: str) -> str:
    s = str(name).strip().lower()
    stripped = re.sub(r"^(ecg|ekg|lead)[\s_\-:]*", "", s)
    return stripped or s


def _alias(norm: str) -> str | None:
    """MIT-BIH 'modified limb leads': MLII <-> II (also MLI/MLIII)."""
    if norm in ("i", "ii", "iii"):
        return "ml" + norm
    if norm in ("mli", "mlii", "mliii"):
        return norm[2:]
    return None


def _choose_lead(names: list[str], lead: str | None, src: str) -> tuple[int, str]:
    """Index of the lead to read, and a note saying how it was chosen."""
    if not names:
        raise RecordError(f"{src}: the record has no signal channels")
    norms = [_norm_lead(n) for n in names]
    if lead is None:
        if len(names) == 1:
            return 0, ""
        for want in _AUTO_LEAD_ORDER:
            for cand in (want, _alias(want)):
                if cand in norms:
                    i = norms.index(cand)
                    note = f"lead {names[i]} chosen automatically from {', '.join(names)}"
                    log.info("%s: %s", src, note)
                    return i, note
        raise RecordError(
            f"{src}: has leads {', '.join(names)} but none is I or II; choose one with "
            "lead= (--lead)"
        )
    want = _norm_lead(lead)
    if want in norms:
        return norms.index(want), ""
    alt = _alias(want)
    if alt is not None and alt in norms:
        i = norms.index(alt)
        note = f"lead {lead} requested; using {names[i]} (same limb lead)"
        log.info("%s: %s", src, note)
        return i, note
    raise RecordError(f"{src}: no lead {lead!r}; available leads: {', '.join(names)}")


def _check_fs_arg(fs: float | None, header_fs: float, src: str) -> float:
    try:
        header_fs = check_fs(header_fs)
    except SignalError as exc:
        raise RecordError(f"{src}: header sampling rate is not usable: {exc}") from None
    if fs is not None:
        fs_arg = _check_fs_value(fs, src)
        if not math.isclose(fs_arg, header_fs, rel_tol=1e-6):
            raise RecordError(
                f"{src}: fs={fs_arg:g} Hz was given but the file header says "
                f"{header_fs:g} Hz; drop fs or fix it"
            )
    return header_fs


def _check_fs_value(fs: float, src: str) -> float:
    try:
        return check_fs(fs)
    except SignalError as exc:
        raise RecordError(f"{src}: {exc}") from None


def _check_units_arg(units: str | None, file_unit: str, src: str, channel: str) -> None:
    if units is None or units == "auto":  # auto: a unit the file states is the answer
        return
    a = _unit_scale(units, src, channel)[0]
    b = _unit_scale(file_unit, src, channel)[0]
    if a != b:
        raise RecordError(
            f"{src}: units={units!r} was given but channel {channel!r} is stored in "
            f"{file_unit!r}; drop units or fix it"
        )


def _finish(
    values: np.ndarray, scale: float, fs: float, lead: str, src: str, notes: list[str]
) -> Record:
    sig = np.asarray(values, dtype=np.float64).reshape(-1)
    if sig.size == 0:
        raise RecordError(f"{src}: lead {lead} has no samples")
    if not np.isfinite(sig).any():
        raise RecordError(f"{src}: lead {lead} is entirely missing (all samples NaN)")
    with np.errstate(over="ignore", invalid="ignore"):
        sig = (sig * scale).astype(np.float32)
    n_inf = int(np.isinf(sig).sum())
    if n_inf:
        # (an inf cell, or a header gain so small that mV overflow float32): no gate or
        # filter can make sense of it, and it must not pass for a signal.
        raise RecordError(
            f"{src}: lead {lead} has {n_inf} infinite sample values in mV (an 'inf' in "
            "the file, or a gain/unit that does not fit the data)"
        )
    return Record(
        signal_mv=sig,
        fs=fs,
        lead=lead,
        source=src,
        units="mV",
        note="; ".join(n for n in notes if n),
    )


def _unit_note(unit: str, scale: float) -> str:
    return "" if scale == 1.0 else f"converted from {unit} to mV"


# Plausible peak-to-peak amplitude of a body-surface ECG lead per 10 s, in mV (the quality
# gate's band): the same signal is 1e3 x that in uV and 1e-3 x in V. The ranges do not
# overlap; an amplitude in a gap between them is ambiguous and refused.
_AUTO_RANGES = (("mV", 1.0), ("uV", 1e-3), ("V", 1e3))
_AUTO_CHUNK_S = 10.0


def _amplitude_evidence(values: np.ndarray, fs: float) -> float:
    """Median over 10 s chunks of the 0.5-99.5 percentile range (a few spikes or a short
    artefact do not move it); NaN if the signal has no finite samples."""
    if values.size == 0:
        return math.nan
    n = max(1, min(values.size, round(_AUTO_CHUNK_S * fs)))
    k = max(1, values.size // n)
    chunks = values[: k * n].reshape(k, n)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN chunks
        lo, hi = np.nanpercentile(chunks, [0.5, 99.5], axis=1)
        return float(np.nanmedian(hi - lo))


def _infer_unit(values: np.ndarray, fs: float, src: str, lead: str) -> tuple[float, str, str]:
    """(scale to mV, unit, note) from the amplitude, or RecordError naming the evidence."""
    from anyecg_edge.signal.quality import MAX_PTP_MV, MIN_PTP_MV

    amp = _amplitude_evidence(values, fs)
    if not math.isfinite(amp):
        raise RecordError(f"{src}: units auto (--units auto): lead {lead} has no finite samples")
    for unit, scale in _AUTO_RANGES:
        if MIN_PTP_MV / scale <= amp <= MAX_PTP_MV / scale:
            note = f"units inferred as {unit} (median peak-to-peak {amp:.4g} per 10 s)"
            log.info("%s: %s", src, note)
            return scale, unit, note
    ranges = ", ".join(f"{u} {MIN_PTP_MV / sc:g}-{MAX_PTP_MV / sc:g}" for u, sc in _AUTO_RANGES)
    raise RecordError(
        f"{src}: units auto (--units auto) cannot tell the unit of lead {lead}: median "
        f"peak-to-peak amplitude {amp:.4g} per 10 s fits no ECG range ({ranges}); pass the "
        "unit (--units mV, uV or V)"
    )


def _is_auto(units: str | None) -> bool:
    return isinstance(units, str) and units.strip().lower() == "auto"


def to_millivolts(
    values: np.ndarray, units: str | None, fs: float, *, source: str, lead: str
) -> tuple[np.ndarray, str]:
    """(float32 samples in mV, note) for samples in ``units`` (None: mV; "auto": inferred
    from the amplitude, RecordError when ambiguous). ``fs`` is checked."""
    fs = _check_fs_value(fs, source)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if _is_auto(units):
        scale, unit, note = _infer_unit(x, fs, source, lead)
    else:
        scale, unit = _unit_scale(units, source, lead)
        note = _unit_note(unit, scale)
    return (x * scale).astype(np.float32), note


# ---------------------------------------------------------------------------------------
# format detection


def _detect_format(path: str | Path) -> tuple[str, Path]:
    """('wfdb'|'csv'|'npy'|'edf', path to use) or RecordError."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".hea":
        if not p.is_file():
            raise RecordError(f"{p}: no such file (expected a WFDB header)")
        return "wfdb", p.with_suffix("")
    if suffix in _WFDB_SIGNAL_SUFFIXES and p.with_suffix(".hea").is_file():
        return "wfdb", p.with_suffix("")
    if Path(str(p) + ".hea").is_file():
        return "wfdb", p
    if not p.exists():
        raise RecordError(f"{p}: no such file (expected {SUPPORTED_FORMATS})")
    if p.is_dir():
        raise RecordError(f"{p}: is a directory (expected {SUPPORTED_FORMATS})")
    if suffix in _CSV_SUFFIXES:
        return "csv", p
    if suffix == ".npy":
        return "npy", p
    if suffix == ".edf":
        return "edf", p
    raise RecordError(
        f"{p}: unknown record format {suffix or '(no extension)'!r}; expected {SUPPORTED_FORMATS}"
    )


# ---------------------------------------------------------------------------------------
# WFDB


def _wfdb_header(base: Path):
    wfdb = _import_wfdb()
    fs_written = _check_wfdb_header_text(base)
    try:
        hdr = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises many types; report one line
        raise RecordError(f"{base}.hea: cannot read WFDB header: {_one_line(exc)}") from None
    if fs_written is not None and not math.isclose(float(hdr.fs), fs_written, rel_tol=1e-9):
        # wfdb put its default in place of a number it could not read: never use it.
        raise RecordError(
            f"{base}.hea: sampling frequency {fs_written:g} Hz was read as {float(hdr.fs):g}; "
            "write it as a plain decimal number"
        )
    return wfdb, hdr


# A plain decimal number, as the WFDB header format writes them (Python's float() also
# takes "1_0", "nan" or non-ASCII digits, which wfdb reads differently or not at all).
_HEADER_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _header_number(token: str) -> float | None:
    return float(token) if _HEADER_NUMBER.fullmatch(token) else None


def _check_wfdb_header_text(base: Path) -> float | None:
    """Check the header's numbers before wfdb reads it: wfdb's header pattern skips a
    field it cannot match and uses its default instead (fs -500 or nan read as 250 Hz,
    a missing .dat gain as 200), so a broken header gave a plausible, wrong record.

    Record line: ``name[/segments] n_sig [fs[/counter[(base)]] [n_samples ...]]``; signal
    line: ``file format[...] [gain[(baseline)][/units] ...]`` (PhysioNet header(5))."""
    path = Path(f"{base}.hea")
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise RecordError(f"{path}: cannot read: {_one_line(exc)}") from None
    lines = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise RecordError(f"{path}: empty WFDB header (expected a record line)")
    rec = lines[0]
    fs = None
    if len(rec) >= 3:
        fs = _header_number(rec[2].split("/", 1)[0])
        if fs is None or not math.isfinite(fs) or fs <= 0:
            raise RecordError(
                f"{path}: sampling frequency {rec[2]!r} in the record line must be a "
                "finite number > 0 (Hz)"
            )
    if len(rec) >= 4:
        n = _header_number(rec[3])
        if n is None or not math.isfinite(n) or n < 0 or n != int(n):
            raise RecordError(
                f"{path}: number of samples {rec[3]!r} in the record line must be a "
                "whole number >= 0"
            )
    if "/" in rec[0]:
        return fs  # a multi-segment record: its lines name segments, not signals
    for k, sig in enumerate(lines[1:], start=1):
        if len(sig) < 3:
            continue  # no gain field (wfdb assumes 200 per the spec)
        gain_txt = re.split(r"[(/]", sig[2], maxsplit=1)[0]
        gain = _header_number(gain_txt)
        if gain is None or not math.isfinite(gain) or gain == 0:
            name = sig[8] if len(sig) > 8 else f"signal {k}"
            raise RecordError(
                f"{path}: ADC gain {sig[2]!r} of {name} must be a finite non-zero number "
                "(0 marks an uncalibrated signal: no mV scale)"
            )
    return fs


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _read_wfdb(base: Path, lead, fs, units) -> Record:
    src = str(base)
    wfdb, hdr = _wfdb_header(base)
    names = list(hdr.sig_name or [])
    idx, note = _choose_lead(names, lead, src)
    # A channel with several samples per frame runs at that multiple of the frame rate.
    spf = (hdr.samps_per_frame or [1] * len(names))[idx] or 1
    ch_fs = _check_fs_arg(fs, float(hdr.fs) * spf, src)
    try:
        # smooth_frames=False keeps a faster channel at its own rate (True would average
        # it down to the frame rate).
        rec = wfdb.rdrecord(str(base), channels=[idx], physical=True, smooth_frames=False)
    except Exception as exc:
        raise RecordError(f"{src}: cannot read WFDB signal: {_one_line(exc)}") from None
    unit = (rec.units or [None])[0]
    scale, unit_str = _unit_scale(unit, src, names[idx])
    _check_units_arg(units, unit_str, src, names[idx])
    if not rec.e_p_signal:
        raise RecordError(f"{src}: WFDB record has no physical signal for lead {names[idx]}")
    values = rec.e_p_signal[0]
    return _finish(values, scale, ch_fs, names[idx], src, [note, _unit_note(unit_str, scale)])


# ---------------------------------------------------------------------------------------
# CSV

_HEADER_UNIT = re.compile(
    r"^(?P<name>.+?)\s*(?:[\(\[]\s*(?P<u1>[^\)\]]+?)\s*[\)\]]|_(?P<u2>(?i:mv|uv|µv|μv)|V))$"
)


def _split_header_cell(cell: str) -> tuple[str, str | None]:
    cell = cell.strip()
    m = _HEADER_UNIT.match(cell)
    if m:
        unit = m.group("u1") or m.group("u2")
        if unit.replace(" ", "").lower() in _UNIT_TO_MV:
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
        raise RecordError(f"{path}: cannot read: {_one_line(exc)}") from None
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


def _read_csv(path: Path, lead, fs, units) -> Record:
    src = str(path)
    if fs is None:
        raise RecordError(f"{src}: CSV files carry no sampling rate; pass fs (--fs) in Hz")
    fs_val = _check_fs_value(fs, src)
    rows, line0 = _csv_rows(path)
    names, col_units, start, cols = _csv_layout(path, rows)
    if names == ["unnamed"] and lead is not None:
        idx, note, label = 0, f"single unnamed column taken as lead {lead}", str(lead)
    else:
        idx, note = _choose_lead(names, lead, src)
        label = names[idx]
    file_unit = col_units[idx]
    if file_unit is not None:
        _check_units_arg(units, file_unit, src, label)
        unit = file_unit
    else:
        unit = units if units is not None else "mV"
    if unit != "auto":  # a bad unit name fails before the file is parsed
        scale, unit_str = _unit_scale(unit, src, label)
    values = _csv_column(path, rows, start, cols[idx], len(rows[0]), line0, label)
    if unit == "auto":
        scale, _, unit_note = _infer_unit(values, fs_val, src, label)
    else:
        unit_note = _unit_note(unit_str, scale)
    return _finish(values, scale, fs_val, label, src, [note, unit_note])


# ---------------------------------------------------------------------------------------
# NumPy


def _read_npy(path: Path, lead, fs, units) -> Record:
    src = str(path)
    if fs is None:
        raise RecordError(f"{src}: .npy arrays carry no sampling rate; pass fs (--fs) in Hz")
    fs_val = _check_fs_value(fs, src)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise RecordError(f"{src}: not a readable .npy array: {_one_line(exc)}") from None
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
        scale, _, unit_note = _infer_unit(values, fs_val, src, label)
    else:
        scale, unit_str = _unit_scale(units, src, label)
        unit_note = _unit_note(unit_str, scale)
    return _finish(values, scale, fs_val, label, src, [unit_note])


# ---------------------------------------------------------------------------------------
# EDF


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
        raise RecordError(f"{src}: not a readable EDF file: {_one_line(exc)}") from None
    if fixed[:8].decode("latin-1").strip() != "0":
        raise RecordError(f"{src}: not an EDF file (version field {fixed[:8]!r}; BDF unsupported)")
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
        raise RecordError(f"{src}: malformed EDF header field: {_one_line(exc)}") from None
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


def _read_edf(path: Path, lead, fs, units) -> Record:
    src = str(path)
    h = _edf_header(path)
    chans = _edf_leads(h)
    names = [h.labels[i] for i in chans]
    k, note = _choose_lead(names, lead, src)
    ch = chans[k]
    ch_fs = _check_fs_arg(fs, h.samples_per_record[ch] / h.record_s, src)
    scale, unit_str = _unit_scale(h.units[ch], src, names[k])
    _check_units_arg(units, unit_str, src, names[k])
    total = int(h.samples_per_record.sum())
    raw = np.fromfile(path, dtype="<i2", offset=h.header_bytes)
    n_rec = min(h.n_records, raw.size // total)
    if n_rec <= 0:
        raise RecordError(f"{src}: EDF file holds no complete data record")
    data = raw[: n_rec * total].reshape(n_rec, total)
    start = int(h.samples_per_record[:ch].sum())
    digital = data[:, start : start + int(h.samples_per_record[ch])].reshape(-1).astype(np.float64)
    dspan = h.dig_max[ch] - h.dig_min[ch]
    if dspan == 0:
        raise RecordError(f"{src}: EDF channel {names[k]!r} has digital min == max")
    gain = (h.phys_max[ch] - h.phys_min[ch]) / dspan
    values = h.phys_min[ch] + (digital - h.dig_min[ch]) * gain
    return _finish(values, scale, ch_fs, names[k], src, [note, _unit_note(unit_str, scale)])


# ---------------------------------------------------------------------------------------
# public API


def list_leads(path: str | Path) -> list[str]:
    """Lead names stored in a record file, in file order (CSV: ['unnamed'] if no header)."""
    fmt, p = _detect_format(path)
    if fmt == "wfdb":
        _, hdr = _wfdb_header(p)
        return list(hdr.sig_name or [])
    if fmt == "csv":
        rows, _ = _csv_rows(p)
        return _csv_layout(p, rows)[0]
    if fmt == "npy":
        return ["unnamed"]
    h = _edf_header(p)
    return [h.labels[i] for i in _edf_leads(h)]


def read_record(
    path: str | Path,
    *,
    lead: str | None = None,
    fs: float | None = None,
    units: str | None = None,
) -> Record:
    """Read one lead of a WFDB, CSV, .npy or EDF record as a float32 mV :class:`Record`.

    ``lead``: name (case-insensitive; MLII <-> II); None takes the only channel, else
    lead I, else II/MLII (the choice is logged and put in ``Record.note``). A .npy array
    or an unnamed CSV column is one lead, labelled ``lead`` if given.
    ``fs``: required for CSV and .npy; for WFDB/EDF it must agree with the header.
    ``units``: unit of an unlabelled CSV column or a .npy array (default mV; "auto"
    infers mV/uV/V from the amplitude and refuses when ambiguous, naming it); for files
    whose header states the unit it must agree with it ("auto" takes the header's).
    """
    fmt, p = _detect_format(path)
    if _is_auto(units):
        units = "auto"
    if fmt == "wfdb":
        return _read_wfdb(p, lead, fs, units)
    if fmt == "csv":
        return _read_csv(p, lead, fs, units)
    if fmt == "npy":
        return _read_npy(p, lead, fs, units)
    return _read_edf(p, lead, fs, units)
