"""The per-lab scores of an evaluation: AUROC (plain and a batched cluster bootstrap for the
95 % CI), AUPRC, ROC points, the reliability curve with ECE, the threshold calls and the
paper's AUROC buckets. Pure numpy / scikit-learn; :mod:`.evaluate` runs them over a model's
predictions and :mod:`.evaluate_report` draws them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "BUCKETS",
    "MIN_VISITS_PER_CLASS",
    "N_BINS",
    "EvaluationError",
    "auprc",
    "auroc",
    "bootstrap_auroc_ci",
    "bucket_of",
    "reliability_curve",
    "roc_curve_points",
    "threshold_metrics",
]

BUCKETS = (">0.65", "0.55-0.65", "<0.55")
N_BINS = 10
# Fewer abnormal (or normal) visits than this and a lab's AUROC and CI are noise: 3 test
# visits gave AUROC 0.000 with CI [0, 0], 2 visits a CI of 0.800-0.800. Such a lab is
# reported as "insufficient" and kept out of means, buckets and rankings.
MIN_VISITS_PER_CLASS = 5


class EvaluationError(ValueError):
    """The model, corpus or options cannot be evaluated together."""


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
