"""The parity gate (quantization/parity.py) on hand-made logits: every branch of
`check_tolerance`, the limits per precision, undefined metrics, lower vs upper limits,
`parse_tolerance` errors, and call agreement over the labs that have a threshold only.
Pure numpy: no export, no model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from anyecg_edge.quantization.errors import ExportError, ParityError
from anyecg_edge.quantization.parity import (
    DEFAULT_TOLERANCE,
    LOWER_LIMITS,
    TOLERANCE_KEYS,
    auroc,
    check_tolerance,
    metric_values,
    parity_report,
    parse_tolerance,
    unchecked_limits,
)

from anyecg_edge.runtime import ModelMetadata

LABS = ["a", "b", "c", "d"]


def _meta(thresholds: dict[str, float] | None = None, **kw) -> ModelMetadata:
    thr = {lab: 0.5 for lab in LABS} if thresholds is None else thresholds
    return ModelMetadata(labs=list(LABS), thresholds=thr, **kw)


def _logits(n: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 2.0, (n, len(LABS))).astype(np.float32)


# --- auroc -------------------------------------------------------------------------------


def test_auroc_matches_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(60) < 0.4
    s = np.round(rng.normal(size=60), 1)  # ties on purpose
    pos, neg = s[y], s[~y]
    pairs = [(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)]
    assert auroc(y, s) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert math.isnan(auroc(np.ones(5, bool), s[:5])) and math.isnan(auroc(np.zeros(5), s[:5]))


# --- parity_report -----------------------------------------------------------------------


def test_identical_logits_pass_every_precision() -> None:
    ref = _logits()
    r = parity_report(ref, ref.copy(), _meta())
    assert r["logits"]["max_abs_error"] == 0 and r["calls"]["agreement"] == 1.0
    assert r["auroc"]["mean_delta"] == 0 and r["auroc"]["n_labs"] == len(LABS)
    for precision, tol in DEFAULT_TOLERANCE.items():
        assert check_tolerance(r, tol) == [], precision
        assert unchecked_limits(r, tol) == []


def test_report_rejects_shape_mismatch_and_non_finite_export() -> None:
    ref = _logits()
    with pytest.raises(ExportError, match="shapes differ"):
        parity_report(ref, ref[:, :3], _meta())
    with pytest.raises(ExportError, match="shapes differ"):
        parity_report(ref[:, 0], ref[:, 0], _meta())
    bad = ref.copy()
    bad[3, 1] = np.nan
    bad[4, 2] = np.inf
    with pytest.raises(ParityError, match="2 non-finite logits"):
        parity_report(ref, bad, _meta())


def test_agreement_counts_only_labs_with_a_threshold() -> None:
    """A lab without a threshold makes no call: no 0.5 default, listed as uncalibrated."""
    ref = _logits()
    test = ref.copy()
    # Lab "d" (no threshold) flips sign: under a 0.5 default every call of it would differ.
    test[:, 3] = -ref[:, 3]
    meta = _meta({"a": 0.5, "b": 0.3, "c": 0.7})
    r = parity_report(ref, test, meta)
    calls = r["calls"]
    assert calls["n_labs_called"] == 3 and calls["uncalibrated_labs"] == ["d"]
    assert calls["agreement"] == 1.0 and calls["n_total"] == 3 * len(ref)
    assert calls["min_lab_agreement"] == 1.0
    assert r["per_lab"]["d"]["threshold"] is None and r["per_lab"]["d"]["agreement"] is None
    assert r["per_lab"]["b"]["threshold"] == 0.3
    # The rank-based AUROC deltas still cover the uncalibrated lab (median split), and see
    # its reversed ranking.
    d = r["per_lab"]["d"]["vs_calls"]
    assert d["reference"] == "median" and d["auroc_torch"] == 1.0 and d["auroc_export"] == 0.0
    assert r["auroc"]["n_labs"] == len(LABS) and r["auroc"]["max_delta"] == 1.0
    # Thresholds are the lab's own: at 0.7 a probability of 0.6 is normal for both models.
    p = 1 / (1 + np.exp(-ref[:, :3].astype(np.float64)))
    expected = np.mean(p >= np.array([0.5, 0.3, 0.7]))
    assert r["calls"]["torch_abnormal_rate"] == pytest.approx(expected, abs=1e-6)


def test_lab_called_all_one_class_is_ranked_around_the_median() -> None:
    ref = _logits()
    ref[:, 1] = np.abs(ref[:, 1]) + 1.0  # every window abnormal for lab "b"
    ref[:, 2] = -np.abs(ref[:, 2]) - 1.0  # every window normal for lab "c"
    test = ref.copy()
    test[:, 1:3] = -ref[:, 1:3]  # reversed ranking: only a two-class reference sees it
    r = parity_report(ref, test, _meta())
    for lab in ("b", "c"):
        entry = r["per_lab"][lab]["vs_calls"]
        assert entry["reference"] == "median" and entry["n_pos"] == entry["n_neg"] == 100
        assert entry["delta"] == 1.0
    assert r["per_lab"]["a"]["vs_calls"]["reference"] == "calls"


def test_calibrated_probabilities_decide_the_calls() -> None:
    """Calls use the Platt-calibrated probability, identity for an uncalibrated lab."""
    ref = np.array([[-0.1] * 4, [1.0] * 4] * 10, dtype=np.float32)
    test = ref + 0.2  # -0.1 -> 0.1 flips the call at threshold 0.5 without calibration
    meta = _meta(calibration={lab: [1.0, -0.3] for lab in LABS})  # p(-0.2) < 0.5 < p(0.7)
    assert parity_report(ref, test, meta)["calls"]["agreement"] == 1.0
    assert parity_report(ref, test, _meta())["calls"]["agreement"] == 0.5


def test_no_threshold_at_all_leaves_agreement_unchecked_not_passed_silently() -> None:
    ref = _logits()
    r = parity_report(ref, ref + 0.01, _meta({}))
    assert r["calls"]["agreement"] is None and r["calls"]["n_labs_called"] == 0
    assert r["calls"]["uncalibrated_labs"] == LABS
    tol = DEFAULT_TOLERANCE["int8"] | {"min_lab_agreement": 0.9}
    assert check_tolerance(r, tol) == []
    assert unchecked_limits(r, tol) == [
        "agreement: nothing to compare (no lab has a threshold)",
        "min_lab_agreement: nothing to compare (no lab has a threshold)",
    ]
    # The other limits still bite.
    bad = parity_report(ref, ref + 5.0, _meta({}))
    (fail,) = check_tolerance(bad, tol)
    assert fail.startswith("rel_mean_abs_logit_error ") and fail.endswith(" > 0.15")


# --- check_tolerance: undefined metrics ----------------------------------------------------


def test_undefined_logit_metric_fails_the_gate() -> None:
    """Constant torch logits: no spread, so the relative error is undefined -> failure."""
    ref = np.ones((50, len(LABS)), dtype=np.float32)
    r = parity_report(ref, ref + 0.01, _meta())
    assert r["logits"]["rel_mean_abs_error"] is None
    assert check_tolerance(r, {"rel_mean_abs_logit_error": 0.15}) == [
        "rel_mean_abs_logit_error is undefined (limit 0.15)"
    ]
    # The int8 defaults: the undefined relative error fails, the undefined AUROC delta
    # (every lab one class) is skipped, the agreement (defined) passes.
    assert check_tolerance(r, DEFAULT_TOLERANCE["int8"]) == [
        "rel_mean_abs_logit_error is undefined (limit 0.15)"
    ]
    assert unchecked_limits(r, DEFAULT_TOLERANCE["int8"]) == [
        "mean_auroc_delta: nothing to compare (no lab has both classes)"
    ]


def test_undefined_auroc_delta_passes_only_when_no_lab_has_both_classes() -> None:
    ref = np.ones((50, len(LABS)), dtype=np.float32)  # every lab one class, at any split
    r = parity_report(ref, ref, _meta())
    assert r["auroc"]["n_labs"] == 0 and r["auroc"]["mean_delta"] is None
    auroc_tol = {"mean_auroc_delta": 0.002, "mean_abs_auroc_delta": 0.01, "max_auroc_delta": 0.1}
    assert check_tolerance(r, auroc_tol) == []
    assert len(unchecked_limits(r, auroc_tol)) == 3
    # A report that claims two-class labs but has no delta is broken: it fails.
    broken = {**r, "auroc": {**r["auroc"], "n_labs": 2}}
    assert check_tolerance(broken, auroc_tol) == [
        f"{k} is undefined (limit {v:g})" for k, v in sorted(auroc_tol.items())
    ]
    assert unchecked_limits(broken, auroc_tol) == []
    # Agreement undefined while labs are called would be a bug too: it fails.
    broken = {**r, "calls": {**r["calls"], "agreement": None}}
    assert check_tolerance(broken, {"agreement": 0.97}) == ["agreement is undefined (limit 0.97)"]


# --- check_tolerance: lower vs upper limits, every key ----------------------------------


@pytest.mark.parametrize("key", sorted(TOLERANCE_KEYS))
def test_each_limit_passes_at_the_limit_and_fails_beyond_it(key: str) -> None:
    ref = _logits(400)
    test = ref + np.random.default_rng(1).normal(0, 0.6, ref.shape).astype(np.float32)
    r = parity_report(ref, test, _meta())
    value = metric_values(r)[key]
    assert value is not None and math.isfinite(value)
    assert check_tolerance(r, {key: value}) == []  # at the limit: within tolerance
    if key in LOWER_LIMITS:
        assert 0 < value < 1
        assert check_tolerance(r, {key: value - 1e-3}) == []
        (fail,) = check_tolerance(r, {key: value + 1e-3})
        assert fail == f"{key} {value:.6g} < {value + 1e-3:g}"
    else:
        assert value > 0
        assert check_tolerance(r, {key: value * 1.01}) == []
        (fail,) = check_tolerance(r, {key: value * 0.99})
        assert fail == f"{key} {value:.6g} > {value * 0.99:g}"


def test_metric_values_map_every_tolerance_key_to_the_report() -> None:
    ref = _logits()
    r = parity_report(ref, ref + 0.3, _meta())
    v = metric_values(r)
    assert set(v) == TOLERANCE_KEYS
    assert v["max_abs_logit_error"] == r["logits"]["max_abs_error"] == pytest.approx(0.3, 1e-5)
    assert v["mean_abs_logit_error"] == pytest.approx(0.3, 1e-5)
    assert v["rel_mean_abs_logit_error"] == pytest.approx(
        0.3 / r["logits"]["torch_mean_std"], rel=1e-5
    )
    assert v["agreement"] == r["calls"]["agreement"] < 1
    assert v["min_lab_agreement"] == r["calls"]["min_lab_agreement"] <= v["agreement"]
    # A constant shift keeps every ranking: AUROC deltas are exactly 0.
    assert v["mean_auroc_delta"] == v["max_auroc_delta"] == v["mean_abs_auroc_delta"] == 0


def test_failures_are_listed_for_every_broken_limit_sorted_by_key() -> None:
    ref = _logits()
    test = -ref  # reversed model: every limit broken
    r = parity_report(ref, test, _meta())
    failures = check_tolerance(r, DEFAULT_TOLERANCE["int8"])
    assert [f.split()[0] for f in failures] == sorted(DEFAULT_TOLERANCE["int8"])
    assert r["auroc"]["mean_delta"] == 1.0


def test_default_limits_per_precision() -> None:
    assert set(DEFAULT_TOLERANCE) == {"fp32", "int8", "int16x8"}
    for tol in DEFAULT_TOLERANCE.values():
        assert set(tol) <= TOLERANCE_KEYS
    assert DEFAULT_TOLERANCE["int8"]["mean_auroc_delta"] == 0.002  # the goal
    # int16x8 is at least as strict as int8 on every int8 limit.
    i8, i16 = DEFAULT_TOLERANCE["int8"], DEFAULT_TOLERANCE["int16x8"]
    assert set(i8) <= set(i16)
    for key, limit in i8.items():
        assert i16[key] >= limit if key in LOWER_LIMITS else i16[key] <= limit, key
    # A report inside the int8 limits but outside int16x8's: the precision matters. Logits
    # away from 0 and a constant shift: no call flips, no rank change, only the error.
    rng = np.random.default_rng(2)
    ref = rng.choice([-1.0, 1.0], (400, len(LABS))) * (2 + rng.exponential(1.0, (400, len(LABS))))
    r = parity_report(ref, ref + 0.2, _meta())
    assert check_tolerance(r, i8) == []
    (fail,) = check_tolerance(r, i16)
    assert fail.startswith("rel_mean_abs_logit_error ") and fail.endswith("> 0.05")


# --- parse_tolerance -----------------------------------------------------------------------


def test_parse_tolerance_defaults_and_overrides() -> None:
    for precision, tol in DEFAULT_TOLERANCE.items():
        assert parse_tolerance([], precision) == tol
        assert parse_tolerance([], precision) is not tol  # a copy: defaults stay untouched
    tol = parse_tolerance(["agreement=0.5, max_abs_logit_error=2", "mean_auroc_delta=1e-4"], "int8")
    assert tol == {
        "agreement": 0.5,
        "max_abs_logit_error": 2.0,
        "mean_auroc_delta": 1e-4,
        "rel_mean_abs_logit_error": 0.15,
    }
    assert parse_tolerance(["agreement=0.9,", ""], "fp32")["agreement"] == 0.9


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["speed=1"], "expected KEY=VALUE with KEY one of"),
        (["agreement"], "expected KEY=VALUE"),
        (["agreement:0.9"], "expected KEY=VALUE"),
        (["agreement=high"], "'high' is not a number"),
        (["agreement=inf"], "the limit must be finite"),
        (["agreement=nan"], "the limit must be finite"),
    ],
)
def test_parse_tolerance_errors_name_the_item(items: list[str], message: str) -> None:
    with pytest.raises(ExportError, match=message) as exc:
        parse_tolerance(items, "int8")
    assert "\n" not in str(exc.value) and f"--tolerance {items[0]!r}" in str(exc.value)


def test_parse_tolerance_unknown_precision() -> None:
    with pytest.raises(ExportError, match="no tolerance for precision 'int4'"):
        parse_tolerance([], "int4")


# --- the label AUROC delta's sampling noise ----------------------------------------------


def _labelled(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torch logits that carry the labels, an export with independent noise on top."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(LABS))) < 0.3).astype(np.float32)
    y[rng.random(y.shape) < 0.05] = np.nan  # unmeasured labs: left out per lab
    ref = rng.normal(0.0, 1.0, y.shape) + 0.8 * np.nan_to_num(y)
    test = ref + rng.normal(0.0, 0.4, y.shape)
    return ref.astype(np.float32), test.astype(np.float32), y


def test_label_auroc_delta_se_matches_a_paired_bootstrap() -> None:
    ref, test, y = _labelled(300)
    r = parity_report(ref, test, _meta(), labels=y, label_labs=list(LABS))
    se = r["auroc"]["mean_delta_se"]
    rng = np.random.default_rng(1)
    boots = []
    for _ in range(600):
        i = rng.integers(0, len(y), len(y))
        d = []
        for j in range(len(LABS)):
            m = np.isfinite(y[i, j])
            yy = y[i, j][m] > 0.5
            d.append(auroc(yy, ref[i, j][m]) - auroc(yy, test[i, j][m]))
        boots.append(np.mean(d))
    assert r["auroc"]["reference"] == "labels"
    assert se == pytest.approx(np.std(boots), rel=0.15)
    # Four times the windows: half the noise.
    ref4, test4, y4 = _labelled(1200)
    r4 = parity_report(ref4, test4, _meta(), labels=y4, label_labs=list(LABS))
    assert r4["auroc"]["mean_delta_se"] == pytest.approx(se / 2, rel=0.25)
    # Identical models: no delta, no noise.
    r0 = parity_report(ref, ref, _meta(), labels=y, label_labs=list(LABS))
    assert r0["auroc"]["mean_delta"] == 0 and r0["auroc"]["mean_delta_se"] == 0


def test_label_auroc_gate_widens_by_its_noise_only() -> None:
    ref, test, y = _labelled(300)
    r = parity_report(ref, test, _meta(), labels=y, label_labs=list(LABS))
    value, se = r["auroc"]["mean_delta"], r["auroc"]["mean_delta_se"]
    assert value > 0 and se > 0
    margin = 1.645 * se
    assert check_tolerance(r, {"mean_auroc_delta": value - margin + 1e-6}) == []
    (fail,) = check_tolerance(r, {"mean_auroc_delta": value - margin - 1e-4})
    assert fail.startswith(f"mean_auroc_delta {value:.6g} > ") and "sampling noise" in fail
    # The label-free limits get no margin: the logit error fails at once beyond its value.
    rel = r["logits"]["rel_mean_abs_error"]
    assert check_tolerance(r, {"rel_mean_abs_logit_error": rel * 0.99}) != []
    # Without labels (the torch calls as reference) there is no SE and no margin.
    r_calls = parity_report(ref, test, _meta())
    assert r_calls["auroc"]["mean_delta_se"] is None
    v = r_calls["auroc"]["mean_delta"]
    assert check_tolerance(r_calls, {"mean_auroc_delta": v * 0.99}) != []


# --- the whole report against an independent computation (mutation testing: every field) ---


def _pair_auroc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return math.nan
    return float(np.mean([(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)]))


def _r6(v: float) -> float | None:
    return None if not math.isfinite(v) else float(f"{v:.6g}")


def _delong_influence(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Per window: a positive's share of negatives scored below it (ties 1/2), a negative's
    share of positives scored above it, minus the AUROC, over its class size."""
    pos, neg = s[y], s[~y]
    a = _pair_auroc(y, s)
    out = np.empty(len(s))
    out[y] = [(np.mean((p > neg) + 0.5 * (p == neg)) - a) / len(pos) for p in pos]
    out[~y] = [(np.mean((pos > q) + 0.5 * (pos == q)) - a) / len(neg) for q in neg]
    return out


def test_the_whole_report_matches_an_independent_computation() -> None:
    # 9 windows, 4 labs of different spreads; 'a' and 'b' have thresholds, 'b' calibrated;
    # one window sits exactly at 'a''s threshold (logit 0 -> p 0.5: called, >=); targets
    # for 'a', 'c' and 'd' with one unmeasured window.
    rng = np.random.default_rng(7)
    ref = rng.normal(0.0, [1.0, 2.0, 4.0, 0.5], (9, 4))
    ref[4, 0] = 0.0
    ref[:, 3] = np.round(ref[:, 3], 1)
    test = ref + rng.normal(0.0, 0.3, ref.shape)
    test[4, 0] = 0.0
    meta = ModelMetadata(
        labs=list(LABS), thresholds={"a": 0.5, "b": 0.6}, calibration={"b": [2.0, -0.5]}
    )
    label_labs = ["d", "x", "a", "c"]
    labels = np.array([rng.random(9) < 0.5 for _ in label_labs], float).T
    labels[:, 2] = [1, 0, 1, 0, 1, 0, 1, 0, np.nan]  # 'a': 4 positive, 4 negative, 1 unmeasured
    labels[:, 3] = [1, 0, 0.5, 1, 0, 1, 0, 0, 1]  # 'c': a target of exactly 0.5 is negative
    r = parity_report(ref.astype(np.float32), test.astype(np.float32), meta,
                      labels=labels, label_labs=label_labs)  # fmt: skip
    ref, test = ref.astype(np.float32).astype(float), test.astype(np.float32).astype(float)

    def prob(z: np.ndarray, lab: str) -> np.ndarray:
        a, b = meta.calibration.get(lab, [1.0, 0.0])
        return 1 / (1 + np.exp(-(a * z + b)))

    err = np.abs(test - ref)
    spread = np.mean([ref[:, j].std() for j in range(4)])
    p_ref = np.stack([prob(ref[:, j], lab) for j, lab in enumerate(LABS)], 1)
    p_test = np.stack([prob(test[:, j], lab) for j, lab in enumerate(LABS)], 1)
    calls = {lab: (p_ref[:, j] >= t, p_test[:, j] >= t)
             for j, (lab, t) in enumerate(zip(LABS, [0.5, 0.6], strict=False))}  # fmt: skip
    assert calls["a"][0][4] and calls["a"][1][4]  # the window at the threshold is called
    agree = np.stack([calls[lab][0] == calls[lab][1] for lab in ("a", "b")], 1)
    assert r["n_windows"] == 9 and r["n_labs"] == 4
    assert r["logits"] == {
        "max_abs_error": _r6(err.max()),
        "mean_abs_error": _r6(err.mean()),
        "p99_abs_error": _r6(np.quantile(err, 0.99)),
        "torch_mean_std": _r6(spread),
        "rel_mean_abs_error": _r6(err.mean() / spread),
    }
    assert r["probabilities"] == {
        "max_abs_error": _r6(np.abs(p_test - p_ref).max()),
        "mean_abs_error": _r6(np.abs(p_test - p_ref).mean()),
    }
    c_ref = np.stack([calls[lab][0] for lab in ("a", "b")], 1)
    c_test = np.stack([calls[lab][1] for lab in ("a", "b")], 1)
    assert r["calls"] == {
        "agreement": _r6(agree.mean()),
        "n_disagree": int((~agree).sum()),
        "n_total": 18,
        "n_labs_called": 2,
        "uncalibrated_labs": ["c", "d"],
        "min_lab_agreement": _r6(min(agree[:, 0].mean(), agree[:, 1].mean())),
        "torch_abnormal_rate": _r6(c_ref.mean()),
        "export_abnormal_rate": _r6(c_test.mean()),
    }
    assert 0 < r["calls"]["n_disagree"] < 18  # the case separates agreement from its inverse
    deltas_calls, deltas_labels, influence = [], [], []
    for j, lab in enumerate(LABS):
        pl = r["per_lab"][lab]
        called = lab in ("a", "b")
        assert pl["threshold"] == ({"a": 0.5, "b": 0.6}.get(lab))
        assert pl["agreement"] == (_r6(agree[:, "ab".index(lab)].mean()) if called else None)
        y = calls[lab][0] if called else None
        kind = "calls"
        if y is None or y.all() or not y.any():
            y, kind = ref[:, j] > np.median(ref[:, j]), "median"
        a_ref, a_test = _pair_auroc(y, ref[:, j]), _pair_auroc(y, test[:, j])
        deltas_calls.append(a_ref - a_test)
        assert pl["vs_calls"] == {
            "reference": kind, "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
            "auroc_torch": _r6(a_ref), "auroc_export": _r6(a_test),
            "delta": _r6(a_ref - a_test),
        }  # fmt: skip
        if lab in label_labs:
            t = labels[:, label_labs.index(lab)]
            m = np.isfinite(t)
            y = t[m] > 0.5
            a_ref, a_test = _pair_auroc(y, ref[m, j]), _pair_auroc(y, test[m, j])
            if math.isfinite(a_ref):
                deltas_labels.append(a_ref - a_test)
                full = np.zeros(9)
                full[m] = _delong_influence(y, ref[m, j]) - _delong_influence(y, test[m, j])
                influence.append(full)
            assert pl["vs_labels"] == {
                "reference": "labels", "n_pos": int(y.sum()), "n_neg": int((~y).sum()),
                "auroc_torch": _r6(a_ref), "auroc_export": _r6(a_test),
                "delta": _r6(a_ref - a_test),
            }  # fmt: skip
        else:
            assert "vs_labels" not in pl
    assert r["per_lab"]["d"]["vs_calls"]["reference"] == "median"  # an odd count: > median
    for key, deltas, ref_name in (("auroc_vs_calls", deltas_calls, "torch_calls"),
                                  ("auroc_vs_labels", deltas_labels, "labels")):  # fmt: skip
        d = np.array(deltas)
        summary = dict(r[key])
        se = summary.pop("mean_delta_se")
        if key == "auroc_vs_calls":
            assert se is None
        else:  # DeLong's SE of the mean paired delta (labs share windows)
            assert se == _r6(float(np.sqrt(np.sum(np.mean(influence, axis=0) ** 2))))
            assert se > 0
        assert summary == {
            "reference": ref_name, "n_labs": len(deltas), "mean_delta": _r6(d.mean()),
            "mean_abs_delta": _r6(np.abs(d).mean()), "max_delta": _r6(d.max()),
        }  # fmt: skip
    assert r["auroc"] == r["auroc_vs_labels"] and len(deltas_labels) == 3


def test_one_window_one_called_lab_still_has_an_agreement() -> None:
    meta = ModelMetadata(labs=["a", "b"], thresholds={"a": 0.5})
    r = parity_report(np.array([[1.0, 2.0]]), np.array([[-1.0, 2.0]]), meta)
    assert r["calls"]["agreement"] == 0.0 and r["calls"]["min_lab_agreement"] == 0.0
    assert r["calls"]["torch_abnormal_rate"] == 1.0 and r["calls"]["export_abnormal_rate"] == 0.0
    assert r["logits"]["rel_mean_abs_error"] is None  # one window: no spread
    assert r["auroc_vs_labels"] is None and r["auroc"] == r["auroc_vs_calls"]


def test_auroc_with_a_single_positive_or_negative() -> None:
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc(np.array([0, 0, 0, 1], bool), s) == 1.0
    assert auroc(np.array([1, 1, 0, 1], bool), s) == pytest.approx(2 / 3)
    assert math.isnan(auroc(np.zeros(4, bool), s))


def test_parse_tolerance_messages_in_full() -> None:
    with pytest.raises(ExportError) as exc:
        parse_tolerance([], "int4")
    assert str(exc.value).endswith("expected one of fp32, int8, int16x8")
    with pytest.raises(ExportError) as exc:
        parse_tolerance(["bogus=1"], "int8")
    assert str(exc.value) == (
        "--tolerance 'bogus=1': expected KEY=VALUE with KEY one of "
        + ", ".join(sorted(TOLERANCE_KEYS))
    )
    # the first '=' splits: a second one is part of the value
    with pytest.raises(ExportError, match="'0.9=1' is not a number"):
        parse_tolerance(["agreement=0.9=1"], "int8")


def test_small_spread_and_labels_without_lab_names() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(0.0, 0.2, (30, 4))  # mean per-lab std well below 1
    test = ref + 0.01
    r = parity_report(ref, test, _meta())
    spread = float(ref.std(axis=0).mean())
    assert spread < 1 and r["logits"]["rel_mean_abs_error"] == pytest.approx(
        0.01 / spread, rel=1e-5
    )
    # targets without their lab names (or names without targets): no label AUROC
    labels = (rng.random((30, 4)) < 0.5).astype(float)
    assert parity_report(ref, test, _meta(), labels=labels)["auroc_vs_labels"] is None
    assert parity_report(ref, test, _meta(), label_labs=LABS)["auroc_vs_labels"] is None
