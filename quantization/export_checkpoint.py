"""Export stage 1: the torch checkpoint, BN folded (checked), fp32 reference logits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from anyecg_edge.quantization.errors import ExportError

from anyecg_edge.runtime import ModelMetadata, file_sha256

CHECKPOINT_NAMES = ("model.pt", "model.pth")
# BN folding is exact algebra; this bounds float32 round-off relative to the logit scale.
_FUSE_RTOL = 1e-4


def resolve_checkpoint(path: str | Path) -> Path:
    """A .pt/.pth file, or a folder (training output) holding model.pt."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return path / name
        raise ExportError(f"{path}: folder has no {' or '.join(CHECKPOINT_NAMES)} checkpoint")
    if not path.is_file():
        raise ExportError(f"{path}: model checkpoint not found")
    if path.suffix.lower() not in {".pt", ".pth"}:
        raise ExportError(
            f"{path}: expected a torch checkpoint (.pt/.pth) or a training output folder"
        )
    return path


def load_torch(ckpt: Path) -> tuple[Any, ModelMetadata, dict[str, Any]]:
    """The module (eval mode), its metadata and the manifest's ``source`` section."""
    from anyecg_edge.training.torch_model import load_model_checkpoint_details

    module, meta, fields = load_model_checkpoint_details(ckpt)  # no second read for the format
    info: dict[str, Any] = {"checkpoint": str(ckpt), "sha256": file_sha256(ckpt), "arch": meta.arch}
    if "model_kwargs" in fields:
        info["model_kwargs"] = fields["model_kwargs"]
    info["checkpoint_format"] = fields["format"]
    return module.eval(), meta, info


def fused(module: Any, x: np.ndarray) -> tuple[Any, bool]:
    """BN folded into the convs, checked on real windows against the unfused model."""
    import torch
    from anyecg_edge.training.models import fuse_bn

    out = fuse_bn(module)
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())
    n_left = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in out.modules())
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x[:16, None, :]))
        a, b = module(t).numpy(), out(t).numpy()
    scale = max(1.0, float(np.abs(a).max()))
    if float(np.abs(a - b).max()) > _FUSE_RTOL * scale:
        raise ExportError(
            f"BN folding changed the logits by {float(np.abs(a - b).max()):.3g} "
            f"(limit {_FUSE_RTOL * scale:.3g}); refusing to export"
        )
    return out, n_left < n_bn


def torch_logits(module: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """fp32 reference logits of preprocessed windows (n, samples)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(
                module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch, None, :]))).numpy()
            )
    return np.concatenate(out).astype(np.float32)
