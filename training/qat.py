"""Quantization-aware fine-tuning (QAT) of an edge student, matched to what the exporters do.

The int8 exports (ONNX Runtime QDQ, LiteRT full-int8) fold BatchNorm into the convs, then
quantize every Conv1d/Linear weight per output channel, symmetric int8 (scale = max|w| /
127), and every activation per tensor, affine int8, from calibration ranges. QAT simulates
exactly that during a short fine-tune so the weights settle where rounding costs least:

* :func:`prepare_qat` folds BN into the convs (as the export does) and adds fake
  quantization: a weight parametrization (per-channel symmetric, the straight-through
  estimator for the gradient) and a forward pre-hook on every conv/linear input
  (per-tensor affine int8 over a moving average of the batch min/max, always holding 0);
* :func:`finish_qat` removes both, keeping the weights *on the int8 grid* (so the export's
  own per-channel rounding of them is lossless), and unfolds each conv back into the
  ``ConvBNAct`` layout (BN as the identity plus the folded bias): the checkpoint keeps the
  registry architecture's keys and loads, exports and runs like any student.

Only ``StudentNet``-style models (``ConvBNAct`` blocks) are supported; others are refused.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["ActFakeQuant", "WeightFakeQuant", "finish_qat", "is_qat_prepared", "prepare_qat"]

_HOOK_ATTR = "_qat_input_hook"


class WeightFakeQuant(nn.Module):
    """Per-output-channel symmetric int8 fake quantization of a weight (axis 0)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, w.dim()))
        scale = w.detach().abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / 127.0
        q = torch.clamp(torch.round(w / scale), -127, 127) * scale
        return w + (q - w).detach()  # straight-through estimator


class ActFakeQuant(nn.Module):
    """Per-tensor affine int8 fake quantization with a moving-average min/max range."""

    def __init__(self, momentum: float = 0.05) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("seen", torch.tensor(False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            lo, hi = x.detach().amin(), x.detach().amax()
            if not bool(self.seen):
                self.lo.copy_(lo)
                self.hi.copy_(hi)
                self.seen.fill_(True)
            else:
                self.lo.lerp_(lo, self.momentum)
                self.hi.lerp_(hi, self.momentum)
        elif not bool(self.seen):
            return x  # no range observed yet: nothing to simulate
        lo = torch.clamp(self.lo, max=0.0)
        hi = torch.clamp(self.hi, min=0.0)
        scale = torch.clamp((hi - lo) / 255.0, min=1e-8)
        zero = torch.round(-128.0 - lo / scale)
        q = (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale
        return x + (q - x).detach()


def _conv_bn_blocks(model: nn.Module) -> list[nn.Module]:
    from anyecg_edge.training.models.student import ConvBNAct

    blocks = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    if not blocks:
        raise ValueError(
            f"QAT: {type(model).__name__} has no ConvBNAct blocks (only edge students are supported)"
        )
    return blocks


def _quantized_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))]


def is_qat_prepared(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m, "weight") for m in _quantized_layers(model))


def prepare_qat(model: nn.Module) -> nn.Module:
    """Fold BN (running statistics) into the convs and add weight and input fake
    quantization to every Conv1d/Linear. In place; returns ``model`` (in train mode)."""
    if is_qat_prepared(model):
        raise ValueError("QAT: the model is already prepared")
    for block in _conv_bn_blocks(model):
        block.fuse()  # eval-mode fold, like the export; BN becomes Identity
    for layer in _quantized_layers(model):
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant())
        fq = ActFakeQuant()
        layer.add_module("input_fake_quant", fq)
        handle = layer.register_forward_pre_hook(lambda _m, args, fq=fq: (fq(args[0]),))
        setattr(layer, _HOOK_ATTR, handle)
    model.train()
    return model


def finish_qat(model: nn.Module) -> nn.Module:
    """Remove the fake quantization (weights stay on their int8 grid) and unfold every
    fused conv back into conv (no bias) + BatchNorm (identity statistics, the folded bias
    as its shift). In place; returns ``model`` in eval mode."""
    from anyecg_edge.training.models.student import ConvBNAct

    if not is_qat_prepared(model):
        raise ValueError("QAT: the model is not prepared")
    for layer in _quantized_layers(model):
        getattr(layer, _HOOK_ATTR).remove()
        delattr(layer, _HOOK_ATTR)
        del layer.input_fake_quant
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    for block in (m for m in model.modules() if isinstance(m, ConvBNAct)):
        conv = block.conv
        if conv.bias is None or not isinstance(block.bn, nn.Identity):
            continue
        bn = nn.BatchNorm1d(conv.out_channels).to(conv.weight.device)
        with torch.no_grad():
            # weight / sqrt(var + eps) == 1 and mean 0: BN(x) = x + bias, in eval mode.
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(float(torch.sqrt(torch.tensor(1.0 + bn.eps, dtype=torch.float64))))
            bn.bias.copy_(conv.bias)
        new_conv = nn.Conv1d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            groups=conv.groups,
            bias=False,
        ).to(conv.weight.device)
        with torch.no_grad():
            new_conv.weight.copy_(conv.weight)
        block.conv, block.bn = new_conv, bn
    return model.eval()
