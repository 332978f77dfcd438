"""Per-lab evaluation: AUROC with bootstrap 95 % CIs, AUPRC, calibration, per visit, report.

``evaluate_model(model, corpus, split)`` runs a trained model (our ``model.pt`` or a
folder holding one) over a corpus split and returns::

    {"labs": {key: {"status": "evaluated" | "insufficient", "reason" (insufficient only),
                    "n_pos_visits", "n_neg_visits", "auroc", "ci": [lo, hi], "auprc",
                    "n_pos", "n_neg", "prevalence", "ece", "brier", "reliability": {...},
                    "threshold", "calibrated", "sensitivity", "specificity", "ppv", "npv",
                    "bucket", "visit": {same metrics per visit}}},
     "summary": {"min_visits_per_class", "rule", "n_labs_evaluated", "labs_insufficient",
                 "mean_auroc", "median_auroc", "buckets": {">0.65", "0.55-0.65", "<0.55"},
                 "mean_auroc_visit", "truth": {...}, ...},
     "model": {...}, "corpus": ..., "split": ..., "bootstrap": {...}}

A lab is scored only when the split holds at least ``MIN_VISITS_PER_CLASS`` abnormal and as
many normal *visits* (a visit is abnormal if any of its measured windows is). Other labs are
``"insufficient"``: their counts are reported, but no AUROC, CI or threshold metrics, and
they stay out of every mean, bucket and ranking.

Windows of one visit are correlated, so the CIs resample *visits* (cluster bootstrap):
a per-window bootstrap would understate the uncertainty. Per visit, a lab's score is
the mean logit over the visit's measured windows and its label is abnormal if any of
them is. Probabilities are the model's calibrated ones (Platt parameters in its
metadata; identity where a lab has none); a lab without a threshold in the metadata was
not calibrated and makes no calls (sensitivity etc. are None). ECE uses 10 equal-width
bins. AUROC ties count one half. The plain metrics are scikit-learn's; the bootstrap
uses an own vectorised weighted AUROC (equal to ``roc_auc_score`` at unit weights).

The paper's buckets (AnyECG-Lab): AUROC > 0.65, 0.55-0.65, < 0.55.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.calibration import sigmoid

from anyecg_edge.fileio import write_text_atomic

__all__ = [
    "BUCKETS",
    "MIN_VISITS_PER_CLASS",
    "EvaluationError",
    "auprc",
    "auroc",
    "bootstrap_auroc_ci",
    "bucket_of",
    "evaluate_model",
    "evaluate_predictions",
    "no_lab_evaluated",
    "reliability_curve",
    "roc_curve_points",
    "threshold_metrics",
    "write_report",
]

BUCKETS = (">0.65", "0.55-0.65", "<0.55")
N_BINS = 10
# Fewer abnormal (or normal) visits than this and a lab's AUROC and CI are noise: 3 test
# visits gave AUROC 0.000 with CI [0, 0], 2 visits a CI of 0.800-0.800. Such a lab is
# reported as "insufficient" and kept out of means, buckets and rankings.
MIN_VISITS_PER_CLASS = 5


class EvaluationError(ValueError):
    """The model, corpus or options cannot be evaluated together."""


# ----------------------------------------------------------------------------- metrics


def _tie_groups(s_sorted: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in an ascending array."""
    return np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])


def _weighted_auroc_sorted(pos_w: np.ndarray, neg_w: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """AUROC for rows of weights over ascending-sorted items (ties count one half).

    pos_w, neg_w: (k, n) weights of positives / negatives; returns (k,) (NaN if a class
    has zero weight). All k bootstrap resamples in one pass: scikit-learn has no batched
    or cluster-weighted AUROC this fast.
    """
    p = np.add.reduceat(pos_w, starts, axis=1)
    q = np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(q, axis=1) - q
    num = (p * (below + 0.5 * q)).sum(1)
    den = p.sum(1) * q.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auroc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve (``roc_auc_score``, ties 1/2); NaN if a class is missing or
    a score is not finite (a diverged model: the trainer then selects nothing)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    w = None if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    pos = y.sum() if w is None else w[y].sum()
    neg = (~y).sum() if w is None else w[~y].sum()
    if pos <= 0 or neg <= 0 or not np.isfinite(s).all():  # sklearn raises; we say undefined
        return float("nan")
    return float(roc_auc_score(y, s, sample_weight=w))


def bootstrap_auroc_ci(
    y: np.ndarray,
    score: np.ndarray,
    clusters: np.ndarray,
    *,
    n_boot: int = 1000,
    rng: np.random.Generator,
    level: float = 0.95,
    chunk: int = 64,
) -> list[float] | None:
    """Percentile CI of the AUROC resampling clusters (visits) with replacement.

    Returns None when fewer than half of the resamples have both classes.
    """
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    _, cl = np.unique(np.asarray(clusters), return_inverse=True)
    n_cl = int(cl.max()) + 1 if cl.size else 0
    if n_boot <= 0 or n_cl < 2:
        return None
    order = np.argsort(s, kind="stable")
    ys, cls = y[order], cl[order]
    starts = _tie_groups(s[order])
    vals = []
    for a in range(0, n_boot, chunk):
        k = min(chunk, n_boot - a)
        draws = rng.integers(0, n_cl, size=(k, n_cl))
        counts = np.zeros((k, n_cl))
        np.add.at(counts, (np.repeat(np.arange(k), n_cl), draws.ravel()), 1.0)
        w = counts[:, cls]
        vals.append(_weighted_auroc_sorted(w * ys, w * ~ys, starts))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    if v.size < n_boot / 2:
        return None
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (``average_precision_score``); NaN without positives."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if not y.any():  # sklearn warns and returns 0 here
        return float("nan")
    return float(average_precision_score(y, s))


def roc_curve_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1); needs both classes."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.all() or not y.any():
        raise EvaluationError("a ROC curve needs positives and negatives")
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def reliability_curve(prob: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Equal-width bins of predicted probability: mean prediction, observed rate, count; ECE.

    Means are ``calibration_curve``'s (uniform strategy); the counts use its binning
    (``searchsorted`` on the inner edges: a value on an edge goes to the lower bin).
    """
    from sklearn.calibration import calibration_curve

    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(y).astype(bool).ravel()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)
    nz = count > 0
    mean_pred = np.full(n_bins, np.nan)
    frac_pos = np.full(n_bins, np.nan)
    if p.size:
        frac_pos[nz], mean_pred[nz] = calibration_curve(t.astype(int), p, n_bins=n_bins)
    ece = float(np.sum(count[nz] * np.abs(mean_pred[nz] - frac_pos[nz])) / max(p.size, 1))
    return {
        "edges": edges.round(6).tolist(),
        "mean_pred": [None if not k else float(v) for k, v in zip(nz, mean_pred, strict=True)],
        "frac_pos": [None if not k else float(v) for k, v in zip(nz, frac_pos, strict=True)],
        "count": count.astype(int).tolist(),
        "ece": ece,
    }


def threshold_metrics(y: np.ndarray, prob: np.ndarray, threshold: float | None) -> dict[str, Any]:
    """Calls ``prob >= threshold``: sensitivity, specificity, PPV, NPV and the confusion counts.

    ``threshold`` None (the lab was not calibrated) gives None everywhere: no default 0.5.
    A ratio whose denominator is 0 (e.g. PPV with no call) is None.
    """
    keys = ("sensitivity", "specificity", "ppv", "npv", "tp", "fp", "tn", "fn")
    if threshold is None:
        return dict.fromkeys(keys)
    t = np.asarray(y).astype(bool).ravel()
    flagged = np.asarray(prob, dtype=np.float64).ravel() >= threshold
    tp, fp = int((flagged & t).sum()), int((flagged & ~t).sum())
    tn, fn = int((~flagged & ~t).sum()), int((~flagged & t).sum())

    def ratio(a: int, b: int) -> float | None:
        return a / (a + b) if a + b else None

    return dict(
        zip(
            keys,
            (ratio(tp, fn), ratio(tn, fp), ratio(tp, fp), ratio(tn, fn), tp, fp, tn, fn),
            strict=True,
        )
    )


def bucket_of(value: float | None) -> str | None:
    """The paper's AUROC bucket of ``value`` (None for no value)."""
    if value is None or not math.isfinite(value):
        return None
    if value > 0.65:
        return BUCKETS[0]
    return BUCKETS[1] if value >= 0.55 else BUCKETS[2]


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _lab_metrics(
    y: np.ndarray,
    logit: np.ndarray,
    prob: np.ndarray,
    clusters: np.ndarray,
    threshold: float | None,
    n_boot: int,
    rng: np.random.Generator,
    scored: bool,
) -> dict[str, Any]:
    """Counts always; the performance metrics only for a ``scored`` (sufficient) lab."""
    from sklearn.metrics import brier_score_loss

    n_pos, n_neg = int(y.sum()), int((~y).sum())
    out: dict[str, Any] = {
        "n": int(y.size),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "n_visits": int(np.unique(clusters).size),
        "prevalence": _finite(n_pos / y.size) if y.size else None,
        "auroc": None,
        "ci": None,
        "auprc": None,
        "threshold": None if threshold is None else float(threshold),
        "calibrated": threshold is not None,
    }
    out.update(threshold_metrics(y, prob, threshold if scored else None))
    if scored:
        out["auroc"] = auroc(y, logit)
        out["ci"] = bootstrap_auroc_ci(y, logit, clusters, n_boot=n_boot, rng=rng)
        out["auprc"] = auprc(y, logit)
        rel = reliability_curve(prob, y)
        out["ece"] = rel.pop("ece")
        out["reliability"] = rel
        out["brier"] = float(brier_score_loss(y.astype(int), prob))
    out["bucket"] = bucket_of(out["auroc"])
    return out


def _visit_level(
    logit: np.ndarray, y: np.ndarray, visits: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean logit and any-abnormal label per visit (over measured windows only)."""
    uniq, inv = np.unique(visits, return_inverse=True)
    n = np.bincount(inv, minlength=uniq.size)
    mean_logit = np.bincount(inv, weights=logit, minlength=uniq.size) / n
    label = np.bincount(inv, weights=y.astype(np.float64), minlength=uniq.size) > 0
    return mean_logit, label, uniq


def _insufficient_reason(n_pos_v: int, n_neg_v: int, min_visits: int) -> str:
    if n_pos_v + n_neg_v == 0:
        return "not measured in this split"
    return f"{n_pos_v} abnormal and {n_neg_v} normal visits; needs at least {min_visits} of each"


def evaluate_predictions(
    logits: np.ndarray,
    targets: np.ndarray,
    visits: Sequence[str] | np.ndarray,
    labs: Sequence[str],
    *,
    calibration: dict[str, Sequence[float]] | None = None,
    thresholds: dict[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    truth: dict[str, Any] | None = None,
    min_visits: int = MIN_VISITS_PER_CLASS,
) -> dict[str, Any]:
    """Metrics of (n, n_labs) logits against int8 targets (1/0, -1 unmeasured) per lab.

    ``visits`` names each window's visit (CSN): the bootstrap unit and the aggregation key.
    ``calibration`` {lab: [a, b]} (absent: identity); ``thresholds`` {lab: p} (absent: the
    lab was not calibrated, no calls). Labs with fewer than ``min_visits`` abnormal or
    normal visits are "insufficient". ``truth`` (a synthetic cohort's truth.json) adds
    planted/unplanted means to the summary.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    visits = np.asarray(visits, dtype=object)
    if logits.ndim != 2 or logits.shape != targets.shape or logits.shape[1] != len(labs):
        raise EvaluationError(
            f"logits {logits.shape}, targets {targets.shape} and {len(labs)} labs do not match"
        )
    if visits.shape[0] != logits.shape[0]:
        raise EvaluationError(f"{visits.shape[0]} visit ids for {logits.shape[0]} windows")
    if min_visits < 1:
        raise EvaluationError(f"min_visits must be at least 1, got {min_visits}")
    bad = [
        lab for j, lab in enumerate(labs) if not np.isfinite(logits[targets[:, j] >= 0, j]).all()
    ]
    if bad:
        raise EvaluationError(f"the model's output is not finite (NaN/inf) for {', '.join(bad)}")
    calibration = calibration or {}
    thresholds = thresholds or {}
    results: dict[str, Any] = {}
    from anyecg_edge.labs import load_catalog

    catalog = load_catalog()
    known = set(catalog.keys)
    from anyecg_edge.progress import report as progress_report

    for j, lab in enumerate(labs):
        # a bar with ETA over the labs' bootstrap CIs when the CLI opened one (a terminal)
        progress_report("evaluate: labs (bootstrap CIs)", j, len(labs))
        cal = calibration.get(lab)
        a, b = (float(cal[0]), float(cal[1])) if cal is not None else (1.0, 0.0)
        thr = thresholds.get(lab)
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        z = logits[m, j]
        v = visits[m]
        vz, vy, vids = _visit_level(z, y, v) if y.size else (z, y, v)
        n_pos_v, n_neg_v = int(vy.sum()), int((~vy).sum())
        scored = n_pos_v >= min_visits and n_neg_v >= min_visits
        entry: dict[str, Any] = {"status": "evaluated" if scored else "insufficient"}
        if not scored:
            entry["reason"] = _insufficient_reason(n_pos_v, n_neg_v, min_visits)
        entry["n_pos_visits"], entry["n_neg_visits"] = n_pos_v, n_neg_v
        # One stream per lab (keyed by name): a lab's CI does not depend on the other labs.
        rng = np.random.default_rng([seed, zlib.crc32(lab.encode())])
        entry.update(_lab_metrics(y, z, sigmoid(a * z + b), v, thr, n_boot, rng, scored))
        entry["calibration"] = [a, b] if cal is not None else None
        entry["visit"] = _lab_metrics(vy, vz, sigmoid(a * vz + b), vids, thr, n_boot, rng, scored)
        info = catalog.by_key(lab) if lab in known else None
        if info is not None:
            entry["display_name"] = info.display_name
            entry["unit"] = info.unit
        results[lab] = entry
    return {"labs": results, "summary": _summary(results, targets, visits, truth, min_visits)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _summary(
    results: dict[str, Any],
    targets: np.ndarray,
    visits: np.ndarray,
    truth: dict | None,
    min_visits: int,
) -> dict[str, Any]:
    ok = {k: r for k, r in results.items() if r["status"] == "evaluated"}
    seg = {k: r["auroc"] for k, r in ok.items() if r["auroc"] is not None}
    vis = {k: r["visit"]["auroc"] for k, r in ok.items() if r["visit"]["auroc"] is not None}
    buckets = {b: sorted(k for k, v in seg.items() if bucket_of(v) == b) for b in BUCKETS}
    buckets_v = {b: sorted(k for k, v in vis.items() if bucket_of(v) == b) for b in BUCKETS}
    insufficient = sorted(set(results) - set(seg))
    summary: dict[str, Any] = {
        "min_visits_per_class": min_visits,
        "rule": (
            f"a lab is evaluated when the split has at least {min_visits} abnormal and "
            f"{min_visits} normal visits; other labs are insufficient (no AUROC, kept out "
            "of means, buckets and rankings)"
        ),
        "n_segments": int(targets.shape[0]),
        "n_visits": int(np.unique(visits).size) if visits.size else 0,
        "n_labs": len(results),
        "n_labs_evaluated": len(seg),
        "labs_insufficient": insufficient,
        "labs_not_evaluated": insufficient,  # the older name, kept for readers of old files
        "labs_not_calibrated": sorted(k for k, r in results.items() if not r["calibrated"]),
        "mean_auroc": _mean(list(seg.values())),
        "median_auroc": float(np.median(list(seg.values()))) if seg else None,
        "mean_auroc_visit": _mean(list(vis.values())),
        "mean_auprc": _mean([r["auprc"] for r in ok.values() if r["auprc"] is not None]),
        "mean_ece": _mean([r["ece"] for r in ok.values() if r.get("ece") is not None]),
        "buckets": {b: len(v) for b, v in buckets.items()},
        "bucket_labs": buckets,
        "buckets_visit": {b: len(v) for b, v in buckets_v.items()},
        "best_labs": sorted(seg, key=lambda k: -seg[k])[:5],
    }
    if truth:
        planted = [k for k in truth.get("planted_keys", []) if k in results]
        unplanted = [k for k in truth.get("unplanted_keys", []) if k in results]
        summary["truth"] = {
            "planted_labs": planted,
            "unplanted_labs": unplanted,
            "planted_insufficient": [k for k in planted if k not in seg],
            "unplanted_insufficient": [k for k in unplanted if k not in seg],
            "planted_mean_auroc": _mean([seg[k] for k in planted if k in seg]),
            "unplanted_mean_auroc": _mean([seg[k] for k in unplanted if k in seg]),
            "planted_mean_auroc_visit": _mean([vis[k] for k in planted if k in vis]),
            "unplanted_mean_auroc_visit": _mean([vis[k] for k in unplanted if k in vis]),
        }
    return summary


# ----------------------------------------------------------------------------- model + corpus


def _model_path(model: str | os.PathLike) -> Path:
    path = Path(model)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise EvaluationError(f"{path}: no model file (expected a model.pt or a folder with one)")
    return path


def window_visits(dataset: Any) -> np.ndarray:
    """The visit (CSN) of every row of a :class:`CorpusDataset`, read from index.parquet.

    Follows the dataset's row selection (split, quality_ok) and checks the (shard,
    offset) of every row against the dataset, so a change there cannot misalign visits.
    """
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(dataset.root / "index.parquet")
    csn, shard, offset = [], [], []
    splits = getattr(dataset, "splits", None)
    for rg in range(pf.num_row_groups):
        t = pf.read_row_group(rg, columns=["split", "quality_ok", "csn", "shard", "offset"])
        keep = t.column("quality_ok").to_numpy(zero_copy_only=False).astype(bool)
        if splits is not None:
            sp = np.asarray(t.column("split").to_numpy(zero_copy_only=False), dtype=object)
            keep &= np.isin(sp, list(splits))
        csn.append(np.asarray(t.column("csn").to_numpy(zero_copy_only=False), dtype=object)[keep])
        shard.append(
            np.asarray(t.column("shard").to_numpy(zero_copy_only=False), dtype=object)[keep]
        )
        offset.append(t.column("offset").to_numpy()[keep])
    csn_a = np.concatenate(csn) if csn else np.zeros(0, object)
    shard_a = np.concatenate(shard) if shard else np.zeros(0, object)
    offset_a = np.concatenate(offset) if offset else np.zeros(0, np.int64)
    names = np.asarray(dataset.shard_names, dtype=object)
    want = names[dataset.shard_code] if len(dataset) else np.zeros(0, object)
    if (
        csn_a.size != len(dataset)
        or not np.array_equal(shard_a, want)
        or not np.array_equal(offset_a.astype(np.int64), dataset.offset.astype(np.int64))
    ):
        raise EvaluationError(
            f"{dataset.root}/index.parquet: rows do not line up with the dataset "
            "(visit ids cannot be attached)"
        )
    return csn_a


def _lab_calibrated(meta: Any, lab: str) -> bool:
    """False where the manifest says the lab was not calibrated (its threshold is not used)."""
    flags = getattr(meta, "calibrated", None)  # {lab: bool} in newer manifests
    return not isinstance(flags, dict) or bool(flags.get(lab, True))


def evaluate_model(
    model: str | os.PathLike,
    corpus: str | os.PathLike,
    split: str = "test",
    *,
    labs: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "fp32",
    truth: str | os.PathLike | dict | None = None,
    min_visits: int = MIN_VISITS_PER_CLASS,
) -> dict[str, Any]:
    """Run ``model`` (model.pt or its folder) over ``corpus``'s ``split`` and score every lab.

    Labs the split cannot score (see ``MIN_VISITS_PER_CLASS``) come back "insufficient";
    the caller decides whether no evaluated lab at all is an error (the CLI says it is).
    """
    import torch
    from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys

    # inference, not trainer: trainer -> metrics -> this module was an import cycle.
    from anyecg_edge.training.inference import predict_logits
    from anyecg_edge.training.torch_model import load_model_checkpoint

    path = _model_path(model)
    module, meta = load_model_checkpoint(path)
    if split not in ("train", "val", "test"):
        raise EvaluationError(f"split must be train, val or test, got {split!r}")
    in_corpus = set(corpus_lab_keys(corpus, measured_only=False))
    wanted = list(labs) if labs else list(meta.labs)
    unknown = [k for k in wanted if k not in meta.labs]
    if unknown:
        raise EvaluationError(f"{path}: the model has no output for lab(s) {', '.join(unknown)}")
    absent = [k for k in wanted if k not in in_corpus]
    if labs and absent:
        raise EvaluationError(f"{corpus}: lab(s) {', '.join(absent)} are not in this corpus")
    wanted = [k for k in wanted if k in in_corpus]
    if not wanted:
        raise EvaluationError(f"{corpus}: none of the model's labs are in this corpus")
    ds = CorpusDataset(corpus, split, labs=wanted)
    if len(ds) == 0:
        raise EvaluationError(f"{corpus}: the {split} split has no windows")
    win = int(round(meta.fs * meta.window_s))
    if ds.window_samples != win:
        raise EvaluationError(
            f"{corpus}: windows have {ds.window_samples} samples, the model expects {win} "
            f"({meta.window_s} s at {meta.fs} Hz)"
        )
    visits = window_visits(ds)
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    module = module.to(dev)
    logits_all = predict_logits(module, ds, batch_size=batch_size, device=dev, precision=precision)
    cols = [meta.labs.index(k) for k in wanted]
    truth_doc = None
    if truth is not None:
        truth_doc = truth if isinstance(truth, dict) else json.loads(Path(truth).read_text())
    result = evaluate_predictions(
        logits_all[:, cols],
        ds.targets,
        visits,
        wanted,
        calibration=meta.calibration,
        thresholds={k: t for k, t in meta.thresholds.items() if _lab_calibrated(meta, k)},
        n_boot=n_boot,
        seed=seed,
        truth=truth_doc,
        min_visits=min_visits,
    )
    result["model"] = {"path": str(path), "arch": meta.arch, "n_outputs": len(meta.labs)}
    result["corpus"] = str(corpus)
    result["labs_not_in_corpus"] = absent
    result["split"] = split
    result["bootstrap"] = {"n": n_boot, "seed": seed, "unit": "visit", "level": 0.95}
    result["_curves"] = {  # for the report; dropped from the JSON
        k: roc_curve_points(
            ds.targets[ds.targets[:, j] >= 0, j] == 1,
            logits_all[ds.targets[:, j] >= 0, cols[j]],
        )
        for j, k in enumerate(wanted)
        if result["labs"][k]["status"] == "evaluated"
    }
    return result


def no_lab_evaluated(result: dict[str, Any]) -> str | None:
    """The one-line reason why ``result`` scored no lab at all; None when some lab was scored."""
    s = result["summary"]
    if s["n_labs_evaluated"]:
        return None
    most_pos = max((r["n_pos_visits"] for r in result["labs"].values()), default=0)
    most_neg = max((r["n_neg_visits"] for r in result["labs"].values()), default=0)
    where = f"the {result['split']} split" if "split" in result else "these predictions"
    return (
        f"no lab can be evaluated on {where} ({s['n_visits']} visits, {s['n_segments']} "
        f"windows; at most {most_pos} abnormal and {most_neg} normal visits per lab, each lab "
        f"needs at least {s['min_visits_per_class']} of each)"
    )


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """The evaluation as strict JSON (an undefined AUROC is null, named under
    ``non_finite``), written atomically; the ``_``-prefixed in-memory fields are left out."""
    from anyecg_edge.fileio import write_json as write_json_atomic

    return write_json_atomic(path, {k: v for k, v in result.items() if not k.startswith("_")})


# ----------------------------------------------------------------------------- report

_COLOURS = {BUCKETS[0]: "#2b8a3e", BUCKETS[1]: "#e8a33d", BUCKETS[2]: "#c92a2a"}
_COLOUR_NAMES = {BUCKETS[0]: "green", BUCKETS[1]: "amber", BUCKETS[2]: "red"}


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_axis_off()


def _auroc_figure(result: dict[str, Any], scored: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labs = result["labs"]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(scored) + 1.4)))
    if scored:
        vals = np.array([labs[k]["auroc"] for k in scored])
        # A lab without a CI gets no whisker (not a zero-width one that looks certain).
        lo = np.array([(labs[k]["ci"] or [np.nan])[0] for k in scored])
        hi = np.array([(labs[k]["ci"] or [np.nan, np.nan])[1] for k in scored])
        ax.barh(
            range(len(scored)),
            vals - 0.5,
            left=0.5,
            color=[_COLOURS[bucket_of(v)] for v in vals],
            xerr=np.vstack([np.nan_to_num(vals - lo), np.nan_to_num(hi - vals)]),
            ecolor="#333",
            capsize=2,
        )
        ax.set_yticks(range(len(scored)), scored, fontsize=7)
        ax.legend(
            handles=[Patch(color=_COLOURS[b], label=f"AUROC {b}") for b in BUCKETS],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),  # outside: bars and whiskers reach the right edge
        )
    else:
        ax.text(0.5, 0.5, "no lab evaluated", ha="center", va="center", color="#555")
    ax.axvline(0.5, color="#555", lw=0.8)
    for x in (0.55, 0.65):
        ax.axvline(x, color="#999", lw=0.6, ls="--")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("AUROC per segment (bars from chance 0.5; whiskers: 95 % CI over visits)")
    mean = result["summary"]["mean_auroc"]
    ax.set_title(f"{result.get('split', '')}: mean AUROC {_fmt(mean)} over {len(scored)} labs")
    _save(fig, path)


def _roc_figure(result: dict[str, Any], best: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    labs, curves = result["labs"], result.get("_curves", {})
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k in best:
        if k in curves:
            fpr, tpr = curves[k]
            ax.plot(fpr, tpr, label=f"{k} ({labs[k]['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title("ROC per segment, best labs")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def _reliability_figure(result: dict[str, Any], best: list[str], path: Path) -> None:
    """One panel per lab: observed vs predicted per bin, with the bin's window count."""
    import matplotlib.pyplot as plt

    labs = result["labs"]
    shown = [k for k in best if labs[k].get("reliability")]
    ncols = min(3, max(len(shown), 1))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        _empty(ax, "no lab evaluated" if not shown else "")
    for ax, k in zip(axes.ravel(), shown, strict=False):
        rel = labs[k]["reliability"]
        edges = np.asarray(rel["edges"])
        centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        counts = np.asarray(rel["count"])
        bars = ax.twinx()
        bars.bar(centres, counts, width=width * 0.9, color="#bbb", alpha=0.5, zorder=0)
        bars.set_ylim(0, max(counts.max(), 1) * 3)  # keep bars in the lower third
        bars.set_yticks([])
        for x, c in zip(centres, counts, strict=True):
            if c:
                bars.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=6, color="#444")
        ax.set_zorder(bars.get_zorder() + 1)
        ax.patch.set_visible(False)
        pts = [
            (m, f) for m, f in zip(rel["mean_pred"], rel["frac_pos"], strict=True) if m is not None
        ]
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color="#1c7ed6")
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1))
        ax.set_title(f"{k} (ECE {labs[k]['ece']:.3f})", fontsize=9)
        ax.set_xlabel("mean predicted probability", fontsize=8)
        ax.set_ylabel("observed abnormal rate", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Reliability per segment (grey bars and numbers: windows per bin)", fontsize=10)
    _save(fig, path)


_SUMMARY_LABELS = {
    "rule": "evaluation rule",
    "n_segments": "segments (windows)",
    "n_visits": "visits",
    "n_labs": "labs",
    "n_labs_evaluated": "labs evaluated",
    "labs_insufficient": "labs insufficient",
    "labs_not_calibrated": "labs without threshold (not calibrated)",
    "mean_auroc": "mean AUROC (evaluated labs)",
    "median_auroc": "median AUROC",
    "mean_auroc_visit": "mean AUROC per visit",
    "mean_auprc": "mean AUPRC",
    "mean_ece": "mean ECE",
    "buckets": "paper buckets (segments)",
    "buckets_visit": "paper buckets (visits)",
    "best_labs": "best labs",
    "planted_labs": "planted labs",
    "unplanted_labs": "unplanted labs",
    "planted_insufficient": "planted labs insufficient",
    "unplanted_insufficient": "unplanted labs insufficient",
    "planted_mean_auroc": "planted labs mean AUROC",
    "unplanted_mean_auroc": "unplanted labs mean AUROC",
    "planted_mean_auroc_visit": "planted labs mean AUROC per visit",
    "unplanted_mean_auroc_visit": "unplanted labs mean AUROC per visit",
}
# Shown elsewhere in the report, or duplicates kept in the JSON for older readers.
_SUMMARY_SKIP = {"bucket_labs", "labs_not_evaluated", "min_visits_per_class"}


def _fmt_value(v: Any) -> str:
    """Readable text for a JSON value: numbers to 3 decimals, lists and dicts as prose."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt_value(x) for x in v) if v else "none"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt_value(x)}" for k, x in v.items()) if v else "none"
    return str(v)


def _summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in s.items():
        if k in _SUMMARY_SKIP:
            continue
        if k == "truth" and isinstance(v, dict):
            rows += [(_SUMMARY_LABELS.get(t, t), _fmt_value(x)) for t, x in v.items()]
        elif k == "buckets" and "bucket_labs" in s:
            text = "; ".join(
                f"{b}: {n}" + (f" ({', '.join(s['bucket_labs'][b])})" if n else "")
                for b, n in v.items()
            )
            rows.append((_SUMMARY_LABELS[k], text))
        else:
            rows.append((_SUMMARY_LABELS.get(k, k.replace("_", " ")), _fmt_value(v)))
    return rows


def _pct(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    return "n/a" if v is None else f"{100 * v:.1f} %"


def _cells(values: Sequence[Any], style: str = "") -> str:
    return "".join(f"<td{style}>{html.escape(str(c))}</td>" for c in values)


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, *, top: int = 6) -> Path:
    """report.html (self-contained: PNGs inlined) with auroc.png, roc.png and reliability.png.

    Evaluated labs get a row with AUROC, CI, prevalence and the calls at the model's
    threshold; insufficient labs a row of their own with their counts.
    """
    import matplotlib

    matplotlib.use("Agg")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labs = result["labs"]
    scored = sorted(
        (k for k in labs if labs[k].get("status") == "evaluated" and labs[k]["auroc"] is not None),
        key=lambda k: labs[k]["auroc"],
    )
    best = list(reversed(scored))[:top]
    _auroc_figure(result, scored, out / "auroc.png")
    _roc_figure(result, best, out / "roc.png")
    _reliability_figure(result, best, out / "reliability.png")

    s = result["summary"]
    rows = []
    for k in reversed(scored):
        r = labs[k]
        ci = r["ci"]
        thr = r.get("threshold")
        lead = _cells((k, r.get("display_name", "")))
        bucket = r["bucket"]
        rows.append(
            f"<tr>{lead}"
            + _cells(
                (
                    _fmt(r["auroc"]),
                    f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "n/a",
                    _fmt(r["visit"]["auroc"]),
                    _fmt(r["auprc"]),
                    f"{_pct(r, 'prevalence')} ({r['n_pos']}/{r['n']})",
                    f"{r.get('n_pos_visits', 'n/a')} / {r.get('n_neg_visits', 'n/a')}",
                    _fmt(r.get("ece")),
                    _fmt(r.get("brier")),
                    "not calibrated" if thr is None else f"{thr:.3f}",
                    _pct(r, "sensitivity"),
                    _pct(r, "specificity"),
                    _pct(r, "ppv"),
                    _pct(r, "npv"),
                )
            )
            + _cells((bucket,), f' style="background:{_COLOURS[bucket]};color:#fff"')
            + "</tr>"
        )
    insufficient = [k for k in labs if k not in scored]
    rows_insufficient = [
        "<tr>"
        + _cells(
            (
                k,
                labs[k].get("display_name", ""),
                labs[k].get("n_pos_visits", "n/a"),
                labs[k].get("n_neg_visits", "n/a"),
                labs[k]["n_pos"],
                labs[k]["n_neg"],
                labs[k].get("reason", ""),
            )
        )
        + "</tr>"
        for k in sorted(insufficient)
    ]
    summary_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(s)
    )
    n_min = s.get("min_visits_per_class", MIN_VISITS_PER_CLASS)
    boot = result.get("bootstrap", {})
    swatches = ", ".join(
        f'<span style="background:{_COLOURS[b]};color:#fff;padding:0 4px">{html.escape(b)}</span>'
        f" ({_COLOUR_NAMES[b]})"
        for b in BUCKETS
    )

    def img(name: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{name}">'

    lab_table = (
        "<table><tr><th>lab</th><th>name</th><th>AUROC</th><th>95 % CI</th>"
        "<th>AUROC per visit</th><th>AUPRC</th><th>prevalence (abnormal/windows)</th>"
        "<th>visits abnormal / normal</th><th>ECE</th><th>Brier</th><th>threshold</th>"
        "<th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th><th>bucket</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No lab could be evaluated on this split.</p>"
    )
    insufficient_table = (
        "<table><tr><th>lab</th><th>name</th><th>abnormal visits</th><th>normal visits</th>"
        "<th>abnormal windows</th><th>normal windows</th><th>why</th></tr>"
        + "".join(rows_insufficient)
        + "</table>"
        if rows_insufficient
        else "<p>None: every lab had enough visits of both classes.</p>"
    )
    esc = html.escape
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>AnyECG-Edge evaluation</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto}}
table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}}
li{{margin-bottom:.3em}}</style>
</head><body>
<h1>Per-lab evaluation ({esc(str(result.get("split", "")))})</h1>
<p>Model {esc(str(result.get("model", {}).get("path", "")))}; corpus
{esc(str(result.get("corpus", "")))}; {s["n_visits"]} visits, {s["n_segments"]} windows.
Research estimates of lab abnormality from one ECG lead, not diagnoses.</p>
<h2>How to read this report</h2><ul>
<li><b>Buckets and colours</b> (the AnyECG-Lab paper's): AUROC {swatches}. In the AUROC
plot the bars start at chance (0.5, solid line); dashed lines mark 0.55 and 0.65.</li>
<li><b>AUROC</b> per segment ranks every measured 10 s window; <b>per visit</b> uses the mean
logit over a visit's windows, abnormal if any of them is.</li>
<li><b>95 % CI</b>: percentile bootstrap resampling visits ({esc(str(boot.get("n", "")))}
resamples, seed {esc(str(boot.get("seed", "")))}); n/a when too few resamples had both
classes. Windows of one visit are correlated, so visits, not windows, are resampled.</li>
<li><b>Evaluated vs insufficient</b>: a lab is scored only with at least {n_min} abnormal and
{n_min} normal visits in this split. Other labs are listed apart with their counts, and are
left out of the means, buckets and best labs.</li>
<li><b>Prevalence</b>: share of the lab's measured windows that are abnormal.</li>
<li><b>Threshold</b>: the model's decision threshold on the calibrated probability (fitted on
the validation split); sensitivity, specificity, PPV and NPV are those of the calls
p &ge; threshold on this split's windows. <i>not calibrated</i>: the model has no threshold
for the lab (too little validation data), so it makes no calls.</li>
<li><b>ECE</b>: expected calibration error over 10 equal-width probability bins, as drawn in
the reliability plots (grey bars and numbers: windows per bin; a point from a few windows
says little). <b>Brier</b>: mean squared error of the probabilities.</li></ul>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>AUROC per lab</h2>{img("auroc.png")}
<h2>ROC, best labs</h2>{img("roc.png")}
<h2>Reliability, best labs</h2>{img("reliability.png")}
<h2>Evaluated labs</h2>{lab_table}
<h2>Insufficient labs</h2>{insufficient_table}
</body></html>
"""
    write_text_atomic(out / "report.html", page)
    return out / "report.html"


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
