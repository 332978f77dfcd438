"""Per-lab probability calibration, decision thresholds and calibration uncertainty, fitted
on the validation split. numpy only.

The device applies ``p = sigmoid(a * logit + b)`` per lab (``ModelMetadata.calibration``)
and flags a lab when ``p >= threshold`` (``ModelMetadata.thresholds``). The rules that keep
this honest on small validation sets:

* **Minimum data.** A lab needs at least ``MIN_PER_CLASS`` abnormal *and* normal validation
  visits (windows when no visit ids are given). Below that it is *not calibrated*: identity
  probability, no threshold, ``calibrated: false`` in the manifest, and the device reports
  ``abnormal: null`` ("not calibrated"). A 0.0 or 1.0 threshold is never written.
* **Monotone.** The Platt slope is constrained to ``a > 0``: a calibration may rescale the
  model's ranking but never reverse it. A lab whose validation data would need ``a <= 0``
  (the model ranks it backwards there) is refused with that reason, not inverted.
* **Shrunk toward identity.** The slope carries a ridge toward 1 worth ``PRIOR_WEIGHT``
  pseudo-windows, so tiny or separable sets cannot produce the steep slopes that turn small
  (e.g. int8) logit errors into large probability changes; on large sets it fades out.
* **Threshold between scores.** Youden's cut is placed midway (in logit space) between the
  two validation scores it separates, not on one of them, so a window scoring like the
  boundary case is not flipped by the smallest logit error.
* **Uncertainty.** ``N_BOOTSTRAP`` refits on validation sets resampled by visit give a
  spread of calibration curves; the device reports the ``INTERVAL_LEVEL`` central interval
  of the calibrated probability over them. It says how well the validation data pin the
  probability down (calibration uncertainty), not how far the patient's lab value is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "INTERVAL_LEVEL",
    "MIN_PER_CLASS",
    "N_BOOTSTRAP",
    "LabCalibration",
    "fit_lab_calibration",
    "fit_platt",
    "sigmoid",
    "youden_threshold",
]

# Fewer abnormal or normal validation visits than this: no calibration, no threshold.
MIN_PER_CLASS = 5
# The slope's ridge toward 1, in pseudo-windows (its weight is PRIOR_WEIGHT / n).
PRIOR_WEIGHT = 10.0
# A slope at or below this is "no ranking left" (refused, never inverted).
MIN_SLOPE = 1e-3
N_BOOTSTRAP = 32
INTERVAL_LEVEL = 0.9


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The training side's one sigmoid (calibration, evaluation, distillation); computes in
    the input's dtype."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any |z|


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return float(np.log(p / (1 - p)))


def fit_platt(
    logits: np.ndarray,
    y: np.ndarray,
    *,
    prior_weight: float = PRIOR_WEIGHT,
    max_iter: int = 100,
) -> tuple[float, float]:
    """Monotone Platt scaling: (a, b) minimising the mean log-loss of sigmoid(a*z + b)
    + (prior_weight / n) * (a - 1)^2 / 2 + 1e-6 * b^2 / 2, with a kept >= 0 (Newton steps
    projected onto the constraint; the intercept is refitted when the slope hits 0).

    A returned ``a`` near 0 means the data rank the lab backwards or not at all: callers
    must not use such a fit (see :func:`fit_lab_calibration`).
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if z.shape != t.shape:
        raise ValueError(f"fit_platt: logits {z.shape} and targets {t.shape} differ in shape")
    if z.size == 0:
        return 1.0, 0.0
    n = float(z.size)
    reg = np.array([prior_weight / n, 1e-6])
    prior = np.array([1.0, 0.0])

    def objective(th: np.ndarray) -> float:
        s = th[0] * z + th[1]
        loss = np.logaddexp(0.0, s) - t * s  # log-loss, stable for any |s|
        return float(loss.mean() + 0.5 * np.sum(reg * (th - prior) ** 2))

    theta = np.array([1.0, 0.0])
    f = objective(theta)
    for _ in range(max_iter):
        p = sigmoid(theta[0] * z + theta[1])
        r = p - t
        grad = np.array([(r * z).sum(), r.sum()]) / n + reg * (theta - prior)
        w = p * (1.0 - p)
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]]) / n
        h += np.diag(reg) + 1e-12 * np.eye(2)
        step = np.linalg.solve(h, grad)
        # Damped: halve the step until the objective falls. A full Newton step from the
        # identity start overshoots when the logits are large or the classes nearly
        # separate (saturated weights make the Hessian tiny): b = -583332 on 36 windows.
        scale = 1.0
        while True:
            new = theta - scale * step
            if new[0] < 0.0:  # project: slope 0, Newton on the intercept alone
                new = np.array([0.0, theta[1] - scale * grad[1] / max(h[1, 1], 1e-12)])
            f_new = objective(new)
            if f_new <= f or scale < 1e-8:
                break
            scale *= 0.5
        if f_new > f:
            break  # no step lowers the objective: theta is the optimum up to round-off
        done = np.abs(new - theta).max() < 1e-10 or f - f_new < 1e-15 * max(1.0, abs(f))
        theta, f = new, f_new
        if done:
            break
    if not np.all(np.isfinite(theta)):
        return 1.0, 0.0
    return float(theta[0]), float(theta[1])


def youden_threshold(prob: np.ndarray, y: np.ndarray) -> float:
    """The probability cut maximising sensitivity + specificity - 1, placed midway in logit
    space between the lowest flagged score and the next lower one (ties: the lower cut).

    Flagging is ``p >= threshold``; with both classes present the result lies strictly
    inside (0, 1). 0.5 when a class is missing.
    """
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
    cut = ps[last][k]
    below = ps[last][k + 1] if k + 1 < int(last.sum()) else None
    lo = _logit(cut) - 1.0 if below is None else _logit(float(below))
    mid = 0.5 * (_logit(float(cut)) + lo)
    return float(np.clip(sigmoid(np.float64(mid)), 1e-6, 1 - 1e-6))


@dataclass
class LabCalibration:
    """One lab's calibration as the manifest carries it."""

    calibrated: bool
    a: float = 1.0
    b: float = 0.0
    threshold: float | None = None
    reason: str = ""
    n_pos: int = 0
    n_neg: int = 0
    unit: str = "visits"  # what n_pos / n_neg count
    bootstrap: list[list[float]] = field(default_factory=list)


def _groups(n: int, groups: Sequence[Any] | np.ndarray | None) -> tuple[np.ndarray, str]:
    if groups is None:
        return np.arange(n), "windows"
    g = np.asarray(groups)
    if g.shape[0] != n:
        raise ValueError(f"fit_lab_calibration: {g.shape[0]} group ids for {n} windows")
    return np.unique(g, return_inverse=True)[1], "visits"


def _class_counts(y: np.ndarray, gid: np.ndarray) -> tuple[int, int]:
    """Groups with any abnormal window, and groups with any normal one."""
    return int(np.unique(gid[y]).size), int(np.unique(gid[~y]).size)


def fit_one_lab(
    z: np.ndarray,
    y: np.ndarray,
    gid: np.ndarray,
    unit: str,
    *,
    min_per_class: int = MIN_PER_CLASS,
    n_bootstrap: int = N_BOOTSTRAP,
    rng: np.random.Generator | None = None,
) -> LabCalibration:
    """Calibrate one lab from its measured validation windows (logits z, labels y, group ids)."""
    n_pos, n_neg = _class_counts(y, gid)
    if n_pos < min_per_class or n_neg < min_per_class:
        return LabCalibration(
            False,
            reason=f"validation has {n_pos} abnormal / {n_neg} normal {unit} "
            f"(minimum {min_per_class} of each)",
            n_pos=n_pos,
            n_neg=n_neg,
            unit=unit,
        )
    a, b = fit_platt(z, y)
    if a <= MIN_SLOPE:
        return LabCalibration(
            False,
            reason="the model ranks this lab backwards on validation; a calibration would "
            "reverse it (refused)",
            n_pos=n_pos,
            n_neg=n_neg,
            unit=unit,
        )
    threshold = youden_threshold(sigmoid(a * z + b), y)
    boot: list[list[float]] = []
    if n_bootstrap > 0:
        rng = rng or np.random.default_rng(0)
        # Each visit's window indices (ascending), from one stable sort: O(n log n), where a
        # comparison per visit is O(n x visits) - hours at MC-MED's val size.
        order = np.argsort(gid, kind="stable")
        _, starts = np.unique(gid[order], return_index=True)
        members = np.split(order, starts[1:])
        for _ in range(n_bootstrap):
            pick = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[i] for i in pick])
            yb = y[idx]
            # A resample with one class carries no information: keep the fit.
            ab = (a, b) if yb.all() or not yb.any() else fit_platt(z[idx], yb)
            boot.append([round(max(ab[0], 0.0), 6), round(ab[1], 6)])
    return LabCalibration(
        True,
        a=a,
        b=b,
        threshold=threshold,
        reason="monotone Platt (slope shrunk toward 1) + Youden threshold",
        n_pos=n_pos,
        n_neg=n_neg,
        unit=unit,
        bootstrap=boot,
    )


def fit_lab_calibration(
    logits: np.ndarray,
    targets: np.ndarray,
    labs: Sequence[str],
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    min_per_class: int = MIN_PER_CLASS,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, LabCalibration]:
    """Fit every lab on validation logits and int8 targets (1 abnormal, 0 normal, -1
    unmeasured), both (n, n_labs). ``groups`` names each window's visit (the counting and
    resampling unit); without it windows count one by one."""
    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if logits.shape != targets.shape or logits.ndim != 2 or logits.shape[1] != len(labs):
        raise ValueError(
            f"fit_lab_calibration: logits {logits.shape}, targets {targets.shape}, {len(labs)} labs"
        )
    gid, unit = _groups(logits.shape[0], groups)
    rng = np.random.default_rng(seed)
    out: dict[str, LabCalibration] = {}
    for j, lab in enumerate(labs):
        m = targets[:, j] >= 0
        out[lab] = fit_one_lab(
            logits[m, j],
            targets[m, j] == 1,
            gid[m],
            unit,
            min_per_class=min_per_class,
            n_bootstrap=n_bootstrap,
            rng=rng,
        )
    return out


def manifest_fields(fits: dict[str, LabCalibration]) -> dict[str, Any]:
    """The ModelMetadata fields of a set of lab fits (calibrated labs only carry a, b and a
    threshold)."""
    ok = {k: f for k, f in fits.items() if f.calibrated}
    return {
        "calibration": {k: [f.a, f.b] for k, f in ok.items()},
        "thresholds": {k: f.threshold for k, f in ok.items()},
        "calibrated": {k: f.calibrated for k, f in fits.items()},
        "calibration_bootstrap": {k: f.bootstrap for k, f in ok.items() if f.bootstrap},
        "uncertainty": {
            "method": "bootstrap of the calibration over validation visits",
            "level": INTERVAL_LEVEL,
            "n": max((len(f.bootstrap) for f in ok.values()), default=0),
        },
        "calibration_method": {
            k: {"reason": f.reason, f"n_pos_{f.unit}": f.n_pos, f"n_neg_{f.unit}": f.n_neg}
            for k, f in fits.items()
        },
    }
