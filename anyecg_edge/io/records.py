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

from pathlib import Path

from anyecg_edge.io import csv_reader, edf_reader, npy_reader, wfdb_reader
from anyecg_edge.io.base import MissingDependencyError, Record, RecordError
from anyecg_edge.io.units import UNIT_CHOICES, is_auto, to_millivolts

__all__ = [
    "Record",
    "RecordError",
    "MissingDependencyError",
    "list_leads",
    "read_record",
    "record_has_fs",
    "to_millivolts",
    "SUPPORTED_FORMATS",
    "UNIT_CHOICES",
]

SUPPORTED_FORMATS = (
    "a WFDB record (.hea + signal file), a .csv/.tsv/.txt table, a 1-D .npy array or an .edf file"
)

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_WFDB_SIGNAL_SUFFIXES = {".dat", ".mat"}
_READERS = {"wfdb": wfdb_reader, "csv": csv_reader, "npy": npy_reader, "edf": edf_reader}


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


def record_has_fs(path: str | Path) -> bool:
    """Does the record state its own sampling rate (WFDB, EDF) or need one given (CSV,
    .npy)? Raises RecordError for a path that is no record."""
    return _detect_format(path)[0] in ("wfdb", "edf")


def list_leads(path: str | Path) -> list[str]:
    """Lead names stored in a record file, in file order (CSV: ['unnamed'] if no header)."""
    fmt, p = _detect_format(path)
    if fmt == "npy":
        return ["unnamed"]
    return _READERS[fmt].leads(p)


def read_record(
    path: str | Path,
    *,
    lead: str | None = None,
    fs: float | None = None,
    units: str | None = None,
) -> Record:
    """Read one lead of a WFDB, CSV, .npy or EDF record as a float32 mV :class:`Record`.

    ``lead``: name (case-insensitive; MLII <-> II); None takes the only channel, else
    lead II/MLII (the lab models' training lead), else I (the choice is logged and put in
    ``Record.note``). A .npy array or an unnamed CSV column is one lead, labelled ``lead``
    if given.
    ``fs``: required for CSV and .npy; for WFDB/EDF it must agree with the header.
    ``units``: unit of an unlabelled CSV column or a .npy array (default mV; "auto"
    infers mV/uV/V from the amplitude and refuses when ambiguous, naming it); for files
    whose header states the unit it must agree with it ("auto" takes the header's).
    """
    fmt, p = _detect_format(path)
    if is_auto(units):
        units = "auto"
    return _READERS[fmt].read(p, lead, fs, units)
