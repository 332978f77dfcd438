"""Batch inference for training and evaluation: logits for every item of a dataset, each
DDP rank running a contiguous slice and every rank getting the whole array back."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from anyecg_edge.training.distributed import DistInfo, gather_objects
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["autocast", "predict_logits", "slice_loader"]


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def slice_loader(
    dataset: Any,
    *,
    batch_size: int,
    info: DistInfo,
    workers: int = 0,
    persistent: bool = False,
) -> DataLoader:
    """In-order loader over this rank's contiguous slice of ``dataset`` (for inference)."""
    n = len(dataset)
    lo, hi = (n * info.rank) // info.world_size, (n * (info.rank + 1)) // info.world_size
    idx = list(range(lo, hi))
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(0),  # keep the global RNG stream untouched
    )


@torch.no_grad()
def predict_logits(
    module: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    info: DistInfo | None = None,
    workers: int = 0,
    loader: DataLoader | None = None,
) -> np.ndarray:
    """Logits (n, n_out) float32 for every item of ``dataset`` (items start with x).

    Under DDP each rank runs a contiguous slice and every rank gets the whole array back.
    ``loader`` is a ready loader from :func:`slice_loader` over the same dataset (a trainer
    keeps one with persistent workers instead of starting workers at every evaluation).
    """
    info = info or DistInfo(device=torch.device(device))
    device = torch.device(device)
    if loader is None:
        loader = slice_loader(dataset, batch_size=batch_size, info=info, workers=workers)
    was_training = module.training
    module.eval()
    parts = []
    try:
        for batch in loader:
            x = batch[0].to(device, non_blocking=True)
            with autocast(device, precision):
                out = module(x)
            parts.append(out.float().cpu())
    finally:
        module.train(was_training)
    local = torch.cat(parts) if parts else None
    if not info.distributed:
        return local.numpy() if local is not None else np.zeros((0, 0), np.float32)
    # each rank's (rows, width) as its loader produced them, so the slice bounds live only in
    # slice_loader; a rank with an empty slice has no width to report
    shapes = gather_objects(info, None if local is None else tuple(local.shape))
    n_out = next(s[1] for s in shapes if s is not None)
    local = local if local is not None else torch.zeros((0, n_out))
    sizes = [0 if s is None else int(s[0]) for s in shapes]
    padded = torch.zeros((max(sizes), n_out))
    padded[: local.shape[0]] = local
    if info.device.type == "cuda":
        padded = padded.to(info.device)
    gathered = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:s].cpu() for g, s in zip(gathered, sizes, strict=True)]).numpy()
