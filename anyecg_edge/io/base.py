"""What every record reader shares: the :class:`Record`, its errors, choosing the lead,
checking ``fs`` against the header, and the last step (float32 mV, no infinities)."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.preprocess import check_fs

log = logging.getLogger("anyecg_edge.io.records")  # one logger name for all formats, as before


# Preference when the caller names no lead: the lab models are fine-tuned on MC-MED, which
# gives lead II only (MIT-BIH: MLII), so II first; lead I (what the single-lead ECGFounder
# was pretrained on) only where a record has no II.
_AUTO_LEAD_ORDER = ("ii", "i")


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


def choose_lead(names: list[str], lead: str | None, src: str) -> tuple[int, str]:
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
            f"{src}: has leads {', '.join(names)} but none is II or I; choose one with "
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


def check_fs_arg(fs: float | None, header_fs: float, src: str) -> float:
    try:
        header_fs = check_fs(header_fs)
    except SignalError as exc:
        raise RecordError(f"{src}: header sampling rate is not usable: {exc}") from None
    if fs is not None:
        fs_arg = check_fs_value(fs, src)
        if not math.isclose(fs_arg, header_fs, rel_tol=1e-6):
            raise RecordError(
                f"{src}: fs={fs_arg:g} Hz was given but the file header says "
                f"{header_fs:g} Hz; drop fs or fix it"
            )
    return header_fs


def check_fs_value(fs: float, src: str) -> float:
    try:
        return check_fs(fs)
    except SignalError as exc:
        raise RecordError(f"{src}: {exc}") from None


def finish_record(
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


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
