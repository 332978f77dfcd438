"""Fast preprocessing to the ECGFounder input: resample to 500 Hz, then the authors' chain.

The chain (DESIGN.md section 3) is: mains notch (iirnotch, Q=30, zero phase) ->
Butterworth-4 band-pass 0.67-40 Hz (zero phase) -> minus a running-median baseline
(kernel 201 samples at 500 Hz) -> z-score (x - mean) / (std + 1e-8).

It reproduces :func:`anyecg_edge.signal.reference.authors_preprocess` (the literal
scipy chain) to float64 round-off on finite input, so the equivalence does not
depend on luck at the edges:

* The same b/a coefficients and the same ``filtfilt`` edge handling (odd extension of
  3*max(len(a), len(b)) samples, ``lfilter_zi`` initial state scaled by the first
  sample, per stage). Merging notch and band-pass into one filter would change the
  edge transients, so the stages stay separate. Coefficients and initial states are
  computed once per (fs, mains) and cached.
* The baseline is ``scipy.ndimage.median_filter`` with zero padding, which is exactly
  ``scipy.signal.medfilt``'s zero-padded running median, without its per-call
  overhead and with a batch axis.

NaN handling: ``preprocess`` never returns NaN. Short gaps of missing samples (NaN or
+-inf, at most ``MAX_NAN_GAP_S`` long, e.g. a dropped BLE sample or two) are filled by
linear interpolation (edge gaps by the nearest valid sample); a longer gap, or an
all-missing input, raises :class:`SignalError`. Windows with long gaps should be
rejected earlier by :func:`anyecg_edge.signal.quality.assess_quality` ('nan_run').
(The authors' code instead sets NaN to 0, which puts a step into the signal.)
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import scipy.ndimage
import scipy.signal

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.reference import baseline_kernel

__all__ = [
    "TARGET_FS",
    "MIN_FS_HZ",
    "MAX_FS_HZ",
    "MAX_NAN_GAP_S",
    "check_fs",
    "fill_short_gaps",
    "resample",
    "preprocess",
]

#: The ECGFounder input rate: 10 s windows of 5000 samples.
TARGET_FS = 500

# Plausible ECG sampling rates. Below 50 Hz the QRS complex (energy up to ~40 Hz) is
# not representable; above 20 kHz the number is almost surely a unit mistake (e.g. a
# sample count or a period passed as a rate).
MIN_FS_HZ = 50.0
MAX_FS_HZ = 20_000.0

# Longest run of missing samples that is interpolated rather than refused: 50 ms is
# shorter than any QRS complex, so interpolation cannot invent or erase a beat.
MAX_NAN_GAP_S = 0.05

# Largest denominator of the resampling ratio. Integer rates (128, 250, 360, 1000 Hz)
# come out exact; a fractional rate (a measured 130.04 Hz) is approximated to ~1e-6
# relative, i.e. ~10 us over a 10 s window, while keeping the polyphase filter small.
_MAX_RATIO_DENOMINATOR = 1000

# Rows of a 2-D batch run through the chain together: ~16 x 5000 float64 temporaries
# (640 kB each) stay near the cache; whole large batches would go to memory.
_BLOCK_ROWS = 16

_NOTCH_Q = 30.0
_BANDPASS_HZ = (0.67, 40.0)
_BANDPASS_ORDER = 4
_ZSCORE_EPS = 1e-8


def check_fs(fs: float, *, what: str = "fs") -> float:
    """Return ``fs`` as float, or raise SignalError if it is not a plausible ECG rate."""
    try:
        fs_f = float(fs)
    except (TypeError, ValueError):
        raise SignalError(f"{what} must be a number in Hz, got {fs!r}") from None
    if not math.isfinite(fs_f) or fs_f <= 0:
        raise SignalError(f"{what} must be a positive sampling rate in Hz, got {fs!r}")
    if not MIN_FS_HZ <= fs_f <= MAX_FS_HZ:
        raise SignalError(
            f"{what}={fs_f:g} Hz is not a plausible ECG sampling rate "
            f"(expected {MIN_FS_HZ:g}-{MAX_FS_HZ:g} Hz)"
        )
    return fs_f


def _as_signal(x: np.ndarray, *, what: str = "x") -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise SignalError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise SignalError(
            f"{what} must be 1-D (samples) or 2-D (batch, samples), got shape {arr.shape}"
        )
    if arr.shape[-1] == 0:
        raise SignalError(f"{what} is empty")
    return arr.astype(np.float64, copy=False)


def _nan_runs(missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the True runs of a 1-D boolean mask."""
    edges = np.diff(missing.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return starts, ends - starts


def fill_short_gaps(x: np.ndarray, fs: float, max_gap_s: float = MAX_NAN_GAP_S) -> np.ndarray:
    """Linearly interpolate missing samples (NaN/inf) of a 1-D signal in runs <= max_gap_s.

    Returns ``x`` itself when nothing is missing, else a float64 copy. Raises SignalError
    for an all-missing signal or a longer gap.
    """
    x = np.asarray(x, dtype=np.float64)
    missing = ~np.isfinite(x)
    if not missing.any():
        return x
    if missing.all():
        raise SignalError("signal has no finite samples (all NaN/inf)")
    starts, lengths = _nan_runs(missing)
    longest = int(lengths.max())
    max_gap = int(math.floor(max_gap_s * fs))
    if longest > max_gap:
        i = int(starts[np.argmax(lengths)])
        raise SignalError(
            f"signal has a gap of {longest} missing samples ({longest / fs:.3f} s at "
            f"{fs:g} Hz, from sample {i}); at most {max_gap_s:g} s can be interpolated"
        )
    return _interp_missing(x, missing)


def _interp_missing(row: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Copy of 1-D ``row`` with missing samples linearly interpolated (edges: nearest)."""
    idx = np.arange(row.size)
    out = row.copy()
    out[missing] = np.interp(idx[missing], idx[~missing], row[~missing])
    return out


@lru_cache(maxsize=64)
def _resample_plan(fs: float, target_fs: float) -> tuple[int, int, np.ndarray | None]:
    ratio = Fraction(target_fs / fs).limit_denominator(_MAX_RATIO_DENOMINATOR)
    up, down = ratio.numerator, ratio.denominator
    if up == down:  # e.g. 360.11 -> 360 Hz: within the ratio's resolution, nothing to do
        return up, down, None
    # resample_poly's own default design (Kaiser beta 5, half length 10*max(up, down)),
    # built once here instead of on every call.
    max_rate = max(up, down)
    h = scipy.signal.firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return up, down, h


def _resample64(arr: np.ndarray, fs: float, target_fs: float) -> np.ndarray:
    """float64 polyphase resampling along the last axis (rates already validated)."""
    if fs == target_fs:
        return arr
    up, down, h = _resample_plan(fs, target_fs)
    if up == down:
        return arr
    return scipy.signal.resample_poly(arr, up, down, axis=-1, window=h, padtype="line")


def resample(x: np.ndarray, fs: float, target_fs: float = TARGET_FS) -> np.ndarray:
    """Polyphase-resample ``x`` (1-D, or 2-D batch along the last axis) from fs to target_fs.

    The up/down factors are the exact rational ratio target_fs/fs (denominator capped at
    1000); the output has ceil(len(x) * up / down) samples, e.g. 3600 at 360 Hz -> 5000
    at 500 Hz. Edges are padded by a fitted line (``padtype='line'``) so an ECG offset of
    a few mV does not ring at the window ends. Returns a new float32 array (a copy when
    the rates are equal).
    """
    fs = check_fs(fs)
    target_fs = check_fs(target_fs, what="target_fs")
    return _resample64(_as_signal(x), fs, target_fs).astype(np.float32)


@lru_cache(maxsize=32)
def _filter_stages(fs: float, mains_hz: float | None) -> tuple[tuple, ...]:
    """(b, a, zi, padlen) per zero-phase stage, as scipy.signal.filtfilt would use them."""
    coeffs = []
    if mains_hz is not None:
        coeffs.append(scipy.signal.iirnotch(mains_hz, _NOTCH_Q, fs=fs))
    coeffs.append(scipy.signal.butter(_BANDPASS_ORDER, list(_BANDPASS_HZ), btype="bandpass", fs=fs))
    stages = []
    for b, a in coeffs:
        zi = scipy.signal.lfilter_zi(b, a)
        padlen = 3 * max(len(a), len(b))  # filtfilt's default
        for arr in (b, a, zi):
            arr.setflags(write=False)
        stages.append((b, a, zi, padlen))
    return tuple(stages)


def _filtfilt(b: np.ndarray, a: np.ndarray, zi: np.ndarray, padlen: int, x: np.ndarray):
    """scipy.signal.filtfilt(b, a, x, axis=-1) (padtype 'odd', method 'pad'), minus overhead."""
    first, last = x[..., :1], x[..., -1:]
    ext = np.concatenate(
        (
            2.0 * first - x[..., padlen:0:-1],
            x,
            2.0 * last - x[..., -2 : -(padlen + 2) : -1],
        ),
        axis=-1,
    )
    y, _ = scipy.signal.lfilter(b, a, ext, axis=-1, zi=zi * ext[..., :1])
    y = y[..., ::-1]
    y, _ = scipy.signal.lfilter(b, a, y, axis=-1, zi=zi * y[..., :1])
    return y[..., ::-1][..., padlen:-padlen]


def _running_median(y: np.ndarray, kernel: int) -> np.ndarray:
    """Zero-padded running median along the last axis (== scipy.signal.medfilt per row)."""
    if y.ndim == 1:
        return scipy.ndimage.median_filter(y, size=kernel, mode="constant", cval=0.0)
    # ndimage's fast 1-D path is ~50x faster than its n-D path here, so the rows go
    # through it as one line with kernel // 2 zeros between them: exactly the zero
    # padding each row would get on its own, at one call's overhead.
    n_rows, n = y.shape
    gap = kernel // 2
    line = np.zeros((n_rows, n + gap))
    line[:, :n] = y
    med = scipy.ndimage.median_filter(line.reshape(-1), size=kernel, mode="constant", cval=0.0)
    return med.reshape(n_rows, n + gap)[:, :n]


def _check_mains(mains_hz: float | None, fs: float) -> float | None:
    if mains_hz is None:
        return None
    try:
        m = float(mains_hz)
    except (TypeError, ValueError):
        raise SignalError(f"mains_hz must be 50, 60 or None, got {mains_hz!r}") from None
    if m not in (50.0, 60.0):
        raise SignalError(f"mains_hz must be 50, 60 or None, got {mains_hz!r}")
    if m >= fs / 2:
        raise SignalError(f"mains_hz={m:g} is not below the Nyquist rate of fs={fs:g} Hz")
    return m


def preprocess(
    x: np.ndarray,
    fs: float,
    *,
    mains_hz: float | None = 50.0,
    target_fs: float = TARGET_FS,
) -> np.ndarray:
    """Resample ``x`` (raw ECG, any unit) to ``target_fs`` and apply the authors' chain.

    ``x`` is one lead (1-D) or a batch of equally long leads (2-D, samples last).
    ``mains_hz``: 50 or 60 for the notch, None to skip it. Returns float32 z-scores,
    as many samples as :func:`resample` gives (5000 for 10 s at any rate). Short NaN
    gaps are interpolated, longer ones raise SignalError (see the module docstring).
    """
    fs = check_fs(fs)
    target_fs = check_fs(target_fs, what="target_fs")
    mains = _check_mains(mains_hz, target_fs)
    arr = _as_signal(x)
    if not np.isfinite(arr).all():
        if arr.ndim == 1:
            arr = fill_short_gaps(arr, fs)
        else:
            arr = np.stack([fill_short_gaps(row, fs) for row in arr])
    arr = _resample64(arr, fs, target_fs)
    stages = _filter_stages(target_fs, mains)
    min_len = max(s[3] for s in stages) + 1
    if arr.shape[-1] < min_len:
        raise SignalError(
            f"signal has {arr.shape[-1]} samples at {target_fs:g} Hz; "
            f"the zero-phase filters need at least {min_len}"
        )
    kernel = baseline_kernel(target_fs)
    if arr.ndim == 1 or arr.shape[0] <= _BLOCK_ROWS:
        return _chain(arr, stages, kernel)
    # Rows are independent: a block at a time keeps the float64 temporaries in cache.
    out = np.empty(arr.shape, dtype=np.float32)
    for i in range(0, arr.shape[0], _BLOCK_ROWS):
        out[i : i + _BLOCK_ROWS] = _chain(arr[i : i + _BLOCK_ROWS], stages, kernel)
    return out


def _chain(arr: np.ndarray, stages: tuple, kernel: int) -> np.ndarray:
    """Notch, band-pass, minus running median, z-score: float64 rows in, float32 out."""
    y = arr
    for b, a, zi, padlen in stages:
        y = _filtfilt(b, a, zi, padlen, y)
    y = y - _running_median(y, kernel)
    mean = y.mean(axis=-1, keepdims=True)
    std = y.std(axis=-1, keepdims=True)
    y -= mean  # in place: y is a fresh array here
    y /= std + _ZSCORE_EPS
    return y.astype(np.float32)
