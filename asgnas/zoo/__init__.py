"""The paper's super-networks as plain ``torch.nn.Module``s (pure torch).

Each class takes ``in_channels``, ``num_classes``, ``input_size`` plus its own
width/size knobs, and offers ``tiny()`` (CPU-trainable, 8x8x1 digits-like
input) and ``paper()`` (the paper-size configuration) factories whose keyword
arguments override the defaults.  All export with the legacy TorchScript ONNX
exporter (opset 17) using only Conv, BatchNormalization, Relu, pools, nearest
Resize, Add, Concat, GlobalAveragePool/Flatten, Gemm (plus Sigmoid/Mul for
RegNet's SE and Slice in DARTS' FactorizedReduce).

>>> from asgnas.zoo import build
>>> net = build("stackedunets", "tiny")
>>> net(net.example_input(2)).shape
torch.Size([2, 10])
"""
from __future__ import annotations

from typing import Any

from ._common import ZooNet
from .darts import DartsSuperNet
from .demo import DemoSupNet
from .regnet import RegNetSuper
from .stacked_unets import StackedUnets
from .superresnet import SuperResNet

SUPERNETS: dict[str, type[ZooNet]] = {
    "superresnet": SuperResNet,
    "stackedunets": StackedUnets,
    "regnet": RegNetSuper,
    "darts": DartsSuperNet,
    "demosupnet": DemoSupNet,
}

SIZES = ("tiny", "paper")


def build(name: str, size: str = "tiny", **kw: Any) -> ZooNet:
    """Build super-network ``name`` (a key of :data:`SUPERNETS`, case-insensitive).

    ``size`` is ``"tiny"`` or ``"paper"``; ``kw`` overrides that config's
    constructor arguments (e.g. ``input_size=16``).
    """
    key = name.lower().replace("_", "").replace("-", "")
    if key not in SUPERNETS:
        raise KeyError(f"unknown super-network {name!r}; choose from {sorted(SUPERNETS)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return getattr(SUPERNETS[key], size)(**kw)


__all__ = ["ZooNet", "SuperResNet", "StackedUnets", "RegNetSuper", "DartsSuperNet", "DemoSupNet",
           "SUPERNETS", "SIZES", "build"]
