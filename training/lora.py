"""LoRA on Net1D/ECGFounder with peft: the adapter wraps an unchanged base model.

Targets by default the 1x1 convolutions (`conv1`, `conv3` of every block) and the
squeeze-excitation linears; the new lab head (`dense`) is trained in full
(`modules_to_save`). The k16 grouped convolutions are not targeted: peft cannot merge
LoRA into grouped convs.

`fused=True` (the default when dropout is 0) computes each adapted layer as one conv with
the effective weight W + s*B@A instead of base(x) + B(A(x)). That is the same function
(same parameters, same gradients) at a fraction of the memory traffic: the low-rank path
costs two extra activation-sized passes per layer, the fused weight costs a tiny
(C_out x C_in) matmul. The adapter still saves/loads/merges through peft unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import layer as lora_layer

# 1x1 convs of every block and the SE linears (regex matched against full module names).
DEFAULT_TARGET_MODULES = r".*\.(conv1|conv3)\.conv|.*\.se_fc[12]"
HEAD_MODULES = ["dense"]


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | list[str] = DEFAULT_TARGET_MODULES
    fused: bool = True

    def peft_config(self) -> LoraConfig:
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            modules_to_save=list(HEAD_MODULES),
            bias="none",
        )


class FusedLoraConv1d(lora_layer.Conv1d):
    """peft's LoRA Conv1d computed as one conv with W + delta (see module docstring)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not _fusable(self):
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        weight = base.weight + _delta(self).to(base.weight.dtype)
        return F.conv1d(x, weight, base.bias, base.stride, base.padding, base.dilation, base.groups)


class FusedLoraLinear(lora_layer.Linear):
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if not _fusable(self):
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        return F.linear(x, base.weight + _delta(self).to(base.weight.dtype), base.bias)


def _fusable(layer: lora_layer.LoraLayer) -> bool:
    active = layer.active_adapters
    return (
        not layer.disable_adapters
        and not layer.merged
        and len(active) == 1
        and active[0] in layer.lora_A
        and isinstance(layer.lora_dropout[active[0]], torch.nn.Identity)
        and active[0] not in layer.lora_variant
    )


def _delta(layer: lora_layer.LoraLayer) -> torch.Tensor:
    name = layer.active_adapters[0]
    a = layer.lora_A[name].weight
    b = layer.lora_B[name].weight
    scaling = layer.scaling[name]
    if a.dim() == 3:  # Conv1d 1x1 (and any kernel: A is (r, in, k), B is (out, r, 1))
        if a.shape[-1] != 1:
            return layer.get_delta_weight(name)
        return (b[..., 0] @ a[..., 0]).unsqueeze(-1) * scaling
    return (b @ a) * scaling


def apply_lora(model: torch.nn.Module, settings: LoraSettings | None = None) -> PeftModel:
    """Wrap `model` (left unchanged apart from peft's injection) with LoRA adapters."""
    settings = settings or LoraSettings()
    peft_model = get_peft_model(model, settings.peft_config())
    if settings.fused and settings.dropout == 0:
        for module in peft_model.modules():
            if type(module) is lora_layer.Conv1d:
                module.__class__ = FusedLoraConv1d
            elif type(module) is lora_layer.Linear:
                module.__class__ = FusedLoraLinear
    return peft_model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
