"""ECGFounder's ``Net1D`` (PKUDigitalHealth/ECGFounder), reimplemented cleanly.

The module tree, state_dict key names and shapes are exactly the authors' (509 keys for the
released configuration), so their checkpoints load with ``strict=True``; the arithmetic is
the same (checked against ``tests/reference/net1d_oracle.py`` to <1e-4 relative error).

What differs from the authors' code is only *how* the ops are issued, for speed and export:
- the asymmetric TF-style "same" padding (p // 2 left, rest right) is mostly folded into
  the convolution's own zero padding: stride-1 convs pad ``ceil((k-1)/2)`` on both sides
  and drop the surplus leading output (a view, no copy); stride-s convs pad the constant
  left amount and add a single right-side ``F.pad`` only when the length needs it. No
  per-call padding copy for 1x1 convs at all.
- the max-pool shortcut skips its zero pad when the length divides evenly (the pad would
  be dropped by the floor anyway);
- channel growth on the shortcut pads the channel dim directly (no transposes); SE is a
  broadcast multiply; Swish is ``F.silu``.
Padding amounts are Python ints derived from the input length (static under
``torch.compile`` and ONNX/LiteRT export with a fixed window), never from data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Net1D", "Net1DConfig", "SameConv1d", "same_padding"]


def same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """The authors' "same" padding (left, right) for a 1-D input of ``length`` samples."""
    out_len = (length + stride - 1) // stride
    total = max(0, (out_len - 1) * stride + kernel_size - length)
    return total // 2, total - total // 2


def _constant_left_pad(kernel_size: int, stride: int) -> int | None:
    """Left padding if it is the same for every input length (it depends on length % stride)."""
    lefts = {same_padding(stride * 8 + r, kernel_size, stride)[0] for r in range(stride)}
    return lefts.pop() if len(lefts) == 1 else None


class SameConv1d(nn.Module):
    """``nn.Conv1d`` with the authors' asymmetric "same" padding; the conv lives in ``.conv``.

    Output length is ``ceil(L / stride)``. Key names match the authors' ``MyConv1dPadSame``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        if stride == 1:
            # left = (k-1)//2, right = k-1-left >= left: pad `right` on both sides in the conv
            # and drop the first (right-left) outputs, which belong to the extra left zeros.
            left = (kernel_size - 1) // 2
            builtin = kernel_size - 1 - left
            self._front_trim = builtin - left
            self._fixed_left: int | None = builtin
        else:
            self._front_trim = 0
            self._fixed_left = _constant_left_pad(kernel_size, stride)
            builtin = self._fixed_left or 0
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=builtin, groups=groups
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            y = self.conv(x)
            return y[..., self._front_trim :] if self._front_trim else y
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        builtin = self._fixed_left or 0
        extra_left, extra_right = left - builtin, right - builtin
        if extra_left or extra_right:
            # right >= left always, and builtin == left whenever it is fixed, so extra >= 0.
            x = F.pad(x, (extra_left, extra_right))
        return self.conv(x)


def _same_max_pool(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """The authors' shortcut pooling: zero-pad ((k-1)//2, rest) then MaxPool1d(k), floor mode."""
    total = kernel_size - 1
    left = total // 2
    if left == 0 and x.shape[-1] % kernel_size == 0:
        return F.max_pool1d(x, kernel_size)  # the right pad would fall off the floor anyway
    # Zeros, not -inf: after a residual sum values can be negative, and the authors pad zeros.
    return F.max_pool1d(F.pad(x, (left, total - left)), kernel_size)


@dataclass(frozen=True)
class Net1DConfig:
    """Net1D hyper-parameters, named as in the authors' constructor."""

    in_channels: int = 1
    base_filters: int = 64
    ratio: float = 1
    filter_list: Sequence[int] = field(default=(64, 160, 160, 400, 400, 1024, 1024))
    m_blocks_list: Sequence[int] = field(default=(2, 2, 2, 3, 3, 4, 4))
    kernel_size: int = 16
    stride: int = 2
    groups_width: int = 16
    use_bn: bool = False
    use_do: bool = False
    n_classes: int = 150

    def __post_init__(self) -> None:
        object.__setattr__(self, "filter_list", tuple(int(f) for f in self.filter_list))
        object.__setattr__(self, "m_blocks_list", tuple(int(m) for m in self.m_blocks_list))
        for name in ("in_channels", "base_filters", "kernel_size", "stride", "groups_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Net1DConfig.{name}: expected a positive int, got {value!r}")
        if not isinstance(self.n_classes, int) or self.n_classes < 1:
            raise ValueError(
                f"Net1DConfig.n_classes: expected a positive int, got {self.n_classes!r}"
            )
        if not self.ratio > 0:
            raise ValueError(f"Net1DConfig.ratio: expected > 0, got {self.ratio!r}")
        if not self.filter_list or len(self.filter_list) != len(self.m_blocks_list):
            raise ValueError(
                "Net1DConfig.filter_list / m_blocks_list: expected equal non-empty lengths, got "
                f"{len(self.filter_list)} and {len(self.m_blocks_list)}"
            )
        for i, (f, m) in enumerate(zip(self.filter_list, self.m_blocks_list, strict=True)):
            mid = int(f * self.ratio)
            groups = f // self.groups_width
            if f < 1 or m < 1 or groups < 1 or mid % groups:
                raise ValueError(
                    f"Net1DConfig stage {i}: filters {f} (mid {mid}) must be >= groups_width "
                    f"{self.groups_width} and divisible into {groups} groups; blocks {m} must be >= 1"
                )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["filter_list"] = list(self.filter_list)
        d["m_blocks_list"] = list(self.m_blocks_list)
        return d

    def build(self) -> Net1D:
        return Net1D(self)


class BasicBlock(nn.Module):
    """[BN] Swish 1x1 -> [BN] Swish k-grouped (stride) -> [BN] Swish 1x1 -> SE -> + shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ratio: float,
        kernel_size: int,
        stride: int,
        groups: int,
        downsample: bool,
        is_first_block: bool,
        use_bn: bool,
        use_do: bool,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.stride = stride if downsample else 1
        self.is_first_block = is_first_block
        self.use_bn = use_bn
        mid = int(out_channels * ratio)

        def dropout() -> nn.Module:
            return nn.Dropout(p=0.5) if use_do else nn.Identity()

        # BN modules exist even when unused: their params/buffers are in the authors' keys.
        self.bn1 = nn.BatchNorm1d(in_channels)
        self.activation1 = nn.SiLU()
        self.do1 = dropout()
        self.conv1 = SameConv1d(in_channels, mid, 1)
        self.bn2 = nn.BatchNorm1d(mid)
        self.activation2 = nn.SiLU()
        self.do2 = dropout()
        self.conv2 = SameConv1d(mid, mid, kernel_size, self.stride, groups)
        self.bn3 = nn.BatchNorm1d(mid)
        self.activation3 = nn.SiLU()
        self.do3 = dropout()
        self.conv3 = SameConv1d(mid, out_channels, 1)
        self.se_fc1 = nn.Linear(out_channels, out_channels // 2)
        self.se_activation = nn.SiLU()
        self.se_fc2 = nn.Linear(out_channels // 2, out_channels)
        grow = out_channels - in_channels
        self._channel_pad = (0, 0, grow // 2, grow - grow // 2) if grow else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if not self.is_first_block:
            if self.use_bn:
                out = self.bn1(out)
            out = self.do1(self.activation1(out))
        out = self.conv1(out)
        if self.use_bn:
            out = self.bn2(out)
        out = self.conv2(self.do2(self.activation2(out)))
        if self.use_bn:
            out = self.bn3(out)
        out = self.conv3(self.do3(self.activation3(out)))

        se = self.se_fc2(self.se_activation(self.se_fc1(out.mean(-1))))
        out = out * torch.sigmoid(se).unsqueeze(-1)

        identity = _same_max_pool(x, self.stride) if self.downsample else x
        if self._channel_pad is not None:
            identity = F.pad(identity, self._channel_pad)
        return out + identity


class BasicStage(nn.Module):
    def __init__(
        self, cfg: Net1DConfig, i_stage: int, in_channels: int, out_channels: int, m_blocks: int
    ) -> None:
        super().__init__()
        self.block_list = nn.ModuleList(
            BasicBlock(
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                ratio=cfg.ratio,
                kernel_size=cfg.kernel_size,
                stride=cfg.stride if i == 0 else 1,
                groups=out_channels // cfg.groups_width,
                downsample=i == 0,
                is_first_block=i_stage == 0 and i == 0,
                use_bn=cfg.use_bn,
                use_do=cfg.use_do,
            )
            for i in range(m_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    """ECGFounder backbone + linear head. Input (B, in_channels, L); 10 s x 500 Hz: L = 5000."""

    def __init__(self, config: Net1DConfig | None = None, **kwargs) -> None:
        super().__init__()
        cfg = dataclasses.replace(config or Net1DConfig(), **kwargs)
        self.config = cfg
        self.first_conv = SameConv1d(cfg.in_channels, cfg.base_filters, cfg.kernel_size, stride=2)
        self.first_bn = nn.BatchNorm1d(cfg.base_filters)
        self.first_activation = nn.SiLU()
        self.stage_list = nn.ModuleList()
        channels = cfg.base_filters
        for i, (out_channels, m_blocks) in enumerate(
            zip(cfg.filter_list, cfg.m_blocks_list, strict=True)
        ):
            self.stage_list.append(BasicStage(cfg, i, channels, out_channels, m_blocks))
            channels = out_channels
        self.num_features = channels
        self.dense = nn.Linear(channels, cfg.n_classes)

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def n_classes(self) -> int:
        return self.config.n_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone output pooled over time: (B, num_features)."""
        out = self.first_conv(x)
        if self.config.use_bn:
            out = self.first_bn(out)
        out = self.first_activation(out)
        for stage in self.stage_list:
            out = stage(out)
        return out.mean(-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.dense(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.forward_features(x))

    def reset_head(self, n_classes: int) -> None:
        """Replace ``dense`` by a freshly initialised Linear(num_features, n_classes)."""
        old = self.dense.weight
        self.dense = nn.Linear(self.num_features, n_classes, device=old.device, dtype=old.dtype)
        self.config = dataclasses.replace(self.config, n_classes=n_classes)
