"""Synthetic MC-MED cohort: layout, determinism, dirty values, planted effects."""

from __future__ import annotations

import csv
import hashlib
import json
import re

import numpy as np
import pytest
from anyecg_edge.training.data import mcmed, synth_ecg
from anyecg_edge.training.data.synth import synth_cohort

from anyecg_edge.labs import load_catalog

SMALL = {"segments_per_visit": (2, 3), "segment_s": (20.0, 30.0)}


def _tree_digest(root):
    h = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    truth = synth_cohort(root, 60, seed=11, **SMALL)
    return root, truth


def test_deterministic_for_a_seed(tmp_path, cohort):
    root, _ = cohort
    again = tmp_path / "again"
    synth_cohort(again, 60, seed=11, **SMALL)
    assert _tree_digest(again) == _tree_digest(root)
    other = tmp_path / "other"
    synth_cohort(other, 60, seed=12, **SMALL)
    assert _tree_digest(other)["labs.csv"] != _tree_digest(root)["labs.csv"]


def test_layout_and_columns_match_mcmed(cohort):
    root, truth = cohort
    with open(root / "visits.csv", newline="") as f:
        header = next(csv.reader(f))
    for col in ("MRN", "CSN", "Age", "Gender", "Arrival_time", "Departure_time"):
        assert col in header
    with open(root / "labs.csv", newline="") as f:
        lab_header = next(csv.reader(f))
    assert lab_header == [
        "CSN", "Order_time", "Result_time", "Display_name", "Abnormal", "Component_name",
        "Component_result", "Component_value", "Component_units", "Component_abnormal",
        "Component_nml_low", "Component_nml_high",
    ]  # fmt: skip
    visits = mcmed.read_visits(root)
    assert len(visits) == 60 and visits["MRN"].nunique() == truth["n_patients"] < 60
    years = visits["Arrival_time"].to_numpy().astype("datetime64[Y]").astype(int) + 1970
    assert years.min() >= 2205 and years.max() <= 2295
    splits = {}
    for scheme in ("random", "chrono"):
        for name in ("train", "val", "test"):
            lines = (root / f"split_{scheme}_{name}.csv").read_text().splitlines()
            assert all(re.fullmatch(r"\d{8}", ln) for ln in lines)  # no header, CSNs only
        splits[scheme] = mcmed.read_splits(root, scheme)
        assert sorted(splits[scheme]) == sorted(visits["CSN"])
    # The random split is grouped by patient, like MC-MED's.
    side = visits.assign(s=visits["CSN"].map(splits["random"])).groupby("MRN")["s"].nunique()
    assert side.max() == 1
    heas = sorted((root / "waveforms").glob("*/*/II/*.hea"))
    assert len(heas) == truth["n_segments"]
    for hea in heas:
        csn = hea.parent.parent.name
        assert hea.parent.parent.parent.name == csn[-3:]
        assert re.fullmatch(rf"{csn}_\d+", hea.stem)
    segs, errs = mcmed.list_segments(root, heas[0].parent.parent.name)
    assert not errs and segs[0].seg == 1
    fields = heas[0].read_text().splitlines()[1].split()
    assert fields[1] == "16" and fields[2].endswith("/mV") and fields[-1] == "II"
    # Segments of one visit are in time order with gaps between them.
    for a, b in zip(segs[:-1], segs[1:], strict=True):
        end = a.start + np.timedelta64(int(a.n_samples * 1000 / a.fs), "ms")
        assert b.start > end


def test_truth_and_dirty_values(cohort):
    root, truth = cohort
    catalog = load_catalog()
    assert set(truth["planted_labs"]) == {"POTASSIUM", "CALCIUM", "HEMOGLOBIN (HGB)", "MAGNESIUM"}
    for name in truth["planted_labs"] + truth["unplanted_labs"]:
        assert catalog.lookup(name) is not None, name
    assert truth["planted_keys"] == [catalog.lookup(n).key for n in truth["planted_labs"]]
    assert set(truth["effects"]) == set(truth["planted_labs"])
    assert json.loads((root / "truth.json").read_text()) == truth
    assert [d["kind"] for d in truth["defects"]] == ["truncated_dat", "wrong_fs"]
    text = (root / "labs.csv").read_text()
    values = []
    with open(root / "labs.csv", newline="") as f:
        for row in csv.DictReader(f):
            values.append(row["Component_value"])
    assert values.count("Canceled") == truth["n_canceled"] > 0
    assert any(re.fullmatch(r"[0-9.]+ \((H|L)\)", v) for v in values)
    assert any(v.startswith(("<", ">")) for v in values)
    assert '"POC:LACTATE, ISTAT"' in text or '"SMEAR REVIEW,\nPATHOLOGIST COMMENT"' in text
    df, stats = mcmed.read_labs(root)
    assert stats.skipped["canceled"] == truth["n_canceled"]
    with open(root / "labs.csv", newline="") as f:
        written = {row["Component_name"] for row in csv.DictReader(f)}
    assert {"HEMOGLOBIN", "HEMOGLOBIN (HGB)"} <= written  # synonyms of one analyte
    assert set(df["lab_key"]) >= set(truth["planted_keys"])


def _template(**state):
    rng = np.random.default_rng(0)
    p = synth_ecg._Patient(
        mrn="1", sex="F", age0=50.0, t0=0, hr_base=70.0, r_amp=1.0, t_amp=0.3, p_amp=0.12,
        qrs_w=1.0, t_w=0.045, noise=0.0,
    )  # fmt: skip
    base = {"POTASSIUM": 4.2, "CALCIUM": 9.4, "HEMOGLOBIN (HGB)": 14.0, "MAGNESIUM": 2.0}
    m = synth_ecg._morphology(p, {**base, **state}, rng)
    args = {k: m[k] for k in ("r_amp", "p_amp", "t_amp", "u_amp", "qrs_w", "t_w", "pr_s",
                              "qtc_s")}  # fmt: skip
    y, r = synth_ecg._beat_template(fs=500, rr_s=60.0 / m["hr_bpm"], **args)
    return m, y, r


def _t_wave(y, r):
    seg = y[r + 60 :]  # after the QRS (120 ms)
    peak = int(np.argmax(seg))
    end = peak + int(np.argmax(seg[peak:] < 0.02 * seg[peak]))
    return seg[peak], (60 + end) / 500.0


def test_planted_effects_follow_the_physiology():
    m0, y0, r0 = _template()
    t_amp0, t_end0 = _t_wave(y0, r0)
    # Hyperkalaemia: T at least twice as tall, QRS wider. Hypokalaemia: flat T + U wave.
    mk, yk, rk = _template(POTASSIUM=6.5)
    assert _t_wave(yk, rk)[0] > 2.0 * t_amp0 and mk["qrs_w"] > 1.3 * m0["qrs_w"]
    ml, yl, rl = _template(POTASSIUM=2.9)
    assert _t_wave(yl, rl)[0] < 0.6 * t_amp0 and ml["u_amp"] > 0.1
    # Hypocalcaemia: QT (R to T end) at least 60 ms longer; hypercalcaemia: shorter.
    assert _t_wave(*_template(CALCIUM=7.5)[1:])[1] > t_end0 + 0.06
    assert _t_wave(*_template(CALCIUM=11.5)[1:])[1] < t_end0 - 0.04
    # Anaemia: tachycardia. Hypomagnesaemia: longer PR.
    assert _template(**{"HEMOGLOBIN (HGB)": 7.0})[0]["hr_bpm"] > m0["hr_bpm"] + 15
    assert _template(MAGNESIUM=1.2)[0]["pr_s"] > m0["pr_s"] + 0.08
    # Unplanted labs do not enter the beat model at all.
    assert _template(SODIUM=120.0, GLUCOSE=400.0)[0] == _template(SODIUM=150.0)[0]


def test_waveform_heart_rate_tracks_hemoglobin_but_not_sodium(cohort):
    """In the written waveforms: planted (Hgb -> HR) shows, unplanted (Na) does not."""
    from anyecg_edge.signal import detect_r_peaks, heart_rate_bpm

    root, _ = cohort
    labs, _ = mcmed.read_labs(root)
    first = labs.drop_duplicates(["CSN", "lab_key"]).pivot(
        index="CSN", columns="lab_key", values="value"
    )
    hr = {}
    for csn in first.index:
        segs, _ = mcmed.list_segments(root, csn)
        for s in segs:
            try:
                x = mcmed.read_segment(s)
            except mcmed.MCMEDError:
                continue  # the planted defects
            hr[csn] = heart_rate_bpm(detect_r_peaks(np.nan_to_num(x), 500.0), 500.0)
            break

    def corr(key):
        pairs = [(first.at[c, key], h) for c, h in hr.items() if np.isfinite(h)]
        a = np.asarray([p for p in pairs if np.isfinite(p[0])], dtype=float)
        assert len(a) >= 20
        return np.corrcoef(a[:, 0], a[:, 1])[0, 1]

    assert corr("hemoglobin") < -0.5
    assert abs(corr("sodium")) < 0.35


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_visits must be >= 1"):
        synth_cohort(tmp_path, 0)
    with pytest.raises(ValueError, match="segment_s"):
        synth_cohort(tmp_path, 2, segment_s=(5.0, 1.0))
