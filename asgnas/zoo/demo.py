"""DemoSupNet: the small super-network of the paper's running example (spec 7.2).

The paper's Figure 1a is not available, so this is a fixture built to have
the properties the text states (module names follow the paper's numbering)::

    x -> Conv1-BN1-ReLU -> h1 ─┬─> Conv2(s2)-BN2-ReLU ───────────────┐
                               ├─> MaxPool(s2)-Conv3-BN3-ReLU ────────┼─> Concat -> Conv6-BN6-ReLU ─> Add <─┐
                               └─> AvgPool(s2) ─┬─────────────────────┘                                     │
                                                └───────────────────────────────────────────────────────────┘
    Add -> Conv7-BN7-ReLU -> h7 ─┬─> Conv8-BN8-ReLU ─> Add -> GAP -> Flatten -> Linear
                                 └────────────────────^

What each piece exercises in the erase pipeline:

* Conv1-BN1 has three consumers (Conv2, MaxPool, AvgPool): removing it would
  starve them, so its segment is not a removal structure (spec 2.3).
* Conv2-BN2 and MaxPool-Conv3-BN3 feed a Concat that feeds Conv6: erasing them
  deletes the first two input-column blocks of Conv6; the AvgPool block stays,
  so the Concat never empties (paper's construction example).
* Conv6-BN6 feeds the Add that joins Conv7's input path with the AvgPool path:
  erasing it makes the Concat and Conv2/Conv3 dead code (hierarchy).
* Conv7-BN7 is a bridge: every input->output path passes through it and it has
  a non-joint consumer, so it must never be erased.
* Conv8-BN8 feeds the last Add: a removal structure (residual-style).

Counts (Conv2d/Linear MAC hooks):

* ``paper()`` - 28x28x1 (Fashion-MNIST), 10 classes, width 91: 823,924 params
  (0.82M), 161.3M MACs (paper Table 1: 0.82M, 209M FLOPs; its widths are
  unpublished).
* ``tiny()`` - 8x8x1, 10 classes, width 8: 6,706 params, 0.11M MACs.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import ZooNet, conv_bn


class DemoSupNet(ZooNet):
    """Fixture super-network with a Concat, two Adds, a bridge and a 3-way fan-out."""

    TINY = dict(in_channels=1, num_classes=10, input_size=8, width=8)
    PAPER = dict(in_channels=1, num_classes=10, input_size=28, width=91)

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 width: int = 91) -> None:
        super().__init__(in_channels, num_classes, input_size)
        w = self.width = int(width)
        self.conv1 = conv_bn(in_channels, w, 3)
        self.conv2 = conv_bn(w, w, 3, stride=2)
        # kernel 3 / stride 2 / pad 1 everywhere gives ceil(S/2) for any S, so
        # the three Concat inputs line up for odd sizes too.
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.conv3 = conv_bn(w, w, 3)
        self.avgpool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.conv6 = conv_bn(3 * w, w, 3)
        self.conv7 = conv_bn(w, 2 * w, 3)
        self.conv8 = conv_bn(2 * w, 2 * w, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.conv1(x)
        p = self.avgpool(h1)
        c = torch.cat([self.conv2(h1), self.conv3(self.maxpool(h1)), p], dim=1)
        h7 = self.conv7(self.conv6(c) + p)
        y = h7 + self.conv8(h7)
        return self.fc(torch.flatten(self.pool(y), 1))
