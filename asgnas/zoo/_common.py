"""Shared helpers for the zoo super-networks (pure torch).

Every zoo net derives from :class:`ZooNet`, which records the three common
constructor knobs (``in_channels``, ``num_classes``, ``input_size``) and offers
``example_input`` so tests and exporters need not know each net's input shape.
"""
from __future__ import annotations

from typing import Any, Iterable, TypeVar

import torch
from torch import nn


_Net = TypeVar("_Net", bound="ZooNet")


class ZooNet(nn.Module):
    """Base class: common knobs plus ``tiny``/``paper`` factory plumbing."""

    #: defaults used by ``tiny()``; subclasses override.
    TINY: dict[str, Any] = {}
    #: defaults used by ``paper()``; subclasses override.
    PAPER: dict[str, Any] = {}

    def __init__(self, in_channels: int, num_classes: int, input_size: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or input_size < 1:
            raise ValueError("in_channels, num_classes and input_size must be positive")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.input_size = int(input_size)

    @classmethod
    def tiny(cls: type[_Net], **kw: Any) -> _Net:
        """CPU-trainable config for 8x8 (1 channel) digits-like input; ``kw`` overrides."""
        return cls(**{**cls.TINY, **kw})

    @classmethod
    def paper(cls: type[_Net], **kw: Any) -> _Net:
        """Paper-size config (see the module docstring for its counts); ``kw`` overrides."""
        return cls(**{**cls.PAPER, **kw})

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """A random NCHW tensor of the configured input shape."""
        return torch.randn(batch, self.in_channels, self.input_size, self.input_size)


def add_all(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Left-fold of binary adds.

    Python's ``sum()`` starts from the int 0, which would export an extra
    ``Add(0, x)`` with a constant operand; folding from the first tensor keeps
    every ONNX ``Add`` a pure two-tensor joint.
    """
    it = iter(tensors)
    out = next(it)
    for t in it:
        out = out + t
    return out


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
            relu: bool = True, dilation: int = 1) -> nn.Sequential:
    """Conv(k, 'same'-style padding, no bias) - BN - [ReLU].

    The conv has no bias because the BN right after it owns the shift; a
    bias there would be redundant and only enlarge the group.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=dilation * (k // 2),
                  dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
