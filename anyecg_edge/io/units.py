"""Physical units: header unit spellings to mV, the ``units`` argument, and ``units="auto"``
(inferring mV, uV or V from the amplitude, refusing when it is ambiguous)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from anyecg_edge.io.base import RecordError, check_fs_value, log

#: What ``units`` (``--units``) may say for files that do not state their unit.
UNIT_CHOICES = ("mV", "uV", "V", "auto")

# Scale to mV per unit spelling (lower-cased). 'µ' (micro sign) and 'μ' (Greek mu) both occur.
UNIT_TO_MV = {
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


def unit_scale(unit: str | None, src: str, channel: str) -> tuple[float, str]:
    """(factor to mV, unit as written) for a header unit; None/'' means mV (WFDB default)."""
    if unit is None or not str(unit).strip():
        return 1.0, "mV"
    key = str(unit).strip().replace(" ", "").lower()
    if key not in UNIT_TO_MV:
        raise RecordError(
            f"{src}: channel {channel!r} has units {unit!r}; expected mV, uV (µV) or V"
        )
    return UNIT_TO_MV[key], str(unit).strip()


def check_units_arg(units: str | None, file_unit: str, src: str, channel: str) -> None:
    if units is None or units == "auto":  # auto: a unit the file states is the answer
        return
    a = unit_scale(units, src, channel)[0]
    b = unit_scale(file_unit, src, channel)[0]
    if a != b:
        raise RecordError(
            f"{src}: units={units!r} was given but channel {channel!r} is stored in "
            f"{file_unit!r}; drop units or fix it"
        )


def conversion_note(unit: str, scale: float) -> str:
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


def infer_unit(values: np.ndarray, fs: float, src: str, lead: str) -> tuple[float, str, str]:
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


def is_auto(units: str | None) -> bool:
    return isinstance(units, str) and units.strip().lower() == "auto"


def to_millivolts(
    values: np.ndarray, units: str | None, fs: float, *, source: str, lead: str
) -> tuple[np.ndarray, str]:
    """(float32 samples in mV, note) for samples in ``units`` (None: mV; "auto": inferred
    from the amplitude, RecordError when ambiguous). ``fs`` is checked."""
    fs = check_fs_value(fs, source)
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if is_auto(units):
        scale, unit, note = infer_unit(x, fs, source, lead)
    else:
        scale, unit = unit_scale(units, source, lead)
        note = conversion_note(unit, scale)
    return (x * scale).astype(np.float32), note
