"""Every quality-gate limit probed just inside and just outside, on synthetic signals.

Each limit of ``anyecg_edge/signal/quality.py`` (and ``MAX_NAN_GAP_S`` of the preprocessing
that the gate shares) has a pair of windows that differ only across the limit: one sample,
one block, a 1 % amplitude step or one sample of RR interval. A limit moved (0.2 -> 0.5 s
saturation, 220 -> 300 bpm, a ``>=`` turned into ``>``) flips one of the pair. The numbers
are written out here, not imported, so that a changed constant cannot move its own test.
Every window also goes through :func:`assess_quality_batch`, which must give the same
reasons.
"""

from __future__ import annotations

import numpy as np
import pytest

from anyecg_edge.signal import SignalError, assess_quality, assess_quality_batch

FS = 500
N = 10 * FS  # a 10 s window

# Gaussian waves of one beat: (offset s, amplitude mV, sd s): P, Q, R, S, T.
PQRST = ((-0.16, 0.12, 0.025), (-0.02, -0.1, 0.006), (0.0, 1.0, 0.008), (0.025, -0.2, 0.007),
         (0.25, 0.25, 0.045))  # fmt: skip
# A narrow QRS only (R and S): beats at tachycardic rates, where P and T would merge.
QRS = ((0.0, 1.0, 0.006), (0.02, -0.2, 0.006))


def synth(r_samples, waves=PQRST, n: int = N, noise: float = 0.005, seed: int = 0) -> np.ndarray:
    """A lead (mV, 500 Hz) with one beat of ``waves`` at each R sample, plus white noise."""
    t = np.arange(n, dtype=np.float64)
    x = np.zeros(n)
    for r in r_samples:
        for off, amp, sd in waves:
            x += amp * np.exp(-0.5 * ((t - r - off * FS) / (sd * FS)) ** 2)
    return x + np.random.default_rng(seed).normal(0.0, noise, n)


def sinus(rr: int = 400, n: int = N) -> np.ndarray:
    """A clean sinus rhythm (75 bpm by default) that the gate passes."""
    return synth(range(rr // 2, n + rr, rr), n=n)


def gate(x: np.ndarray) -> list[str]:
    """The gate's reasons for ``x``; the batched gate must agree."""
    q = assess_quality(x, FS)
    (qb,) = assess_quality_batch(x[None, :], FS)
    assert qb.reasons == q.reasons
    return q.reasons


def test_the_clean_synthetic_window_passes() -> None:
    assert gate(sinus()) == []


# --- MIN_WINDOW_S = 2 s ------------------------------------------------------------------------


def test_window_length_limit() -> None:
    x = sinus()
    assert gate(x[:1000]) == []  # exactly 2 s is enough
    with pytest.raises(SignalError, match="needs >= 2 s"):
        assess_quality(x[:999], FS)
    with pytest.raises(SignalError, match="needs >= 2 s"):
        assess_quality_batch(x[None, :999], FS)


# --- MAX_NAN_GAP_S = 0.05 s (25 samples at 500 Hz) ----------------------------------------------


def test_nan_run_limit() -> None:
    x = sinus()
    x[2300:2325] = np.nan  # 25 missing samples = 50 ms: bridged
    assert gate(x) == []
    x[2325] = np.nan  # 26 = 52 ms
    assert gate(x) == ["nan_run"]


# --- flat line: FLAT_BLOCK_S = 0.5 s, FLAT_PTP_MV = 0.02 mV, FLAT_MAX_FRACTION = 0.1 ------------


def _flatten(x: np.ndarray, blocks, ripple_mv: float = 0.0) -> np.ndarray:
    """``x`` with the given 0.5 s blocks (250 samples, aligned) replaced by a constant plus
    a sine of peak-to-peak ``ripple_mv``."""
    x = x.copy()
    t = np.arange(250)
    for b in blocks:
        x[b * 250 : (b + 1) * 250] = 0.5 * ripple_mv * np.sin(2 * np.pi * t / 25.0)
    return x


def test_flat_fraction_limit() -> None:
    # 2 of 20 blocks (10 %) flat: rejected; 1 block (5 %): kept.
    assert gate(_flatten(sinus(), [4])) == []
    assert gate(_flatten(sinus(), [4, 12])) == ["flat_line"]


def test_flat_block_length() -> None:
    # Two block-aligned 0.5 s dropouts are flat only if blocks are exactly 0.5 s long: 0.4 s or
    # 0.6 s blocks would see one flat block or none, 1 s blocks none.
    x = _flatten(sinus(), [4, 12])
    assert assess_quality(x, FS).metrics["flat_fraction"] == pytest.approx(0.1)


def test_flat_ptp_limit() -> None:
    # A block swinging 0.019 mV is flat, one swinging 0.021 mV is not.
    assert gate(_flatten(sinus(), [4, 12], ripple_mv=0.019)) == ["flat_line"]
    assert gate(_flatten(sinus(), [4, 12], ripple_mv=0.021)) == []


# --- clipping: CLIP_PLATEAU_S = 10 ms (5 samples), CLIP_MIN_PLATEAUS = 3, CLIP_TOL_FRACTION ----


def _cut_tops(x: np.ndarray, r_samples, width: int, top: float = 1.3) -> np.ndarray:
    """``x`` with flat tops of ``width`` samples at ``top`` mV (the window's maximum) on the
    R peaks at ``r_samples``."""
    x = x.copy()
    for r in r_samples:
        x[r - width // 2 : r - width // 2 + width] = top
    return x


R_AT = range(200, N + 400, 400)  # R samples of sinus()


def test_clip_plateau_length_limit() -> None:
    three = list(R_AT)[2:5]
    assert gate(_cut_tops(sinus(), three, width=5)) == ["clipping"]
    assert gate(_cut_tops(sinus(), three, width=4)) == []


def test_clip_plateau_count_limit() -> None:
    assert gate(_cut_tops(sinus(), list(R_AT)[2:5], width=5)) == ["clipping"]
    assert gate(_cut_tops(sinus(), list(R_AT)[2:4], width=5)) == []


def test_clip_tolerance_limit() -> None:
    # A dip in the middle of each 5-sample top: within 0.1 % of the range it is still "at
    # the extreme" (a plateau); 0.11 % below it splits the top in two short runs.
    three = list(R_AT)[2:5]
    x = _cut_tops(sinus(), three, width=5)
    tol = 1e-3 * (x.max() - x.min())
    for dip, expected in ((0.9 * tol, ["clipping"]), (1.1 * tol, [])):
        y = x.copy()
        y[three] = x.max() - dip
        assert gate(y) == expected, dip


# --- SATURATION_RUN_S = 0.2 s (100 samples) -----------------------------------------------------


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_saturation_run_limit(side: float) -> None:
    x = sinus()
    rail = x.max() + 0.3 if side > 0 else x.min() - 0.3
    y = x.copy()
    y[2440:2539] = rail  # 99 samples = 0.198 s, between two beats
    assert gate(y) == []
    y[2539] = rail  # 100 samples = 0.2 s
    assert gate(y) == ["saturation"]


# --- MIN_PTP_MV = 0.1, MAX_PTP_MV = 10 ----------------------------------------------------------


def _scaled(ptp_mv: float) -> np.ndarray:
    x = synth(R_AT, noise=0.0005)  # noise scaled with the lead keeps every block unflat
    return x * (ptp_mv / (x.max() - x.min()))


@pytest.mark.parametrize(
    ("ptp_mv", "expected"),
    [(0.099, ["implausible_amplitude"]), (0.101, []), (9.9, []), (10.1, ["implausible_amplitude"])],
)
def test_amplitude_limits(ptp_mv: float, expected: list[str]) -> None:
    assert gate(_scaled(ptp_mv)) == expected


# --- MIN_HR_BPM = 30, MAX_HR_BPM = 220 ----------------------------------------------------------


def test_slow_heart_rate_limit() -> None:
    # RR 1000 samples = exactly 30 bpm (the limit is inclusive); 1010 = 29.7 bpm.
    assert gate(sinus(rr=1000)) == []
    assert gate(sinus(rr=1010)) == ["implausible_heart_rate"]
    assert assess_quality(sinus(rr=1000), FS).metrics["heart_rate_bpm"] == 30.0


def _tachy_run(rr: int) -> np.ndarray:
    """6 s of tachycardia at RR ``rr`` samples then 75 bpm: the median RR is the fast one.

    (A whole window above ~215 bpm has QRS energy over half the window, which the detector's
    floor of 3x the median energy rejects as noise; a run of it is what a gate sees.)
    """
    r = list(range(100, 3000, rr))
    while r[-1] + 400 < N - 50:
        r.append(r[-1] + 400)
    return synth(r, waves=QRS)


def test_fast_heart_rate_limit() -> None:
    q = assess_quality(_tachy_run(137), FS)  # 218.98 bpm
    assert q.reasons == [] and q.metrics["heart_rate_bpm"] == pytest.approx(218.978, abs=1e-3)
    assert gate(_tachy_run(137)) == []
    q = assess_quality(_tachy_run(136), FS)  # 220.59 bpm
    assert q.reasons == ["implausible_heart_rate"]
    assert q.metrics["heart_rate_bpm"] == pytest.approx(220.588, abs=1e-3)
    assert gate(_tachy_run(130)) == ["implausible_heart_rate"]  # 230.8 bpm


# --- MIN_BEAT_PROMINENCE = 7 (QRS energy over the energy between beats) ----------------------


def _noisy(noise_mv: float) -> np.ndarray:
    """Beats at 75 bpm under white noise of ``noise_mv`` (one fixed draw): more noise, less
    prominent beats."""
    return synth(R_AT, noise=0.0) + noise_mv * np.random.default_rng(3).normal(0.0, 1.0, N)


def test_beat_prominence_limit() -> None:
    x = _noisy(0.335)
    q = assess_quality(x, FS)
    assert 7.0 < q.metrics["beat_prominence"] < 7.3 and gate(x) == []
    x = _noisy(0.343)
    q = assess_quality(x, FS)
    assert 6.7 < q.metrics["beat_prominence"] < 7.0 and gate(x) == ["no_beats"]


# --- exact metrics and messages (written against the mutants `make mutate` found alive) ------


def test_clipped_fraction_counts_plateau_samples() -> None:
    # Two rails of 40 and 25 samples at the window's maximum: 65 plateau samples of 5000.
    x = sinus()
    top = x.max() + 0.5
    x[1000:1040] = top
    x[3000:3025] = top
    m = assess_quality(x, FS).metrics
    assert m["clipped_fraction"] == 65 / N
    assert m["n_clip_plateaus"] == 2.0 and m["longest_plateau_s"] == 40 / FS


def test_detect_r_peaks_keeps_a_pair_of_beats_and_names_bad_input() -> None:
    from anyecg_edge.signal import detect_r_peaks

    peaks = detect_r_peaks(synth([600, 1000], n=1600), FS)
    assert peaks.tolist() == [600, 1000]
    with pytest.raises(SignalError) as exc:
        detect_r_peaks(np.zeros((2, 3)), FS)
    assert str(exc.value) == "x_mv must be a 1-D signal, got shape (2, 3)"
    with pytest.raises(SignalError) as exc:
        detect_r_peaks(np.zeros(100), FS)
    # 2 x the 0.25 s refractory period + 16 samples
    assert str(exc.value) == "signal has 100 samples; beat detection needs >= 266"


def test_a_block_of_different_rows_gives_each_row_its_own_beats() -> None:
    # Rows of one block are detected together; each must keep its own peaks and rate.
    rows = np.stack([sinus(400), sinus(300), synth([], noise=0.05), sinus(500)])
    batch = assess_quality_batch(rows, FS)
    for row, qb in zip(rows, batch, strict=True):
        q = assess_quality(row, FS)
        assert qb.reasons == q.reasons
        assert qb.metrics["n_beats"] == q.metrics["n_beats"]
        assert qb.metrics["heart_rate_bpm"] == pytest.approx(
            q.metrics["heart_rate_bpm"], nan_ok=True
        )
    assert [round(q.metrics["heart_rate_bpm"]) for q in (batch[0], batch[1], batch[3])] == [
        75,
        100,
        60,
    ]
