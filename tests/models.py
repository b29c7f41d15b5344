"""Shared test-model zoo for the asgnas test-suite.

Every test that needs a real network takes it from here, so that all components
(graph analysis, zero-invariant-group search, removal, slimming) are exercised on
the same small, deterministic models.  The module is deliberately independent
of the ``asgnas`` package: it only uses torch, onnx and onnxruntime, so a bug in
asgnas can never make the zoo itself fail.

Contents
--------
``ModelCase`` / ``ZOO``
    Tiny torch modules (8-32 channels, 16x16 images or short token sequences)
    keyed by name.  ``build()`` is deterministic (``torch.manual_seed(0)`` inside)
    and randomizes every normalization layer so BN/IN/GN/LN are never identity.
``export_onnx(case, path, exporter)``
    ``"legacy"`` (TorchScript, opset 17, no constant folding, symbolic batch for
    cases with ``dynamic_batch``) or ``"dynamo"`` (``torch.export`` based).
``reference_outputs(case)``
    torch outputs for ``case.inputs()`` as a list of numpy arrays.
``ort_run(path, feeds)`` / ``seeded_inputs(path, seed)`` / ``case_feeds(...)``
    onnxruntime helpers.
``case_names(...)``
    names filtered by tags, handy for ``pytest.mark.parametrize``.

Tags used (a case carries every tag that applies):
    conv, bn, relu, relu6, chain, residual, concat, nested_concat, depthwise, group_conv,
    slice, conv_transpose, instance_norm, leaky_relu, flatten, linear, gemm, pool,
    layernorm, attention, mha, heads, reshape, weight_sharing, multi_output,
    multi_input, groupnorm, channel_shuffle, se, hardsigmoid, hardswish, split,
    non_feature_cat, nonzero_activation, pad, pad_channels, mlp, tokens,
    single_channel, erasing, parallel_branches, prelu, dynamic_batch, dynamo_ok.

``dynamo_ok`` marks cases the dynamo exporter handles (export + checker + ORT
match); ``dynamic_batch`` marks cases whose legacy export has a symbolic batch
dimension (``"batch"``) on every input and output.

Notes for users of the exported graphs:
  * The dynamo exporter runs onnxscript's optimizer, which folds eval-mode
    BatchNorm into the preceding Conv and may fuse/rename other nodes, so the
    dynamo graphs have fewer nodes than the legacy ones.  Legacy export keeps
    BatchNormalization nodes (``do_constant_folding=False``).
  * Legacy export with ``do_constant_folding=False`` may emit Identity nodes for
    initializers that are used twice (shared weights) and Shape/Gather chains for
    ``x.shape`` reads.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ModelCase",
    "ZOO",
    "EXPORTERS",
    "case_names",
    "export_onnx",
    "reference_outputs",
    "ort_run",
    "seeded_inputs",
    "case_feeds",
    "onnx_input_names",
    "randomize_norms",
]

EXPORTERS: tuple[str, ...] = ("legacy", "dynamo")
LEGACY_OPSET = 17
BATCH_DIM_NAME = "batch"


# --------------------------------------------------------------------------------------
# Case descriptor
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    """One zoo entry.

    Attributes:
        name: key in :data:`ZOO`.
        build: returns a fresh module in eval mode; deterministic (seeds torch itself).
        inputs: returns the example inputs (deterministic, batch 1).
        tags: feature tags, see the module docstring.
        dynamic_batch: legacy export marks dim 0 of all inputs/outputs as ``"batch"``.
        input_names: ONNX graph input names, one per tensor returned by ``inputs()``.
        output_names: ONNX graph output names, one per tensor the model returns.
        description: one line on what the case stresses.
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[torch.Tensor, ...]]
    tags: frozenset[str] = field(default_factory=frozenset)
    dynamic_batch: bool = False
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("output",)
    description: str = ""

    def __post_init__(self) -> None:
        # Accept any iterable of tags but store an immutable set (cases are shared
        # between tests; nobody should be able to mutate them by accident).
        object.__setattr__(self, "tags", frozenset(self.tags))
        if self.dynamic_batch and "dynamic_batch" not in self.tags:
            object.__setattr__(self, "tags", self.tags | {"dynamic_batch"})

    def has(self, *tags: str) -> bool:
        """True when the case carries all ``tags``."""
        return all(t in self.tags for t in tags)


ZOO: dict[str, ModelCase] = {}


def _register(case: ModelCase) -> ModelCase:
    if case.name in ZOO:
        raise ValueError(f"duplicate zoo case {case.name!r}")
    ZOO[case.name] = case
    return case


def case_names(
    *,
    all_of: Iterable[str] = (),
    any_of: Iterable[str] = (),
    none_of: Iterable[str] = (),
) -> list[str]:
    """Sorted names of the cases whose tags match the filters.

    Example: ``case_names(all_of={"dynamo_ok"}, none_of={"attention"})``.
    """
    all_of, any_of, none_of = set(all_of), set(any_of), set(none_of)
    out = []
    for name, case in ZOO.items():
        if all_of and not all_of <= case.tags:
            continue
        if any_of and not any_of & case.tags:
            continue
        if none_of & case.tags:
            continue
        out.append(name)
    return sorted(out)


# --------------------------------------------------------------------------------------
# Determinism helpers
# --------------------------------------------------------------------------------------

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
)


@torch.no_grad()
def randomize_norms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every normalization layer non-trivial affine params and running stats.

    A freshly constructed BN (mean 0, var 1, weight 1, bias 0) is the identity in
    eval mode, which would hide bugs in BN folding/slicing.  Values stay in a
    well-conditioned range (var in [0.5, 1.5], weight in +-[0.5, 1.5]).
    """
    g = torch.Generator().manual_seed(seed)

    def uni(shape: torch.Size, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    for m in model.modules():
        if not isinstance(m, _NORM_TYPES):
            continue
        w = getattr(m, "weight", None)
        b = getattr(m, "bias", None)
        if isinstance(w, torch.Tensor):
            sign = torch.where(torch.rand(w.shape, generator=g) < 0.15, -1.0, 1.0)
            w.copy_(uni(w.shape, 0.5, 1.5) * sign)
        if isinstance(b, torch.Tensor):
            b.copy_(0.2 * torch.randn(b.shape, generator=g))
        rm = getattr(m, "running_mean", None)
        rv = getattr(m, "running_var", None)
        if isinstance(rm, torch.Tensor):
            rm.copy_(0.2 * torch.randn(rm.shape, generator=g))
        if isinstance(rv, torch.Tensor):
            rv.copy_(uni(rv.shape, 0.5, 1.5))
    return model


def _builder(cls: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Wrap a module constructor: seed, construct, randomize norms, eval()."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        model = cls()
        randomize_norms(model)
        return model.eval()

    build.__name__ = f"build_{getattr(cls, '__name__', 'model')}"
    build.__doc__ = getattr(cls, "__doc__", None)
    return build


def _randn(*shapes: Sequence[int], seed: int = 123) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Deterministic example-input factory (fresh tensors every call)."""

    def make() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*s, generator=g) for s in shapes)

    return make


IMG = (1, 3, 16, 16)


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv -> BN -> ReLU with 'same' padding (conv without bias, like torchvision)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class DigitsResCNN(nn.Module):
    """Conv-BN-ReLU stem and one residual block, on 1x8x8 digits-sized input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.body(x))
        return self.head(x.mean((2, 3)))


class ConvBnReluChain(nn.Module):
    """Plain chain: conv-BN-ReLU x3 (one strided) then a 1x1 conv with bias."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(3, 8), _cbr(8, 16), _cbr(16, 16, stride=2))
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class BasicBlock(nn.Module):
    """ResNet basic block; 1x1-conv+BN projection when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNetBasic(nn.Module):
    """Stem + identity basic block + projection basic block + GAP + Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class ConcatNet(nn.Module):
    """OTO DemoNetConcatCase1-like: two branches concatenated, then BN + conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 8)
        self.branch_a = _cbr(8, 8)
        self.branch_b = _cbr(8, 16, k=1)
        self.bn = nn.BatchNorm2d(24)
        self.conv = nn.Conv2d(24, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = F.relu(self.conv(F.relu(self.bn(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class NestedConcatNet(nn.Module):
    """OTO DemoNetConcatCase2-like: nested concats, c1 reused three times.

    c1 = cat(x1, x2)            (16)
    x3 = cbr(c1)                (8)
    c2 = cat(c1, x3)            (24)   -- c1 reused
    c3 = cat(c2, c1)            (40)   -- concat of concats, c1 reused again
    BN(c3) -> ReLU -> conv(40->16)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 8)
        self.conv2 = _cbr(3, 8, k=1)
        self.conv3 = _cbr(16, 8)
        self.bn = nn.BatchNorm2d(40)
        self.conv4 = nn.Conv2d(40, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = torch.cat([self.conv1(x), self.conv2(x)], dim=1)
        c2 = torch.cat([c1, self.conv3(c1)], dim=1)
        c3 = torch.cat([c2, c1], dim=1)
        return self.conv4(F.relu(self.bn(c3)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: pw expand -> dw 3x3 -> pw linear (+ residual if shapes match)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV2Tiny(nn.Module):
    """Stem + residual inverted block + strided inverted block + 1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.b1 = InvertedResidual(16, 16, 1, expand=2)
        self.b2 = InvertedResidual(16, 24, 2, expand=2)
        self.head = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b2(self.b1(self.stem(x))))


class GroupConvSlice(nn.Module):
    """Group conv (groups=4) fed by channel slices ``y[:, :8]`` / ``y[:, 8:]``.

    The sliced halves take different paths (grouped conv vs. plain conv) and are
    concatenated back; a second grouped conv (16->16, groups=4) follows.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.gconv = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
        self.gbn = nn.BatchNorm2d(16)
        self.pconv = nn.Conv2d(8, 8, 1)
        self.gconv2 = nn.Conv2d(24, 16, 3, padding=1, groups=4)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        a = F.relu(self.gbn(self.gconv(y[:, :8])))
        b = F.relu(self.pconv(y[:, 8:]))
        z = F.relu(self.gconv2(torch.cat([a, b], dim=1)))
        return self.out(z)


class ConvTransposeIN(nn.Module):
    """OTO convtranspose_in-like: ConvTranspose -> InstanceNorm(affine) -> LeakyReLU.

    A second full-resolution IN branch is added to the upsampled branch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.in1 = nn.InstanceNorm2d(8, affine=True)
        self.up = nn.ConvTranspose2d(8, 16, 4, stride=2, padding=1)
        self.in2 = nn.InstanceNorm2d(16, affine=True)
        self.skip = nn.Conv2d(3, 16, 3, padding=1)
        self.in3 = nn.InstanceNorm2d(16, affine=True)
        self.out = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.in1(self.down(x)), 0.2)
        y = F.leaky_relu(self.in2(self.up(y)), 0.2)
        s = F.leaky_relu(self.in3(self.skip(x)), 0.2)
        return self.out(y + s)


class FlattenLinear(nn.Module):
    """conv -> conv -> flatten(8*4*4) -> Linear -> ReLU -> Linear (LeNet-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 8, stride=2), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU())
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.fc2(F.relu(self.fc1(x)))


TOKENS = (1, 16, 24)  # (batch, tokens, patch features): a 4x4 grid of 2x2x6 patches


class TransformerMHA(nn.Module):
    """Tiny pre-LN ViT encoder block using ``nn.MultiheadAttention`` (2 heads).

    Linear patch embed + learned positional embedding, LN -> MHA -> add,
    LN -> MLP(GELU) -> add, final LN, mean-pool over tokens, Linear head.
    """

    def __init__(self, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(TOKENS[2], dim)
        self.pos = nn.Parameter(0.1 * torch.randn(1, TOKENS[1], dim))
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos
        h = self.ln1(x)
        # need_weights=False: the averaged attention map is not part of the model.
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln_f(x).mean(dim=1))


class HandAttention(nn.Module):
    """Explicit q/k/v Linear, reshape to (B, H, T, D), softmax(qk^T/sqrt(D)) v.

    Heads are visible in the graph as Reshape/Transpose/MatMul, unlike the fused
    MHA kernel.  Followed by an out-projection, residual add and LayerNorm.
    """

    def __init__(self, dim: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.embed = nn.Linear(TOKENS[2], dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, n, d = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.head_dim)), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = self.ln(x + self.proj(y))
        return self.head(x.mean(dim=1))


class WeightShare(nn.Module):
    """OTO weightshare_case1-like: one conv module applied twice (add + concat).

    y1 = shared(x1); y2 = shared(relu(y1)); s = y1 + y2; cat(s, y2) -> BN -> conv.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.out = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.stem(x)
        y1 = self.shared(x1)
        y2 = self.shared(F.relu(y1))
        s = y1 + y2
        return self.out(F.relu(self.bn(torch.cat([s, y2], dim=1))))


class TwoOutputs(nn.Module):
    """Returns ``(logits, features)``; the features also feed the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_cbr(3, 8), _cbr(8, 16, stride=2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)
        return self.fc(feats), feats


class GroupNormNet(nn.Module):
    """GroupNorm(4, 16) chains with a residual add (OTO groupnorm cases)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gn1 = nn.GroupNorm(4, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.gn2 = nn.GroupNorm(4, 16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.gn3 = nn.GroupNorm(4, 16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.relu(self.gn1(self.conv1(x)))
        x2 = F.relu(self.gn2(self.conv2(x1)) + x1)
        x3 = F.relu(self.gn3(self.conv3(x2)))
        return self.out(x3)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle (view-transpose-view, groups=2) between convs."""

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.conv1 = _cbr(3, 16)
        self.conv2 = nn.Conv2d(16, 16, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(x)


class SEBlock(nn.Module):
    """Squeeze-excite gate: GAP -> 1x1 reduce -> ReLU -> 1x1 expand -> gate -> Mul."""

    def __init__(self, c: int, r: int, gate: nn.Module) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c, c // r, 1)
        self.expand = nn.Conv2d(c // r, c, 1)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.expand(F.relu(self.reduce(s))))


class SENet(nn.Module):
    """Two SE blocks: Sigmoid gate (SENet/EfficientNet) and Hardsigmoid gate with
    Hardswish activation (MobileNetV3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 16)
        self.se1 = SEBlock(16, 4, nn.Sigmoid())
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.Hardswish()
        self.se2 = SEBlock(16, 4, nn.Hardsigmoid())
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(self.conv1(x))
        x = self.se2(self.act2(self.bn2(self.conv2(x))))
        return self.out(x)


class SplitConcat(nn.Module):
    """``torch.chunk`` into 2 channel halves -> separate convs -> concat, plus an
    uneven ``torch.split([4, 12])`` whose parts are re-joined in swapped order."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.left = _cbr(8, 8)
        self.right = _cbr(8, 8, k=1)
        self.bn = nn.BatchNorm2d(16)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = torch.chunk(x, 2, dim=1)
        x = F.relu(self.bn(torch.cat([self.left(a), self.right(b)], dim=1)))
        x = F.relu(self.mid(x))
        p, q = torch.split(x, [4, 12], dim=1)
        return self.out(torch.cat([q, p], dim=1))


class NonFeatureCat(nn.Module):
    """TP test_non_feature_dim_cat: cat/split on the height axis (dim 2).

    Channels of the two branches are *not* coupled by this concat: channel i of
    the result is channel i of both inputs, so pruning must treat it like an Add.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 8)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.mid = _cbr(8, 16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.a(x), self.b(x)], dim=2)  # (B, 8, 32, 16)
        y = self.mid(y)
        top, bottom = torch.split(y, [16, 16], dim=2)
        return self.out(top + bottom)


class NonzeroActivations(nn.Module):
    """Activations with f(0) != 0 (Sigmoid 0.5, Softplus log 2): a zeroed channel
    still emits a constant, so removing it needs bias compensation downstream."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.bn1(self.conv1(x)))
        x = F.softplus(self.conv2(x))
        return self.conv3(x)


class PadConst(nn.Module):
    """Spatial Pad with a non-zero constant (0.5) before an unpadded conv: a zeroed
    channel becomes non-zero at the border."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=0)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(self.conv1(x), (1, 1, 1, 1), mode="constant", value=0.5)
        return self.out(F.relu(self.conv2(x)))


class PadChannels(nn.Module):
    """Pad on the *channel* axis (adds 2 constant channels in front, 2 zero at the
    end): channel indices shift, so slimming must remap or refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 12)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = torch.cat([torch.full_like(x[:, :2], 0.25), x], dim=1)
        x = F.pad(x, (0, 0, 0, 0, 0, 2))
        return self.conv2(x)


MLP_IN = (1, 4, 16)  # (batch, tokens, features): 3-D so Linear exports as MatMul+Add


class MLPResidual(nn.Module):
    """TP test_fully_connected_layers: MLP with a residual add between Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 32)
        self.fc4 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = h + F.relu(self.fc3(F.relu(self.fc2(h))))
        return self.fc4(h)


class TwoInputs(nn.Module):
    """TP test_multiple_inputs_and_outputs-like: two image inputs (3 and 4 ch),
    separate stems, concat, shared trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.stem_a = _cbr(3, 8)
        self.stem_b = _cbr(4, 8)
        self.trunk = _cbr(16, 16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.stem_a(a), self.stem_b(b)], dim=1)
        return self.out(self.trunk(x))


class ResBlockErasable(nn.Module):
    """conv-BN-ReLU-conv-BN with identity skip: removable as a whole (x + f(x))."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.f = nn.Sequential(_cbr(c, c), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.f(x))


class DemoSupNet(nn.Module):
    """DemoSupNet-like erasing case for removal-structure tests.

    stem -> 3 stacked residual blocks -> 3 parallel branches (3x3 conv-BN,
    1x1 conv-BN, dw3x3+pw) summed by Add -> ReLU -> 2 more residual blocks ->
    GAP -> Linear.  Every residual body and every parallel branch is an erasable
    operator-set candidate.
    """

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = _cbr(3, c)
        self.stage1 = nn.Sequential(*[ResBlockErasable(c) for _ in range(3)])
        self.br3 = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.br1 = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.brdw = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )
        self.stage2 = nn.Sequential(*[ResBlockErasable(c) for _ in range(2)])
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = F.relu(self.br3(x) + self.br1(x) + self.brdw(x))
        x = self.stage2(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SingleChannelOut(nn.Module):
    """TP test_single_channel_output: a conv with 1 output channel (not depthwise)
    feeding a conv with 1 input channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 8)
        self.squeeze = nn.Conv2d(8, 1, 3, padding=1)
        self.expand = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(torch.sigmoid(self.squeeze(self.conv1(x))))


class LinearToConv(nn.Module):
    """TP test_reshape: Linear -> view to (B, C, H, W) -> ConvT x2 -> flatten -> Linear.

    The Linear's output features map to (channel, h, w) blocks, so a conv channel
    is a contiguous group of 16 Linear outputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc_in = nn.Linear(16, 8 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(8, 16, 2, stride=2)
        self.bn1 = nn.BatchNorm2d(16)
        self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.fc_out = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc_in(x)).view(-1, 8, 4, 4)
        x = F.relu(self.up2(F.relu(self.bn1(self.up1(x)))))
        return self.fc_out(torch.flatten(x, 1))


class ConvPReLU(nn.Module):
    """OTO in_case4-like: conv -> InstanceNorm -> per-channel PReLU chain."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.in1 = nn.InstanceNorm2d(16, affine=True)
        self.act1 = nn.PReLU(16, init=0.1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.act2 = nn.PReLU(16)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.in1(self.conv1(x)))
        return self.out(self.act2(self.conv2(x)))


def _conv_prelu() -> nn.Module:
    model = ConvPReLU()
    with torch.no_grad():  # per-channel slopes that differ, so PReLU is channel-wise for real
        model.act2.weight.copy_(torch.linspace(0.05, 0.5, 16))
    return model


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

_D = "dynamo_ok"

_register(ModelCase("conv_bn_relu", _builder(ConvBnReluChain), _randn(IMG),
                    {"conv", "bn", "relu", "chain", _D}, dynamic_batch=True,
                    description="conv-BN-ReLU chain"))
_register(ModelCase("resnet_basic", _builder(ResNetBasic), _randn(IMG),
                    {"conv", "bn", "relu", "residual", "pool", "linear", "gemm", _D}, dynamic_batch=True,
                    description="two ResNet basic blocks, one with projection shortcut"))
_register(ModelCase("concat", _builder(ConcatNet), _randn(IMG),
                    {"conv", "bn", "relu", "concat", "pool", "linear", "gemm", _D},
                    description="two branches concatenated then BN + conv"))
_register(ModelCase("nested_concat", _builder(NestedConcatNet), _randn(IMG),
                    {"conv", "bn", "relu", "concat", "nested_concat", _D},
                    description="nested concats reused, BN over a concat of concats"))
_register(ModelCase("inverted_residual", _builder(MobileNetV2Tiny), _randn(IMG),
                    {"conv", "bn", "depthwise", "residual", "relu6", _D}, dynamic_batch=True,
                    description="MobileNetV2 inverted residual blocks"))
_register(ModelCase("group_conv_slice", _builder(GroupConvSlice), _randn(IMG),
                    {"conv", "bn", "relu", "group_conv", "slice", "concat", _D},
                    description="groups=4 conv fed by x[:, :8], x[:, 8:] into a plain conv"))
_register(ModelCase("convtranspose_in", _builder(ConvTransposeIN), _randn(IMG),
                    {"conv", "conv_transpose", "instance_norm", "leaky_relu", "residual", _D},
                    description="ConvTranspose -> InstanceNorm(affine) -> LeakyReLU, add of IN branches"))
_register(ModelCase("flatten_linear", _builder(FlattenLinear), _randn(IMG),
                    {"conv", "bn", "relu", "flatten", "linear", "gemm", _D}, dynamic_batch=True,
                    description="conv -> flatten -> Linear -> ReLU -> Linear"))
_register(ModelCase("transformer_mha", _builder(TransformerMHA), _randn(TOKENS),
                    {"tokens", "linear", "layernorm", "attention", "mha", "residual", "mlp", _D},
                    dynamic_batch=True,
                    description="pre-LN encoder block with nn.MultiheadAttention (2 heads)"))
_register(ModelCase("hand_attention", _builder(HandAttention), _randn(TOKENS),
                    {"tokens", "linear", "layernorm", "attention", "heads", "reshape", "residual", _D},
                    description="explicit q/k/v Linear with heads via Reshape/Transpose/MatMul"))
_register(ModelCase("weight_sharing", _builder(WeightShare), _randn(IMG),
                    {"conv", "bn", "relu", "weight_sharing", "residual", "concat", _D},
                    description="one conv module applied twice, in an add and a concat"))
_register(ModelCase("two_outputs", _builder(TwoOutputs), _randn(IMG),
                    {"conv", "bn", "relu", "pool", "linear", "gemm", "multi_output", _D}, dynamic_batch=True,
                    output_names=("logits", "features"),
                    description="returns (logits, features)"))
_register(ModelCase("groupnorm", _builder(GroupNormNet), _randn(IMG),
                    {"conv", "groupnorm", "relu", "residual", _D},
                    description="GroupNorm(4, 16) chains with a residual add"))
_register(ModelCase("channel_shuffle", _builder(ChannelShuffle), _randn(IMG),
                    {"conv", "bn", "relu", "group_conv", "channel_shuffle", "reshape", _D}, dynamic_batch=True,
                    description="ShuffleNet reshape-transpose-reshape channel shuffle"))
_register(ModelCase("se_block", _builder(SENet), _randn(IMG),
                    {"conv", "bn", "relu", "se", "pool", "hardsigmoid", "hardswish", _D},
                    description="SE gates (Sigmoid and Hardsigmoid) multiplied into features"))
_register(ModelCase("split_concat", _builder(SplitConcat), _randn(IMG),
                    {"conv", "bn", "relu", "split", "concat", _D},
                    description="chunk into 2 channel paths then concat; uneven split re-ordered"))
_register(ModelCase("non_feature_cat", _builder(NonFeatureCat), _randn(IMG),
                    {"conv", "bn", "relu", "non_feature_cat", "split", _D},
                    description="concat/split on dim 2 must not couple channels"))
_register(ModelCase("nonzero_activation", _builder(NonzeroActivations), _randn(IMG),
                    {"conv", "bn", "nonzero_activation", _D},
                    description="Sigmoid/Softplus after conv (f(0) != 0)"))
_register(ModelCase("pad_const", _builder(PadConst), _randn(IMG),
                    {"conv", "bn", "relu", "pad", _D},
                    description="spatial Pad with constant 0.5"))
_register(ModelCase("pad_channels", _builder(PadChannels), _randn(IMG),
                    {"conv", "bn", "relu", "pad", "pad_channels", "concat", _D},
                    description="constant channels concatenated / padded on the channel axis"))
_register(ModelCase("mlp_residual", _builder(MLPResidual), _randn(MLP_IN),
                    {"linear", "mlp", "residual", "relu", "tokens", _D}, dynamic_batch=True,
                    description="MLP with residual add (Linear as MatMul+Add)"))
_register(ModelCase("two_inputs", _builder(TwoInputs), _randn(IMG, (1, 4, 16, 16)),
                    {"conv", "bn", "relu", "concat", "multi_input", _D}, dynamic_batch=True,
                    input_names=("input_a", "input_b"),
                    description="two inputs with separate stems, concatenated"))
_register(ModelCase("demo_supnet", _builder(DemoSupNet), _randn(IMG),
                    {"conv", "bn", "relu", "residual", "depthwise", "parallel_branches", "erasing",
                     "pool", "linear", "gemm", _D},
                    description="stacked residual blocks + parallel branches summed by Add"))
_register(ModelCase("single_channel_out", _builder(SingleChannelOut), _randn(IMG),
                    {"conv", "bn", "relu", "single_channel", "nonzero_activation", _D},
                    description="conv with 1 output channel feeding conv with 1 input channel"))
_register(ModelCase("linear_to_conv", _builder(LinearToConv), _randn((1, 16)),
                    {"linear", "gemm", "reshape", "conv_transpose", "bn", "flatten", _D},
                    description="Linear -> view -> ConvTranspose x2 -> flatten -> Linear"))
_register(ModelCase("conv_prelu", _builder(_conv_prelu), _randn(IMG),
                    {"conv", "instance_norm", "prelu", _D},
                    description="conv -> InstanceNorm -> per-channel PReLU"))


# --------------------------------------------------------------------------------------
# Export and run
# --------------------------------------------------------------------------------------


def _as_list(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _as_list(o)]
    raise TypeError(f"unsupported model output type {type(out).__name__}")


def reference_outputs(case: ModelCase, inputs: Sequence[torch.Tensor] | None = None) -> list[np.ndarray]:
    """torch outputs (flattened to a list) for ``inputs`` or ``case.inputs()``."""
    model = case.build()
    args = tuple(case.inputs() if inputs is None else inputs)
    with torch.no_grad():
        return [t.detach().cpu().numpy() for t in _as_list(model(*args))]


@contextlib.contextmanager
def _quiet_export():
    """Silence exporter chatter: warnings, the dynamo progress prints and torch.onnx
    logging (torchvision-missing notices are logged through their own handlers, so
    redirecting stderr alone does not catch them)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    old = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, old):
            lg.setLevel(lv)


def export_onnx(case: ModelCase, path: str | os.PathLike[str], exporter: str = "legacy") -> Path:
    """Export ``case`` to ``path`` with the given exporter and return the path.

    ``"legacy"``: TorchScript exporter, opset 17, ``do_constant_folding=False``;
    cases with ``dynamic_batch`` get dim 0 of every input/output named ``"batch"``.
    ``"dynamo"``: ``torch.export``-based exporter with its defaults (opset 18+,
    onnxscript optimizer on, static shapes).  Input/output names are set from the
    case for both exporters so feeds are exporter-independent.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = case.build()
    args = case.inputs()
    with torch.no_grad():
        n_out = len(_as_list(model(*args)))
    out_names = list(case.output_names)
    if len(out_names) != n_out:  # default names for multi-output cases that did not set them
        out_names = [f"output_{i}" for i in range(n_out)] if n_out > 1 else ["output"]
    in_names = list(case.input_names)

    with _quiet_export():
        if exporter == "legacy":
            dyn = None
            if case.dynamic_batch:
                dyn = {n: {0: BATCH_DIM_NAME} for n in in_names + out_names}
            torch.onnx.export(
                model, args, str(path), dynamo=False, do_constant_folding=False,
                opset_version=LEGACY_OPSET, input_names=in_names, output_names=out_names,
                dynamic_axes=dyn,
            )
        else:
            torch.onnx.export(model, args, str(path), dynamo=True,
                              input_names=in_names, output_names=out_names)
    return path


_ORT_TYPES: dict[int, np.dtype] = {
    onnx.TensorProto.FLOAT: np.dtype(np.float32),
    onnx.TensorProto.DOUBLE: np.dtype(np.float64),
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
    onnx.TensorProto.INT64: np.dtype(np.int64),
    onnx.TensorProto.INT32: np.dtype(np.int32),
    onnx.TensorProto.BOOL: np.dtype(np.bool_),
}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real graph inputs (old-IR models list initializers as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _load(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return onnx.load(str(model_or_path), load_external_data=False)


def onnx_input_names(model_or_path: onnx.ModelProto | str | os.PathLike[str]) -> list[str]:
    """Names of the graph inputs (initializers excluded), in declaration order."""
    return [i.name for i in _graph_inputs(_load(model_or_path))]


def seeded_inputs(
    model_or_path: onnx.ModelProto | str | os.PathLike[str],
    seed: int = 0,
    sym_dim: int = 2,
) -> dict[str, np.ndarray]:
    """Random feeds from the model's declared input shapes.

    Symbolic or unknown dims become ``sym_dim`` (default 2).  Floats are standard
    normal; integers are drawn from [0, 4) so they are valid as small indices.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for vi in _graph_inputs(_load(model_or_path)):
        tt = vi.type.tensor_type
        dtype = _ORT_TYPES.get(tt.elem_type)
        if dtype is None:
            raise NotImplementedError(f"input {vi.name!r}: elem_type {tt.elem_type} not supported")
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else sym_dim for d in tt.shape.dim]
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.random(shape) < 0.5
        else:
            feeds[vi.name] = rng.integers(0, 4, size=shape).astype(dtype)
    return feeds


def case_feeds(case: ModelCase, inputs: Sequence[torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """ONNX feeds (by the case's input names) for ``inputs`` or ``case.inputs()``."""
    args = case.inputs() if inputs is None else inputs
    return {n: t.detach().cpu().numpy() for n, t in zip(case.input_names, args)}


def ort_run(
    model_or_path: onnx.ModelProto | str | os.PathLike[str],
    feeds: Mapping[str, np.ndarray] | Sequence[np.ndarray],
) -> list[np.ndarray]:
    """Run a model with onnxruntime on CPU and return all outputs in graph order.

    ``feeds`` is a name->array dict or a sequence matched positionally to the graph
    inputs.  Graph optimizations are disabled so the run checks the graph as
    written, not ORT's rewrite of it; one intra-op thread keeps pytest-xdist
    workers from oversubscribing the CPU.
    """
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    if not isinstance(feeds, Mapping):
        names = [i.name for i in sess.get_inputs()]
        if len(names) != len(feeds):
            raise ValueError(f"model has {len(names)} inputs, got {len(feeds)} feeds")
        feeds = dict(zip(names, feeds))
    return list(sess.run(None, {k: np.asarray(v) for k, v in feeds.items()}))
