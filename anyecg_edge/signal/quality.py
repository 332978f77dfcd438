"""Signal-quality gate and a small QRS detector, for raw (mV) windows on the device.

Everything here is vectorised numpy/scipy plus one short loop over candidate beats, so
a 10 s window costs well under a millisecond. It runs *before* z-scoring: amplitudes
are in mV and only mean something in those units.

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
from anyecg_edge.signal.preprocess import MAX_NAN_GAP_S, _filtfilt, _nan_runs, check_fs

__all__ = [
    "QualityReport",
    "REASON_CODES",
    "assess_quality",
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


@lru_cache(maxsize=32)
def _qrs_filter(fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(b, a, zi, padlen) of the zero-phase QRS band-pass (b/a is fine at order 2)."""
    # Keep the upper edge below Nyquist for low-rate wearables (fs >= 50 Hz).
    hi = min(QRS_BAND_HZ[1], 0.45 * fs)
    b, a = scipy.signal.butter(2, [QRS_BAND_HZ[0], hi], btype="bandpass", fs=fs)
    return b, a, scipy.signal.lfilter_zi(b, a), 3 * max(len(a), len(b))


def _finite_1d(x: np.ndarray, what: str = "x_mv") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise SignalError(f"{what} must be a 1-D signal, got shape {arr.shape}")
    missing = ~np.isfinite(arr)
    if missing.all():
        raise SignalError(f"{what} has no finite samples")
    if missing.any():  # bridge gaps for detection only (the gate reports them)
        idx = np.arange(arr.size)
        arr = arr.copy()
        arr[missing] = np.interp(idx[missing], idx[~missing], arr[~missing])
    return arr


def _detect(x: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    """R-peak sample indices and the beat prominence (QRS vs between-beat energy)."""
    min_len = int(REFRACTORY_S * fs) * 2 + 16
    if x.size < min_len:
        raise SignalError(f"signal has {x.size} samples; beat detection needs >= {min_len}")
    band = _filtfilt(*_qrs_filter(fs), x)
    energy = np.gradient(band) ** 2
    mwi = scipy.ndimage.uniform_filter1d(
        energy, size=max(1, round(QRS_INTEGRATION_S * fs)), mode="nearest"
    )
    cand, _ = scipy.signal.find_peaks(mwi, distance=max(1, round(REFRACTORY_S * fs)))
    if cand.size == 0:
        return np.empty(0, dtype=np.int64), 0.0
    median = float(np.median(mwi))
    floor = MIN_PEAK_TO_MEDIAN * median
    # Local adaptive threshold: a candidate is a beat if its energy reaches
    # BEAT_REL_THRESHOLD of the local QRS level, the 2nd-largest candidate within
    # +-LOCAL_LEVEL_S (2nd, so one artefact spike cannot mask its neighbours; local, so
    # the threshold follows amplitude changes within a few seconds).
    heights = mwi[cand]
    span = round(LOCAL_LEVEL_S * fs)
    k = int(span // max(1, round(REFRACTORY_S * fs))) + 1  # candidates per side, at most
    offs = np.arange(-k, k + 1)
    nb = np.clip(np.arange(cand.size)[:, None] + offs[None, :], 0, cand.size - 1)
    near = (np.abs(cand[nb] - cand[:, None]) <= span) & (nb == np.arange(cand.size)[:, None] + offs)
    local = np.where(near, heights[nb], -np.inf)
    if local.shape[1] >= 2:
        level = np.partition(local, -2, axis=1)[:, -2]
        level = np.where(np.isfinite(level), level, heights)
    else:
        level = heights
    keep = (heights >= BEAT_REL_THRESHOLD * level) & (heights > floor)
    # T-wave rule (Pan & Tompkins): within 360 ms of a beat, a peak with less than half
    # its maximal slope (a quarter of its slope energy) is the T wave, not another beat.
    accepted: list[int] = []
    last_h = 0.0
    t_wave = round(T_WAVE_S * fs)
    for c, h in zip(cand[keep].tolist(), heights[keep].tolist(), strict=True):
        if accepted and c - accepted[-1] < t_wave and h < 0.25 * last_h:
            continue
        accepted.append(c)
        last_h = h
    if len(accepted) < 2:
        return np.asarray(accepted, dtype=np.int64), 0.0
    acc = np.asarray(accepted, dtype=np.int64)
    # Energy between beats: everything outside +-QRS_HALF_WIDTH_S of an accepted peak.
    hw = round(QRS_HALF_WIDTH_S * fs)
    starts = np.clip(acc - hw, 0, x.size)
    stops = np.clip(acc + hw + 1, 0, x.size)
    cover = np.zeros(x.size + 1, dtype=np.int32)
    np.add.at(cover, starts, 1)
    np.add.at(cover, stops, -1)
    between = np.cumsum(cover[:-1]) == 0
    if between.sum() < 0.1 * x.size:
        prominence = 0.0
    else:
        prominence = float(np.median(mwi[acc]) / (np.median(mwi[between]) + 1e-30))
    # R sample: largest |band-passed| deflection near each energy peak (either polarity).
    sw = round(R_SEARCH_S * fs)
    offs = np.arange(-sw, sw + 1)
    idx = np.clip(acc[:, None] + offs[None, :], 0, x.size - 1)
    r = idx[np.arange(acc.size), np.argmax(np.abs(band[idx]), axis=1)]
    return np.unique(r), prominence


def detect_r_peaks(x_mv: np.ndarray, fs: float) -> np.ndarray:
    """Sample indices of R peaks in a 1-D ECG (mV, any rate >= 50 Hz).

    Band-pass 5-25 Hz, squared slope, 120 ms moving integration, Pan-Tompkins adaptive
    threshold with a 250 ms refractory period, then the R sample is the largest
    band-passed deflection within +-75 ms. Returns an empty array when fewer than two
    beats are found or they do not stand out from the energy between them
    (``MIN_BEAT_PROMINENCE``): noise has no beats. NaN samples are bridged by interpolation for detection.
    """
    fs = check_fs(fs)
    peaks, prominence = _detect(_finite_1d(x_mv), fs)
    # One lone peak cannot be told from an artefact: beats come at least in pairs.
    if peaks.size < 2 or prominence < MIN_BEAT_PROMINENCE:
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


def _runs_at(mask: np.ndarray) -> np.ndarray:
    return _nan_runs(mask)[1]


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
    n = raw.size
    if n < MIN_WINDOW_S * fs:
        raise SignalError(
            f"window is {n / fs:.2f} s ({n} samples at {fs:g} Hz); "
            f"the quality gate needs >= {MIN_WINDOW_S:g} s"
        )
    reasons: list[str] = []
    m: dict[str, float] = {"duration_s": n / fs}

    missing = ~np.isfinite(raw)
    n_missing = int(missing.sum())
    m["nan_fraction"] = n_missing / n
    longest_nan = int(_runs_at(missing).max()) if n_missing else 0
    m["longest_nan_run_s"] = longest_nan / fs
    if longest_nan > math.floor(MAX_NAN_GAP_S * fs):
        reasons.append("nan_run")
    nan_metrics = dict.fromkeys(
        (
            "flat_fraction",
            "clipped_fraction",
            "n_clip_plateaus",
            "longest_plateau_s",
            "peak_to_peak_mv",
            "n_beats",
            "heart_rate_bpm",
            "beat_prominence",
        ),
        math.nan,
    )
    if n_missing == n:
        m.update(nan_metrics)
        return QualityReport(ok=False, reasons=reasons, metrics=m)
    x = _finite_1d(raw)

    # Flat line: 0.5 s blocks with (almost) no swing.
    blk = max(1, round(FLAT_BLOCK_S * fs))
    nb = n // blk
    block_ptp = np.ptp(x[: nb * blk].reshape(nb, blk), axis=1)
    m["flat_fraction"] = float(np.mean(block_ptp < FLAT_PTP_MV))
    if m["flat_fraction"] >= FLAT_MAX_FRACTION:
        reasons.append("flat_line")

    lo, hi = float(x.min()), float(x.max())
    ptp = hi - lo
    m["peak_to_peak_mv"] = ptp

    # Clipping / saturation: plateaus at the window's extremes (meaningless when flat).
    tol = CLIP_TOL_FRACTION * ptp
    runs = np.concatenate((_runs_at(x >= hi - tol), _runs_at(x <= lo + tol)))
    plateaus = runs[runs >= max(2, round(CLIP_PLATEAU_S * fs))]
    m["clipped_fraction"] = float(plateaus.sum() / n)
    m["n_clip_plateaus"] = float(plateaus.size)
    m["longest_plateau_s"] = float(runs.max() / fs)
    if ptp >= FLAT_PTP_MV:
        if plateaus.size >= CLIP_MIN_PLATEAUS:
            reasons.append("clipping")
        if runs.max() >= SATURATION_RUN_S * fs:
            reasons.append("saturation")

    if ptp >= FLAT_PTP_MV and not MIN_PTP_MV <= ptp <= MAX_PTP_MV:
        reasons.append("implausible_amplitude")

    peaks, prominence = _detect(x, fs)
    m["beat_prominence"] = prominence
    if peaks.size < 2 or prominence < MIN_BEAT_PROMINENCE:
        m["n_beats"] = 0.0
        m["heart_rate_bpm"] = math.nan
        reasons.append("no_beats")
    else:
        hr = heart_rate_bpm(peaks, fs)
        m["n_beats"] = float(peaks.size)
        m["heart_rate_bpm"] = hr
        if not MIN_HR_BPM <= hr <= MAX_HR_BPM:
            reasons.append("implausible_heart_rate")
    return QualityReport(ok=not reasons, reasons=reasons, metrics=m)
