"""Torch checkpoints behind the device-side `Model` interface (workstation use).

Two formats load here:
- our model checkpoint (`save_model_checkpoint`): arch name + constructor kwargs +
  state_dict + the manifest metadata (lab names, thresholds, calibration, preprocessing);
- the ECGFounder authors' checkpoint (dict with `state_dict`, or a bare state_dict): its
  outputs are ECGFounder's own diagnostic classes, not labs, and are named so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from anyecg_edge.training.ecgfounder import load_ecgfounder
from anyecg_edge.training.models import create_model

from anyecg_edge.runtime.base import Model, ModelError, ModelMetadata

CHECKPOINT_FORMAT = "anyecg-edge/torch-model/1"


def save_model_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    arch: str,
    model_kwargs: dict[str, Any],
    metadata: ModelMetadata,
) -> Path:
    """Write a self-describing checkpoint that `torch.load(weights_only=True)` can read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": arch,
            "model_kwargs": dict(model_kwargs),
            "state_dict": state,
            "metadata": metadata.to_dict(),
        },
        path,
    )
    return path


def load_model_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ModelMetadata]:
    """Load either checkpoint format; the module is returned in eval mode on CPU."""
    model, metadata, _ = load_model_checkpoint_details(path)
    return model, metadata


def load_model_checkpoint_details(
    path: str | Path,
) -> tuple[torch.nn.Module, ModelMetadata, dict[str, Any]]:
    """`load_model_checkpoint` plus what the file says about itself, read in the same pass:
    ``{"format": CHECKPOINT_FORMAT, "model_kwargs": {...}}`` for our checkpoints,
    ``{"format": "ecgfounder-authors"}`` for the authors' one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-torch / unsafe files
        raise ModelError(
            f"{path}: not a loadable torch checkpoint ({type(exc).__name__})"
        ) from None
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        for key in ("arch", "model_kwargs", "state_dict", "metadata"):
            if key not in obj:
                raise ModelError(f"{path}: checkpoint field {key!r} is missing")
        metadata = ModelMetadata.from_dict(obj["metadata"], source=f"{path}:metadata")
        model = create_model(obj["arch"], **obj["model_kwargs"])
        _load_strict(model, obj["state_dict"], path)
        metadata.arch = obj["arch"]
        return (
            model.eval(),
            metadata,
            {"format": CHECKPOINT_FORMAT, "model_kwargs": obj["model_kwargs"]},
        )
    model = load_ecgfounder(path)
    n_out = model.dense.out_features
    metadata = ModelMetadata(
        labs=[f"ecgfounder_class_{i:03d}" for i in range(n_out)], arch="ecgfounder"
    )
    return model, metadata, {"format": "ecgfounder-authors"}


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{path}: state_dict does not match the architecture: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, "
                f"the architecture expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state, strict=True)


class TorchModel(Model):
    backend = "torch"
    precision = "fp32"

    def __init__(self, module: torch.nn.Module, metadata: ModelMetadata, source: str) -> None:
        super().__init__(metadata, source)
        self.module = module.eval()

    @classmethod
    def load(cls, path: str | Path) -> TorchModel:
        module, metadata = load_model_checkpoint(path)
        return cls(module, metadata, str(path))

    @torch.inference_mode()
    def predict_logits(self, windows: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(np.ascontiguousarray(windows))).float().numpy()
