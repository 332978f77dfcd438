"""Test oracle: ECGFounder's ``Net1D`` written as literally as possible, op for op.

Provenance. The authors' file (PKUDigitalHealth/ECGFounder ``net1d.py``, itself derived
from Shenda Hong's ``resnet1d`` repository, "a modularized deep neural network for 1-d
signal data", 2020) is not redistributed here: the copy we could read was a fork with no
licence file stored beside it. This module was written for this project from
``shared/DESIGN.md`` §3 and checked line by line against a reading of that fork
(Verma-Lab/ECGFounder-ukb ``net1d.py``). It deliberately keeps the authors' *behaviour*
and module names, and is written in a different style from
``anyecg_edge.training.models.net1d`` (padding recomputed from the input length on every
call, channel padding through a transpose, SE applied with einsum, Swish as
``x * sigmoid(x)``), so the two implementations check each other.

Behaviour reproduced (DESIGN.md §3):
- "same" convolution: out = ceil(L / stride), total pad p = max(0, (out-1)*stride + k - L),
  p // 2 zeros on the left and the rest on the right (TF-style SAME: kernel 16, stride 1
  -> 7 left, 8 right);
- max-pool shortcut: zero-pad 0 left / kernel-1 right, then MaxPool1d(kernel) (floor);
- channel growth on the shortcut: zeros, (out-in)//2 in front and the rest behind;
- block: [BN] -> Swish -> 1x1 conv -> [BN] -> Swish -> k grouped conv (stride on the first
  block of a stage) -> [BN] -> Swish -> 1x1 conv -> SE (mean over time, Linear C -> C//2,
  Swish, Linear, sigmoid) -> + shortcut; stage 0 block 0 skips its first BN/Swish;
- BN modules always exist (state_dict) but run only when ``use_bn``; Dropout(0.5) only when
  ``use_do``; head: mean over time -> ``dense``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MyConv1dPadSame(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride, groups=1):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)

    def forward(self, x):
        length = x.shape[-1]
        out_len = (length + self.stride - 1) // self.stride
        total = max(0, (out_len - 1) * self.stride + self.kernel_size - length)
        left = total // 2
        x = F.pad(x, (left, total - left), "constant", 0)
        return self.conv(x)


class MyMaxPool1dPadSame(nn.Module):
    def __init__(self, kernel_size):
        super().__init__()
        self.kernel_size = kernel_size
        self.max_pool = nn.MaxPool1d(kernel_size=kernel_size)

    def forward(self, x):
        total = max(0, self.kernel_size - 1)
        left = total // 2
        x = F.pad(x, (left, total - left), "constant", 0)
        return self.max_pool(x)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class BasicBlock(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        ratio,
        kernel_size,
        stride,
        groups,
        downsample,
        is_first_block=False,
        use_bn=True,
        use_do=True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.downsample = downsample
        self.stride = stride if downsample else 1
        self.is_first_block = is_first_block
        self.use_bn = use_bn
        self.use_do = use_do
        mid = int(out_channels * ratio)

        self.bn1 = nn.BatchNorm1d(in_channels)
        self.activation1 = Swish()
        self.do1 = nn.Dropout(p=0.5)
        self.conv1 = MyConv1dPadSame(in_channels, mid, 1, 1, 1)

        self.bn2 = nn.BatchNorm1d(mid)
        self.activation2 = Swish()
        self.do2 = nn.Dropout(p=0.5)
        self.conv2 = MyConv1dPadSame(mid, mid, kernel_size, self.stride, groups)

        self.bn3 = nn.BatchNorm1d(mid)
        self.activation3 = Swish()
        self.do3 = nn.Dropout(p=0.5)
        self.conv3 = MyConv1dPadSame(mid, out_channels, 1, 1, 1)

        r = 2
        self.se_fc1 = nn.Linear(out_channels, out_channels // r)
        self.se_fc2 = nn.Linear(out_channels // r, out_channels)
        self.se_activation = Swish()

        if downsample:
            self.max_pool = MyMaxPool1dPadSame(kernel_size=self.stride)

    def forward(self, x):
        identity = x
        out = x
        if not self.is_first_block:
            if self.use_bn:
                out = self.bn1(out)
            out = self.activation1(out)
            if self.use_do:
                out = self.do1(out)
        out = self.conv1(out)

        if self.use_bn:
            out = self.bn2(out)
        out = self.activation2(out)
        if self.use_do:
            out = self.do2(out)
        out = self.conv2(out)

        if self.use_bn:
            out = self.bn3(out)
        out = self.activation3(out)
        if self.use_do:
            out = self.do3(out)
        out = self.conv3(out)

        se = out.mean(-1)
        se = self.se_fc1(se)
        se = self.se_activation(se)
        se = self.se_fc2(se)
        se = torch.sigmoid(se)
        out = torch.einsum("abc,ab->abc", out, se)

        if self.downsample:
            identity = self.max_pool(identity)
        if self.out_channels != self.in_channels:
            identity = identity.transpose(-1, -2)
            ch1 = (self.out_channels - self.in_channels) // 2
            ch2 = self.out_channels - self.in_channels - ch1
            identity = F.pad(identity, (ch1, ch2), "constant", 0)
            identity = identity.transpose(-1, -2)
        return out + identity


class BasicStage(nn.Module):
    def __init__(
        self,
        in_channels,
        out_channels,
        ratio,
        kernel_size,
        stride,
        groups,
        i_stage,
        m_blocks,
        use_bn=True,
        use_do=True,
    ):
        super().__init__()
        self.block_list = nn.ModuleList()
        for i_block in range(m_blocks):
            first = i_block == 0
            self.block_list.append(
                BasicBlock(
                    in_channels=in_channels if first else out_channels,
                    out_channels=out_channels,
                    ratio=ratio,
                    kernel_size=kernel_size,
                    stride=stride if first else 1,
                    groups=groups,
                    downsample=first,
                    is_first_block=(i_stage == 0 and first),
                    use_bn=use_bn,
                    use_do=use_do,
                )
            )

    def forward(self, x):
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    def __init__(
        self,
        in_channels,
        base_filters,
        ratio,
        filter_list,
        m_blocks_list,
        kernel_size,
        stride,
        groups_width,
        n_classes,
        use_bn=True,
        use_do=True,
    ):
        super().__init__()
        self.use_bn = use_bn
        self.first_conv = MyConv1dPadSame(in_channels, base_filters, kernel_size, stride=2)
        self.first_bn = nn.BatchNorm1d(base_filters)
        self.first_activation = Swish()

        self.stage_list = nn.ModuleList()
        channels = base_filters
        for i_stage, (out_channels, m_blocks) in enumerate(
            zip(filter_list, m_blocks_list, strict=True)
        ):
            self.stage_list.append(
                BasicStage(
                    in_channels=channels,
                    out_channels=out_channels,
                    ratio=ratio,
                    kernel_size=kernel_size,
                    stride=stride,
                    groups=out_channels // groups_width,
                    i_stage=i_stage,
                    m_blocks=m_blocks,
                    use_bn=use_bn,
                    use_do=use_do,
                )
            )
            channels = out_channels
        self.dense = nn.Linear(channels, n_classes)

    def forward(self, x):
        out = self.first_conv(x)
        if self.use_bn:
            out = self.first_bn(out)
        out = self.first_activation(out)
        for stage in self.stage_list:
            out = stage(out)
        return self.dense(out.mean(-1))


# The released ECGFounder configuration (DESIGN.md §3); n_classes 150, in_channels 1 or 12.
RELEASED_CONFIG = dict(
    base_filters=64,
    ratio=1,
    filter_list=[64, 160, 160, 400, 400, 1024, 1024],
    m_blocks_list=[2, 2, 2, 3, 3, 4, 4],
    kernel_size=16,
    stride=2,
    groups_width=16,
    use_bn=False,
    use_do=False,
)
