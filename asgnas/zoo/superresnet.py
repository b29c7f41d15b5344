"""SuperResNet: ZenNAS-style residual super-network (spec 7.3).

Stem conv3x3-BN-ReLU, then stages of super-residual blocks, then a 1x1
conv-BN-ReLU head, GAP and Linear.  A super-residual block is

    x -> 1x1 conv-BN-ReLU (bottleneck)
      -> {3x3, 5x5, 7x7} conv-BN branches (stride on all of them), summed by Adds
      -> ReLU -> 1x1 conv-BN                      (residual branch tail)
      -> + shortcut (identity, or 1x1 conv-BN projection when shape changes)
      -> ReLU

Removal candidates in the ONNX segment graph: each K x K branch (feeds the
branch Add), each residual tail ReLU-1x1-BN (feeds the residual Add) and each
projection shortcut (feeds the residual Add).  Erasing a tail kills its whole
block as dead code and leaves the identity path, which is how H2SPG picks the
depth per stage; erasing kernels picks the kernel mix per block.

Counts (Conv2d/Linear MAC hooks; the paper gives no size for its super-net):

* ``paper()`` - 32x32x3, 10 classes, stem 64, stages (out, stride, bottleneck,
  depth) = (96,1,32,2) (192,2,48,3) (256,2,64,3) (384,2,96,2), head 512:
  3,972,618 params (3.97M), 471.1M MACs - room for the 1M and 2M
  sub-networks of Table 2.
* ``tiny()`` - 8x8x1, 10 classes, stem 8, stages (8,1,4,1) (16,2,8,2),
  head 32: 13,858 params, 0.28M MACs.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ZooNet, add_all, conv_bn

#: (out_channels, stride, bottleneck_channels, depth) per stage.
Stage = tuple[int, int, int, int]


class SuperResBlock(nn.Module):
    """Bottleneck residual block whose K x K conv is a sum of parallel kernels."""

    def __init__(self, c_in: int, c_out: int, stride: int, bottleneck: int,
                 kernels: Sequence[int] = (3, 5, 7)) -> None:
        super().__init__()
        self.reduce = conv_bn(c_in, bottleneck, 1)
        self.branches = nn.ModuleList(conv_bn(bottleneck, bottleneck, k, stride, relu=False) for k in kernels)
        # ReLU leads the tail so the branch Add stays a bare joint in the trace.
        self.tail = nn.Sequential(nn.ReLU(), *conv_bn(bottleneck, c_out, 1, relu=False))
        self.shortcut = (conv_bn(c_in, c_out, 1, stride, relu=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.reduce(x)
        r = self.tail(add_all(b(h) for b in self.branches))
        return F.relu(r + (x if self.shortcut is None else self.shortcut(x)))


class SuperResNet(ZooNet):
    """Stem, stages of :class:`SuperResBlock`, 1x1 head conv, GAP, Linear."""

    TINY = dict(in_channels=1, num_classes=10, input_size=8, stem=8,
                stages=((8, 1, 4, 1), (16, 2, 8, 2)), head=32)
    PAPER = dict(in_channels=3, num_classes=10, input_size=32, stem=64,
                 stages=((96, 1, 32, 2), (192, 2, 48, 3), (256, 2, 64, 3), (384, 2, 96, 2)), head=512)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 stem: int = 64, stages: Sequence[Stage] = PAPER["stages"], head: int = 512,
                 kernels: Sequence[int] = (3, 5, 7), width: float = 1.0) -> None:
        super().__init__(in_channels, num_classes, input_size)
        if any(k % 2 == 0 for k in kernels):
            raise ValueError("kernels must be odd so all branches keep the same shape")

        def scale(c: int) -> int:
            return max(1, int(round(c * width)))

        self.stages_cfg = tuple(tuple(s) for s in stages)
        self.stem = conv_bn(in_channels, scale(stem), 3)
        blocks: list[nn.Module] = []
        c = scale(stem)
        for c_out, stride, bottleneck, depth in self.stages_cfg:
            for i in range(depth):
                blocks.append(SuperResBlock(c, scale(c_out), stride if i == 0 else 1, scale(bottleneck), kernels))
                c = scale(c_out)
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(c, scale(head), 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(scale(head), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
