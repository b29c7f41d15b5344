"""DARTS search network without architecture weights (spec 7.4).

Each cell takes the outputs of the two previous cells, preprocesses them
(ReLU-1x1conv-BN, or FactorizedReduce when the previous cell halved the
resolution), computes 4 intermediate nodes - node i is the sum over all
earlier nodes j of MixedOp_ij(h_j) - and concatenates the 4 nodes on the
channel axis.  Reduction cells sit at 1/3 and 2/3 of the depth, double the
channel count and apply stride 2 on the edges leaving the two input nodes.

OTOv3 drops DARTS' softmax-weighted mixture: a MixedOp is the un-weighted sum
of the candidate ops (H2SPG does the selecting by zeroing whole ops), and the
'none' op is omitted because it contributes an all-zero tensor.  Candidates:
sep_conv_3x3/5x5, dil_conv_3x3/5x5 (GeZIGs: they have weights and feed the
node's Add), max_pool_3x3 and avg_pool_3x3 each followed by BN(affine=False),
and skip_connect (identity, or FactorizedReduce on stride-2 edges - that one
has weights, so it is a removal candidate too).  BN inside the ops is affine
by default (``affine=True``), so every candidate owns its BN parameters.

Export notes: FactorizedReduce's pixel-shifted branch is ``x[:, :, 1:, 1:]``
(two ONNX ``Slice`` ops with constant starts/ends side-chains) and
BN(affine=False) exports with constant scale/bias inputs.  The legacy
exporter merges identical pure ops on the same tensor (the ReLU every weighted
op starts with, equal pools, the Slices), so in ONNX these appear once with
many consumers and each weighted op's segment starts at its first conv.

Counts (Conv2d/Linear MAC hooks):

* ``paper()`` - C=24, 8 cells, 32x32x3, 10 classes: 4,083,058 params (4.08M),
  600.0M MACs (paper Table 1, DARTS-8 on STL-10: 4.05M, 614M).
* ``tiny()`` - C=4, 3 cells (normal, reduce, reduce), 8x8x1, 10 classes:
  77,838 params, 0.95M MACs.

The input side length must be divisible by 4 (two reductions; FactorizedReduce
needs an even input).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ._common import ZooNet, add_all

#: candidate ops on each edge, in the order they are summed.
PRIMITIVES: tuple[str, ...] = (
    "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)


class ReLUConvBN(nn.Sequential):
    """ReLU - Conv(k) - BN; the 1x1 form preprocesses cell inputs."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: int, affine: bool = True) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU - depthwise dilated conv - pointwise conv - BN."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, dilation: int, affine: bool = True) -> None:
        pad = dilation * (k - 1) // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, k, stride, pad, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked (ReLU - depthwise - pointwise - BN) units; only the first strides."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, affine: bool = True) -> None:
        super().__init__(DilConv(c_in, c_in, k, stride, 1, affine), DilConv(c_in, c_out, k, 1, 1, affine))


class FactorizedReduce(nn.Module):
    """Halve the resolution with two stride-2 1x1 convs on pixel grids offset by one, concatenated."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError("FactorizedReduce needs an even c_out")
        self.relu = nn.ReLU()
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # The offset grid sees the odd pixels the first conv skips.
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    """Build one candidate op with ``c`` channels in and out."""
    if name == "max_pool_3x3":
        return nn.Sequential(nn.MaxPool2d(3, stride, 1), nn.BatchNorm2d(c, affine=False))
    if name == "avg_pool_3x3":
        return nn.Sequential(nn.AvgPool2d(3, stride, 1, count_include_pad=False),
                             nn.BatchNorm2d(c, affine=False))
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, affine)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, affine)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 2, affine)
    raise ValueError(f"unknown DARTS primitive {name!r}")


class MixedOp(nn.Module):
    """Un-weighted sum of all candidate ops on one edge."""

    def __init__(self, c: int, stride: int, primitives: Sequence[str] = PRIMITIVES, affine: bool = True) -> None:
        super().__init__()
        self.ops = nn.ModuleList(make_op(p, c, stride, affine) for p in primitives)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # Return the op outputs, not their sum: the node adds all of them in one
        # flat chain, so no per-edge Add needs a separate segment.
        return [op(x) for op in self.ops]


class Cell(nn.Module):
    """DARTS search cell: 2 inputs, ``steps`` intermediate nodes, channel Concat output."""

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 steps: int = 4, primitives: Sequence[str] = PRIMITIVES, affine: bool = True) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps = steps
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(c, stride, primitives, affine))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for _ in range(self.steps):
            terms: list[torch.Tensor] = []
            for h in states:
                terms.extend(self.edges[k](h))
                k += 1
            states.append(add_all(terms))
        return torch.cat(states[2:], dim=1)


class DartsSuperNet(ZooNet):
    """DARTS search network (no alphas): stem, ``layers`` cells, GAP, Linear."""

    TINY = dict(in_channels=1, num_classes=10, input_size=8, C=4, layers=3)
    PAPER = dict(in_channels=3, num_classes=10, input_size=32, C=24, layers=8)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 C: int = 16, layers: int = 8, steps: int = 4, stem_multiplier: int = 3,
                 primitives: Sequence[str] = PRIMITIVES, affine: bool = True) -> None:
        super().__init__(in_channels, num_classes, input_size)
        if layers < 3:
            raise ValueError("DartsSuperNet needs at least 3 cells (two are reductions)")
        if input_size % 4:
            raise ValueError(f"DartsSuperNet needs input_size divisible by 4, got {input_size}")
        if C % 2:
            raise ValueError("C must be even (FactorizedReduce splits channels in two)")
        self.C, self.layers, self.steps = int(C), int(layers), int(steps)
        self.reduction_at = (layers // 3, 2 * layers // 3)
        c_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_pp, c_p, c = c_stem, c_stem, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in self.reduction_at
            if reduction:
                c *= 2
            self.cells.append(Cell(c_pp, c_p, c, reduction, reduction_prev, steps, primitives, affine))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(torch.flatten(self.pool(s1), 1))
