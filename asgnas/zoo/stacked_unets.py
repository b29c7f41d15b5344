"""StackedUnets: two U-Nets in parallel whose outputs are summed (spec 2.7 / 7.1).

The forward pass reproduces, op for op, the trace graph the OTOv3 authors
published for their StackedUnets erasing example (``visual_examples/erasing``);
module attributes are named after the trace vertex ids (``conv0``, ``bn1``,
``conv3``, ...), so the ONNX node names map straight onto spec 2.7.

Left U-Net: down-sampling by MaxPool(2); right U-Net: stride-2 convs (conv42,
conv45, conv50).  Both use additive skips and nearest Resize x2 up-sampling;
the two outputs are added (add76) -> GlobalAveragePool -> Flatten -> Linear.

Segment graph of the ONNX export (spec 2.3/2.4): 22 segments - 6 removal
structures (GeZIGs) ``{35..38}``, ``{72..75}``, ``{13,14,15,19}``,
``{26..29,33}``, ``{50,51,52,56}``, ``{63..66,70}``; 7 non-removable
parameterised segments ``{0..3}``, ``{4..9}``, ``{10..12}``, ``{39..41}``,
``{42..44}``, ``{45..49}``, head ``{77..82}``; 9 parameter-free ones (adds 20,
25, 34, 57, 62, 71, 76 and resizes 24, 61).  (Spec 2.7 says "21 segments" but
its own enumeration lists these 22.)

Counts (measured with Conv2d/Linear MAC hooks):

* ``paper()`` - 32x32x3, 10 classes, width 64, every conv 3x3 with bias:
  780,746 params (0.78M), 207.0M MACs (paper Table 1: 0.80M, 184M FLOPs).
* ``tiny()`` - 8x8x1, 10 classes, width 8: 12,642 params, 0.21M MACs.

The input side length must be divisible by 8 (three 2x down-samplings, each
undone by a 2x Resize feeding an additive skip).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import ZooNet


class StackedUnets(ZooNet):
    """Two parallel U-Nets (MaxPool left, stride-2 conv right), summed, GAP, Linear."""

    TINY = dict(in_channels=1, num_classes=10, input_size=8, width=8)
    PAPER = dict(in_channels=3, num_classes=10, input_size=32, width=64)

    def __init__(self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                 width: int = 64, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__(in_channels, num_classes, input_size)
        if input_size % 8:
            raise ValueError(f"StackedUnets needs input_size divisible by 8, got {input_size}")
        if kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd so padding keeps shapes aligned")
        self.width = w = int(width)

        def conv(c_in: int = w, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(c_in, w, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)

        # Left U-Net (trace ids 0..38).
        self.conv0, self.bn1, self.conv3 = conv(in_channels), nn.BatchNorm2d(w), conv()
        self.conv5, self.conv7, self.bn9 = conv(), conv(), nn.BatchNorm2d(w)
        self.conv11, self.conv12 = conv(), conv()
        self.conv14, self.conv15 = conv(), conv()
        self.conv26, self.conv27, self.bn28 = conv(), conv(), nn.BatchNorm2d(w)
        self.conv36, self.bn38 = conv(), nn.BatchNorm2d(w)
        # Right U-Net (trace ids 39..75); conv42/45/50 are the stride-2 down-samplers.
        self.conv39, self.bn40 = conv(in_channels), nn.BatchNorm2d(w)
        self.conv42, self.conv43 = conv(stride=2), conv()
        self.conv45, self.bn47, self.conv48, self.conv49 = conv(stride=2), nn.BatchNorm2d(w), conv(), conv()
        self.conv50, self.conv51, self.conv52 = conv(stride=2), conv(), conv()
        self.conv63, self.conv64, self.bn65 = conv(), conv(), nn.BatchNorm2d(w)
        self.conv73, self.bn75 = conv(), nn.BatchNorm2d(w)
        # Head (trace ids 77..82).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear82 = nn.Linear(w, num_classes)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        # nearest Resize x2: exports as Resize fed by a constant scales side-chain,
        # exactly like the authors' trace (constant, constant -> concat -> resize).
        return F.interpolate(x, scale_factor=2.0, mode="nearest")

    def _left(self, x: torch.Tensor) -> torch.Tensor:
        x3 = self.conv3(F.relu(self.bn1(self.conv0(x))))                       # 0..3
        x9 = self.bn9(F.relu(self.conv7(F.relu(self.conv5(F.max_pool2d(x3, 2))))))  # 4..9
        x12 = self.conv12(self.conv11(F.max_pool2d(x9, 2)))                     # 10..12
        x19 = self._up(self.conv15(self.conv14(F.max_pool2d(x12, 2))))          # 13..19
        a20 = x19 + x12
        a25 = self._up(a20) + x9                                                # 24, 25
        x33 = self._up(F.relu(self.bn28(self.conv27(self.conv26(a25)))))        # 26..33
        a34 = x33 + x3
        return self.bn38(F.relu(self.conv36(F.relu(a34))))                      # 35..38

    def _right(self, x: torch.Tensor) -> torch.Tensor:
        x41 = F.relu(self.bn40(self.conv39(x)))                                 # 39..41
        x44 = F.relu(self.conv43(self.conv42(x41)))                             # 42..44
        x49 = self.conv49(self.conv48(self.bn47(F.relu(self.conv45(x44)))))     # 45..49
        x56 = self._up(self.conv52(self.conv51(self.conv50(x49))))              # 50..56
        a57 = x56 + x49
        a62 = self._up(a57) + x44                                               # 61, 62
        x70 = self._up(F.relu(self.bn65(self.conv64(self.conv63(a62)))))        # 63..70
        a71 = x70 + x41
        return self.bn75(F.relu(self.conv73(F.relu(a71))))                      # 72..75

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._left(x) + self._right(x)                                      # add76
        return self.linear82(torch.flatten(self.pool(y), 1))                    # 77..82
