"""RegNetSuper: RegNet-X/Y style super-network (spec 7.5, our reading).

Stem conv3x3-BN-ReLU (stride 1, CIFAR-style), then stages of X blocks, then
GAP and Linear.  An X block is

    x -> 1x1 conv-BN-ReLU -> 3x3 group conv (stride) -BN-ReLU
      -> [SE: GAP -> 1x1 conv -> ReLU -> 1x1 conv -> Sigmoid -> Mul]  (Y variant)
      -> 1x1 conv-BN                             (residual branch tail)
      -> + shortcut (identity, or 1x1 conv-BN projection when shape changes)
      -> ReLU

Removal candidates: the residual tail (feeds the block Add) and the projection
shortcut.  Erasing a tail leaves the identity (or projection) path and makes
the rest of the branch, SE included, dead code - H2SPG thus picks a depth per
stage.  The SE Mul is not an erase-joint, so nothing in front of it is a
candidate on its own.

Counts (Conv2d/Linear MAC hooks; the paper gives no RegNet configuration):

* ``paper()`` - RegNetY-400MF-like widths (48,104,208,440), depths (1,3,6,6),
  group width 8, SE 0.25, stem 32, strides (1,2,2,2), 32x32x3, 10 classes:
  3,907,554 params (3.91M), 124.1M MACs.
* ``tiny()`` - 8x8x1, widths (16,32), depths (2,4), group width 8, SE 0.25,
  stem 16: 24,510 params, 0.53M MACs; 7 removal
  structures (6 residual tails, 1 projection). Sized like the other tiny
  nets (7k-85k params): the earlier 3.4k-param, 4-structure version had no
  room to lose half its blocks.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ZooNet, conv_bn


class SqueezeExcite(nn.Module):
    """Channel gate: x * sigmoid(W2 relu(W1 gap(x)))."""

    def __init__(self, c: int, c_se: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c_se, 1)
        self.fc2 = nn.Conv2d(c_se, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class XBlock(nn.Module):
    """RegNet bottleneck block with group conv and optional SE."""

    def __init__(self, c_in: int, c_out: int, stride: int, bottleneck_ratio: float,
                 group_width: int, se_ratio: Optional[float]) -> None:
        super().__init__()
        w_b = int(round(c_out * bottleneck_ratio))
        if w_b % group_width:
            raise ValueError(f"bottleneck width {w_b} is not a multiple of group_width {group_width}")
        self.a = conv_bn(c_in, w_b, 1)
        self.b = conv_bn(w_b, w_b, 3, stride, groups=w_b // group_width)
        # RegNetY sizes the SE bottleneck from the block *input* width.
        self.se = SqueezeExcite(w_b, max(1, int(round(se_ratio * c_in)))) if se_ratio else None
        self.c = conv_bn(w_b, c_out, 1, relu=False)
        self.shortcut = (conv_bn(c_in, c_out, 1, stride, relu=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.b(self.a(x))
        if self.se is not None:
            h = self.se(h)
        r = self.c(h)
        return F.relu(r + (x if self.shortcut is None else self.shortcut(x)))


class RegNetSuper(ZooNet):
    """Stem, stages of :class:`XBlock`, GAP, Linear."""

    TINY = dict(in_channels=1, num_classes=10, input_size=8, stem_width=16,
                widths=(16, 32), depths=(2, 4), group_width=8, se_ratio=0.25)
    PAPER = dict(in_channels=3, num_classes=10, input_size=32, stem_width=32,
                 widths=(48, 104, 208, 440), depths=(1, 3, 6, 6), group_width=8, se_ratio=0.25)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 widths: Sequence[int] = (48, 104, 208, 440), depths: Sequence[int] = (1, 3, 6, 6),
                 group_width: int = 8, bottleneck_ratio: float = 1.0, se_ratio: Optional[float] = 0.25,
                 stem_width: int = 32, strides: Optional[Sequence[int]] = None, width: float = 1.0) -> None:
        super().__init__(in_channels, num_classes, input_size)
        if len(widths) != len(depths):
            raise ValueError("widths and depths must have the same length")
        strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(widths) - 1)
        if len(strides) != len(widths):
            raise ValueError("strides must have one entry per stage")
        unit = max(1, int(round(group_width / bottleneck_ratio)))

        def scale(c: int) -> int:
            # Keep stage widths multiples of the group width after scaling.
            return max(unit, int(round(c * width / unit)) * unit)

        self.widths = tuple(scale(w) for w in widths)
        self.depths = tuple(int(d) for d in depths)
        self.stem = conv_bn(in_channels, stem_width, 3)
        blocks: list[nn.Module] = []
        c = stem_width
        for w, d, s in zip(self.widths, self.depths, strides):
            for i in range(d):
                blocks.append(XBlock(c, w, s if i == 0 else 1, bottleneck_ratio, group_width, se_ratio))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
