"""WFDB records (``.hea`` + signal file), read with the optional ``wfdb`` package after
checking the header's numbers ourselves."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from anyecg_edge.io.base import (
    MissingDependencyError,
    Record,
    RecordError,
    check_fs_arg,
    choose_lead,
    finish_record,
    one_line,
)
from anyecg_edge.io.units import check_units_arg, conversion_note, unit_scale


def _import_wfdb():
    try:
        import wfdb  # optional and heavy (pulls pandas/matplotlib): import on use
    except ImportError:
        raise MissingDependencyError(
            'reading WFDB records needs the optional "wfdb" package: '
            'pip install "anyecg-edge[edge]"'
        ) from None
    return wfdb


def _wfdb_header(base: Path):
    wfdb = _import_wfdb()
    fs_written = _check_wfdb_header_text(base)
    try:
        hdr = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises many types; report one line
        raise RecordError(f"{base}.hea: cannot read WFDB header: {one_line(exc)}") from None
    if fs_written is not None and not math.isclose(float(hdr.fs), fs_written, rel_tol=1e-9):
        # wfdb put its default in place of a number it could not read: never use it.
        raise RecordError(
            f"{base}.hea: sampling frequency {fs_written:g} Hz was read as {float(hdr.fs):g}; "
            "write it as a plain decimal number"
        )
    if hasattr(hdr, "file_name"):  # a single-segment record (segments are records)
        _check_signal_files(base, hdr)
    return wfdb, hdr


# Bits per sample of each WFDB storage format (signal(5)); 0: a signal not stored. FLAC
# formats (508/516/524) are compressed, so their size says nothing.
_FORMAT_BITS = {"0": 0.0, "8": 8.0, "16": 16.0, "24": 24.0, "32": 32.0, "61": 16.0,
                "80": 8.0, "160": 16.0, "212": 12.0, "310": 32 / 3, "311": 32 / 3}  # fmt: skip
_FLAC_FORMATS = {"508", "516", "524"}


def _check_signal_files(base: Path, hdr: Any) -> None:
    """Each signal's storage format is one WFDB knows, and each signal file holds the
    samples the header promises: wfdb reports a cut file or an unknown format with a
    message about its internals ("could not broadcast...", "'999'")."""
    names = _signal_names(hdr)
    spfs = hdr.samps_per_frame or [1] * len(names)
    offsets = hdr.byte_offset or [None] * len(names)
    files: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names):
        fmt = str(hdr.fmt[k]) if hdr.fmt and hdr.fmt[k] is not None else "16"
        if fmt not in _FORMAT_BITS and fmt not in _FLAC_FORMATS:
            raise RecordError(
                f"{base}.hea: storage format {fmt!r} of {name} is not a WFDB format "
                f"(expected one of {', '.join([*_FORMAT_BITS, *sorted(_FLAC_FORMATS)])})"
            )
        entry = files.setdefault(hdr.file_name[k], {"bits": 0.0, "offset": 0, "flac": False})
        entry["bits"] += _FORMAT_BITS.get(fmt, 0.0) * (spfs[k] or 1)
        entry["offset"] = max(entry["offset"], offsets[k] or 0)
        entry["flac"] |= fmt in _FLAC_FORMATS
    for file_name, entry in files.items():
        if entry["bits"] == 0 and not entry["flac"]:
            continue  # only format-0 signals: nothing stored
        path = base.parent / file_name
        if not path.is_file():
            raise RecordError(f"{path}: missing (the signal file {base.name}.hea names)")
        if entry["flac"] or hdr.sig_len is None:
            continue
        size = path.stat().st_size
        need = entry["offset"] + math.floor(hdr.sig_len * entry["bits"] / 8)
        if size < need:
            have = max(0, math.floor((size - entry["offset"]) * 8 / entry["bits"]))
            raise RecordError(
                f"{path}: holds {have} of the {hdr.sig_len} samples per signal that "
                f"{base.name}.hea promises ({size} bytes, {need} needed): the file is cut short"
            )


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
        raise RecordError(f"{path}: cannot read: {one_line(exc)}") from None
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


def _signal_names(hdr: Any) -> list[str]:
    """The header's signal names; a signal line without a description (allowed by
    header(5)) is named by its position, "signal K", so it can be listed and chosen."""
    return [str(n) if n else f"signal {k}" for k, n in enumerate(hdr.sig_name or [], start=1)]


def read(base: Path, lead: str | None, fs: float | None, units: str | None) -> Record:
    src = str(base)
    wfdb, hdr = _wfdb_header(base)
    names = _signal_names(hdr)
    idx, note = choose_lead(names, lead, src)
    # A channel with several samples per frame runs at that multiple of the frame rate.
    spf = (hdr.samps_per_frame or [1] * len(names))[idx] or 1
    ch_fs = check_fs_arg(fs, float(hdr.fs) * spf, src)
    try:
        # smooth_frames=False keeps a faster channel at its own rate (True would average
        # it down to the frame rate).
        rec = wfdb.rdrecord(str(base), channels=[idx], physical=True, smooth_frames=False)
    except Exception as exc:
        raise RecordError(f"{src}: cannot read WFDB signal: {one_line(exc)}") from None
    unit = (rec.units or [None])[0]
    scale, unit_str = unit_scale(unit, src, names[idx])
    check_units_arg(units, unit_str, src, names[idx])
    if not rec.e_p_signal:
        raise RecordError(f"{src}: WFDB record has no physical signal for lead {names[idx]}")
    values = rec.e_p_signal[0]
    return finish_record(
        values, scale, ch_fs, names[idx], src, [note, conversion_note(unit_str, scale)]
    )


def leads(base: Path) -> list[str]:
    """Signal names in the header, in file order."""
    _, hdr = _wfdb_header(base)
    return _signal_names(hdr)
