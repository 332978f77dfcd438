"""Losses and the selection metric of the training loop: per-lab positive weights, the
masked multi-label BCE (sums and counts, so DDP ranks reduce them exactly) and the
validation mean AUROC."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["masked_bce_terms", "mean_auroc", "pos_weight_from_targets"]


def pos_weight_from_targets(targets: np.ndarray, max_weight: float = 100.0) -> np.ndarray:
    """Per-lab n_negative / n_positive over measured windows, clipped to [1/max, max]."""
    t = np.asarray(targets)
    pos = (t == 1).sum(0).astype(np.float64)
    neg = (t == 0).sum(0).astype(np.float64)
    w = np.where(pos > 0, neg / np.maximum(pos, 1.0), 1.0)
    w = np.where(neg > 0, w, 1.0)
    return np.clip(w, 1.0 / max_weight, max_weight).astype(np.float32)


def masked_bce_terms(
    logits: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of BCE over measured lab targets, number of measured targets)."""
    bce = nn.functional.binary_cross_entropy_with_logits(
        logits.float(), y, pos_weight=pos_weight, reduction="none"
    )
    return (bce * mask).sum(), mask.sum()


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from anyecg_edge.training.evaluate import auroc

    return auroc(y, s)


def mean_auroc(logits: np.ndarray, targets: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean AUROC over labs with both classes measured, and the per-lab values (None: n/a).

    The training-time selection metric: a lab counts with one window of each class. It has
    no visit ids (evaluate's ``MIN_VISITS_PER_CLASS`` rule needs them), and it only ranks
    the states of one run on one fixed val split, so noise in a small lab is shared by all
    states. NaN when no lab qualifies (the Trainer then selects nothing).
    """
    per_lab: list[float | None] = []
    for j in range(targets.shape[1]):
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        if y.all() or not y.any():
            per_lab.append(None)
            continue
        per_lab.append(_auroc(y, logits[m, j]))
    vals = [v for v in per_lab if v is not None]
    return (float(np.mean(vals)) if vals else float("nan")), per_lab
