"""Per-lab evaluation: AUROC with bootstrap 95 % CIs, AUPRC, calibration, per visit, report.

``evaluate_model(model, corpus, split)`` runs a trained model (our ``model.pt`` or a
folder holding one) over a corpus split and returns::

    {"labs": {key: {"auroc", "ci": [lo, hi], "auprc", "n_pos", "n_neg", "prevalence",
                    "ece", "brier", "reliability": {...}, "threshold", "sensitivity",
                    "specificity", "ppv", "visit": {same metrics per visit}}},
     "summary": {"mean_auroc", "median_auroc", "buckets": {">0.65", "0.55-0.65",
                 "<0.55"}, "mean_auroc_visit", ...},
     "model": {...}, "corpus": ..., "split": ..., "bootstrap": {...}}

Windows of one visit are correlated, so the CIs resample *visits* (cluster bootstrap):
a per-window bootstrap would understate the uncertainty. Per visit, a lab's score is
the mean logit over the visit's measured windows and its label is abnormal if any of
them is. Probabilities are the model's calibrated ones (Platt parameters in its
metadata); ECE uses 10 equal-width bins. AUROC ties count one half.

The paper's buckets (AnyECG-Lab): AUROC > 0.65, 0.55-0.65, < 0.55.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.calibration import sigmoid

__all__ = [
    "BUCKETS",
    "EvaluationError",
    "auprc",
    "auroc",
    "bootstrap_auroc_ci",
    "bucket_of",
    "evaluate_model",
    "evaluate_predictions",
    "reliability_curve",
    "roc_curve_points",
    "write_report",
]

BUCKETS = (">0.65", "0.55-0.65", "<0.55")
N_BINS = 10


class EvaluationError(ValueError):
    """The model, corpus or options cannot be evaluated together."""


# ----------------------------------------------------------------------------- metrics


def _tie_groups(s_sorted: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in an ascending array."""
    return np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])


def _weighted_auroc_sorted(pos_w: np.ndarray, neg_w: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """AUROC for rows of weights over ascending-sorted items (ties count one half).

    pos_w, neg_w: (k, n) weights of positives / negatives; returns (k,) (NaN if a class
    has zero weight).
    """
    p = np.add.reduceat(pos_w, starts, axis=1)
    q = np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(q, axis=1) - q
    num = (p * (below + 0.5 * q)).sum(1)
    den = p.sum(1) * q.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auroc(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Area under the ROC curve (Mann-Whitney, ties 1/2); NaN if a class is missing."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    w = np.ones(y.size) if weight is None else np.asarray(weight, dtype=np.float64).ravel()
    if y.size == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ys, ws = y[order], w[order]
    starts = _tie_groups(s[order])
    return float(_weighted_auroc_sorted((ws * ys)[None], (ws * ~ys)[None], starts)[0])


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
    """Average precision (step-wise area under precision-recall, sklearn's definition)."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # thresholds between distinct scores
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    ss, ys = s[order], y[order]
    last = np.r_[ss[1:] != ss[:-1], True]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def reliability_curve(prob: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Equal-width bins of predicted probability: mean prediction, observed rate, count; ECE."""
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
    return {
        "edges": edges.round(6).tolist(),
        "mean_pred": [None if not k else float(v) for k, v in zip(nz, mean_pred, strict=True)],
        "frac_pos": [None if not k else float(v) for k, v in zip(nz, frac_pos, strict=True)],
        "count": count.astype(int).tolist(),
        "ece": ece,
    }


def bucket_of(value: float | None) -> str | None:
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
    threshold: float,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
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
    }
    if y.size:
        rel = reliability_curve(prob, y)
        out["ece"] = rel.pop("ece")
        out["reliability"] = rel
        out["brier"] = float(np.mean((prob - y) ** 2))
        flagged = prob >= threshold
        tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
        out["threshold"] = float(threshold)
        out["sensitivity"] = tp / n_pos if n_pos else None
        out["specificity"] = int((~flagged & ~y).sum()) / n_neg if n_neg else None
        out["ppv"] = tp / (tp + fp) if tp + fp else None
    if n_pos and n_neg:
        out["auroc"] = auroc(y, logit)
        out["ci"] = bootstrap_auroc_ci(y, logit, clusters, n_boot=n_boot, rng=rng)
        out["auprc"] = auprc(y, logit)
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
) -> dict[str, Any]:
    """Metrics of (n, n_labs) logits against int8 targets (1/0, -1 unmeasured) per lab.

    ``visits`` names each window's visit (CSN): the bootstrap unit and the aggregation key.
    ``truth`` (a synthetic cohort's truth.json) adds planted/unplanted means to the summary.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    visits = np.asarray(visits, dtype=object)
    if logits.shape != targets.shape or logits.shape[1] != len(labs):
        raise EvaluationError(
            f"logits {logits.shape}, targets {targets.shape} and {len(labs)} labs do not match"
        )
    if visits.shape[0] != logits.shape[0]:
        raise EvaluationError(f"{visits.shape[0]} visit ids for {logits.shape[0]} windows")
    calibration = calibration or {}
    thresholds = thresholds or {}
    rng = np.random.default_rng(seed)
    results: dict[str, Any] = {}
    from anyecg_edge.labs import load_catalog

    catalog = load_catalog()
    known = set(catalog.keys)
    for j, lab in enumerate(labs):
        a, b = calibration.get(lab, (1.0, 0.0))
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        z = logits[m, j]
        v = visits[m]
        entry = _lab_metrics(y, z, sigmoid(a * z + b), v, thresholds.get(lab, 0.5), n_boot, rng)
        vz, vy, vids = _visit_level(z, y, v) if y.size else (z, y, v)
        entry["visit"] = _lab_metrics(
            vy, vz, sigmoid(a * vz + b), vids, thresholds.get(lab, 0.5), n_boot, rng
        )
        info = catalog.by_key(lab) if lab in known else None
        if info is not None:
            entry["display_name"] = info.display_name
            entry["unit"] = info.unit
        results[lab] = entry
    return {"labs": results, "summary": _summary(results, targets, visits, truth)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _summary(
    results: dict[str, Any], targets: np.ndarray, visits: np.ndarray, truth: dict | None
) -> dict[str, Any]:
    seg = {k: r["auroc"] for k, r in results.items() if r["auroc"] is not None}
    vis = {k: r["visit"]["auroc"] for k, r in results.items() if r["visit"]["auroc"] is not None}
    buckets = {b: sorted(k for k, v in seg.items() if bucket_of(v) == b) for b in BUCKETS}
    buckets_v = {b: sorted(k for k, v in vis.items() if bucket_of(v) == b) for b in BUCKETS}
    summary: dict[str, Any] = {
        "n_segments": int(targets.shape[0]),
        "n_visits": int(np.unique(visits).size) if visits.size else 0,
        "n_labs": len(results),
        "n_labs_evaluated": len(seg),
        "labs_not_evaluated": sorted(set(results) - set(seg)),
        "mean_auroc": _mean(list(seg.values())),
        "median_auroc": float(np.median(list(seg.values()))) if seg else None,
        "mean_auroc_visit": _mean(list(vis.values())),
        "mean_auprc": _mean([r["auprc"] for r in results.values() if r["auprc"] is not None]),
        "mean_ece": _mean([r["ece"] for r in results.values() if r.get("ece") is not None]),
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
    splits = getattr(dataset, "_eval_splits", None)
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
) -> dict[str, Any]:
    """Run ``model`` (model.pt or its folder) over ``corpus``'s ``split`` and score every lab."""
    import torch
    from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
    from anyecg_edge.training.torch_model import load_model_checkpoint
    from anyecg_edge.training.trainer import predict_logits

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
    ds._eval_splits = {split}
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
        thresholds=meta.thresholds,
        n_boot=n_boot,
        seed=seed,
        truth=truth_doc,
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
        if result["labs"][k]["auroc"] is not None
    }
    return result


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {k: v for k, v in result.items() if not k.startswith("_")}
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------- report


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, *, top: int = 6) -> Path:
    """PNG figures (per-lab AUROC with CIs, ROC of the best labs, reliability) + report.html."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labs = result["labs"]
    scored = sorted(
        (k for k in labs if labs[k]["auroc"] is not None), key=lambda k: labs[k]["auroc"]
    )
    colours = {BUCKETS[0]: "#2b8a3e", BUCKETS[1]: "#e8a33d", BUCKETS[2]: "#c92a2a"}

    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(scored) + 1)))
    if scored:
        vals = np.array([labs[k]["auroc"] for k in scored])
        lo = np.array([(labs[k]["ci"] or [v, v])[0] for k, v in zip(scored, vals, strict=True)])
        hi = np.array([(labs[k]["ci"] or [v, v])[1] for k, v in zip(scored, vals, strict=True)])
        ax.barh(
            range(len(scored)),
            vals - 0.5,
            left=0.5,
            color=[colours[bucket_of(v)] for v in vals],
            xerr=np.vstack([vals - lo, hi - vals]),
            ecolor="#333",
            capsize=2,
        )
        ax.set_yticks(range(len(scored)), scored, fontsize=7)
    ax.axvline(0.5, color="#555", lw=0.8)
    for x in (0.55, 0.65):
        ax.axvline(x, color="#999", lw=0.6, ls="--")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("AUROC per segment (bootstrap 95 % CI over visits)")
    ax.set_title(f"{result.get('split', '')}: mean AUROC {_fmt(result['summary']['mean_auroc'])}")
    fig.tight_layout()
    fig.savefig(out / "auroc.png", dpi=110)
    plt.close(fig)

    best = list(reversed(scored))[:top]
    curves = result.get("_curves", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for k in best:
        if k in curves:
            fpr, tpr = curves[k]
            ax1.plot(fpr, tpr, label=f"{k} ({labs[k]['auroc']:.2f})")
        rel = labs[k].get("reliability")
        if rel:
            xs = [m for m in rel["mean_pred"] if m is not None]
            ys = [
                f for m, f in zip(rel["mean_pred"], rel["frac_pos"], strict=True) if m is not None
            ]
            ax2.plot(xs, ys, marker="o", ms=3, label=f"{k} (ECE {labs[k]['ece']:.3f})")
    for ax in (ax1, ax2):
        ax.plot([0, 1], [0, 1], color="#999", lw=0.8, ls="--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, best labs")
    ax2.set(
        xlabel="mean predicted probability", ylabel="observed abnormal rate", title="Reliability"
    )
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)

    s = result["summary"]
    rows = []
    for k in reversed(scored):
        r = labs[k]
        ci = r["ci"]
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(c))}</td>"
                for c in (
                    k,
                    r.get("display_name", ""),
                    _fmt(r["auroc"]),
                    f"{_fmt(ci[0])}-{_fmt(ci[1])}" if ci else "n/a",
                    _fmt(r["auprc"]),
                    r["n_pos"],
                    r["n_neg"],
                    _fmt(r.get("ece")),
                    _fmt(r["visit"]["auroc"]),
                    r["bucket"],
                )
            )
            + "</tr>"
        )
    summary_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v) if isinstance(v, float) else json.dumps(v))}</td></tr>"
        for k, v in s.items()
        if k != "bucket_labs"
    )

    def img(name: str) -> str:
        data = base64.b64encode((out / name).read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{name}">'

    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>AnyECG-Edge evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}</style>
</head><body>
<h1>Per-lab evaluation ({html.escape(str(result.get("split", "")))})</h1>
<p>Model {html.escape(str(result.get("model", {}).get("path", "")))}; corpus
{html.escape(str(result.get("corpus", "")))}. Research estimates, not diagnoses.
CIs: bootstrap over visits ({result.get("bootstrap", {}).get("n", "")} resamples).</p>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>AUROC per lab</h2>{img("auroc.png")}
<h2>ROC and reliability</h2>{img("roc.png")}
<h2>Labs</h2><table><tr><th>lab</th><th>name</th><th>AUROC</th><th>95 % CI</th><th>AUPRC</th>
<th>n pos</th><th>n neg</th><th>ECE</th><th>AUROC per visit</th><th>bucket</th></tr>
{"".join(rows)}</table></body></html>
"""
    (out / "report.html").write_text(page)
    return out / "report.html"


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
