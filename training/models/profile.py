"""Exact parameter and multiply-accumulate (MAC) counts for the model zoo.

What ``count_macs`` counts: one MAC per weight multiply-accumulate in ``nn.Conv1d``,
``nn.Conv2d`` and ``nn.Linear`` (including those inside peft LoRA wrappers), measured on a
real forward pass, so padding, strides and grouping are exactly as executed:
conv = output elements x (in_channels / groups) x kernel elements; linear = output elements
x in_features. Not counted: bias adds, normalisation, activations, SE scaling, pooling,
padding and residual adds (all O(activations), small next to the convs). FLOPs are
conventionally reported as 2 x MACs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_macs", "count_params", "count_flops"]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """MACs per sample of ``model`` on an input of ``input_shape`` = (batch, channels, length).

    The batch dimension is divided out, so (1, 1, 5000) and (4, 1, 5000) give the same
    number. Runs one forward pass under ``torch.no_grad`` with zeros, in eval mode, and
    restores the model's training flag.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"input_shape: expected (batch, channels, length) >= 1, got {shape}")
    batch = shape[0]
    total = 0

    def conv_hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        total += output.numel() * per_output

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    param = next(model.parameters(), None)
    x = torch.zeros(
        shape,
        device=param.device if param is not None else "cpu",
        dtype=param.dtype if param is not None else torch.float32,
    )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total // batch


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """2 x ``count_macs`` (the usual FLOP convention for conv/linear layers)."""
    return 2 * count_macs(model, input_shape)
