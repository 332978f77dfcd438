"""Evaluation metrics against independent implementations, calibration fits, the evaluate
command end to end on a corpus built here (JSON schema, per-visit numbers, report files)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
from anyecg_edge.training.evaluate import (
    BUCKETS,
    auprc,
    auroc,
    bootstrap_auroc_ci,
    bucket_of,
    evaluate_predictions,
    reliability_curve,
)
from anyecg_edge.training.models import create_model
from anyecg_edge.training.torch_model import save_model_checkpoint
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score
from train_fixtures import target_corpus

from anyecg_edge.cli import cli
from anyecg_edge.runtime import ModelMetadata

# ----------------------------------------------------------------------------- metrics


def test_auroc_matches_sklearn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = np.round(rng.normal(size=500) + 0.8 * y, 1)  # many ties
    w = rng.integers(1, 4, size=500).astype(float)
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc(y, s, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-12)
    assert np.isnan(auroc(np.ones(5, bool), np.arange(5.0)))


def test_auprc_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.2
    s = np.round(rng.normal(size=400) + y, 1)
    assert auprc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_bootstrap_resamples_visits_not_windows() -> None:
    rng = np.random.default_rng(2)
    n = 300
    y = rng.random(n) < 0.4
    s = rng.normal(size=n) + 0.7 * y
    ci = bootstrap_auroc_ci(y, s, np.arange(n), n_boot=400, rng=np.random.default_rng(5))
    point = auroc(y, s)
    assert ci[0] < point < ci[1]
    # Hanley-McNeil standard error: the percentile CI should be about +-1.96 SE wide.
    n1, n0 = y.sum(), (~y).sum()
    q1, q2 = point / (2 - point), 2 * point**2 / (1 + point)
    se = np.sqrt(
        (point * (1 - point) + (n1 - 1) * (q1 - point**2) + (n0 - 1) * (q2 - point**2)) / (n1 * n0)
    )
    assert 0.6 < (ci[1] - ci[0]) / (2 * 1.96 * se) < 1.5
    # Five identical windows per visit carry no more information than one: same CI.
    rep = np.repeat(np.arange(n), 5)
    ci5 = bootstrap_auroc_ci(y[rep], s[rep], rep, n_boot=400, rng=np.random.default_rng(5))
    assert ci5 == pytest.approx(ci, abs=1e-12)


def test_reliability_and_ece_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55, 0.55])
    y = np.array([0, 0, 1, 0, 1, 1])
    rel = reliability_curve(p, y, n_bins=10)
    assert rel["count"][0] == 2 and rel["count"][9] == 2 and rel["count"][5] == 2
    assert rel["frac_pos"][9] == pytest.approx(0.5)
    # |0.05-0| * 2 + |0.95-0.5| * 2 + |0.55-1| * 2, over 6
    assert rel["ece"] == pytest.approx((0.1 + 0.9 + 0.9) / 6)
    assert rel["mean_pred"][3] is None


@pytest.mark.parametrize(
    ("value", "bucket"),
    [(0.66, ">0.65"), (0.65, "0.55-0.65"), (0.55, "0.55-0.65"), (0.549, "<0.55"), (None, None)],
)
def test_paper_buckets(value, bucket) -> None:
    assert bucket_of(value) == bucket


def test_evaluate_predictions_visit_aggregation_and_summary() -> None:
    # Two labs; lab b has one class only (not evaluated). Visits v1..v4, 2 windows each;
    # min_visits=1 lets 4 visits be scored (the default minimum is tested elsewhere).
    visits = np.array(["v1", "v1", "v2", "v2", "v3", "v3", "v4", "v4"])
    logits = np.array([[2, 0], [0, 0], [-1, 0], [-3, 0], [1, 0], [1, 0], [-2, 0], [5, 0]], float)
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0], [1, 0], [-1, 0], [0, -1], [1, 0]], np.int8)
    res = evaluate_predictions(
        logits, targets, visits, ["potassium", "sodium"], n_boot=50, min_visits=1
    )
    k = res["labs"]["potassium"]
    m = targets[:, 0] >= 0
    assert k["auroc"] == pytest.approx(roc_auc_score(targets[m, 0], logits[m, 0]))
    assert (k["n_pos"], k["n_neg"]) == (4, 3)
    # Per visit: mean logit over measured windows, abnormal if any window is.
    v = k["visit"]
    assert (v["n_pos"], v["n_neg"]) == (3, 1)  # v4 has an abnormal window
    assert v["auroc"] == pytest.approx(roc_auc_score([1, 0, 1, 1], [1.0, -2.0, 1.0, 1.5]))
    assert res["labs"]["sodium"]["auroc"] is None
    assert k["status"] == "evaluated" and res["labs"]["sodium"]["status"] == "insufficient"
    s = res["summary"]
    assert s["labs_insufficient"] == s["labs_not_evaluated"] == ["sodium"]
    assert s["n_visits"] == 4 and s["min_visits_per_class"] == 1
    assert set(s["buckets"]) == set(BUCKETS) and sum(s["buckets"].values()) == 1
    assert res["labs"]["potassium"]["unit"] == "mmol/L"


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return target_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def small_model(small_corpus, tmp_path_factory):
    _, corpus = small_corpus
    labs = corpus_lab_keys(corpus)
    torch.manual_seed(0)
    model = create_model("student-xs", n_classes=len(labs))
    with torch.no_grad():  # make the outputs spread out (random BN stats)
        model.dense.weight.mul_(20.0)
    path = tmp_path_factory.mktemp("eval_model") / "model.pt"
    cal = {k: [0.5, 0.1] for k in labs}
    save_model_checkpoint(
        path,
        model,
        arch="student-xs",
        model_kwargs={"n_classes": len(labs)},
        metadata=ModelMetadata(labs=labs, window_s=5.0, calibration=cal),
    )
    return path, model.eval(), labs


def test_evaluate_cli_json_schema_numbers_and_report(small_corpus, small_model, tmp_path) -> None:
    cohort, corpus = small_corpus
    path, model, labs = small_model
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(path.parent),
            "--corpus",
            str(corpus),
            "--split",
            "test",
            "--json",
            str(out),
            "--bootstrap",
            "100",
            "--truth",
            str(cohort / "truth.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc) >= {"labs", "summary", "model", "split", "bootstrap"}
    assert set(doc["labs"]) == set(labs)

    # Independent recomputation: run the model, join visits from the index with pandas.
    ds = CorpusDataset(corpus, "test", labs=labs)
    with torch.no_grad():
        logits = model(torch.stack([ds[i][0] for i in range(len(ds))])).numpy()
    idx = pd.read_parquet(corpus / "index.parquet")
    idx = idx[(idx.split == "test") & idx.quality_ok].reset_index(drop=True)
    assert len(idx) == len(ds)
    evaluated = 0
    for j, lab in enumerate(labs):
        entry = doc["labs"][lab]
        m = ds.targets[:, j] >= 0
        y = ds.targets[m, j]
        assert entry["n_pos"] == int((y == 1).sum()) and entry["n_neg"] == int((y == 0).sum())
        frame = pd.DataFrame({"csn": idx.csn[m].to_numpy(), "z": logits[m, j], "y": y})
        per_visit = frame.groupby("csn").agg(z=("z", "mean"), y=("y", "max"))
        n_pos_v, n_neg_v = int(per_visit.y.sum()), int((per_visit.y == 0).sum())
        assert (entry["n_pos_visits"], entry["n_neg_visits"]) == (n_pos_v, n_neg_v)
        # No threshold in this model's metadata: no calls, never a silent 0.5.
        assert entry["threshold"] is None and entry["calibrated"] is False
        assert entry["sensitivity"] is None and entry["npv"] is None
        if min(n_pos_v, n_neg_v) < 5:
            assert entry["status"] == "insufficient" and "reason" in entry
            assert entry["auroc"] is None and entry["ci"] is None
            continue
        assert entry["status"] == "evaluated"
        evaluated += 1
        assert entry["auroc"] == pytest.approx(roc_auc_score(y, logits[m, j]), abs=1e-5)
        lo, hi = entry["ci"]
        assert lo <= hi and lo >= 0 and hi <= 1
        assert entry["auprc"] == pytest.approx(average_precision_score(y, logits[m, j]), abs=1e-5)
        p = 1 / (1 + np.exp(-(0.5 * logits[m, j] + 0.1)))
        assert entry["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-5)
        assert entry["visit"]["auroc"] == pytest.approx(
            roc_auc_score(per_visit.y, per_visit.z), abs=1e-5
        )
    assert evaluated >= 3
    s = doc["summary"]
    assert s["n_segments"] == len(ds) and s["n_visits"] == idx.csn.nunique()
    assert s["n_labs_evaluated"] == evaluated == sum(s["buckets"].values())
    assert "planted_mean_auroc" in s["truth"]
    report = tmp_path / "eval_report"
    for name in ("auroc.png", "roc.png", "reliability.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (report / "report.html").read_text()
    assert "data:image/png;base64," in html and labs[0] in html
    assert "not calibrated" in html and "NPV" in html


def test_evaluate_errors_are_one_line(small_corpus, small_model, tmp_path) -> None:
    _, corpus = small_corpus
    path, _, _ = small_model
    runner = CliRunner()
    r = runner.invoke(
        cli, ["evaluate", "--model", str(tmp_path), "--corpus", str(corpus), "--json", "x.json"]
    )
    assert r.exit_code != 0 and "model.pt" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        cli,
        [
            "evaluate",
            "--model",
            str(path),
            "--corpus",
            str(corpus),
            "--json",
            str(tmp_path / "e.json"),
            "--labs",
            "nope",
        ],
    )
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output
    r = runner.invoke(
        cli, ["evaluate", "--model", str(path), "--corpus", str(tmp_path), "--json", "x.json"]
    )
    assert r.exit_code != 0 and "manifest.json" in r.output
    # Any other JSON as --truth gave "planted labs mean AUROC n/a" and exit 0.
    not_truth = tmp_path / "parity.json"
    not_truth.write_text('{"passed": true}')
    r = runner.invoke(
        cli,
        ["evaluate", "--model", str(path), "--corpus", str(corpus),
         "--json", str(tmp_path / "t.json"), "--truth", str(not_truth)],
    )  # fmt: skip
    assert r.exit_code == 1, r.output
    assert r.stderr.strip().splitlines() == [
        f"Error: {not_truth}: not a synthetic cohort's truth.json (expected 'planted_keys' "
        "and 'unplanted_keys' lists, as `data synth` writes)"
    ]
