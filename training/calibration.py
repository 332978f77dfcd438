"""Per-lab probability calibration (Platt scaling) and decision thresholds, fitted on val.

The device applies ``p = sigmoid(a * logit + b)`` per lab (``ModelMetadata.calibration``)
and flags a lab when ``p >= threshold`` (``ModelMetadata.thresholds``). Both are fitted
here on the validation split's logits and measured targets only. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fit_platt", "youden_threshold", "fit_lab_calibration", "sigmoid"]

# Fewer measured val windows (or fewer of either class) than this: keep the identity
# calibration and the prevalence threshold instead of fitting noise.
MIN_PER_CLASS = 5


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The training side's one sigmoid (calibration, evaluation, distillation); computes in
    the input's dtype."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any |z|


def fit_platt(
    logits: np.ndarray, y: np.ndarray, *, l2: float = 1e-3, max_iter: int = 100
) -> tuple[float, float]:
    """Platt scaling: (a, b) minimising log-loss of sigmoid(a*logit + b) by Newton's method.

    ``l2`` is a small ridge on (a - 1, b) so separable or tiny sets stay finite.
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if z.shape != t.shape:
        raise ValueError(f"fit_platt: logits {z.shape} and targets {t.shape} differ in shape")
    if z.size == 0:
        return 1.0, 0.0
    n = float(z.size)
    theta = np.array([1.0, 0.0])
    prior = np.array([1.0, 0.0])
    for _ in range(max_iter):
        p = sigmoid(theta[0] * z + theta[1])
        r = p - t
        grad = np.array([(r * z).sum(), r.sum()]) / n + l2 * (theta - prior)
        w = p * (1.0 - p)
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) / n
        h += l2 * np.eye(2)
        step = np.linalg.solve(h, grad)
        theta = theta - step
        if np.abs(step).max() < 1e-10:
            break
    if not np.all(np.isfinite(theta)):
        return 1.0, 0.0
    return float(theta[0]), float(theta[1])


def youden_threshold(prob: np.ndarray, y: np.ndarray) -> float:
    """The probability cut maximising sensitivity + specificity - 1 (ties: the lower cut)."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(y).ravel().astype(bool)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(-p, kind="stable")
    ps, ts = p[order], t[order]
    tp = np.cumsum(ts)
    fp = np.cumsum(~ts)
    last = np.r_[ps[1:] != ps[:-1], True]  # only cut between distinct scores
    j = tp[last] / n_pos - fp[last] / n_neg
    k = int(np.argmax(j))
    return float(ps[last][k])


def fit_lab_calibration(
    logits: np.ndarray, targets: np.ndarray, labs: Sequence[str]
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, str]]:
    """Fit every lab: returns (calibration {lab: [a, b]}, thresholds {lab: p}, method {lab: how}).

    ``targets`` int8 (n, n_labs): 1 abnormal, 0 normal, -1 unmeasured. Labs with fewer
    than ``MIN_PER_CLASS`` windows of either class keep a = 1, b = 0 and get their
    measured prevalence (0.5 if none) as threshold; ``method`` says which.
    """
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if logits.shape != targets.shape or logits.shape[1] != len(labs):
        raise ValueError(
            f"fit_lab_calibration: logits {logits.shape}, targets {targets.shape}, {len(labs)} labs"
        )
    calibration: dict[str, list[float]] = {}
    thresholds: dict[str, float] = {}
    method: dict[str, str] = {}
    for j, lab in enumerate(labs):
        m = targets[:, j] >= 0
        y = targets[m, j] == 1
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos < MIN_PER_CLASS or n_neg < MIN_PER_CLASS:
            calibration[lab] = [1.0, 0.0]
            thresholds[lab] = float(n_pos / (n_pos + n_neg)) if n_pos + n_neg else 0.5
            method[lab] = f"identity (val has {n_pos} abnormal / {n_neg} normal)"
            continue
        a, b = fit_platt(logits[m, j], y)
        calibration[lab] = [a, b]
        thresholds[lab] = youden_threshold(sigmoid(a * logits[m, j] + b), y)
        method[lab] = "platt+youden"
    return calibration, thresholds, method
