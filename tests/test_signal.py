"""Signal core: preprocessing vs the authors' chain, resampling, windows, QRS detection,
quality gate. Real recordings from ../shared/data (CinC 2021, MIT-BIH 100)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from recordings import CINC, DATA, MITDB, needs_data

from anyecg_edge.signal import (
    MAX_NAN_GAP_S,
    TARGET_FS,
    QualityReport,
    SignalError,
    assess_quality,
    assess_quality_batch,
    authors_preprocess,
    detect_r_peaks,
    extract_windows,
    fill_short_gaps,
    heart_rate_bpm,
    preprocess,
    resample,
)

pytestmark = pytest.mark.device  # no torch: also run on arm64 by make test-arm64

wfdb = pytest.importorskip("wfdb")

# Beat annotation symbols of the MIT-BIH format (rhythm/noise marks such as '+' excluded).
BEAT_SYMBOLS = set("NLRBAaJSVrFejnE/fQ?")


@pytest.fixture(scope="module")
def cinc_leads() -> dict[str, np.ndarray]:
    """All 12 leads (mV, 500 Hz, 5000 samples) of every CinC 2021 record."""
    out = {}
    for hea in sorted(CINC.glob("*.hea")):
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        assert rec.fs == 500 and rec.p_signal.shape == (5000, 12)
        out[hea.stem] = (rec.sig_name, rec.p_signal)
    assert len(out) == 50
    return out


@pytest.fixture(scope="module")
def cinc_lead_i(cinc_leads) -> dict[str, np.ndarray]:
    return {k: sig[:, names.index("I")] for k, (names, sig) in cinc_leads.items()}


@pytest.fixture(scope="module")
def mit100() -> tuple[np.ndarray, np.ndarray]:
    """MLII of MIT-BIH 100 (mV, 360 Hz, 30 min) and its beat annotation samples."""
    rec = wfdb.rdrecord(str(MITDB), channels=[0])
    ann = wfdb.rdann(str(MITDB), "atr")
    beats = np.array(
        [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS]
    )
    return rec.p_signal[:, 0], beats


# --- preprocessing vs the authors' chain ---------------------------------------------------


@needs_data
@pytest.mark.parametrize("mains_hz", [50.0, 60.0, None])
def test_preprocess_matches_authors_chain_on_all_cinc_lead_i(cinc_lead_i, mains_hz):
    worst = 0.0
    for name, x in cinc_lead_i.items():
        fast = preprocess(x, 500, mains_hz=mains_hz)
        ref = authors_preprocess(x, 500, mains_hz=mains_hz)
        assert fast.dtype == np.float32 and fast.shape == (5000,), name
        err = float(np.max(np.abs(fast - ref)))
        assert err < 1e-3, f"{name}: max |fast - authors| = {err:.2e} z"
        worst = max(worst, err)
    # Same arithmetic as the oracle: only the float32 output rounding remains.
    assert worst < 1e-5


@needs_data
def test_preprocess_matches_authors_chain_on_every_cinc_lead(cinc_leads):
    for name, (names, sig) in cinc_leads.items():
        for j, lead in enumerate(names):
            x = sig[:, j]
            err = np.max(np.abs(preprocess(x, 500) - authors_preprocess(x, 500)))
            assert err < 1e-3, f"{name} {lead}: {err:.2e}"


@pytest.mark.parametrize("n", [301, 1000, 4999, 5000, 7777])
def test_preprocess_matches_authors_chain_on_other_lengths(n):
    # Quantised random walk + spikes: many ties in the running median, sharp edges.
    rng = np.random.default_rng(n)
    x = np.round(np.cumsum(rng.normal(0, 0.02, n)) + (rng.random(n) > 0.99) * 1.5, 2)
    err = np.max(np.abs(preprocess(x, 500) - authors_preprocess(x, 500)))
    assert err < 1e-3


@needs_data
def test_preprocess_batch_equals_rows(cinc_lead_i):
    batch = np.stack(list(cinc_lead_i.values())[:8])
    out = preprocess(batch, 500)
    assert out.shape == batch.shape and out.dtype == np.float32
    for row, x in zip(out, batch, strict=True):
        # Bit-identical: the corpus stores the batch result and promises preprocess(row).
        np.testing.assert_array_equal(row, preprocess(x, 500))


@needs_data
def test_preprocess_output_is_zscored_and_finite(cinc_lead_i):
    y = preprocess(cinc_lead_i["E07500"], 500)
    assert np.isfinite(y).all()
    assert abs(float(y.mean())) < 1e-5 and abs(float(y.std()) - 1.0) < 1e-4


def test_preprocess_60hz_notch_removes_mains():
    fs = 500
    t = np.arange(5000) / fs
    rng = np.random.default_rng(0)
    x = (
        0.3 * np.sin(2 * np.pi * 8 * t)
        + 0.5 * np.sin(2 * np.pi * 60 * t)
        + rng.normal(0, 0.01, t.size)
    )

    def amp60(y):
        spec = np.abs(np.fft.rfft(y[500:-500]))
        f = np.fft.rfftfreq(y.size - 1000, 1 / fs)
        return spec[np.argmin(np.abs(f - 60))] / spec[np.argmin(np.abs(f - 8))]

    with_notch = amp60(preprocess(x, fs, mains_hz=60))
    without = amp60(preprocess(x, fs, mains_hz=None))
    wrong_mains = amp60(preprocess(x, fs, mains_hz=50))
    assert with_notch < without / 100
    assert with_notch < wrong_mains / 100


@pytest.mark.parametrize("bad", [55, 0, "fifty"])
def test_preprocess_rejects_bad_mains(bad):
    with pytest.raises(SignalError, match="mains_hz"):
        preprocess(np.zeros(5000), 500, mains_hz=bad)


@needs_data
def test_preprocess_resamples_360hz_mitdb_to_5000_samples(mit100):
    x, _ = mit100
    y = preprocess(x[:3600], 360)
    assert y.shape == (5000,) and y.dtype == np.float32 and np.isfinite(y).all()


@needs_data
def test_preprocess_interpolates_a_short_nan_gap(cinc_lead_i):
    x = cinc_lead_i["E07501"].copy()
    gap = int(MAX_NAN_GAP_S * 500)  # 25 samples = 50 ms
    x[2000 : 2000 + gap] = np.nan
    x[:3] = np.nan  # leading gap: nearest valid value
    y = preprocess(x, 500)
    assert np.isfinite(y).all()
    # The rest of the window is hardly touched.
    ref = preprocess(cinc_lead_i["E07501"], 500)
    assert np.max(np.abs(y - ref)[3000:]) < 0.1


def test_preprocess_refuses_long_nan_gap_and_all_nan():
    x = np.sin(np.arange(5000) / 30.0)
    x[1000:1100] = np.nan  # 0.2 s
    with pytest.raises(SignalError, match=r"gap of 100 missing samples \(0\.200 s"):
        preprocess(x, 500)
    with pytest.raises(SignalError, match="no finite samples"):
        preprocess(np.full(5000, np.nan), 500)
    x2 = np.sin(np.arange(5000) / 30.0)
    x2[10] = np.inf
    assert np.isfinite(preprocess(x2, 500)).all()


def test_fill_short_gaps_is_linear():
    x = np.array([0.0, 1.0, np.nan, np.nan, 4.0, 5.0])
    np.testing.assert_allclose(fill_short_gaps(x, 100.0), [0, 1, 2, 3, 4, 5])
    clean = np.arange(5.0)
    assert fill_short_gaps(clean, 100.0) is clean


@pytest.mark.parametrize(
    ("x", "fs", "match"),
    [
        (np.zeros(5000), 0, "positive"),
        (np.zeros(5000), -500, "positive"),
        (np.zeros(5000), float("nan"), "positive"),
        (np.zeros(5000), 5e6, "not a plausible"),
        (np.zeros(5000), 10, "not a plausible"),
        (np.zeros(5000), "fast", "number"),
        (np.zeros(20), 500, "at least"),
        (np.zeros((2, 3, 5000)), 500, "1-D"),
        (np.array([], dtype=float), 500, "empty"),
        (np.array(["a"] * 5000), 500, "numeric"),
    ],
)
def test_preprocess_bad_input_errors(x, fs, match):
    with pytest.raises(SignalError, match=match):
        preprocess(x, fs)


# --- resampling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fs", "n_in", "n_out"),
    [
        (360, 3600, 5000),
        (250, 2500, 5000),
        (1000, 10000, 5000),
        (128, 1280, 5000),
        (130, 1300, 5000),
    ],
)
def test_resample_lengths(fs, n_in, n_out):
    y = resample(np.zeros(n_in), fs)
    assert y.shape == (n_out,) and y.dtype == np.float32


def test_resample_fractional_rate_and_identity():
    # A measured Polar H10 rate: ratio approximated with denominator <= 1000.
    y = resample(np.zeros(13004), 130.04)
    assert abs(y.size - 50000) <= 1
    x = np.arange(10.0)
    same = resample(x, 500)
    assert same.dtype == np.float32 and not np.shares_memory(same, x)


def test_resample_preserves_a_sine():
    f0 = 7.0
    t_in = np.arange(3600) / 360
    y = resample(
        np.sin(2 * np.pi * f0 * t_in) + 1.5, 360, TARGET_FS
    )  # offset: edges padded by a line
    t_out = np.arange(y.size) / TARGET_FS
    expected = np.sin(2 * np.pi * f0 * t_out) + 1.5
    assert np.max(np.abs(y - expected)[50:-50]) < 2e-3
    assert np.max(np.abs(y - expected)) < 0.05


def test_resample_batch_axis():
    x = np.random.default_rng(1).normal(size=(3, 3600))
    y = resample(x, 360)
    assert y.shape == (3, 5000)
    np.testing.assert_allclose(y[1], resample(x[1], 360), atol=1e-6)


# --- windows -----------------------------------------------------------------------------


def test_extract_windows_default_hop_and_views():
    x = np.arange(31 * 500, dtype=np.float64)
    w, starts = extract_windows(x, 500)
    assert w.shape == (3, 5000)
    np.testing.assert_array_equal(starts, [0, 5000, 10000])
    np.testing.assert_array_equal(w[2], x[10000:15000])
    assert np.shares_memory(w, x)  # a view, not a copy
    assert not w.flags.writeable


def test_extract_windows_with_hop():
    x = np.arange(30 * 500, dtype=np.float32)
    w, starts = extract_windows(x, 500, window_s=10.0, hop_s=5.0)
    assert w.shape == (5, 5000)
    np.testing.assert_array_equal(starts, np.arange(5) * 2500)
    for row, s in zip(w, starts, strict=True):
        np.testing.assert_array_equal(row, x[s : s + 5000])


@needs_data
def test_extract_windows_on_mitdb(mit100):
    x, _ = mit100
    w, starts = extract_windows(x, 360, window_s=10.0)
    assert w.shape == (x.size // 3600, 3600)
    assert starts[-1] + 3600 <= x.size


def test_extract_windows_short_record_error():
    with pytest.raises(SignalError, match=r"7\.20 s long .* needs 10\.00 s \(5000 samples\)"):
        extract_windows(np.zeros(3600), 500)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 0}, "window_s"),
        ({"hop_s": 0}, "hop_s"),
        ({"hop_s": -1}, "hop_s"),
    ],
)
def test_extract_windows_bad_args(kwargs, match):
    with pytest.raises(SignalError, match=match):
        extract_windows(np.zeros(20000), 500, **kwargs)


def test_extract_windows_needs_1d():
    with pytest.raises(SignalError, match="1-D"):
        extract_windows(np.zeros((2, 20000)), 500)


# --- R peaks and heart rate ----------------------------------------------------------------


def _match(detected: np.ndarray, reference: np.ndarray, tol: int) -> tuple[float, float]:
    """(sensitivity, positive predictive value) with a +-tol sample matching window."""
    se = np.mean([np.min(np.abs(detected - r)) <= tol for r in reference])
    ppv = np.mean([np.min(np.abs(reference - d)) <= tol for d in detected])
    return float(se), float(ppv)


@needs_data
def test_r_peaks_match_mitdb_100_annotations_first_5_min(mit100):
    x, beats = mit100
    n = 5 * 60 * 360
    peaks = detect_r_peaks(x[:n], 360)
    ref = beats[beats < n]
    se, ppv = _match(peaks, ref, tol=round(0.1 * 360))
    assert se >= 0.95 and ppv >= 0.95, (se, ppv)
    # The R sample itself is found, not just the beat.
    offsets = [np.min(np.abs(peaks - r)) for r in ref]
    assert np.percentile(offsets, 95) <= 3


@needs_data
def test_r_peaks_on_mitdb_windows_after_resampling(mit100):
    x, beats = mit100
    seg = x[360 * 60 : 360 * 70]
    peaks_500 = detect_r_peaks(resample(seg, 360), 500)
    ref = (beats[(beats >= 360 * 60) & (beats < 360 * 70)] - 360 * 60) * 500 / 360
    # A beat cut by the window edge (within 0.1 s) need not be found.
    ref = ref[(ref >= 50) & (ref < 5000 - 50)]
    se, ppv = _match(peaks_500, ref, tol=50)
    assert se >= 0.95 and ppv >= 0.95


def test_r_peaks_none_in_noise():
    rng = np.random.default_rng(3)
    for _ in range(10):
        assert detect_r_peaks(rng.normal(0, 0.2, 5000), 500).size == 0


def test_heart_rate_bpm():
    assert heart_rate_bpm(np.arange(0, 5000, 400), 500) == pytest.approx(75.0)
    assert heart_rate_bpm(np.array([0, 400, 800, 1600, 2000]), 500) == pytest.approx(75.0)
    assert math.isnan(heart_rate_bpm(np.array([10]), 500))


# --- quality gate -------------------------------------------------------------------------


@needs_data
def test_quality_ok_on_every_real_cinc_lead_i(cinc_lead_i):
    for name, x in cinc_lead_i.items():
        q = assess_quality(x, 500)
        assert q.ok, f"{name}: {q.reasons} {q.metrics}"
        assert 30 <= q.metrics["heart_rate_bpm"] <= 220
        assert q.metrics["n_beats"] >= 5
        assert q.metrics["nan_fraction"] == 0.0


@needs_data
def test_quality_ok_on_mitdb_windows(mit100):
    x, _ = mit100
    windows, _ = extract_windows(x[: 360 * 600], 360)
    for i, w in enumerate(windows):
        q = assess_quality(w, 360)
        assert q.ok, (i, q.reasons)
        assert 55 <= q.metrics["heart_rate_bpm"] <= 95


@needs_data
def test_quality_flags_real_bad_leads(cinc_leads):
    # Leads in the CinC data that are truly unusable: absent (all zero) and motion artefact.
    names, sig = cinc_leads["JS20004"]
    q = assess_quality(sig[:, names.index("V2")], 500)
    assert not q.ok and "flat_line" in q.reasons and "no_beats" in q.reasons
    names, sig = cinc_leads["JS20019"]
    q = assess_quality(sig[:, names.index("V6")], 500)
    assert "implausible_amplitude" in q.reasons


@pytest.fixture(scope="module")
def clean(cinc_lead_i):
    return cinc_lead_i["E07500"].copy()


@needs_data
def test_quality_flat_line(clean):
    q = assess_quality(np.zeros(5000), 500)
    assert q.reasons[0] == "flat_line" and "clipping" not in q.reasons
    x = clean.copy()
    x[1000:3000] = x[1000]  # 4 s lead-off in the middle
    q = assess_quality(x, 500)
    assert "flat_line" in q.reasons and q.metrics["flat_fraction"] >= 0.3


@needs_data
def test_quality_clipping(clean):
    top = np.percentile(clean, 99.0)
    q = assess_quality(np.minimum(clean, top), 500)
    assert "clipping" in q.reasons, q.metrics
    assert q.metrics["n_clip_plateaus"] >= 3


@needs_data
def test_quality_saturation(clean):
    x = clean.copy()
    x[2000:2300] = clean.max() + 2.0  # railed for 0.6 s
    q = assess_quality(x, 500)
    assert "saturation" in q.reasons
    assert q.metrics["longest_plateau_s"] == pytest.approx(0.6)


@needs_data
def test_quality_nan_run(clean):
    x = clean.copy()
    x[2500:2600] = np.nan  # 0.2 s lost
    q = assess_quality(x, 500)
    assert q.reasons == ["nan_run"]
    assert q.metrics["nan_fraction"] == pytest.approx(0.02)
    assert q.metrics["longest_nan_run_s"] == pytest.approx(0.2)
    x[2500:2600] = clean[2500:2600]
    x[2500:2510] = np.nan  # 20 ms: tolerated, like preprocess
    assert assess_quality(x, 500).ok
    q = assess_quality(np.full(5000, np.nan), 500)
    assert q.reasons == ["nan_run"] and q.metrics["nan_fraction"] == 1.0


@needs_data
def test_quality_implausible_amplitude(clean):
    # uV data labelled mV: 1000x too large.
    q = assess_quality(clean * 1000.0, 500)
    assert "implausible_amplitude" in q.reasons
    q = assess_quality(clean * 0.02, 500)  # ~30 uV peak to peak
    assert "implausible_amplitude" in q.reasons


@pytest.mark.parametrize("colour", ["white", "lowpass", "brown"])
def test_quality_no_beats_in_noise(colour):
    rng = np.random.default_rng(11)
    for _ in range(5):
        x = rng.normal(0, 0.3, 5000)
        if colour == "lowpass":
            x = scipy.signal.sosfiltfilt(scipy.signal.butter(2, 20, fs=500, output="sos"), x) * 3
        elif colour == "brown":
            x = np.cumsum(x) * 0.05
        q = assess_quality(x, 500)
        assert "no_beats" in q.reasons, q.metrics
        assert q.metrics["n_beats"] == 0 and math.isnan(q.metrics["heart_rate_bpm"])


@needs_data
def test_quality_implausible_heart_rate(cinc_lead_i):
    # Replay a real record as if sampled slower: every interval stretches, the rate drops.
    x = cinc_lead_i["E07509"]
    hr = assess_quality(x, 500).metrics["heart_rate_bpm"]
    fs_slow = 500 * 25.0 / hr  # -> ~25 bpm
    q = assess_quality(x, fs_slow)
    assert q.reasons == ["implausible_heart_rate"], q.metrics
    assert q.metrics["heart_rate_bpm"] == pytest.approx(25.0, rel=0.05)


def test_quality_report_and_errors():
    q = QualityReport(ok=False, reasons=["flat_line", "no_beats"])
    assert q.summary() == "rejected: flat_line, no_beats"
    with pytest.raises(SignalError, match="needs >= 2 s"):
        assess_quality(np.zeros(500), 500)
    with pytest.raises(SignalError, match="1-D"):
        assess_quality(np.zeros((2, 5000)), 500)
    with pytest.raises(SignalError, match="plausible"):
        assess_quality(np.zeros(5000), 1e9)


def _same_report(a: QualityReport, b: QualityReport) -> bool:
    if (a.ok, a.reasons, list(a.metrics)) != (b.ok, b.reasons, list(b.metrics)):
        return False
    return all(
        x == y or (math.isnan(x) and math.isnan(y))
        for x, y in zip(a.metrics.values(), b.metrics.values(), strict=True)
    )


@needs_data
def test_quality_batch_equals_one_window_at_a_time(cinc_leads):
    # Every kind of window in one batch: real leads (incl. the absent and the noisy
    # ones), each defect the gate knows, NaN gaps short and long, all-NaN, pure noise.
    rng = np.random.default_rng(4)
    rows = [sig[:, j] for _, sig in list(cinc_leads.values())[:12] for j in range(12)]
    clean = rows[0]
    defects = [np.zeros(5000), np.full(5000, np.nan), rng.normal(0, 0.3, 5000)]
    x = clean.copy()
    x[1000:3000] = x[1000]
    defects.append(x)
    defects.append(np.minimum(clean, np.percentile(clean, 99.0)))
    x = clean.copy()
    x[2000:2300] = clean.max() + 2.0
    defects.append(x)
    for gap in (slice(2500, 2600), slice(2500, 2510), slice(0, 7)):
        x = clean.copy()
        x[gap] = np.nan
        defects.append(x)
    defects += [clean * 1000.0, clean * 0.02, np.round(clean, 1), np.cumsum(defects[2]) * 0.05]
    batch = np.stack(rows + defects)
    rng.shuffle(batch)
    reports = assess_quality_batch(batch, 500)
    assert len(reports) == len(batch)
    singles = [assess_quality(w, 500) for w in batch]
    assert all(_same_report(a, b) for a, b in zip(reports, singles, strict=True))
    reasons = {r for q in reports for r in q.reasons}
    assert {"flat_line", "clipping", "saturation", "nan_run", "no_beats"} <= reasons
    assert sum(q.ok for q in reports) >= 100
    # A row's report does not depend on its neighbours or the block it lands in.
    back = assess_quality_batch(batch[::-1], 500)[::-1]
    assert all(_same_report(a, b) for a, b in zip(reports, back, strict=True))
    odd = assess_quality_batch(batch[3:10], 500)
    assert all(_same_report(a, b) for a, b in zip(reports[3:10], odd, strict=True))
    # Rows with a few huge candidates next to ordinary ones: a leak of beat candidates
    # across rows would raise the neighbours' local threshold.
    spikes = np.zeros(5000)
    spikes[[300, 800]] = 50.0  # early: its candidates sit where the next row begins
    mixed = np.stack([spikes, clean, rows[5], spikes, rows[7], spikes])
    got = assess_quality_batch(mixed, 500)
    assert all(_same_report(assess_quality(w, 500), q) for w, q in zip(mixed, got, strict=True))
    assert got[1].ok and got[2].ok


@needs_data
def test_quality_batch_on_mitdb_windows_at_360hz(mit100):
    x, _ = mit100
    windows, _ = extract_windows(x[: 360 * 300], 360)
    reports = assess_quality_batch(windows, 360)
    singles = [assess_quality(w, 360) for w in windows]
    assert all(_same_report(a, b) for a, b in zip(reports, singles, strict=True))
    assert all(q.ok for q in reports)


@needs_data
def test_model_inputs_equals_gate_then_preprocess_window_by_window(mit100):
    """The device's gate -> preprocess step (batched) feeds the model exactly what gating
    and preprocessing each window alone gives, rejected windows included."""
    from anyecg_edge.predict import model_inputs
    from anyecg_edge.runtime import ModelMetadata

    x, _ = mit100
    x = x[: 360 * 300].copy()
    x[360 * 25 : 360 * 60] = 0.0  # a dead-lead stretch: some windows get rejected
    windows, _ = extract_windows(x, 360, hop_s=5.0)
    for mains, used in (("model", 60.0), (None, None), (50.0, 50.0)):
        meta = ModelMetadata(labs=["a"], mains_hz=60.0)
        reports, got = model_inputs(windows, 360, meta, mains)
        singles = [assess_quality(w, 360) for w in windows]
        assert all(_same_report(a, b) for a, b in zip(reports, singles, strict=True))
        assert 0 < sum(not q.ok for q in singles) < len(singles)
        want = np.stack(
            [
                preprocess(w, 360, mains_hz=used)
                for w, q in zip(windows, singles, strict=True)
                if q.ok
            ]
        )
        assert got.dtype == np.float32 and np.array_equal(got, want)
    flat = np.zeros((2, 3600))
    reports, got = model_inputs(flat, 360, ModelMetadata(labs=["a"]))
    assert got is None and [q.ok for q in reports] == [False, False]


def test_quality_batch_errors_and_empty():
    assert assess_quality_batch(np.zeros((0, 5000)), 500) == []
    with pytest.raises(SignalError, match="2-D"):
        assess_quality_batch(np.zeros(5000), 500)
    with pytest.raises(SignalError, match="needs >= 2 s"):
        assess_quality_batch(np.zeros((3, 500)), 500)
    with pytest.raises(SignalError, match="plausible"):
        assess_quality_batch(np.zeros((3, 5000)), 1e9)


# --- benchmark smoke test -------------------------------------------------------------------


@needs_data
def test_bench_preprocess_runs(capsys):
    import json

    from anyecg_edge.benchmarks.bench_preprocess import main

    assert main(["--iterations", "1", "--json", "--data-dir", str(DATA)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["windows_500hz"] == 50 and res["windows_360hz"] == 60
    assert res["max_abs_diff_z"] < 1e-3
    for key in (
        "fast",
        "authors",
        "quality_gate",
        "fast_from_360hz",
        "fast_batch",
        "quality_gate_batch",
    ):
        assert res[key]["calls"] > 0 and 0 < res[key]["p50_ms"] <= res[key]["p95_ms"]
    assert main(["--iterations", "1", "--data-dir", str(DATA)]) == 0
    assert "authors_preprocess" in capsys.readouterr().out


def test_resample_rates_within_ratio_resolution_are_a_copy() -> None:
    # 360.11 -> 360 Hz rounds to a 1/1 ratio (denominator cap): no filter design, no crash.
    from anyecg_edge.signal import resample

    x = np.random.default_rng(0).normal(size=3600)
    y = resample(x, 360.11, 360)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x.astype(np.float32))


# --- exact messages and the batch gap path (written against the mutants `make mutate` found) --


def test_preprocess_messages_name_the_argument() -> None:
    x = np.sin(np.linspace(0, 60, 2000))
    with pytest.raises(SignalError) as exc:
        preprocess(x, 500, target_fs=-1)
    assert str(exc.value) == "target_fs must be a positive sampling rate in Hz, got -1"
    with pytest.raises(SignalError) as exc:
        preprocess(x, 0.5)
    assert str(exc.value).startswith("fs=0.5 Hz is not a plausible ECG sampling rate")
    # 60 Hz mains at a 100 Hz target: at Nyquist, no notch possible
    with pytest.raises(SignalError) as exc:
        preprocess(x, 500, target_fs=100, mains_hz=60)
    assert str(exc.value) == "mains_hz=60 is not below the Nyquist rate of fs=100 Hz"


def test_preprocess_batch_bridges_a_short_gap_like_a_row() -> None:
    rng = np.random.default_rng(4)
    rows = rng.normal(0.0, 1.0, (2, 5000))
    rows[1, 1000:1010] = np.nan  # 20 ms at 500 Hz: bridged
    batch = preprocess(rows, 500)
    np.testing.assert_allclose(batch[1], preprocess(rows[1], 500), rtol=1e-12, atol=1e-12)
