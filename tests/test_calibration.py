"""Honest calibration: monotone, shrunk on small sets, no degenerate thresholds, labs without
enough validation visits left uncalibrated (and reported so), bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from anyecg_edge.training.calibration import (
    MIN_PER_CLASS,
    fit_lab_calibration,
    fit_platt,
    manifest_fields,
    sigmoid,
    youden_threshold,
)

from anyecg_edge.estimates import interval_bounds
from anyecg_edge.io import Record
from anyecg_edge.predict import predict_record
from anyecg_edge.runtime import Model, ModelError, ModelMetadata

pytestmark = pytest.mark.device  # no torch: also run on arm64 by make test-arm64


def test_platt_recovers_known_parameters() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 40_000)
    y = rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.05)


def test_platt_never_reverses_the_ranking() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, 400)
    y = rng.random(z.size) < sigmoid(-2.0 * z)  # the model ranks this lab backwards
    a, b = fit_platt(z, y)
    assert a == 0.0 and np.isfinite(b)
    fits = fit_lab_calibration(z[:, None], y[:, None].astype(np.int8), ["x"], n_bootstrap=0)
    assert not fits["x"].calibrated and "backwards" in fits["x"].reason
    assert fits["x"].threshold is None


def test_small_separable_set_gets_a_moderate_slope() -> None:
    # 12 windows, perfectly separated: plain Platt runs the slope off to ~infinity.
    z = np.r_[np.linspace(-1, -0.1, 6), np.linspace(0.1, 1, 6)]
    y = np.r_[np.zeros(6), np.ones(6)].astype(bool)
    a, _ = fit_platt(z, y)
    assert 1.0 < a < 6.0
    a_big, _ = fit_platt(np.tile(z, 200), np.tile(y, 200))
    assert a_big > 3 * a  # the shrinkage fades with data


def test_youden_threshold_sits_between_scores() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    thr = youden_threshold(p, y)
    # Midway in logit space between 0.3 and 0.7 -> 0.5; the val calls are the same as a
    # cut at 0.7.
    assert thr == pytest.approx(0.5)
    assert np.array_equal(p >= thr, p >= 0.7)
    # Saturated scores still give a threshold strictly inside (0, 1).
    t2 = youden_threshold(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]))
    assert 0.0 < t2 < 1.0


def _cohort(n_visits: int, windows_per_visit: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    visit_y = rng.random(n_visits) < 0.4
    y = np.repeat(visit_y, windows_per_visit)
    z = rng.normal(0, 1, y.size) + 1.5 * y
    groups = np.repeat([f"v{i}" for i in range(n_visits)], windows_per_visit)
    return z, y, groups


def test_minimum_counts_visits_not_windows() -> None:
    # Two abnormal visits with 20 windows each: plenty of windows, too few visits.
    z, y, groups = _cohort(30, 20)
    pos_visits = np.unique(groups[y])
    keep = ~y | np.isin(groups, pos_visits[:2])
    fits = fit_lab_calibration(
        z[keep, None], y[keep, None].astype(np.int8), ["lab"], groups=groups[keep]
    )
    f = fits["lab"]
    assert not f.calibrated and f.n_pos == 2 and f.unit == "visits"
    assert f"minimum {MIN_PER_CLASS}" in f.reason
    # Counted per window (no groups) the same data would pass the minimum.
    assert fit_lab_calibration(z[keep, None], y[keep, None].astype(np.int8), ["lab"])[
        "lab"
    ].calibrated


def test_manifest_fields_have_no_degenerate_thresholds() -> None:
    z, y, groups = _cohort(60, 3)
    targets = np.stack([y, y, np.zeros_like(y), y], axis=1).astype(np.int8)
    targets[:, 3] = -1  # never measured
    logits = np.stack([z, -z, z, z], axis=1)
    fits = fit_lab_calibration(
        logits, targets, ["good", "reversed", "no_pos", "none"], groups=groups
    )
    fields = manifest_fields(fits)
    assert fields["calibrated"] == {
        "good": True, "reversed": False, "no_pos": False, "none": False,
    }  # fmt: skip
    assert set(fields["thresholds"]) == {"good"} == set(fields["calibration"])
    assert all(0.0 < t < 1.0 for t in fields["thresholds"].values())
    assert all(a > 0 for a, _ in fields["calibration"].values())
    assert len(fields["calibration_bootstrap"]["good"]) == fields["uncertainty"]["n"] > 0
    json.dumps(fields)  # the manifest is JSON
    meta = ModelMetadata.from_dict({"labs": ["good", "reversed", "no_pos", "none"], **fields})
    assert [meta.is_calibrated(k) for k in meta.labs] == [True, False, False, False]
    assert not meta.all_calibrated and meta.interval_level == pytest.approx(0.9)


def test_bootstrap_interval_narrows_with_more_validation_visits() -> None:
    widths = []
    for n in (40, 640):
        z, y, groups = _cohort(n, 2, seed=n)
        f = fit_lab_calibration(z[:, None], y[:, None].astype(np.int8), ["x"], groups=groups)["x"]
        ab = np.array(f.bootstrap)
        p = sigmoid(ab[:, 0] * 0.75 + ab[:, 1])[:, None]
        lo, hi = interval_bounds(p, 0.9)[:, 0]
        assert lo <= sigmoid(f.a * 0.75 + f.b) <= hi
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"thresholds": {"a": 0.0}}, "thresholds['a'] must be strictly between 0 and 1"),
        ({"thresholds": {"a": 1.0}}, "thresholds['a'] must be strictly between 0 and 1"),
        ({"calibration": {"a": [-0.6, 0.1]}}, "would reverse the model's ranking"),
        ({"calibrated": {"a": "yes"}}, "calibrated['a'] must be true or false"),
        ({"calibration_bootstrap": {"a": [[1.0]]}}, "list of [a, b] pairs"),
        ({"uncertainty": {"level": 2}}, "uncertainty.level must be in (0, 1)"),
    ],
)
def test_manifest_refuses_dishonest_calibration(patch: dict, message: str) -> None:
    with pytest.raises(ModelError) as err:
        ModelMetadata.from_dict({"labs": ["a"], **patch}, source="m.json")
    assert message in str(err.value) and str(err.value).startswith("m.json: ")
    assert "\n" not in str(err.value)


class LinearModel(Model):
    """A tiny numpy model: logit_j = w_j * mean(x) + c_j (for the device-side reporting)."""

    backend = "numpy"

    def __init__(self, meta: ModelMetadata, w: np.ndarray, c: np.ndarray) -> None:
        super().__init__(meta, "linear")
        self.w, self.c = w, c

    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        return windows.mean(axis=(1, 2))[:, None] * self.w + self.c


def test_predict_reports_uncalibrated_labs_as_null() -> None:
    meta = ModelMetadata(
        labs=["potassium", "sodium"],
        fs=500.0,
        window_s=10.0,
        mains_hz=None,
        calibration={"potassium": [1.0, 0.0]},
        thresholds={"potassium": 0.3},
        calibrated={"potassium": True, "sodium": False},
        calibration_bootstrap={"potassium": [[0.8, -0.2], [1.0, 0.0], [1.2, 0.2]]},
        uncertainty={"level": 0.9, "n": 3},
    )
    model = LinearModel(meta, np.array([1.0, 1.0]), np.array([0.0, 0.4]))
    assert np.isnan(model.thresholds()[1]) and model.thresholds()[0] == 0.3
    t = np.arange(60 * 500) / 500
    ph = t % 0.8  # 75 bpm: P, QRS and T bumps and a little noise pass the quality gate
    ecg = sum(a * np.exp(-((ph - c) ** 2) / (2 * w**2)) for a, c, w in (
        (0.1, 0.25, 0.02), (1.2, 0.4, 0.012), (0.25, 0.65, 0.04),
    ))  # fmt: skip
    ecg = ecg + 0.02 * np.random.default_rng(0).normal(size=t.size)
    rec = Record(signal_mv=ecg, fs=500.0, lead="II", source="synthetic")
    res = predict_record(rec, model).to_dict()
    k, na = res["labs"]["potassium"], res["labs"]["sodium"]
    assert k["abnormal"] is True and k["status"] == "abnormal" and k["threshold"] == 0.3
    lo, hi = k["interval"]
    assert lo <= k["probability"] <= hi and k["interval_level"] == 0.9
    assert na["abnormal"] is None and na["status"] == "not calibrated"
    assert na["threshold"] is None and na["interval"] is None
    assert res["model"]["labs_not_calibrated"] == ["sodium"]


# --- exact values (written against the mutants `make mutate` found alive) -------------------


def _youden_by_brute_force(p: np.ndarray, y: np.ndarray) -> float:
    """Every distinct score as a cut (flag p >= cut), the first best J from the top, the
    threshold midway in logit space to the next lower score (or 1 below the lowest)."""
    logit = lambda v: float(np.log(v / (1 - v)))  # noqa: E731
    cuts = sorted(set(p.tolist()), reverse=True)
    js = [((p >= c) & y).sum() / y.sum() - ((p >= c) & ~y).sum() / (~y).sum() for c in cuts]
    k = int(np.argmax(js))
    lo = logit(cuts[k + 1]) if k + 1 < len(cuts) else logit(cuts[k]) - 1.0
    return float(1 / (1 + np.exp(-0.5 * (logit(cuts[k]) + lo))))


@pytest.mark.parametrize("seed", range(6))
def test_youden_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    y = rng.random(n) < rng.uniform(0.15, 0.6)  # unbalanced classes
    y[0], y[1] = True, False
    p = np.round(1 / (1 + np.exp(-(rng.normal(size=n) + y))), 1 + seed % 2)  # with ties
    p = np.clip(p, 0.01, 0.99)
    assert youden_threshold(p, y) == pytest.approx(_youden_by_brute_force(p, y), abs=1e-12)


@pytest.mark.parametrize(
    ("p", "y"),
    [([0.9, 0.8, 0.3, 0.2], [0, 0, 1, 0]),  # best cut second-lowest: midway to the lowest
     ([0.9, 0.7, 0.4, 0.2], [0, 0, 0, 1]),  # anti-ranked: only flagging all (J 0) is best
     ([0.6, 0.3, 0.3, 0.1], [1, 0, 0, 0]),  # one positive
     ([0.6, 0.5, 0.5, 0.1], [1, 1, 1, 0])],  # one negative
)  # fmt: skip
def test_youden_threshold_edge_cases(p: list[float], y: list[int]) -> None:
    pa, ya = np.array(p), np.array(y, bool)
    assert youden_threshold(pa, ya) == pytest.approx(_youden_by_brute_force(pa, ya), abs=1e-12)


def test_youden_threshold_without_both_classes_is_one_half() -> None:
    p = np.array([0.2, 0.7, 0.9])
    assert youden_threshold(p, np.zeros(3, bool)) == 0.5
    assert youden_threshold(p, np.ones(3, bool)) == 0.5


def test_manifest_fields_exactly() -> None:
    from anyecg_edge.training.calibration import INTERVAL_LEVEL, LabCalibration

    fits = {
        "k": LabCalibration(
            True, 1.5, -0.2, 0.4, "ok", 12, 30, "visits", [[1.4, -0.1], [1.6, -0.3]]
        ),
        "na": LabCalibration(False, reason="too few positives", n_pos=2, n_neg=40, unit="windows"),
    }
    assert manifest_fields(fits) == {
        "calibration": {"k": [1.5, -0.2]},
        "thresholds": {"k": 0.4},
        "calibrated": {"k": True, "na": False},
        "calibration_bootstrap": {"k": [[1.4, -0.1], [1.6, -0.3]]},
        "uncertainty": {"method": "bootstrap of the calibration over validation visits",
                        "level": INTERVAL_LEVEL, "n": 2},
        "calibration_method": {
            "k": {"reason": "ok", "n_pos_visits": 12, "n_neg_visits": 30},
            "na": {"reason": "too few positives", "n_pos_windows": 2, "n_neg_windows": 40},
        },
    }  # fmt: skip
    # nothing calibrated: no bootstrap, n 0
    assert manifest_fields({"na": fits["na"]})["uncertainty"]["n"] == 0


def _platt_optimum(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The documented objective minimised by a general-purpose bounded optimiser."""
    from scipy.optimize import minimize

    n = len(z)

    def loss(th: np.ndarray) -> float:
        s = th[0] * z + th[1]
        ll = np.mean(np.logaddexp(0.0, s) - y * s)
        return float(ll + (10.0 / n) * (th[0] - 1) ** 2 / 2 + 1e-6 * th[1] ** 2 / 2)

    res = minimize(loss, [1.0, 0.0], method="L-BFGS-B", bounds=[(0, None), (None, None)],
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10_000})  # fmt: skip
    return float(res.x[0]), float(res.x[1])


@pytest.mark.parametrize("case", ["scaled", "shifted", "backwards"])
def test_fit_platt_reaches_the_optimum_in_a_few_newton_steps(case: str) -> None:
    rng = np.random.default_rng(5)
    z = rng.normal(0.0, 1.5, 80)
    score = {"scaled": 0.5 * z, "shifted": z - 1.0, "backwards": -z}[case]
    y = (rng.random(80) < sigmoid(score)).astype(float)
    a_opt, b_opt = _platt_optimum(z, y)
    # Newton converges quadratically: 8 steps from (1, 0) reach the optimum (a wrong
    # Hessian or step would not); the backwards case ends on the a = 0 bound.
    a, b = fit_platt(z, y, max_iter=8)
    assert a == pytest.approx(a_opt, abs=2e-5) and b == pytest.approx(b_opt, abs=2e-5)
    assert (a == 0.0) == (case == "backwards")


@pytest.mark.parametrize("scale, shift", [(4.0, 0.0), (20.0, 0.0), (4.0, 30.0)])
def test_fit_platt_stays_at_the_optimum_for_large_or_near_separable_logits(
    scale: float, shift: float
) -> None:
    """Large logits on a small, nearly separable set saturate the sigmoid: the undamped
    Newton step from (1, 0) overshot to intercepts of 1e5 (b = -583332 seen by mutation
    testing), which a lab's calibration would have accepted. The damped step stays at the
    documented optimum."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal(36)
    y = ((z + 0.3 * rng.standard_normal(36)) > 0.5).astype(float)
    logits = scale * z + shift
    a_opt, b_opt = _platt_optimum(logits, y)
    a, b = fit_platt(logits, y)
    assert abs(b) < 100
    assert a == pytest.approx(a_opt, abs=1e-3) and b == pytest.approx(b_opt, abs=1e-2)


def test_fit_platt_degenerate_inputs() -> None:
    assert fit_platt(np.array([]), np.array([])) == (1.0, 0.0)
    a, b = fit_platt(np.array([2.0]), np.array([1.0]))  # one window: the prior keeps a near 1
    assert (a, b) != (1.0, 0.0) and a == pytest.approx(1.0, abs=0.2)
    with pytest.raises(ValueError) as exc:
        fit_platt(np.zeros(3), np.zeros(4))
    assert str(exc.value) == "fit_platt: logits (3,) and targets (4,) differ in shape"


def _bootstrap_by_hand(z, y, gid, a, b, n, rng) -> list[list[float]]:
    visits = sorted(set(gid.tolist()))
    members = [np.flatnonzero(gid == v) for v in visits]
    out = []
    for _ in range(n):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        yb = y[idx]
        ab = (a, b) if yb.all() or not yb.any() else fit_platt(z[idx], yb)
        out.append([round(max(ab[0], 0.0), 6), round(ab[1], 6)])
    return out


def test_fit_one_lab_exactly() -> None:
    from anyecg_edge.training.calibration import fit_one_lab

    rng = np.random.default_rng(11)
    gid = np.repeat(np.arange(12), 3)  # 12 visits x 3 windows, unsorted below
    perm = rng.permutation(36)
    gid = gid[perm]
    y = np.isin(gid, [0, 1, 2, 3, 4])  # exactly MIN_PER_CLASS abnormal visits
    z = rng.normal(0, 1, 36) + 1.5 * y
    fit = fit_one_lab(z, y, gid, "visits", n_bootstrap=3)
    a, b = fit_platt(z, y)
    assert (fit.calibrated, fit.a, fit.b) == (True, a, b)
    assert fit.threshold == youden_threshold(sigmoid(a * z + b), y)
    assert fit.reason == "monotone Platt (slope shrunk toward 1) + Youden threshold"
    assert (fit.n_pos, fit.n_neg, fit.unit) == (5, 7, "visits")
    assert fit.bootstrap == _bootstrap_by_hand(z, y, gid, a, b, 3, np.random.default_rng(0))
    assert len({tuple(x) for x in fit.bootstrap}) == 3  # resamples differ
    assert len(fit_one_lab(z, y, gid, "visits", n_bootstrap=1).bootstrap) == 1
    assert fit_one_lab(z, y, gid, "visits", n_bootstrap=0).bootstrap == []
    # one abnormal visit fewer than the minimum (on either side): refused, counts kept
    few = fit_one_lab(z, y, gid, "windows", min_per_class=6)
    assert (few.calibrated, few.n_pos, few.n_neg, few.unit) == (False, 5, 7, "windows")
    assert few.reason == "validation has 5 abnormal / 7 normal windows (minimum 6 of each)"
    assert fit_one_lab(z, ~y, gid, "visits", min_per_class=6).calibrated is False
    # exactly the minimum of normal visits passes the count check
    assert fit_one_lab(z, ~y, gid, "visits", min_per_class=5, n_bootstrap=0).calibrated is True
    r = np.random.default_rng(5)  # the backwards case of the Newton test above: a = 0
    zb = r.normal(0.0, 1.5, 80)
    yb = r.random(80) < sigmoid(-zb)
    back = fit_one_lab(zb, yb, np.arange(80), "windows", n_bootstrap=0)
    assert (back.calibrated, back.n_pos, back.n_neg) == (False, int(yb.sum()), int((~yb).sum()))
    assert back.unit == "windows"
    assert back.reason == ("the model ranks this lab backwards on validation; a calibration "
                           "would reverse it (refused)")  # fmt: skip


def test_fit_lab_calibration_passes_its_options_and_one_generator() -> None:
    from anyecg_edge.training.calibration import fit_one_lab

    rng = np.random.default_rng(2)
    z = rng.normal(0, 1, (40, 2))
    t = (rng.random((40, 2)) < sigmoid(2 * z)).astype(np.int8)
    t[0, 1] = -1  # unmeasured
    fits = fit_lab_calibration(z.astype(np.float32), t, ["p", "q"], n_bootstrap=2)
    shared = np.random.default_rng(0)  # seed 0, one generator over the labs in order
    for j, lab in enumerate(["p", "q"]):
        m = t[:, j] >= 0
        ref = fit_one_lab(z[m, j].astype(np.float32).astype(np.float64), t[m, j] == 1,
                          np.arange(40)[m], "windows", n_bootstrap=2, rng=shared)  # fmt: skip
        assert fits[lab] == ref
    assert fits["p"].unit == "windows" and fits["q"].n_pos + fits["q"].n_neg == 39
    assert fit_lab_calibration(z, t, ["p", "q"], min_per_class=40)["p"].calibrated is False
    for bad in [(z[:, :1], t), (z, t[:, :1]), (z[:, 0], t[:, 0])]:
        with pytest.raises(ValueError) as exc:
            fit_lab_calibration(*bad, ["p", "q"])
        assert str(exc.value).startswith("fit_lab_calibration: logits ")
    with pytest.raises(ValueError) as exc:
        fit_lab_calibration(z, t, ["p", "q"], groups=[1, 2, 3])
    assert str(exc.value) == "fit_lab_calibration: 3 group ids for 40 windows"


def test_bootstrap_keeps_the_fit_on_one_class_resamples_and_slopes_below_one() -> None:
    from anyecg_edge.training.calibration import fit_one_lab

    # One abnormal visit of eight: about a third of the resamples hold no abnormal window
    # (the fit is kept for those); a weak slope (< 1) is kept as it is (clipped at 0 only).
    rng = np.random.default_rng(3)
    gid = np.repeat(np.arange(8), 4)
    y = gid == 0
    z = rng.normal(0, 1, 32) + 0.8 * y
    fit = fit_one_lab(z, y, gid, "visits", min_per_class=1, n_bootstrap=12)
    assert fit.calibrated and fit.a < 1
    boot = _bootstrap_by_hand(z, y, gid, fit.a, fit.b, 12, np.random.default_rng(0))
    assert fit.bootstrap == boot
    kept = [x for x in boot if x == [round(fit.a, 6), round(fit.b, 6)]]
    assert 0 < len(kept) < 12 and any(0 < x[0] < 1 for x in boot if x not in kept)
