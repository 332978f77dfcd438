"""A stand-in student for export tests and benchmarks, until issue 5 delivers trained ones.

A randomly initialised student is a poor subject for quantization parity: its pooled
features hardly depend on the input (per-lab logit spread ~0.1), so int8 noise dominates
what little signal there is (measured: AUROC delta 0.07 vs its own calls). A trained
model's logits vary with the input. This trains a registry student for a few seconds on
real preprocessed windows to predict per-window signal descriptors (log band powers
0-40 Hz, amplitude and shape statistics), projected at random onto one target per lab and
split at the median. The model is real and trained, with the activation statistics of a
trained net; its outputs mean nothing clinically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anyecg_edge.runtime import ModelMetadata


def descriptors(x: np.ndarray, fs: float = 500.0) -> np.ndarray:
    """Standardised per-window descriptors (n, 22) of preprocessed windows (n, samples)."""
    x = np.asarray(x, dtype=np.float64)
    power = np.abs(np.fft.rfft(x, axis=1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1.0 / fs)
    edges = np.linspace(0.0, 40.0, 17)
    bands = [
        np.log(power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-6)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]
    stats = [
        np.abs(x).mean(axis=1),
        (x**3).mean(axis=1),
        (x**4).mean(axis=1),
        np.percentile(x, 99, axis=1),
        np.percentile(x, 1, axis=1),
        (np.diff(np.sign(x), axis=1) != 0).mean(axis=1),
    ]
    d = np.stack(bands + stats, axis=1)
    return (d - d.mean(axis=0)) / (d.std(axis=0) + 1e-6)


def descriptor_targets(x: np.ndarray, n_labs: int, *, seed: int = 0) -> np.ndarray:
    """(n, n_labs) 0/1 targets: random projections of the descriptors, split at the median."""
    d = descriptors(x)
    z = d @ np.random.default_rng(seed).standard_normal((d.shape[1], n_labs))
    return (z > np.median(z, axis=0)).astype(np.float32)


def train_standin(
    x: np.ndarray,
    n_labs: int,
    *,
    arch: str = "student-s",
    steps: int = 40,
    batch: int = 16,
    lr: float = 1e-2,
    seed: int = 0,
):
    """A registry model trained ``steps`` Adam steps on descriptor targets; eval mode."""
    import torch
    from anyecg_edge.training.models import create_model

    if len(x) < batch:
        raise ValueError(f"train_standin: need at least {batch} windows, got {len(x)}")
    y = torch.from_numpy(descriptor_targets(x, n_labs, seed=seed))
    xt = torch.from_numpy(np.ascontiguousarray(x[:, None, :], dtype=np.float32))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = create_model(arch, n_classes=n_labs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # measured 2x faster than 2 threads for these small batches
    try:
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(len(x), batch, replace=False))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def save_standin(
    path: str | Path,
    x: np.ndarray,
    *,
    arch: str = "student-s",
    labs: list[str] | None = None,
    steps: int = 40,
    seed: int = 0,
) -> Path:
    """Train a stand-in on windows ``x`` and save it as our torch checkpoint."""
    from anyecg_edge.training.torch_model import save_model_checkpoint

    from anyecg_edge.labs import load_catalog

    labs = list(labs) if labs is not None else list(load_catalog().keys)
    model = train_standin(x, len(labs), arch=arch, steps=steps, seed=seed)
    return save_model_checkpoint(
        path,
        model,
        arch=arch,
        model_kwargs={"n_classes": len(labs)},
        metadata=ModelMetadata(
            labs=labs,
            # The descriptor targets are median splits: 0.5 is the natural call threshold.
            # Explicit, because a lab without a threshold makes no abnormal call.
            thresholds={lab: 0.5 for lab in labs},
            extra={"standin": f"{arch} trained {steps} steps on descriptor targets (seed {seed})"},
        ),
    )
