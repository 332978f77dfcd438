"""Signal-quality gate and a small QRS detector, for raw (mV) windows on the device.

Everything here is vectorised numpy/scipy, so a 10 s window costs about half a
millisecond. It runs *before* z-scoring: amplitudes are in mV and only mean something
in those units. :func:`assess_quality_batch` gates many windows at once (the corpus
builder's path, about half the cost per window): it works on blocks of rows with every
row independent, and its reports equal :func:`assess_quality`'s one window at a time,
which is the same code on a block of one.

Reason codes (``QualityReport.reasons``):

* ``nan_run``: a run of missing samples longer than ``MAX_NAN_GAP_S``.
* ``flat_line``: a large part of the window is (nearly) constant: lead off, dropout.
* ``clipping``: several flat-topped peaks at the window's extremes: the ADC or the
  amplifier range cut the QRS tops.
* ``saturation``: the signal sits pinned at its extreme for a long stretch: amplifier
  railed (motion, electrode pop).
* ``implausible_amplitude``: peak-to-peak far outside what a body-surface ECG lead
  gives (often a unit mistake, or motion).
* ``no_beats``: the QRS detector finds no credible heartbeats (noise, artefact).
* ``implausible_heart_rate``: beats were found, but their rate is outside 30-220 bpm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.ndimage
import scipy.signal

from anyecg_edge.signal.errors import SignalError
from anyecg_edge.signal.preprocess import (
    MAX_NAN_GAP_S,
    _filtfilt,
    _interp_missing,
    _nan_runs,
    check_fs,
)

__all__ = [
    "QualityReport",
    "REASON_CODES",
    "assess_quality",
    "assess_quality_batch",
    "detect_r_peaks",
    "heart_rate_bpm",
]

REASON_CODES = (
    "nan_run",
    "flat_line",
    "clipping",
    "saturation",
    "implausible_amplitude",
    "no_beats",
    "implausible_heart_rate",
)

# --- QRS detector (Pan-Tompkins style: band-pass, slope energy, adaptive threshold) ---
# 5-25 Hz keeps the QRS slopes and drops most of the P/T-wave and baseline energy;
# on real data it separated QRS from noise better than the classic 5-15 Hz band.
QRS_BAND_HZ = (5.0, 25.0)
# Moving-window integration about one QRS wide.
QRS_INTEGRATION_S = 0.12
# No two beats closer than the physiological refractory period (caps rates at 240 bpm).
REFRACTORY_S = 0.25
# Local QRS level: taken over +-3 s, which holds two beats or more down to 20 bpm.
LOCAL_LEVEL_S = 3.0
# A beat has at least this fraction of the local QRS energy (amplitude ratio ~0.45).
BEAT_REL_THRESHOLD = 0.2
# Peaks this close after a beat may be its T wave (Pan & Tompkins' 360 ms rule).
T_WAVE_S = 0.36
# Half-width of the search for the R sample around an energy peak.
R_SEARCH_S = 0.075
# An energy peak must exceed this multiple of the window's median energy to count at all.
MIN_PEAK_TO_MEDIAN = 3.0
# Median QRS energy over the median energy between QRS complexes. Real ECG (lead I of
# the 50 CinC records) gave >= 18, and >= 8.5 with 0.05 mV of added noise; Gaussian
# noise of six colours (white to brown) gave <= 5.9 over 600 windows. Below this the
# "beats" are noise.
MIN_BEAT_PROMINENCE = 7.0
# Half-width of the QRS region excluded when measuring the energy between beats.
QRS_HALF_WIDTH_S = 0.06

# --- Gate thresholds (on raw mV windows) ---
# A window shorter than this cannot show two beats at the lowest plausible rate.
MIN_WINDOW_S = 2.0
# Flatness is judged on 0.5 s blocks: every 0.5 s of real ECG holds a P, QRS or T wave
# (no block of 600 real CinC leads with signal fell below 20 uV), while lead-off or
# dropout gives blocks of a few uV.
FLAT_BLOCK_S = 0.5
FLAT_PTP_MV = 0.02
# >= 10 % flat blocks (about 1-1.5 s of a 10 s window) makes the window unusable.
FLAT_MAX_FRACTION = 0.1
# Samples within 0.1 % of the range of the window's max/min count as "at the extreme".
CLIP_TOL_FRACTION = 1e-3
# A real R peak stays within quantisation of its maximum for ~1-2 ms; a plateau of
# >= 10 ms at the extreme is a cut top. Three or more of them = peaks are being clipped.
CLIP_PLATEAU_S = 0.01
CLIP_MIN_PLATEAUS = 3
# Pinned at the extreme for >= 0.2 s: railed amplifier (real records end with pinned
# stretches of ~0.1 s, which are not counted).
SATURATION_RUN_S = 0.2
# Raw peak-to-peak outside 0.1-10 mV is not a usable ECG lead: QRS amplitudes are
# ~0.3-5 mV; >10 mV is motion/settling (Polar H10 artefacts reach +-18 mV) or uV data
# labelled mV; <0.1 mV is a dead lead or V data labelled mV.
MIN_PTP_MV = 0.1
MAX_PTP_MV = 10.0
# Plausible heart rates (bpm) for an adult at rest or in the ED.
MIN_HR_BPM = 30.0
MAX_HR_BPM = 220.0


# Windows per internal block of the batched gate: enough rows to amortise numpy's
# per-call overhead (~5-20 us a call), few enough that a block's float64 temporaries
# stay near the CPU cache (16 x 5000 x 8 B = 640 kB each); 12-16 measured best.
_BLOCK_ROWS = 16


@lru_cache(maxsize=32)
def _qrs_filter(fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(b, a, zi, padlen) of the zero-phase QRS band-pass (b/a is fine at order 2)."""
    # Keep the upper edge below Nyquist for low-rate wearables (fs >= 50 Hz).
    hi = min(QRS_BAND_HZ[1], 0.45 * fs)
    b, a = scipy.signal.butter(2, [QRS_BAND_HZ[0], hi], btype="bandpass", fs=fs)
    return b, a, scipy.signal.lfilter_zi(b, a), 3 * max(len(a), len(b))


def _median(v: np.ndarray) -> float:
    """``float(np.median(v))`` for a finite non-empty 1-D array, minus ~15 us of overhead."""
    n = v.size
    h = n // 2
    if n % 2:
        return float(np.partition(v, h)[h])
    p = np.partition(v, (h - 1, h))
    return float((p[h - 1] + p[h]) / 2)  # the same arithmetic as np.median's mean


def _median_rows(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=-1)`` for finite 2-D ``a`` (same values, one partition)."""
    n = a.shape[-1]
    h = n // 2
    if n % 2:
        return np.partition(a, h, axis=-1)[:, h]
    p = np.partition(a, (h - 1, h), axis=-1)
    return (p[:, h - 1] + p[:, h]) / 2


def _median_bound(
    mwi: np.ndarray, row: np.ndarray, heights: np.ndarray, keep: np.ndarray
) -> np.ndarray:
    """Per row, the median of ``mwi`` or an upper bound of it that decides the floor test.

    ``heights > 3 * m`` is only asked of candidates in ``keep``. For a row whose
    candidates all clear 3 x an upper bound of the median, the exact median cannot
    change the answer, so only the other rows pay for the partition. The bound is twice
    a subsample's median, kept only if >= n // 2 + 1 samples lie at or below it (then
    it is >= the median: both middle order statistics are <= it).
    """
    n_rows, n = mwi.shape
    sub = _median_rows(np.ascontiguousarray(mwi[:, ::16]))
    ub = 2.0 * sub + 1e-300
    valid = np.count_nonzero(mwi <= ub[:, None], axis=1) >= n // 2 + 1
    ub = np.where(valid, ub, np.inf)
    # Rows with a kept candidate at or below 3 x bound need the exact median.
    undecided = np.zeros(n_rows, dtype=bool)
    low = keep & (heights <= MIN_PEAK_TO_MEDIAN * ub[row])
    undecided[row[low]] = True
    out = ub
    if undecided.any():
        out = ub.copy()
        out[undecided] = _median_rows(mwi[undecided])
    return out


def _finite_1d(x: np.ndarray, what: str = "x_mv") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise SignalError(f"{what} must be a 1-D signal, got shape {arr.shape}")
    missing = ~np.isfinite(arr)
    if missing.all():
        raise SignalError(f"{what} has no finite samples")
    if missing.any():  # bridge gaps for detection only (the gate reports them)
        arr = _interp_missing(arr, missing)
    return arr


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, length) of every run of True in a 2-D boolean mask, in row-major order."""
    # Works on the True positions only: the masks used here are sparse (a window's
    # extremes), so this is ~10x faster than differencing the whole mask.
    idx = np.flatnonzero(mask)
    rows = idx // mask.shape[1]
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (np.diff(idx) != 1) | (rows[1:] != rows[:-1])
    starts = np.flatnonzero(new)
    return rows[starts], np.diff(starts, append=idx.size)


def _detect_block(x: np.ndarray, fs: float) -> tuple[list[np.ndarray], np.ndarray]:
    """R-peak indices and beat prominence (QRS vs between-beat energy) per row of ``x``.

    ``x``: finite float64 (rows, samples). Rows are independent: the result of a row is
    the same alone or in any block. Rows with fewer than two beats get prominence 0.
    """
    n_rows, n = x.shape
    min_len = int(REFRACTORY_S * fs) * 2 + 16
    if n < min_len:
        raise SignalError(f"signal has {n} samples; beat detection needs >= {min_len}")
    band = _filtfilt(*_qrs_filter(fs), x)
    # Squared slope: np.gradient(band, axis=-1) ** 2, written out (same arithmetic) to
    # skip np.gradient's ~10 us of argument handling per call.
    energy = np.empty(band.shape)
    np.subtract(band[:, 2:], band[:, :-2], out=energy[:, 1:-1])
    energy[:, 1:-1] /= 2.0
    energy[:, 0] = band[:, 1] - band[:, 0]
    energy[:, -1] = band[:, -1] - band[:, -2]
    np.square(energy, out=energy)
    mwi = scipy.ndimage.uniform_filter1d(
        energy, size=max(1, round(QRS_INTEGRATION_S * fs)), axis=-1, mode="nearest"
    )
    dist = max(1, round(REFRACTORY_S * fs))
    cands = [scipy.signal.find_peaks(mwi[i], distance=dist)[0] for i in range(n_rows)]
    peaks_out = [np.empty(0, dtype=np.int64) for _ in range(n_rows)]
    prominence = np.zeros(n_rows)
    # intp: np.repeat refuses int64 counts where intp is 32-bit (armhf)
    counts = np.fromiter((c.size for c in cands), dtype=np.intp, count=n_rows)
    if counts.sum() == 0:
        return peaks_out, prominence
    cand = np.concatenate(cands).astype(np.int64)
    row = np.repeat(np.arange(n_rows), counts)
    heights = mwi[row, cand]
    # Local adaptive threshold: a candidate is a beat if its energy reaches
    # BEAT_REL_THRESHOLD of the local QRS level, the 2nd-largest candidate within
    # +-LOCAL_LEVEL_S (2nd, so one artefact spike cannot mask its neighbours; local, so
    # the threshold follows amplitude changes within a few seconds). All rows' candidates
    # are handled at once: positions are spread so rows lie > span apart.
    span = round(LOCAL_LEVEL_S * fs)
    k = int(span // dist) + 1  # candidates per side, at most
    offs = np.arange(-k, k + 1)
    gpos = row * (n + span + 1) + cand
    nb_raw = np.arange(cand.size)[:, None] + offs[None, :]
    nb = np.clip(nb_raw, 0, cand.size - 1)
    near = (np.abs(gpos[nb] - gpos[:, None]) <= span) & (nb == nb_raw)
    local = np.where(near, heights[nb], -np.inf)
    level = np.partition(local, -2, axis=1)[:, -2]
    level = np.where(np.isfinite(level), level, heights)
    keep = heights >= BEAT_REL_THRESHOLD * level
    keep &= heights > MIN_PEAK_TO_MEDIAN * _median_bound(mwi, row, heights, keep)[row]
    kr, kc, kh = row[keep], cand[keep], heights[keep]
    # T-wave rule (Pan & Tompkins): within 360 ms of a beat, a peak with less than half
    # its maximal slope (a quarter of its slope energy) is the T wave, not another beat.
    # Only a candidate within 360 ms of the previous kept one can be dropped, so the
    # sequential pass runs only when there is one.
    t_wave = round(T_WAVE_S * fs)
    accepted = np.ones(kr.size, dtype=bool)
    if kr.size > 1 and np.any((kr[1:] == kr[:-1]) & (np.diff(kc) < t_wave)):
        last_r, last_c, last_h = -1, 0, 0.0
        for j, (r, c, h) in enumerate(zip(kr.tolist(), kc.tolist(), kh.tolist(), strict=True)):
            if r == last_r and c - last_c < t_wave and h < 0.25 * last_h:
                accepted[j] = False
                continue
            last_r, last_c, last_h = r, c, h
    ar, ac = kr[accepted], kc[accepted]
    n_acc = np.bincount(ar, minlength=n_rows)
    bounds = np.concatenate(([0], np.cumsum(n_acc)))
    for i in np.flatnonzero((n_acc > 0) & (n_acc < 2)).tolist():
        peaks_out[i] = ac[bounds[i] : bounds[i + 1]]
    two = n_acc >= 2
    if not two.any():
        return peaks_out, prominence
    sel = two[ar]
    ar, ac = ar[sel], ac[sel]
    rows2 = np.flatnonzero(two)
    acc_bounds = np.searchsorted(ar, np.arange(n_rows + 1))
    # Energy between beats: everything outside +-QRS_HALF_WIDTH_S of an accepted peak.
    hw = round(QRS_HALF_WIDTH_S * fs)
    for i in rows2.tolist():
        a = ac[acc_bounds[i] : acc_bounds[i + 1]]
        between = np.ones(n, dtype=bool)
        for c in a.tolist():
            between[max(0, c - hw) : c + hw + 1] = False
        v = mwi[i][between]
        if v.size >= 0.1 * n:
            prominence[i] = _median(mwi[i, a]) / (_median(v) + 1e-30)
    # R sample: largest |band-passed| deflection near each energy peak (either polarity).
    sw = round(R_SEARCH_S * fs)
    offs = np.arange(-sw, sw + 1)
    idx = np.clip(ac[:, None] + offs[None, :], 0, n - 1)
    r = idx[np.arange(ac.size), np.argmax(np.abs(band[ar[:, None], idx]), axis=1)]
    g = np.unique(ar * n + r)
    g_rows = g // n
    g_bounds = np.searchsorted(g_rows, np.arange(n_rows + 1))
    for i in rows2.tolist():
        peaks_out[i] = g[g_bounds[i] : g_bounds[i + 1]] - i * n
    return peaks_out, prominence


def detect_r_peaks(x_mv: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in a 1-D ECG (mV, any rate >= 50 Hz).

    Band-pass 5-25 Hz, squared slope, 120 ms moving integration, Pan-Tompkins adaptive
    threshold with a 250 ms refractory period, then the R sample is the largest
    band-passed deflection within +-75 ms. Returns an empty array when fewer than two
    beats are found or they do not stand out from the energy between them
    (``MIN_BEAT_PROMINENCE``): noise has no beats. NaN samples are bridged by interpolation for detection.
    """
    fs = check_fs(fs)
    (peaks,), prominence = _detect_block(_finite_1d(x_mv)[None, :], fs)
    # One lone peak cannot be told from an artefact: beats come at least in pairs.
    if peaks.size < 2 or prominence[0] < MIN_BEAT_PROMINENCE:
        return np.empty(0, dtype=np.int64)
    return peaks


def heart_rate_bpm(peaks: np.ndarray, fs: float) -> float:
    """Heart rate from R-peak indices: 60 / median RR (robust to one missed/extra beat).

    Returns NaN with fewer than two peaks.
    """
    fs = check_fs(fs)
    p = np.asarray(peaks)
    if p.size < 2:
        return math.nan
    rr_s = np.diff(np.sort(p)) / fs
    return float(60.0 / np.median(rr_s))


@dataclass
class QualityReport:
    """Outcome of :func:`assess_quality`: ``ok`` is True iff ``reasons`` is empty."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs/CLI, e.g. 'ok, 72 bpm' or 'rejected: flat_line, no_beats'."""
        if self.ok:
            return f"ok, {self.metrics.get('heart_rate_bpm', math.nan):.0f} bpm"
        return "rejected: " + ", ".join(self.reasons)


_NAN_METRICS = (
    "flat_fraction",
    "clipped_fraction",
    "n_clip_plateaus",
    "longest_plateau_s",
    "peak_to_peak_mv",
    "n_beats",
    "heart_rate_bpm",
    "beat_prominence",
)


def _check_window_len(n: int, fs: float) -> None:
    if n < MIN_WINDOW_S * fs:
        raise SignalError(
            f"window is {n / fs:.2f} s ({n} samples at {fs:g} Hz); "
            f"the quality gate needs >= {MIN_WINDOW_S:g} s"
        )


def _assess_block(raw: np.ndarray, fs: float) -> list[QualityReport]:
    """The gate on a float64 block (rows = windows of a valid length), one report a row."""
    n_rows, n = raw.shape
    finite = np.isfinite(raw)
    n_missing = (n - np.count_nonzero(finite, axis=1)).tolist()
    longest_nan = [0] * n_rows
    x = raw
    if any(n_missing):
        x = raw.copy()
        for i in (i for i, k in enumerate(n_missing) if k):
            longest_nan[i] = int(_nan_runs(~finite[i])[1].max())
            # An all-missing row gets NaN metrics below; zeros keep the block finite.
            x[i] = 0.0 if n_missing[i] == n else _interp_missing(raw[i], ~finite[i])

    # Flat line: 0.5 s blocks with (almost) no swing.
    blk = max(1, round(FLAT_BLOCK_S * fs))
    nb = n // blk
    blocks = x[:, : nb * blk].reshape(n_rows, nb, blk)
    flat_fraction = np.mean(blocks.max(axis=2) - blocks.min(axis=2) < FLAT_PTP_MV, axis=1)

    lo, hi = x.min(axis=1), x.max(axis=1)
    ptp = hi - lo

    # Clipping / saturation: plateaus at the window's extremes (meaningless when flat).
    tol = CLIP_TOL_FRACTION * ptp
    at_extreme = np.concatenate((x >= (hi - tol)[:, None], x <= (lo + tol)[:, None]))
    run_rows, runs = _row_runs(at_extreme)  # rows n_rows.. are the minima of row - n_rows
    run_rows %= n_rows
    longest = np.zeros(n_rows, dtype=np.int64)
    np.maximum.at(longest, run_rows, runs)
    is_plateau = runs >= max(2, round(CLIP_PLATEAU_S * fs))
    n_plateaus = np.bincount(run_rows[is_plateau], minlength=n_rows)
    plateau_samples = np.bincount(
        run_rows[is_plateau], weights=runs[is_plateau], minlength=n_rows
    ).astype(np.int64)

    peaks, prominence = _detect_block(x, fs)

    reports = []
    max_gap = math.floor(MAX_NAN_GAP_S * fs)
    for i in range(n_rows):
        reasons: list[str] = []
        m: dict[str, float] = {
            "duration_s": n / fs,
            "nan_fraction": n_missing[i] / n,
            "longest_nan_run_s": longest_nan[i] / fs,
        }
        if longest_nan[i] > max_gap:
            reasons.append("nan_run")
        if n_missing[i] == n:
            m.update(dict.fromkeys(_NAN_METRICS, math.nan))
            reports.append(QualityReport(ok=False, reasons=reasons, metrics=m))
            continue
        m["flat_fraction"] = float(flat_fraction[i])
        if m["flat_fraction"] >= FLAT_MAX_FRACTION:
            reasons.append("flat_line")
        p = float(ptp[i])
        m["peak_to_peak_mv"] = p
        m["clipped_fraction"] = int(plateau_samples[i]) / n
        m["n_clip_plateaus"] = float(n_plateaus[i])
        m["longest_plateau_s"] = float(longest[i] / fs)
        if p >= FLAT_PTP_MV:
            if n_plateaus[i] >= CLIP_MIN_PLATEAUS:
                reasons.append("clipping")
            if longest[i] >= SATURATION_RUN_S * fs:
                reasons.append("saturation")
        if p >= FLAT_PTP_MV and not MIN_PTP_MV <= p <= MAX_PTP_MV:
            reasons.append("implausible_amplitude")
        pk = peaks[i]
        m["beat_prominence"] = float(prominence[i])
        if pk.size < 2 or prominence[i] < MIN_BEAT_PROMINENCE:
            m["n_beats"] = 0.0
            m["heart_rate_bpm"] = math.nan
            reasons.append("no_beats")
        else:
            # peaks are sorted and unique: heart_rate_bpm() without its checks
            hr = float(60.0 / _median(np.diff(pk) / fs))
            m["n_beats"] = float(pk.size)
            m["heart_rate_bpm"] = hr
            if not MIN_HR_BPM <= hr <= MAX_HR_BPM:
                reasons.append("implausible_heart_rate")
        reports.append(QualityReport(ok=not reasons, reasons=reasons, metrics=m))
    return reports


def assess_quality(x_mv: np.ndarray, fs: float) -> QualityReport:
    """Check one raw ECG window (1-D, in mV, before z-scoring) for usability.

    Returns a QualityReport with every failing reason code (see the module docstring)
    and these metrics: duration_s, nan_fraction, longest_nan_run_s, flat_fraction,
    clipped_fraction, n_clip_plateaus, longest_plateau_s, peak_to_peak_mv, n_beats,
    heart_rate_bpm (NaN if < 2 beats), beat_prominence.
    """
    fs = check_fs(fs)
    raw = np.asarray(x_mv, dtype=np.float64)
    if raw.ndim != 1:
        raise SignalError(f"x_mv must be a 1-D window, got shape {raw.shape}")
    _check_window_len(raw.size, fs)
    return _assess_block(raw[None, :], fs)[0]


def assess_quality_batch(windows_mv: np.ndarray, fs: float) -> list[QualityReport]:
    """:func:`assess_quality` for each row of ``windows_mv`` (2-D: windows, samples; mV).

    Returns one report per row, equal to what ``assess_quality(row, fs)`` returns; the
    filtering and most checks run on blocks of rows at once, so a segment's windows
    cost about half as much as one call per window.
    """
    fs = check_fs(fs)
    raw = np.asarray(windows_mv, dtype=np.float64)
    if raw.ndim != 2:
        raise SignalError(f"windows_mv must be 2-D (windows, samples), got shape {raw.shape}")
    _check_window_len(raw.shape[1], fs)
    reports: list[QualityReport] = []
    n = raw.shape[0]
    size = -(-n // -(-n // _BLOCK_ROWS)) if n else 1  # even blocks: 20 rows -> 10 + 10
    for i in range(0, n, size):
        reports += _assess_block(raw[i : i + size], fs)
    return reports
