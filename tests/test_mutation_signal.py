"""Behaviour of the quality gate and the preprocessing that `make mutate` found unpinned.

Each test states a documented behaviour of ``anyecg_edge/signal/quality.py`` or
``preprocess.py`` (a metric's value, an error that names its field, a batch as long as the
input) on small synthetic windows; the mutants it kills are listed in
benchmarks/results/mutation.md. Numbers are written out, not imported from the module.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from anyecg_edge.signal import (
    QualityReport,
    SignalError,
    assess_quality,
    assess_quality_batch,
    detect_r_peaks,
    fill_short_gaps,
    heart_rate_bpm,
    resample,
)

FS = 500
N = 10 * FS


def synth(r_samples, n: int = N, fs: float = FS, noise: float = 0.005, seed: int = 0):
    """A lead in mV: one P-QRS-T (Gaussian waves) at each R sample, plus white noise."""
    waves = ((-0.16, 0.12, 0.025), (-0.02, -0.1, 0.006), (0.0, 1.0, 0.008),
             (0.025, -0.2, 0.007), (0.25, 0.25, 0.045))  # fmt: skip
    t = np.arange(n, dtype=np.float64)
    x = np.zeros(n)
    for r in r_samples:
        for off, amp, sd in waves:
            x += amp * np.exp(-0.5 * ((t - r - off * fs) / (sd * fs)) ** 2)
    return x + np.random.default_rng(seed).normal(0.0, noise, n)


def sinus(rr: int = 400, n: int = N) -> np.ndarray:
    """75 bpm at 500 Hz by default: a window the gate passes."""
    return synth(range(rr // 2, n + rr, rr), n=n)


# --- detect_r_peaks / heart_rate_bpm ---------------------------------------------------------


def test_detect_r_peaks_bridges_missing_samples() -> None:
    x = sinus()
    want = detect_r_peaks(x, FS)
    assert want.tolist() == list(range(200, 4700, 400))
    y = x.copy()
    y[1000:1010] = np.nan  # 20 ms dropped between two beats
    y[3333] = np.inf
    assert detect_r_peaks(y, FS).tolist() == want.tolist()
    with pytest.raises(SignalError) as exc:
        detect_r_peaks(np.full(2000, np.nan), FS)
    assert str(exc.value) == "x_mv has no finite samples"


def test_no_beats_is_an_empty_index_array() -> None:
    # "Sample indices": usable to index the signal even when there are none.
    x = np.random.default_rng(3).normal(0.0, 0.2, N)
    peaks = detect_r_peaks(x, FS)
    assert peaks.size == 0 and peaks.dtype == np.int64
    assert x[peaks].size == 0


def test_heart_rate_from_two_beats() -> None:
    assert heart_rate_bpm(np.array([100, 600]), FS) == 60.0
    assert math.isnan(heart_rate_bpm(np.array([], dtype=np.int64), FS))


# --- QualityReport ----------------------------------------------------------------------------


def test_summary_of_an_ok_report() -> None:
    assert QualityReport(ok=True, metrics={"heart_rate_bpm": 72.4}).summary() == "ok, 72 bpm"
    assert assess_quality(sinus(), FS).summary() == "ok, 75 bpm"
    # A hand-made report without a rate still prints (nan), it does not raise.
    assert QualityReport(ok=True).summary() == "ok, nan bpm"


# --- assess_quality metrics -------------------------------------------------------------------


def test_metrics_of_a_clean_window() -> None:
    x = sinus()
    m = assess_quality(x, FS).metrics
    assert m["peak_to_peak_mv"] == x.max() - x.min()
    assert m["duration_s"] == 10.0
    assert m["nan_fraction"] == 0.0 and m["longest_nan_run_s"] == 0.0
    assert m["n_beats"] == 12.0 and m["heart_rate_bpm"] == 75.0
    m = assess_quality(sinus(n=1500), FS).metrics
    assert m["duration_s"] == 3.0


def test_an_all_missing_window_has_nan_metrics() -> None:
    x = np.full(N, np.nan)
    for q in (assess_quality(x, FS), assess_quality_batch(np.stack([sinus(), x]), FS)[1]):
        assert not q.ok and q.reasons == ["nan_run"]
        assert q.metrics["nan_fraction"] == 1.0 and q.metrics["longest_nan_run_s"] == 10.0
        for k in ("flat_fraction", "peak_to_peak_mv", "n_beats", "heart_rate_bpm",
                  "beat_prominence", "clipped_fraction"):  # fmt: skip
            assert isinstance(q.metrics[k], float) and math.isnan(q.metrics[k]), k


def test_a_block_swinging_exactly_the_flat_limit_is_not_flat() -> None:
    # FLAT_PTP_MV = 0.02 mV: flat is a swing *below* it. Two 0.5 s blocks of a square wave
    # between 0 and 0.02 mV (swing exactly 0.02) are not flat; 0.0199 mV are.
    for swing, expected in ((0.02, []), (0.0199, ["flat_line"])):
        x = sinus()
        for b in (4, 12):
            x[b * 250 : (b + 1) * 250] = swing * (np.arange(250) % 2)
        assert assess_quality(x, FS).reasons == expected, swing


def test_a_window_swinging_exactly_the_flat_limit_is_judged() -> None:
    # A 2.5 Hz square wave between 0 and 0.02 mV: every 0.5 s block holds a step, so none
    # is flat, and a window of exactly FLAT_PTP_MV is not "flat" either: its 0.4 s rails
    # are clipping and saturation, its 0.02 mV far too small a swing.
    x = 0.02 * ((np.arange(N) // 200) % 2)
    reasons = assess_quality(x, FS).reasons
    assert reasons[:3] == ["clipping", "saturation", "implausible_amplitude"]


@pytest.mark.parametrize("ptp_mv", [0.1, 10.0])
def test_amplitude_limits_are_inclusive(ptp_mv: float) -> None:
    # Peak-to-peak exactly 0.1 mV or exactly 10 mV is still a plausible lead.
    x = synth(range(200, N, 400), noise=0.0005)
    x = (x - x.min()) / (x.max() - x.min()) * ptp_mv  # min 0, max exactly ptp_mv
    q = assess_quality(x, FS)
    assert q.metrics["peak_to_peak_mv"] == ptp_mv and q.reasons == []


def test_two_sample_plateaus_are_cut_tops_at_128_hz() -> None:
    # At 128 Hz (Movesense) two samples at the extreme last 15.6 ms >= the 10 ms of a cut top.
    fs = 128
    n = 10 * fs
    r_at = range(64, n, 96)  # 80 bpm
    t = np.arange(n)
    x = sum(1.0 * np.exp(-0.5 * ((t - r) / 1.3) ** 2) for r in r_at)
    x = x + np.random.default_rng(0).normal(0.0, 0.005, n)
    assert assess_quality(x, fs).reasons == []
    y = x.copy()
    top = x.max() + 0.2
    for r in list(r_at)[2:5]:
        y[r : r + 2] = top
    q = assess_quality(y, fs)
    assert q.reasons == ["clipping"] and q.metrics["n_clip_plateaus"] == 3.0


# --- assess_quality_batch ---------------------------------------------------------------------


def test_batch_of_more_windows_than_samples_per_window() -> None:
    # 2 s windows at 50 Hz have 100 samples; 130 of them still give 130 reports, in order.
    fs = 50
    t = np.arange(100)
    beat = sum(np.exp(-0.5 * ((t - r) / 0.8) ** 2) for r in range(10, 100, 40))  # 75 bpm
    rows = np.stack([beat * (0.5 + 0.01 * i) for i in range(130)])
    rows[7] = 0.0  # one dead lead among them
    reports = assess_quality_batch(rows, fs)
    assert len(reports) == 130
    assert [i for i, q in enumerate(reports) if "flat_line" in q.reasons] == [7]
    assert reports[129].metrics["peak_to_peak_mv"] == pytest.approx(1.79, abs=0.01)


def test_batch_of_float32_windows_equals_one_window_at_a_time() -> None:
    # Wearables stream float32; the batched gate must give what assess_quality gives.
    rows = np.stack([sinus(), sinus(300), sinus(500)]).astype(np.float32)
    rows[1, 2000:2010] = np.nan
    for row, qb in zip(rows, assess_quality_batch(rows, FS), strict=True):
        q = assess_quality(row, FS)
        assert qb.reasons == q.reasons
        assert qb.metrics == pytest.approx(q.metrics, rel=0, abs=0)


# --- preprocess -------------------------------------------------------------------------------


def test_fill_short_gaps_returns_float64_and_names_the_gap() -> None:
    x = np.linspace(0.0, 1.0, 1000).astype(np.float32)
    x[100:103] = np.nan
    y = fill_short_gaps(x, FS)
    assert y.dtype == np.float64 and np.isfinite(y).all()
    x[500:540] = np.nan  # 40 samples = 80 ms, the longest gap, from sample 500
    with pytest.raises(SignalError) as exc:
        fill_short_gaps(x, FS)
    assert str(exc.value) == (
        "signal has a gap of 40 missing samples (0.080 s at 500 Hz, from sample 500); "
        "at most 0.05 s can be interpolated"
    )
    with pytest.raises(SignalError) as exc:
        fill_short_gaps(np.full(10, np.nan), FS)
    assert str(exc.value) == "signal has no finite samples (all NaN/inf)"


def test_resample_names_a_bad_target_rate() -> None:
    with pytest.raises(SignalError) as exc:
        resample(np.zeros(1000), FS, target_fs=10)
    assert str(exc.value) == (
        "target_fs=10 Hz is not a plausible ECG sampling rate (expected 50-20000 Hz)"
    )


# --- the QRS detector's rules (Pan-Tompkins style) ---------------------------------------------

R_AT = list(range(200, N, 400))  # 12 beats, 75 bpm
QRS_T = ((0.0, 1.0, 0.008), (0.025, -0.2, 0.007))


def beats(r_samples, amps=None, t_wave=None, seed: int = 0) -> np.ndarray:
    """R-S complexes at ``r_samples`` (mV, scaled by ``amps``), optionally a peaked T wave
    (offset s, amplitude mV) after each: the T's slope energy is 20-25 % of the QRS's."""
    t = np.arange(N, dtype=np.float64)
    x = np.random.default_rng(seed).normal(0.0, 0.005, N)
    for i, r in enumerate(r_samples):
        a = 1.0 if amps is None else amps[i]
        waves = QRS_T + ((t_wave[0], t_wave[1], 0.012),) if t_wave else QRS_T
        for off, amp, sd in waves:
            x += a * amp * np.exp(-0.5 * ((t - r - off * FS) / (sd * FS)) ** 2)
    return x


def test_a_peaked_t_wave_within_360_ms_is_not_a_beat() -> None:
    # Pan & Tompkins' rule: a peak 300 ms after a beat with under a quarter of its slope
    # energy is its T wave. Without the rule every T wave counts and the rate doubles.
    x = beats(R_AT, t_wave=(0.3, 0.53))
    assert detect_r_peaks(x, FS).tolist() == R_AT
    q = assess_quality(x, FS)
    assert q.reasons == [] and q.metrics["heart_rate_bpm"] == 75.0
    # The same wave 400 ms after the R is past the rule's window: it is taken for a beat
    # (as a premature beat would be), so the detector finds 24 peaks.
    assert detect_r_peaks(beats(R_AT, t_wave=(0.4, 0.53)), FS).size == 24
    # Rows of a batch keep the rule per row: a clean row next to a T-wave row.
    rows = np.stack([x, beats(R_AT, seed=1), beats([r + 100 for r in R_AT], t_wave=(0.3, 0.53))])
    got = [r.metrics["n_beats"] for r in assess_quality_batch(rows, FS)]
    assert got == [12.0, 12.0, 12.0]


def test_a_premature_beat_300_ms_after_a_beat_is_a_beat() -> None:
    # Within 360 ms but as strong as the beat before: a couplet, not a T wave.
    r = sorted(R_AT + [c + 150 for c in R_AT[2:10:3]])  # 3 premature beats, 300 ms early
    got = detect_r_peaks(beats(r), FS)
    assert got.tolist() == r


def test_the_beat_threshold_follows_the_amplitude_locally() -> None:
    # Beats drop to 0.3x amplitude (9 % of the energy) after 2.2 s: a threshold from the
    # whole window (20 % of its QRS level) would lose all six. The local level (second
    # largest candidate within +-3 s) loses only the two with two strong beats in reach.
    amps = [1.0] * 6 + [0.3] * 6
    got = detect_r_peaks(beats(R_AT, amps=amps), FS).tolist()
    assert got == [r for r in R_AT if r not in (2600, 3000)]
    # One artefact spike 5x a beat's amplitude (25x its energy) does not hide the beats
    # around it: the local level is the second largest candidate, not the largest.
    amps = [1.0] * 12
    amps[5] = 5.0
    assert detect_r_peaks(beats(R_AT, amps=amps), FS).tolist() == R_AT


def test_the_gate_rate_is_sixty_over_the_median_rr() -> None:
    # 13 beats, RR alternating 380 / 420 samples: the median of 12 intervals is their mean,
    # 400 samples = 75 bpm, what heart_rate_bpm (np.median) gives on the same peaks.
    r = [100]
    while len(r) < 13:
        r.append(r[-1] + (380 if len(r) % 2 else 420))
    x = beats(r)
    peaks = detect_r_peaks(x, FS)
    assert peaks.tolist() == r and heart_rate_bpm(peaks, FS) == 75.0
    assert assess_quality(x, FS).metrics["heart_rate_bpm"] == 75.0


def test_median_helpers_equal_np_median() -> None:
    # The gate's medians skip np.median's overhead; their docstrings promise its values.
    from anyecg_edge.signal.quality import _median, _median_rows

    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 4, 5, 8, 9, 160, 161):
        a = rng.exponential(1.0, (3, n))
        assert np.array_equal(_median_rows(a), np.median(a, axis=-1)), n
        assert _median(a[0].copy()) == float(np.median(a[0])), n


def test_the_median_bound_never_changes_the_noise_floor_decision() -> None:
    # _median_bound may return an upper bound of a row's median instead of the median, but
    # only where that cannot change "height > 3 x median" for a kept candidate. Rows built
    # to tempt a wrong bound: 40 % tiny values including every 16th sample (the subsample
    # the bound starts from), values in a wide range, and a plain row.
    from anyecg_edge.signal.quality import _median_bound

    n = 1600
    rng = np.random.default_rng(1)
    tricky = np.ones(n)
    tiny = np.zeros(n, dtype=bool)
    tiny[::16] = True
    tiny[rng.choice(np.flatnonzero(~tiny), int(0.4 * n) - tiny.sum(), replace=False)] = True
    tricky[tiny] = 0.01
    wide = rng.uniform(0.0, 20.0, n)
    plain = rng.exponential(1.0, n)
    mwi = np.stack([tricky, wide, plain])
    heights = np.array([0.5, 2.0, 2.9, 3.1, 5.0, 20.0, 29.0, 31.0, 40.0, 1.0, 3.5, 9.0])
    row = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    keep = np.ones(row.size, dtype=bool)
    out = _median_bound(mwi, row, heights, keep)
    median = np.median(mwi, axis=1)
    assert (out >= median).all()
    assert ((heights > 3 * out[row]) == (heights > 3 * median[row])).tolist() == [True] * 12


def test_detector_edges_notches_and_length() -> None:
    # A beat 20 samples (40 ms) before the window's end is found.
    r = [*range(200, N, 400), N - 20]
    assert detect_r_peaks(beats(r), FS).tolist() == r
    # A notched (rsR', 60 ms apart) QRS is one beat: no two beats within 250 ms.
    t = np.arange(N, dtype=np.float64)
    x = np.random.default_rng(0).normal(0.0, 0.005, N)
    for c in R_AT:
        for off, amp in ((0.0, 0.8), (0.03, -0.3), (0.06, 1.0), (0.09, -0.3)):
            x += amp * np.exp(-0.5 * ((t - c - off * FS) / 4.0) ** 2)
    assert detect_r_peaks(x, FS).size == 12
    # The shortest signal the detector takes: 2 x 0.25 s + 16 samples = 266 at 500 Hz.
    assert detect_r_peaks(beats(R_AT)[:266], FS).size == 0
    with pytest.raises(SignalError, match="needs >= 266"):
        detect_r_peaks(beats(R_AT)[:265], FS)
    with pytest.raises(SignalError) as exc:
        assess_quality(np.zeros(600), FS)
    assert (
        str(exc.value) == "window is 1.20 s (600 samples at 500 Hz); the quality gate needs >= 2 s"
    )


def test_one_beat_and_its_t_wave_are_no_beats() -> None:
    # A 2 s window with a single beat: its T wave is not a second beat (no 200 bpm pair).
    y = beats([400], t_wave=(0.3, 0.53))[:1000]
    assert detect_r_peaks(y, FS).size == 0
    assert assess_quality(y, FS).reasons == ["no_beats"]


def test_the_t_wave_rule_in_a_later_row_of_a_block() -> None:
    # Only the second row of the block has T waves: its rule still runs.
    rows = np.stack([beats(R_AT, seed=1), beats(R_AT, t_wave=(0.3, 0.53))])
    assert [q.metrics["n_beats"] for q in assess_quality_batch(rows, FS)] == [12.0, 12.0]


# --- preprocess limits --------------------------------------------------------------------------


def test_preprocess_mains_must_lie_below_nyquist() -> None:
    from anyecg_edge.signal import preprocess

    x = np.random.default_rng(0).normal(0.0, 1.0, 1200)
    assert preprocess(x, 120, target_fs=120).shape == (1200,)  # 50 Hz < 60 Hz Nyquist
    with pytest.raises(SignalError) as exc:
        preprocess(x, 100, target_fs=100)
    assert str(exc.value) == "mains_hz=50 is not below the Nyquist rate of fs=100 Hz"


def test_preprocess_shortest_signal() -> None:
    # The 4th-order band-pass pads 3 x 9 = 27 samples each side: 28 samples is the least.
    from anyecg_edge.signal import preprocess

    x = np.random.default_rng(0).normal(0.0, 1.0, 28)
    assert preprocess(x, FS).shape == (28,)
    with pytest.raises(SignalError) as exc:
        preprocess(x[:27], FS)
    assert str(exc.value) == (
        "signal has 27 samples at 500 Hz; the zero-phase filters need at least 28"
    )


def test_preprocess_of_a_lead_in_volts_matches_the_authors_chain() -> None:
    # A lead in V (std ~1e-4 after filtering) is where the z-score's +1e-8 shows.
    from anyecg_edge.signal import preprocess
    from anyecg_edge.signal.reference import authors_preprocess

    x = sinus() / 1000.0
    want = authors_preprocess(x, FS)
    np.testing.assert_allclose(preprocess(x, FS), want, rtol=0, atol=2e-6)


def test_rate_limits_are_inclusive_and_bad_input_is_named() -> None:
    from anyecg_edge.signal import check_fs, preprocess

    assert check_fs(50) == 50.0 and check_fs(20_000) == 20_000.0
    with pytest.raises(SignalError) as exc:
        preprocess(np.array(["a", "b"]), FS)
    assert str(exc.value) == "x must be a numeric array, got dtype <U1"


def test_preprocess_a_batch_of_more_rows_than_samples() -> None:
    # 40 rows of 30 samples (blocks of 16 rows): every row as if alone.
    from anyecg_edge.signal import preprocess

    rows = np.random.default_rng(2).normal(0.0, 1.0, (40, 30))
    got = preprocess(rows, FS, mains_hz=None)
    want = np.stack([preprocess(r, FS, mains_hz=None) for r in rows])
    np.testing.assert_array_equal(got, want)
