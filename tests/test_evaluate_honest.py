"""Honest evaluation: labs with too few visits are "insufficient" (no AUROC, out of the means),
no silent 0.5 threshold, NPV, scikit-learn metrics equal to the former own implementations,
the report's legend and tables, `evaluate` failing in one line when no lab can be scored, and
the Trainer selecting nothing on an undefined val metric."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
from anyecg_edge.training.data import build_corpus, synth_cohort
from anyecg_edge.training.data.dataset import corpus_lab_keys
from anyecg_edge.training.evaluate import (
    MIN_VISITS_PER_CLASS,
    EvaluationError,
    auprc,
    auroc,
    evaluate_predictions,
    reliability_curve,
    roc_curve_points,
    threshold_metrics,
    write_report,
)
from anyecg_edge.training.evaluate_metrics import _weighted_auroc_sorted
from anyecg_edge.training.models import create_model
from anyecg_edge.training.torch_model import save_model_checkpoint
from anyecg_edge.training.trainer import DistInfo, TrainConfig, Trainer, masked_bce_terms
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset

from anyecg_edge.cli import cli
from anyecg_edge.runtime import ModelMetadata

# ------------------------------------------------- the own implementations sklearn replaced
# Verbatim (less docstrings) from training/evaluate.py before it used scikit-learn: the
# reference the new numbers must equal.


def _old_auroc(y, score):
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    w = np.ones(y.size)
    order = np.argsort(s, kind="stable")
    ys, ws = y[order], w[order]
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    return float(_weighted_auroc_sorted((ws * ys)[None], (ws * ~ys)[None], starts)[0])


def _old_auprc(y, score):
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    return float(np.sum(np.diff(np.r_[0.0, tp / n_pos]) * (tp / (tp + fp))))


def _old_roc(y, score):
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def _old_reliability(prob, y, n_bins=10):
    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(y).astype(bool).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    psum = np.bincount(b, weights=p, minlength=n_bins)
    ysum = np.bincount(b, weights=t.astype(np.float64), minlength=n_bins)
    nz = count > 0
    mean_pred = np.where(nz, psum / np.maximum(count, 1), np.nan)
    frac_pos = np.where(nz, ysum / np.maximum(count, 1), np.nan)
    ece = float(np.sum(count[nz] * np.abs(mean_pred[nz] - frac_pos[nz])) / max(p.size, 1))
    return count, mean_pred, frac_pos, ece


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sklearn_metrics_give_the_former_numbers(seed) -> None:
    rng = np.random.default_rng(seed)
    n = 700
    y = rng.random(n) < 0.25
    s = np.round(rng.normal(size=n) + 0.9 * y, 1)  # rounded: many ties
    assert auroc(y, s) == pytest.approx(_old_auroc(y, s), abs=1e-12)
    assert auprc(y, s) == pytest.approx(_old_auprc(y, s), abs=1e-12)
    fpr, tpr = roc_curve_points(y, s)
    old_fpr, old_tpr = _old_roc(y, s)
    np.testing.assert_allclose(fpr, old_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, old_tpr, atol=1e-12)
    # Probabilities off the bin edges (the two binnings differ only for a value on an edge).
    p = np.clip(1 / (1 + np.exp(-(np.round(rng.normal(size=n) + y, 2) + 0.005))), 1e-6, 1 - 1e-6)
    assert not np.isin(np.round(p, 12), np.round(np.linspace(0, 1, 11), 12)).any()
    rel = reliability_curve(p, y)
    count, mean_pred, frac_pos, ece = _old_reliability(p, y)
    assert rel["count"] == count.tolist() and rel["ece"] == pytest.approx(ece, abs=1e-12)
    for new, old in ((rel["mean_pred"], mean_pred), (rel["frac_pos"], frac_pos)):
        np.testing.assert_allclose(
            np.array([np.nan if v is None else v for v in new]), old, atol=1e-12
        )
    # The bootstrap's own vectorised AUROC, at unit weights, is roc_auc_score.
    order = np.argsort(s, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(s[order]) != 0])
    ys = y[order].astype(float)
    boot = _weighted_auroc_sorted(ys[None], (1 - ys)[None], starts)[0]
    assert boot == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_reliability_counts_follow_calibration_curves_bins_on_an_edge() -> None:
    # 0.1 and 0.5 sit on edges: calibration_curve puts them in the lower bin; the counts
    # must agree with it, or ECE would pair a bin's mean with another bin's count.
    rel = reliability_curve(np.array([0.1, 0.1, 0.5, 0.95]), np.array([0, 1, 1, 1]))
    assert rel["count"][0] == 2 and rel["count"][4] == 1 and rel["count"][9] == 1
    assert rel["mean_pred"][0] == pytest.approx(0.1) and rel["frac_pos"][0] == 0.5


def test_non_finite_scores_are_undefined_or_refused() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.9, np.nan, 0.4, 0.8, 0.2])
    assert np.isnan(auroc(y, s))  # the trainer's metric: undefined, not a crash
    logits, targets, visits, labs = _visits_predictions({"potassium": (6, 6), "sodium": (6, 6)})
    logits[targets[:, 1] >= 0, 1] = np.inf
    with pytest.raises(EvaluationError, match="not finite .* sodium"):
        evaluate_predictions(logits, targets, visits, labs, n_boot=10)


def test_threshold_metrics_by_hand_and_no_default_threshold() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4, 0.5])
    m = threshold_metrics(y, p, 0.5)  # calls: 0.9 0.6 0.7 0.5 -> tp 3, fp 1, tn 3, fn 1
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 3, 1)
    assert m["sensitivity"] == m["specificity"] == m["ppv"] == m["npv"] == pytest.approx(0.75)
    m = threshold_metrics(y, p, 0.95)  # nothing flagged: PPV undefined, NPV 4/8
    assert m["ppv"] is None and m["npv"] == pytest.approx(0.5) and m["sensitivity"] == 0
    assert set(threshold_metrics(y, p, None).values()) == {None}


# ----------------------------------------------------------------------------- insufficient


def _visits_predictions(spec: dict[str, tuple[int, int]], seed: int = 0):
    """Two windows per visit for every lab; spec {lab: (abnormal visits, normal visits)},
    each lab measured on its own visits. Scores separate the classes imperfectly."""
    rng = np.random.default_rng(seed)
    labs = list(spec)
    rows_logit, rows_target, visits = [], [], []
    for j, (lab, (n_pos, n_neg)) in enumerate(spec.items()):
        for v, label in enumerate([1] * n_pos + [0] * n_neg):
            for _ in range(2):
                t = np.full(len(labs), -1, np.int8)
                t[j] = label
                z = np.zeros(len(labs))
                z[j] = rng.normal() + 1.2 * label
                rows_logit.append(z)
                rows_target.append(t)
                visits.append(f"{lab}-{v}")
    return np.array(rows_logit), np.array(rows_target), np.array(visits), labs


def test_labs_below_the_visit_minimum_are_insufficient_and_kept_out() -> None:
    k = MIN_VISITS_PER_CLASS
    spec = {
        "potassium": (k, k + 3),  # exactly the minimum of abnormal visits: evaluated
        "sodium": (k - 1, 30),  # one abnormal visit short
        "calcium": (2, 1),  # 3 visits: used to print 0.000 with CI [0, 0]
        "chloride": (12, 12),
    }
    logits, targets, visits, labs = _visits_predictions(spec)
    # calcium perfectly inverted: the old report said AUROC 0.000.
    cal = targets[:, 2] >= 0
    logits[cal, 2] = np.where(targets[cal, 2] == 1, -5.0, 5.0)
    truth = {"planted_keys": ["potassium", "calcium"], "unplanted_keys": ["sodium", "chloride"]}
    res = evaluate_predictions(logits, targets, visits, labs, n_boot=200, truth=truth)
    r = res["labs"]
    assert [r[x]["status"] for x in labs] == ["evaluated", "insufficient", "insufficient"] + [
        "evaluated"
    ]
    for lab in ("sodium", "calcium"):
        e = r[lab]
        assert e["auroc"] is None and e["ci"] is None and e["auprc"] is None
        assert e["bucket"] is None and e["visit"]["auroc"] is None and e["visit"]["ci"] is None
        assert (e["n_pos_visits"], e["n_neg_visits"]) == spec[lab]
        assert f"needs at least {k}" in e["reason"]
    assert r["sodium"]["n_pos"] == 2 * (k - 1) and r["sodium"]["n_neg"] == 60
    for lab in ("potassium", "chloride"):
        assert r[lab]["auroc"] is not None and r[lab]["ci"] is not None
        assert r[lab]["visit"]["auroc"] is not None
    s = res["summary"]
    assert s["min_visits_per_class"] == k and str(k) in s["rule"]
    assert s["labs_insufficient"] == ["calcium", "sodium"] and s["n_labs_evaluated"] == 2
    assert s["mean_auroc"] == pytest.approx((r["potassium"]["auroc"] + r["chloride"]["auroc"]) / 2)
    assert sum(s["buckets"].values()) == 2 and set(s["best_labs"]) == {"potassium", "chloride"}
    t = s["truth"]
    assert t["planted_mean_auroc"] == pytest.approx(r["potassium"]["auroc"])
    assert t["unplanted_mean_auroc"] == pytest.approx(r["chloride"]["auroc"])
    assert t["planted_insufficient"] == ["calcium"] and t["unplanted_insufficient"] == ["sodium"]
    json.dumps(res, allow_nan=False)  # the JSON file takes it as is


def test_a_labs_ci_does_not_depend_on_the_other_labs() -> None:
    logits, targets, visits, labs = _visits_predictions({"potassium": (9, 9), "sodium": (8, 8)})
    both = evaluate_predictions(logits, targets, visits, labs, n_boot=100, seed=3)
    m = targets[:, 1] >= 0
    alone = evaluate_predictions(
        logits[m][:, 1:], targets[m][:, 1:], visits[m], ["sodium"], n_boot=100, seed=3
    )
    assert both["labs"]["sodium"]["ci"] == alone["labs"]["sodium"]["ci"]


def test_a_lab_without_threshold_makes_no_calls() -> None:
    logits, targets, visits, labs = _visits_predictions({"potassium": (8, 8), "sodium": (8, 8)})
    res = evaluate_predictions(
        logits,
        targets,
        visits,
        labs,
        n_boot=50,
        calibration={"potassium": [1.0, 0.0]},
        thresholds={"potassium": 0.55},
    )
    k, na = res["labs"]["potassium"], res["labs"]["sodium"]
    assert k["calibrated"] and k["threshold"] == 0.55 and k["npv"] is not None
    m = targets[:, 0] >= 0
    y, p = targets[m, 0] == 1, 1 / (1 + np.exp(-logits[m, 0]))
    assert k["sensitivity"] == pytest.approx(((p >= 0.55) & y).sum() / y.sum())
    assert k["npv"] == pytest.approx(((p < 0.55) & ~y).sum() / (p < 0.55).sum())
    assert na["calibrated"] is False and na["threshold"] is None and na["calibration"] is None
    assert all(na[x] is None for x in ("sensitivity", "specificity", "ppv", "npv"))
    assert na["auroc"] is not None  # ranking metrics need no threshold
    assert res["summary"]["labs_not_calibrated"] == ["sodium"]


def test_report_has_legend_prevalence_calls_counts_and_no_raw_json(tmp_path) -> None:
    spec = {"potassium": (9, 20), "sodium": (10, 10), "calcium": (1, 40)}
    logits, targets, visits, labs = _visits_predictions(spec, seed=4)
    res = evaluate_predictions(
        logits,
        targets,
        visits,
        labs,
        n_boot=50,
        thresholds={"potassium": 0.4},
        truth={"planted_keys": ["potassium"], "unplanted_keys": ["sodium", "calcium"]},
    )
    res["split"] = "test"
    page = write_report(res, tmp_path).read_text()
    assert page.count("data:image/png;base64,") == 3  # self-contained
    for name in ("auroc.png", "roc.png", "reliability.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "How to read this report" in page and "bootstrap" in page
    for header in ("prevalence", "threshold", "sensitivity", "specificity", "PPV", "NPV"):
        assert f"<th>{header}" in page
    assert "not calibrated" in page  # sodium has no threshold
    assert "0.400" in page  # potassium's threshold
    k = res["labs"]["potassium"]
    assert f"{100 * k['prevalence']:.1f} % ({k['n_pos']}/{k['n']})" in page
    summary = page.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert not re.search(r"[\[\]{}]|\"", summary)  # lists and dicts written as text
    assert re.search(r"\d\.\d{3}", summary) and not re.search(r"\d\.\d{4}", summary)
    insufficient = page.split("<h2>Insufficient labs</h2>")[1]
    assert "calcium" in insufficient and "<td>1</td><td>40</td>" in insufficient
    assert "calcium" not in page.split("<h2>Evaluated labs</h2>")[1].split("</table>")[0]


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def one_visit_test_split(tmp_path_factory):
    """A 20-visit cohort whose random test split holds one visit (seed 0), and a model."""
    root = tmp_path_factory.mktemp("tiny_cohort")
    synth_cohort(root, 20, seed=0, segments_per_visit=(1, 1), segment_s=(15.0, 20.0), defects=False)
    corpus = tmp_path_factory.mktemp("tiny_corpus")
    build_corpus(root, corpus, window_s=5.0, visits_per_unit=64, workers=1, progress=False)
    labs = corpus_lab_keys(corpus)
    torch.manual_seed(0)
    model = create_model("student-xs", n_classes=len(labs))
    path = tmp_path_factory.mktemp("tiny_model") / "model.pt"
    save_model_checkpoint(
        path,
        model,
        arch="student-xs",
        model_kwargs={"n_classes": len(labs)},
        metadata=ModelMetadata(labs=labs, window_s=5.0),
    )
    return corpus, path


def test_evaluate_fails_in_one_line_when_no_lab_can_be_scored(
    one_visit_test_split, tmp_path
) -> None:
    corpus, model = one_visit_test_split
    out = tmp_path / "eval.json"
    args = ["evaluate", "--model", str(model), "--corpus", str(corpus), "--json", str(out)]
    r = CliRunner().invoke(cli, [*args, "--bootstrap", "20"])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.output
    assert (
        lines[0].startswith("Error: ") and "no lab can be evaluated on the test split" in lines[0]
    )
    assert "(1 visits," in lines[0] and f"at least {MIN_VISITS_PER_CLASS} of each" in lines[0]
    assert not out.exists()
    # Lowering the rule cannot make one visit hold both classes.
    r = CliRunner().invoke(cli, [*args, "--bootstrap", "20", "--min-visits", "1"])
    assert r.exit_code == 1 and "at least 1 of each" in r.output


# ----------------------------------------------------------------------------- trainer


def _trainer(tmp_path, val_targets: np.ndarray, **cfg) -> Trainer:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, :2] > 0).float()
    train = TensorDataset(x, y, torch.ones_like(y))
    val = TensorDataset(torch.randn(len(val_targets), 6, generator=g))
    torch.manual_seed(0)
    model = nn.Linear(6, 2)

    def loss_fn(m, batch):
        s, c = masked_bce_terms(m(batch[0]), batch[1], batch[2])
        return {"bce": (s, c, 1.0)}

    config = TrainConfig(**{"batch_size": 16, "lr": 0.05, "warmup": 0, "log_every": 100, **cfg})
    return Trainer(
        model,
        loss_fn=loss_fn,
        train_set=train,
        val_set=val,
        val_targets=val_targets,
        out_dir=tmp_path,
        config=config,
        info=DistInfo(),
        labs=["a", "b"],
        order_fn=lambda epoch: np.random.default_rng(epoch).permutation(64),
    )


def test_trainer_selects_nothing_on_an_undefined_val_metric(tmp_path, caplog) -> None:
    # Every val lab has one class only: no AUROC, so no "best" and no early stopping.
    targets = np.zeros((10, 2), np.int8)
    targets[:, 1] = -1
    trainer = _trainer(tmp_path / "u", targets, epochs=3, eval_every=2, patience=1)
    with caplog.at_level(logging.WARNING, logger="anyecg_edge.training"):
        summary = trainer.fit()
    assert summary["selection"] == "last (val metric undefined)"
    assert summary["selected_step"] == summary["steps"] == 12 and not summary["stopped_early"]
    assert summary["best_step"] is None and summary["best_val_mean_auroc"] is None
    assert trainer.best_state is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "val split has no lab with both classes: no model selection; keeping the last state"
    ]
    # The weights are the last step's, and the val logits handed on are theirs.
    with torch.no_grad():
        last = trainer.model(trainer.val_set.tensors[0]).numpy()
    np.testing.assert_allclose(trainer.best_val_logits, last, rtol=1e-6, atol=1e-6)
    assert all(h["val_mean_auroc"] is None and h["best_step"] is None for h in summary["history"])


def test_trainer_selects_the_best_on_a_defined_val_metric(tmp_path) -> None:
    targets = np.zeros((10, 2), np.int8)
    targets[::2, 0] = 1
    trainer = _trainer(tmp_path / "d", targets, epochs=3, eval_every=2, patience=0)
    summary = trainer.fit()
    assert summary["selection"] == "best val mean AUROC"
    best = max(summary["history"], key=lambda h: h["val_mean_auroc"])
    assert summary["best_step"] == summary["selected_step"] == best["step"]
    assert summary["best_val_mean_auroc"] == best["val_mean_auroc"]
