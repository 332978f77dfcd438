"""What a training run writes beside its weights: the device manifest of the trained model
(signal settings of its corpus, lab units, the calibration fitted on the val split)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.training.train_config import TrainError

__all__ = ["corpus_manifest", "model_metadata"]


def corpus_manifest(corpus: str | os.PathLike) -> dict[str, Any]:
    path = Path(corpus) / "manifest.json"
    if not path.is_file():
        raise TrainError(f"{path}: not found (expected a corpus built by `anyecg-edge data build`)")
    return json.loads(path.read_text())


def model_metadata(
    corpus: str | os.PathLike,
    labs: Sequence[str],
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    *,
    arch: str,
    val_groups: Sequence[Any] | np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
):
    """The device manifest of a trained model: signal settings of the corpus, lab units,
    and the calibration fitted on the val split (:mod:`~anyecg_edge.training.calibration`:
    monotone, shrunk toward identity, thresholds and bootstrap intervals only for labs with
    enough val visits; ``val_groups`` names each val window's visit)."""
    from anyecg_edge.training.calibration import fit_lab_calibration, manifest_fields

    from anyecg_edge.labs import load_catalog
    from anyecg_edge.runtime.base import ModelMetadata

    cfg = corpus_manifest(corpus)["config"]
    catalog = load_catalog()
    known = set(catalog.keys)
    fields = manifest_fields(fit_lab_calibration(val_logits, val_targets, labs, groups=val_groups))
    method = fields.pop("calibration_method")
    return ModelMetadata(
        labs=list(labs),
        fs=float(cfg["target_fs"]),
        window_s=float(cfg["window_s"]),
        mains_hz=None if cfg.get("mains_hz") is None else float(cfg["mains_hz"]),
        units={k: catalog.by_key(k).unit for k in labs if k in known},
        arch=arch,
        extra={"calibration_method": method, **(extra or {})},
        **fields,
    )
