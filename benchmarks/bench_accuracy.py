"""bench: accuracy columns -- each row evaluated on a corpus split (``--corpus``), or copied
from an ``evaluate --json`` file."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from anyecg_edge.benchmarks.bench_spec import BenchError

if TYPE_CHECKING:
    from anyecg_edge.benchmarks.bench_candidates import Candidate


@dataclass
class EvalSet:
    """A corpus split every row is evaluated on (``--corpus``): the row selection, targets
    and visits exactly as `anyecg-edge evaluate` takes them (CorpusDataset +
    evaluate.window_visits), read once here; the workers read the windows themselves."""

    corpus: Path
    split: str
    labs: list[str]  # every lab of the corpus, catalog order (targets' columns)
    targets: np.ndarray  # (n, n_labs) int8: 1 abnormal, 0 normal, -1 unmeasured
    visits: np.ndarray  # (n,) visit id (CSN) per window
    window_samples: int
    rows_npz: Path  # shard paths, shard code and offset per window (for the workers)
    truth: dict[str, Any] | None = None
    truth_path: Path | None = None

    def describe(self) -> str:
        return (
            f"{self.corpus} {self.split} split ({len(self.visits)} windows, "
            f"{len(np.unique(self.visits))} visits)"
        )


def load_eval_set(corpus: Path, split: str, work: Path, truth: Path | None = None) -> EvalSet:
    """The ``split`` of ``corpus`` for per-row evaluation (needs the training install)."""
    try:
        from anyecg_edge.training.data.corpus import CorpusError
        from anyecg_edge.training.data.dataset import CorpusDataset, corpus_lab_keys
        from anyecg_edge.training.evaluate import EvaluationError, window_visits
    except ImportError as exc:
        raise BenchError(
            f'--corpus needs the training install (pip install "anyecg-edge[train]"): {exc}'
        ) from None
    corpus = Path(corpus)
    try:
        labs = corpus_lab_keys(corpus, measured_only=False)
        ds = CorpusDataset(corpus, split, labs=labs)
        # window_visits follows this selection only when told the split (as evaluate_model does).
        ds._eval_splits = {split}
        if len(ds) == 0:
            raise BenchError(f"--corpus {corpus}: the {split} split has no windows")
        visits = window_visits(ds)
    except (CorpusError, EvaluationError, OSError) as exc:
        raise BenchError(f"--corpus {corpus}: {exc}") from None
    rows_npz = Path(work) / f"eval_{split}_rows.npz"
    np.savez(
        rows_npz,
        shards=np.array([str(ds.root / "shards" / n) for n in ds.shard_names]),
        code=ds.shard_code,
        offset=ds.offset,
    )
    truth_doc = None
    if truth is not None:
        try:
            truth_doc = json.loads(Path(truth).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BenchError(f"--truth {truth}: not a readable truth.json ({exc})") from None
    return EvalSet(
        corpus, split, labs, ds.targets, visits, ds.window_samples, rows_npz, truth_doc,
        None if truth is None else Path(truth),
    )  # fmt: skip


def score_row(eval_set: EvalSet, found: dict[str, Any]) -> dict[str, Any]:
    """Accuracy columns of one row from the logits its worker wrote (`eval_logits`), scored by
    the per-lab metric code of `anyecg-edge evaluate` (evaluate_predictions)."""
    from anyecg_edge.training.evaluate import evaluate_predictions

    labs = list(found["eval_labs"])
    logits = np.load(found["eval_logits"])
    cols = [eval_set.labs.index(k) for k in labs]
    res = evaluate_predictions(
        logits,
        eval_set.targets[:, cols],
        eval_set.visits,
        labs,
        calibration=found.get("eval_calibration"),
        thresholds=found.get("eval_thresholds"),
        n_boot=0,  # the table shows means; CIs are `evaluate`'s job
        truth=eval_set.truth,
    )
    s = res["summary"]
    truth = s.get("truth") or {}
    return {
        "auroc_mean": s.get("mean_auroc"),
        "auroc_planted_mean": truth.get("planted_mean_auroc"),
        "auroc_unplanted_mean": truth.get("unplanted_mean_auroc"),
        "auroc_buckets": s.get("buckets") or None,
        "auroc_labs": {k: v.get("auroc") for k, v in res["labs"].items()},
        "auroc_from": "this file",
        "eval_split": eval_set.split,
        "eval_source": f"{eval_set.describe()}, run with this row's runtime",
        "eval_labs_evaluated": s.get("n_labs_evaluated"),
        # Labs with too few abnormal/normal visits on this split: kept out of the means.
        "eval_labs_insufficient": list(s.get("labs_insufficient") or []),
        "eval_s": found.get("eval_s"),
    }


def read_evaluation(path: Path) -> dict[str, Any]:
    """Accuracy columns from an `anyecg-edge evaluate` JSON."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path}: not a readable evaluation JSON ({exc})") from None
    s = doc.get("summary") if isinstance(doc, dict) else None
    if not isinstance(s, dict) or "mean_auroc" not in s:
        raise BenchError(
            f"{path}: no summary.mean_auroc (expected `anyecg-edge evaluate --json` output)"
        )
    truth = s.get("truth") or {}
    buckets = s.get("buckets") or {}
    return {
        "auroc_mean": s.get("mean_auroc"),
        "auroc_planted_mean": truth.get("planted_mean_auroc"),
        "auroc_unplanted_mean": truth.get("unplanted_mean_auroc"),
        "auroc_buckets": buckets or None,
        # An `evaluate --json` file is about a checkpoint: on an export row it is the fp32
        # checkpoint's number, not the file's (pass --corpus for that).
        "auroc_from": "evaluation JSON",
        "eval_split": doc.get("split"),
        "eval_source": str(path),
    }


def _find_evaluation(cand: Candidate) -> Path | None:
    """An evaluation JSON next to the model's checkpoint/run (the latest by mtime)."""
    weights = cand.info.get("weights")
    if not weights or weights == "random-init":
        return None
    p = Path(weights)
    folder = p if p.is_dir() else p.parent
    found = [
        q for pat in ("eval*.json", "*evaluation*.json") for q in folder.glob(pat) if q.is_file()
    ]
    good = []
    for q in found:
        with contextlib.suppress(BenchError):
            read_evaluation(q)
            good.append(q)
    return max(good, key=lambda q: q.stat().st_mtime) if good else None
