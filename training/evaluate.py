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

Modules: `evaluate_metrics` (the scores), `evaluate_report` (report.html and its figures),
this one (a model or predictions over a split, per visit, the summary); the names of both
are re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.calibration import sigmoid
from anyecg_edge.training.evaluate_metrics import (
    BUCKETS,
    MIN_VISITS_PER_CLASS,
    EvaluationError,
    auprc,
    auroc,
    bootstrap_auroc_ci,
    bucket_of,
    reliability_curve,
    roc_curve_points,
    threshold_metrics,
)
from anyecg_edge.training.evaluate_report import write_report

from anyecg_edge.io.base import one_line

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


# ----------------------------------------------------------------------------- evaluation


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
        truth_doc = truth if isinstance(truth, dict) else _read_truth(Path(truth))
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


def _read_truth(path: Path) -> dict[str, Any]:
    """A synthetic cohort's truth.json: it names the planted and unplanted labs. Any other
    JSON (a parity or evaluation file) would give "planted n/a" and exit 0."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: cannot read a truth.json ({one_line(exc)})") from None
    if not (
        isinstance(doc, dict)
        and isinstance(doc.get("planted_keys"), list)
        and isinstance(doc.get("unplanted_keys"), list)
    ):
        raise EvaluationError(
            f"{path}: not a synthetic cohort's truth.json (expected 'planted_keys' and "
            "'unplanted_keys' lists, as `data synth` writes)"
        )
    return doc
