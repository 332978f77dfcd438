"""Edge students: small 1-D CNNs for 10 s x 500 Hz single-lead windows, built for int8.

Design rules (issue 5): only Conv1d + BatchNorm + ReLU/ReLU6 in the hot path (BN folds into
the conv at export, ReLU fuses into int8 conv kernels), depthwise-separable blocks with
strided depthwise convs for downsampling, symmetric odd-kernel padding (plain conv padding,
nothing asymmetric to export), residual adds only where shapes match, no SE/sigmoid,
global average pool and a Linear head named ``dense`` (same interface as ``Net1D``:
``forward_features``, ``forward_head``, ``reset_head``, ``num_features``).

The stem downsamples by 5 at once: the training signal is band-limited to 40 Hz by the
preprocessing, so 100 Hz after the stem keeps all of it, and every later layer is 5x cheaper.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["ConvBNAct", "DSBlock", "StudentConfig", "StudentNet", "fuse_bn"]

_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class ConvBNAct(nn.Module):
    """Conv1d (no bias) -> BatchNorm1d -> ReLU/ReLU6 (or no activation)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=False,
        )
        self.bn: nn.Module = nn.BatchNorm1d(out_channels)
        self.act: nn.Module = _ACTIVATIONS[act]() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold BN into the conv (eval-mode statistics); BN becomes Identity. In place."""
        if isinstance(self.bn, nn.BatchNorm1d):
            self.conv = fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
            self.bn = nn.Identity()


class DSBlock(nn.Module):
    """Depthwise k-conv (stride s) + BN + act -> pointwise 1x1 + BN [+ act]; residual if shapes match."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, act: str
    ) -> None:
        super().__init__()
        self.dw = ConvBNAct(
            in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act
        )
        self.residual = stride == 1 and in_channels == out_channels
        # Linear bottleneck on residual blocks (MobileNetV2): activation after the add.
        self.pw = ConvBNAct(in_channels, out_channels, 1, act=None if self.residual else act)
        self.post_act: nn.Module = _ACTIVATIONS[act]() if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pw(self.dw(x))
        if self.residual:
            out = self.post_act(out + x)
        return out


@dataclass(frozen=True)
class StudentConfig:
    """A student: stem conv, then depthwise-separable blocks given as (out_channels, kernel, stride)."""

    in_channels: int = 1
    n_classes: int = 108
    stem_channels: int = 16
    stem_kernel: int = 11
    stem_stride: int = 5
    blocks: Sequence[tuple[int, int, int]] = field(
        default=((24, 9, 2), (40, 9, 2), (64, 9, 2), (96, 9, 2), (128, 9, 2), (160, 5, 2))
    )
    act: str = "relu"
    dropout: float = 0.1

    def __post_init__(self) -> None:
        blocks = tuple(tuple(int(v) for v in b) for b in self.blocks)
        object.__setattr__(self, "blocks", blocks)
        for name in ("in_channels", "n_classes", "stem_channels", "stem_kernel", "stem_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StudentConfig.{name}: expected a positive int, got {value!r}")
        for i, b in enumerate(blocks):
            if len(b) != 3 or min(b) < 1 or b[1] % 2 == 0:
                raise ValueError(
                    f"StudentConfig.blocks[{i}]: expected (out_channels, odd kernel, stride) >= 1, got {b}"
                )
        if self.stem_kernel % 2 == 0:
            raise ValueError(f"StudentConfig.stem_kernel: expected odd, got {self.stem_kernel}")
        if self.act not in _ACTIVATIONS:
            raise ValueError(
                f"StudentConfig.act: expected one of {sorted(_ACTIVATIONS)}, got {self.act!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"StudentConfig.dropout: expected in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        return d

    def build(self) -> StudentNet:
        return StudentNet(self)


class StudentNet(nn.Module):
    """Stem -> depthwise-separable blocks -> global average pool -> dropout -> ``dense``."""

    def __init__(self, config: StudentConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = dataclasses.replace(config or StudentConfig(), **kwargs)
        self.config = cfg
        self.stem = ConvBNAct(
            cfg.in_channels, cfg.stem_channels, cfg.stem_kernel, cfg.stem_stride, act=cfg.act
        )
        blocks = []
        channels = cfg.stem_channels
        for out_channels, kernel, stride in cfg.blocks:
            blocks.append(DSBlock(channels, out_channels, kernel, stride, cfg.act))
            channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.num_features = channels
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        self.dense = nn.Linear(channels, cfg.n_classes)

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features)."""
        return self.blocks(self.stem(x)).mean(-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.dense(self.drop(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_head(self, n_classes: int) -> None:
        old = self.dense.weight
        self.dense = nn.Linear(self.num_features, n_classes, device=old.device, dtype=old.dtype)
        self.config = dataclasses.replace(self.config, n_classes=n_classes)


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every ``ConvBNAct``'s BatchNorm into its conv, for export. Returns an eval-mode model.

    Uses the BN running statistics, so the result equals the unfused model *in eval mode*.
    Works on a deep copy unless ``inplace``.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for module in fused.modules():
        if isinstance(module, ConvBNAct):
            module.fuse()
    return fused
