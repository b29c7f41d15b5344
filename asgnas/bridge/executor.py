"""``OnnxModule``: execute an ``asgnas.ir.Model`` as a trainable ``torch.nn.Module``.

Every live node is compiled once, at construction, into a closure ``fn(inputs, training) -> outputs`` with its
attributes (and constant shape/axes inputs) already decoded; ``forward`` walks the closures in topological order
over a dict of tensors keyed by value name. An unsupported op or attribute fails at construction, naming the
node, never mid-training.

State:
- ``params``: floating-point initializers as ``nn.Parameter`` (``default_trainable`` decides, or the caller's
  ``trainable``), under sanitized names; ``param_for_initializer`` / ``initializer_for_param`` map both ways;
- ``stats``: BatchNormalization running statistics (persistent buffers, updated in train mode like torch's BN);
- ``consts``: every other constant (integer/shape initializers, ``Constant`` outputs, frozen floats), as
  non-persistent buffers so they follow ``.to(device)`` but stay out of ``state_dict``.

Semantics follow the ONNX spec as onnxruntime implements it (opsets 11 to current). Train/eval mode: in train
mode BatchNormalization uses batch statistics and updates the running ones (ONNX momentum m -> torch 1 - m) and
Dropout drops; in eval mode both are inference ops, as in onnxruntime.
"""

from __future__ import annotations

import math
import re
from functools import reduce
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import Tensor, nn

from asgnas.bridge.distributed import batch_norm_train
from asgnas.passes.untie import materialize
from asgnas.errors import AsgnasError
from asgnas.ir import Model, Node, Value

OpFn = Callable[[list, bool], Any]  # (inputs, training) -> Tensor | tuple of tensors

_TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}
for _onnx_type, _name in ((TensorProto.UINT16, "uint16"), (TensorProto.UINT32, "uint32"),
                          (TensorProto.UINT64, "uint64")):
    if hasattr(torch, _name):  # torch >= 2.3
        _TORCH_DTYPES[_onnx_type] = getattr(torch, _name)

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}

#: Input slots that configure an op rather than carry learnable data (never trainable by default).
_CONFIG_SLOTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Clip": frozenset({1, 2}),
    "Pad": frozenset({1, 2, 3}),
    "Dropout": frozenset({1, 2}),
    "Range": frozenset({0, 1, 2}),
    "ConstantOfShape": frozenset({0}),
    "BatchNormalization": frozenset({3, 4}),  # running statistics: buffers, updated by BN itself
}

_BN_STAT_SLOTS = (3, 4)


def _err(node: Node, message: str) -> AsgnasError:
    return AsgnasError(message, node=node.name, op=node.op_type)


# --------------------------------------------------------------------------------------------------
# construction context


class _Ctx:
    """What an op builder may know at construction: attributes, opset, and the constant inputs."""

    def __init__(self, node: Node, opset: int, frozen: Callable[[Value], np.ndarray | None], live_out: list[bool],
                 stat_buffers: bool = False):
        self.node = node
        self.opset = opset
        self._frozen = frozen
        self.live_out = live_out  # per output: read by a live node or a graph output
        self.stat_buffers = stat_buffers  # BatchNormalization: both running statistics are module buffers

    def attr(self, key: str, default: Any = None) -> Any:
        return self.node.attr(key, default)

    def has(self, index: int) -> bool:
        return index < len(self.node.inputs) and self.node.inputs[index] is not None

    def const(self, index: int) -> np.ndarray | None:
        """The input's value when it is a constant that cannot change (not a trainable parameter)."""
        if not self.has(index):
            return None
        return self._frozen(self.node.inputs[index])

    def error(self, message: str) -> AsgnasError:
        return _err(self.node, message)

    def ints(self, index: int, attr: str | None = None) -> Callable[[list], list[int] | None]:
        """Integer list from attribute ``attr`` (older opsets) or input ``index``; decoded once when constant."""
        if attr is not None and self.attr(attr) is not None:
            value = [int(v) for v in self.attr(attr)]
            return lambda xs: value
        if not self.has(index):
            return lambda xs: None
        arr = self.const(index)
        if arr is not None:
            value = [int(v) for v in np.asarray(arr).reshape(-1)]
            return lambda xs: value
        return lambda xs: [int(v) for v in xs[index].reshape(-1).tolist()]

    def scalar(self, index: int) -> Callable[[list], Any]:
        """A scalar input as a Python number when constant, else the 0-d tensor (``None`` when omitted)."""
        if not self.has(index):
            return lambda xs: None
        arr = self.const(index)
        if arr is not None:
            arr = np.asarray(arr).reshape(-1)
            value = arr[0].item() if arr.size else None
            return lambda xs: value
        return lambda xs: xs[index].reshape(())


_BUILDERS: dict[str, Callable[[_Ctx], OpFn]] = {}


def _op(*names: str):
    def register(builder: Callable[[_Ctx], OpFn]) -> Callable[[_Ctx], OpFn]:
        for name in names:
            _BUILDERS[name] = builder
        return builder

    return register


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) the executor runs."""
    return sorted(_BUILDERS)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _torch_pad_order(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX (begins, ends) over axes 0..n-1 -> F.pad's (last axis first) flat list."""
    order: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        order += [int(b), int(e)]
    return order


# --------------------------------------------------------------------------------------------------
# elementwise


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[[_Ctx], OpFn]:
    return lambda ctx: (lambda xs, tr: fn(xs[0]))


for _name, _fn in {
    "Identity": lambda x: x,
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Erf": torch.erf,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Atan": torch.atan,
    "Softsign": F.softsign,
    "Softplus": F.softplus,
    "HardSwish": F.hardswish,
    "Mish": lambda x: x * torch.tanh(F.softplus(x)),
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
}.items():
    _BUILDERS[_name] = _unary(_fn)


def _int_div(a: Tensor, b: Tensor) -> Tensor:
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return torch.div(a, b)
    return torch.div(a, b, rounding_mode="trunc")  # C semantics, as onnxruntime


def _pow(a: Tensor, b: Tensor) -> Tensor:
    out = torch.pow(a, b)
    return out if out.dtype == a.dtype else out.to(a.dtype)  # ONNX: result has the base's type


for _name, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _int_div,
    "Pow": _pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
    "MatMul": torch.matmul,
}.items():
    _BUILDERS[_name] = (lambda f: lambda ctx: (lambda xs, tr: f(xs[0], xs[1])))(_fn)


@_op("Mod")
def _mod(ctx: _Ctx) -> OpFn:
    fmod = ctx.attr("fmod", 0)
    return lambda xs, tr: torch.fmod(xs[0], xs[1]) if fmod else torch.remainder(xs[0], xs[1])


@_op("Sum", "Max", "Min", "Mean")
def _variadic(ctx: _Ctx) -> OpFn:
    fn = {"Sum": torch.add, "Mean": torch.add, "Max": torch.maximum, "Min": torch.minimum}[ctx.node.op_type]
    mean = ctx.node.op_type == "Mean"

    def run(xs: list, tr: bool) -> Tensor:
        out = reduce(fn, [x for x in xs if x is not None])
        return out / len(xs) if mean else out

    return run


@_op("Where")
def _where(ctx: _Ctx) -> OpFn:
    return lambda xs, tr: torch.where(xs[0], xs[1], xs[2])


@_op("LeakyRelu")
def _leaky_relu(ctx: _Ctx) -> OpFn:
    alpha = float(ctx.attr("alpha", 0.01))
    return lambda xs, tr: F.leaky_relu(xs[0], alpha)


@_op("Elu")
def _elu(ctx: _Ctx) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: F.elu(xs[0], alpha)


@_op("Celu")
def _celu(ctx: _Ctx) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: F.celu(xs[0], alpha)


@_op("Selu")
def _selu(ctx: _Ctx) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return lambda xs, tr: gamma * torch.where(xs[0] > 0, xs[0], alpha * torch.expm1(xs[0]))


@_op("ThresholdedRelu")
def _thresholded_relu(ctx: _Ctx) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: torch.where(xs[0] > alpha, xs[0], torch.zeros_like(xs[0]))


@_op("PRelu")
def _prelu(ctx: _Ctx) -> OpFn:
    # ONNX slopes broadcast unidirectionally (e.g. shape (C, 1, 1)); F.prelu wants a 1-D weight.
    return lambda xs, tr: torch.where(xs[0] >= 0, xs[0], xs[0] * xs[1])


@_op("HardSigmoid")
def _hard_sigmoid(ctx: _Ctx) -> OpFn:
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    return lambda xs, tr: torch.clamp(xs[0] * alpha + beta, 0.0, 1.0)


@_op("Gelu")
def _gelu(ctx: _Ctx) -> OpFn:
    approximate = ctx.attr("approximate", "none")
    return lambda xs, tr: F.gelu(xs[0], approximate=approximate)


@_op("Clip")
def _clip(ctx: _Ctx) -> OpFn:
    if ctx.opset < 11:
        lo, hi = ctx.attr("min"), ctx.attr("max")
        lo_of, hi_of = (lambda xs: lo), (lambda xs: hi)
    else:
        lo_of, hi_of = ctx.scalar(1), ctx.scalar(2)

    def run(xs: list, tr: bool) -> Tensor:
        lo, hi = lo_of(xs), hi_of(xs)
        if lo is None and hi is None:
            return xs[0]
        return torch.clamp(xs[0], lo, hi)

    return run


@_op("Softmax", "LogSoftmax")
def _softmax(ctx: _Ctx) -> OpFn:
    fn = F.softmax if ctx.node.op_type == "Softmax" else F.log_softmax
    if ctx.opset >= 13:
        axis = int(ctx.attr("axis", -1))
        return lambda xs, tr: fn(xs[0], dim=axis)
    axis = int(ctx.attr("axis", 1))

    def coerced(xs: list, tr: bool) -> Tensor:  # opset < 13: over the 2-D coercion [prod(:axis), prod(axis:)]
        x = xs[0]
        a = _axis(axis, x.dim())
        return fn(x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:])), dim=1).reshape(x.shape)

    return coerced


@_op("Cast")
def _cast(ctx: _Ctx) -> OpFn:
    to = int(ctx.attr("to"))
    if to not in _TORCH_DTYPES:
        raise ctx.error(f"Cast to ONNX type {to} is not supported in torch")
    dtype = _TORCH_DTYPES[to]
    return lambda xs, tr: xs[0].to(dtype)


@_op("CastLike")
def _cast_like(ctx: _Ctx) -> OpFn:
    return lambda xs, tr: xs[0].to(xs[1].dtype)


@_op("Dropout")
def _dropout(ctx: _Ctx) -> OpFn:
    if ctx.opset < 12:
        ratio_attr = float(ctx.attr("ratio", 0.5))
        ratio_of: Callable[[list], Any] = lambda xs: ratio_attr
    else:
        ratio_of = ctx.scalar(1)
    want_mask = len(ctx.live_out) > 1 and ctx.live_out[1]

    def run(xs: list, tr: bool):
        x = xs[0]
        ratio = ratio_of(xs)
        ratio = 0.5 if ratio is None else float(ratio)
        if tr and ratio > 0:
            keep = torch.rand_like(x) >= ratio
            y = x * keep.to(x.dtype) / (1.0 - ratio)
            return (y, keep) if want_mask else y
        return (x, torch.ones_like(x, dtype=torch.bool)) if want_mask else x

    return run


# --------------------------------------------------------------------------------------------------
# linear algebra, convolution


@_op("Gemm")
def _gemm(ctx: _Ctx) -> OpFn:
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))

    def run(xs: list, tr: bool) -> Tensor:
        a, b = xs[0], xs[1]
        c = xs[2] if len(xs) > 2 else None
        if trans_a:
            a = a.t()
        if trans_b and alpha == 1.0 and beta == 1.0 and (c is None or c.shape == (b.shape[0],)):
            return F.linear(a, b, c)  # the nn.Linear pattern: one fused kernel
        if trans_b:
            b = b.t()
        if c is None:
            out = a @ b
            return out * alpha if alpha != 1.0 else out
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)

    return run


@_op("Einsum")
def _einsum(ctx: _Ctx) -> OpFn:
    equation = ctx.attr("equation")
    return lambda xs, tr: torch.einsum(equation, *xs)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _same_pads(auto_pad: str, in_sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    """Pads (begins + ends) for auto_pad SAME_UPPER/SAME_LOWER: output size ceil(in / stride)."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
        out = -(-int(size) // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - int(size))
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _window_pads(ctx: _Ctx) -> Callable[[Sequence[int], Sequence[int], Sequence[int], Sequence[int]], list[int]]:
    """A function (spatial sizes, kernel, strides, dilations) -> ONNX pads for Conv/pools."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return lambda sizes, k, s, d: _same_pads(auto_pad, sizes, k, s, d)
    if auto_pad not in ("NOTSET", "VALID"):
        raise ctx.error(f"auto_pad {auto_pad!r} is not supported")
    pads = None if auto_pad == "VALID" else ctx.attr("pads")
    return lambda sizes, k, s, d: [int(p) for p in pads] if pads else [0] * (2 * len(sizes))


def _apply_pads(x: Tensor, pads: Sequence[int], value: float,
                limit: Sequence[int] | None = None) -> tuple[Tensor, list[int]]:
    """Symmetric pads within ``limit`` go to the torch op (returned); anything else is padded explicitly."""
    nd = len(pads) // 2
    begins, ends = list(pads[:nd]), list(pads[nd:])
    if begins == ends and (limit is None or all(2 * p <= lim for p, lim in zip(begins, limit))):
        return x, begins
    return F.pad(x, _torch_pad_order(begins, ends), value=value), [0] * nd


@_op("Conv")
def _conv(ctx: _Ctx) -> OpFn:
    group = int(ctx.attr("group", 1))
    strides, dilations = ctx.attr("strides"), ctx.attr("dilations")
    pads_of = _window_pads(ctx)

    def run(xs: list, tr: bool) -> Tensor:
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        nd = w.dim() - 2
        s = list(strides) if strides else [1] * nd
        d = list(dilations) if dilations else [1] * nd
        x, pad = _apply_pads(x, pads_of(x.shape[2:], w.shape[2:], s, d), 0.0)
        return _CONV[nd](x, w, b, s, pad, d, group)

    return run


@_op("ConvTranspose")
def _conv_transpose(ctx: _Ctx) -> OpFn:
    group = int(ctx.attr("group", 1))
    strides, dilations = ctx.attr("strides"), ctx.attr("dilations")
    pads_attr, out_pad_attr = ctx.attr("pads"), ctx.attr("output_padding")
    output_shape = ctx.attr("output_shape")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"auto_pad {auto_pad!r} is not supported")

    def run(xs: list, tr: bool) -> Tensor:
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        nd = w.dim() - 2
        sizes, kernel = list(x.shape[2:]), list(w.shape[2:])
        s = list(strides) if strides else [1] * nd
        d = list(dilations) if dilations else [1] * nd
        op = list(out_pad_attr) if out_pad_attr else [0] * nd
        full = [(i - 1) * st + (k - 1) * dd + 1 for i, k, st, dd in zip(sizes, kernel, s, d)]
        target = None
        if output_shape:
            target = list(output_shape)[-nd:]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            target = [i * st for i, st in zip(sizes, s)]
        if target is not None:  # spec: total padding split by auto_pad (SAME_UPPER: extra at the end)
            total = [f + o - t for f, o, t in zip(full, op, target)]
            upper = auto_pad == "SAME_UPPER"
            begins = [t // 2 if upper else t - t // 2 for t in total]
            ends = [t - t // 2 if upper else t // 2 for t in total]
        elif pads_attr and auto_pad != "VALID":
            begins, ends = list(pads_attr[:nd]), list(pads_attr[nd:])
        else:
            begins, ends = [0] * nd, [0] * nd
        if begins == ends and all(o < max(st, dd) for o, st, dd in zip(op, s, d)) and min(begins) >= 0:
            return _CONV_T[nd](x, w, b, s, begins, op, group, d)
        # asymmetric padding: full transposed conv, then crop [begin, full + output_padding - end)
        y = _CONV_T[nd](x, w, None, s, 0, 0, group, d)
        stops = [f + o - e for f, o, e in zip(full, op, ends)]
        grow = [max(0, stop - f) for stop, f in zip(stops, full)]
        if any(grow):
            y = F.pad(y, _torch_pad_order([0] * nd, grow))
        y = y[(slice(None), slice(None)) + tuple(slice(bg, st) for bg, st in zip(begins, stops))]
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * nd)
        return y

    return run


# --------------------------------------------------------------------------------------------------
# normalization


@_op("BatchNormalization")
def _batch_norm(ctx: _Ctx) -> OpFn:
    eps = float(ctx.attr("epsilon", 1e-5))
    momentum = 1.0 - float(ctx.attr("momentum", 0.9))  # ONNX: running = running*m + batch*(1-m); torch: 1-m
    node_training = bool(ctx.attr("training_mode", 0)) if ctx.opset >= 14 else len(ctx.node.outputs) > 1
    extra = any(ctx.live_out[1:])
    onnx_momentum = float(ctx.attr("momentum", 0.9))
    update = ctx.stat_buffers  # never update computed statistics in place: other nodes may read them

    def run(xs: list, tr: bool):
        x, scale, bias, mean, var = xs[:5]
        if not (tr or node_training):
            return F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)
        # batch statistics; torch's train mode also updates the running buffers in place
        running = tr and update
        # statistics over the global batch when training in several processes (bridge.distributed)
        y = batch_norm_train(x, mean if running else None, var if running else None, scale, bias, momentum, eps,
                             across_ranks=tr)
        if not extra:
            return y
        dims = [0] + list(range(2, x.dim()))  # ONNX's training outputs: updated running stats (population var)
        with torch.no_grad():
            batch_mean, batch_var = x.mean(dims), x.var(dims, unbiased=False)
        return (y, mean * onnx_momentum + batch_mean * (1 - onnx_momentum),
                var * onnx_momentum + batch_var * (1 - onnx_momentum))

    return run


@_op("InstanceNormalization")
def _instance_norm(ctx: _Ctx) -> OpFn:
    eps = float(ctx.attr("epsilon", 1e-5))
    return lambda xs, tr: F.instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=eps)


@_op("LayerNormalization")
def _layer_norm(ctx: _Ctx) -> OpFn:
    axis, eps = int(ctx.attr("axis", -1)), float(ctx.attr("epsilon", 1e-5))
    extra = any(ctx.live_out[1:])

    def run(xs: list, tr: bool):
        x, scale = xs[0], xs[1]
        bias = xs[2] if len(xs) > 2 else None
        a = _axis(axis, x.dim())
        shape = tuple(x.shape[a:])
        if not extra:
            if scale.shape == shape and (bias is None or bias.shape == shape):
                return F.layer_norm(x, shape, scale, bias, eps)
            y = F.layer_norm(x, shape, None, None, eps) * scale
            return y + bias if bias is not None else y
        dims = tuple(range(a, x.dim()))
        mean = x.mean(dims, keepdim=True)
        inv_std = torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + eps)
        y = (x - mean) * inv_std * scale
        return (y + bias if bias is not None else y), mean, inv_std

    return run


@_op("GroupNormalization")
def _group_norm(ctx: _Ctx) -> OpFn:
    groups, eps = int(ctx.attr("num_groups")), float(ctx.attr("epsilon", 1e-5))

    def run(xs: list, tr: bool) -> Tensor:
        x, scale, bias = xs[0], xs[1], xs[2]
        channels = x.shape[1]
        if scale.numel() != channels:  # opset 18: one scale/bias per group
            scale = scale.repeat_interleave(channels // groups)
            bias = bias.repeat_interleave(channels // groups)
        return F.group_norm(x, groups, scale, bias, eps)

    return run


@_op("LRN")
def _lrn(ctx: _Ctx) -> OpFn:
    size = int(ctx.attr("size"))
    alpha, beta, bias = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75)), float(ctx.attr("bias", 1.0))
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2  # ONNX: floor before, ceil after

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        sq = x.square().reshape(x.shape[0], 1, x.shape[1], -1)
        sq = F.pad(sq, (0, 0, before, after))
        window_sum = F.avg_pool2d(sq, (size, 1), stride=1) * size
        return x / (bias + alpha / size * window_sum.reshape(x.shape)) ** beta

    return run


# --------------------------------------------------------------------------------------------------
# pooling


_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


@_op("MaxPool")
def _max_pool(ctx: _Ctx) -> OpFn:
    if len(ctx.live_out) > 1 and ctx.live_out[1]:
        raise ctx.error("MaxPool's Indices output is not supported")
    if int(ctx.attr("storage_order", 0)):
        raise ctx.error("MaxPool storage_order=1 is not supported")
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    nd = len(kernel)
    strides = [int(s) for s in ctx.attr("strides", [1] * nd)]
    dilations = [int(d) for d in ctx.attr("dilations", [1] * nd)]
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    pads_of = _window_pads(ctx)
    effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        pads = pads_of(x.shape[2:], kernel, strides, dilations)
        x, pad = _apply_pads(x, pads, float("-inf"), effective)
        return _MAX_POOL[nd](x, kernel, strides, pad, dilations, ceil_mode)

    return run


@_op("AveragePool")
def _avg_pool(ctx: _Ctx) -> OpFn:
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    nd = len(kernel)
    strides = [int(s) for s in ctx.attr("strides", [1] * nd)]
    if any(int(d) != 1 for d in ctx.attr("dilations", [1] * nd)):
        raise ctx.error("AveragePool with dilations is not supported")
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    include_pad = bool(ctx.attr("count_include_pad", 0))
    pads_of = _window_pads(ctx)
    ones = [1] * nd

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        pads = pads_of(x.shape[2:], kernel, strides, ones)
        padded, pad = _apply_pads(x, pads, 0.0, kernel)
        y = _AVG_POOL[nd](padded, kernel, strides, pad, ceil_mode, include_pad)
        if padded is x or include_pad:
            return y
        # explicit padding but padded cells must not count: divide by the average of a validity mask
        mask = F.pad(torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device),
                     _torch_pad_order(pads[:nd], pads[nd:]))
        return y / _AVG_POOL[nd](mask, kernel, strides, 0, ceil_mode, True)

    return run


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: _Ctx) -> OpFn:
    if ctx.node.op_type == "GlobalAveragePool":
        return lambda xs, tr: xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)
    return lambda xs, tr: xs[0].amax(dim=tuple(range(2, xs[0].dim())), keepdim=True)


# --------------------------------------------------------------------------------------------------
# reductions


_REDUCE: dict[str, Callable[[Tensor, tuple[int, ...], bool], Tensor]] = {
    "ReduceMean": lambda x, d, k: x.mean(d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(d, keepdim=k),
    "ReduceProd": lambda x, d, k: reduce(lambda t, a: t.prod(a, keepdim=True), d, x).squeeze(d) if not k
    else reduce(lambda t, a: t.prod(a, keepdim=True), d, x),
    "ReduceL1": lambda x, d, k: x.abs().sum(d, keepdim=k),
    "ReduceL2": lambda x, d, k: x.square().sum(d, keepdim=k).sqrt(),
    "ReduceSumSquare": lambda x, d, k: x.square().sum(d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: x.sum(d, keepdim=k).log(),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, d, keepdim=k),
}


@_op(*_REDUCE)
def _reduce(ctx: _Ctx) -> OpFn:
    fn = _REDUCE[ctx.node.op_type]
    keep = bool(ctx.attr("keepdims", 1))
    noop = bool(ctx.attr("noop_with_empty_axes", 0))
    axes_of = ctx.ints(1, attr="axes")

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        axes = axes_of(xs)
        if not axes:
            if noop:
                return x
            axes = range(x.dim())
        dims = tuple(sorted({_axis(a, x.dim()) for a in axes}))
        if not dims:
            return x
        return fn(x, dims, keep)

    return run


@_op("ArgMax", "ArgMin")
def _arg_reduce(ctx: _Ctx) -> OpFn:
    fn = torch.argmax if ctx.node.op_type == "ArgMax" else torch.argmin
    axis, keep = int(ctx.attr("axis", 0)), bool(ctx.attr("keepdims", 1))
    last = bool(ctx.attr("select_last_index", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = _axis(axis, x.dim())
        if not last:
            return fn(x, a, keepdim=keep)
        return x.shape[a] - 1 - fn(x.flip(a), a, keepdim=keep)

    return run


@_op("CumSum")
def _cumsum(ctx: _Ctx) -> OpFn:
    exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
    axis_of = ctx.ints(1)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = _axis(axis_of(xs)[0], x.dim())
        if reverse:
            x = x.flip(a)
        y = torch.cumsum(x, a)
        if exclusive:
            y = y - x
        return y.flip(a) if reverse else y

    return run


# --------------------------------------------------------------------------------------------------
# shape and data movement


@_op("Constant")
def _constant(ctx: _Ctx) -> OpFn:
    # lifted Constants are bound as buffers and never executed; reaching here means an unreadable value
    raise ctx.error("Constant without a readable value (sparse or string tensors are not supported)")


@_op("Shape")
def _shape(ctx: _Ctx) -> OpFn:
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")

    def run(xs: list, tr: bool) -> Tensor:
        dims = list(xs[0].shape)
        dims = dims[start:] if end is None else dims[start:int(end)]  # Python slicing clamps as ONNX does
        return torch.tensor(dims, dtype=torch.int64, device=xs[0].device)

    return run


@_op("Size")
def _size(ctx: _Ctx) -> OpFn:
    return lambda xs, tr: torch.tensor(xs[0].numel(), dtype=torch.int64, device=xs[0].device)


@_op("Reshape")
def _reshape(ctx: _Ctx) -> OpFn:
    allowzero = bool(ctx.attr("allowzero", 0))
    shape_of = ctx.ints(1, attr="shape")

    def run(xs: list, tr: bool) -> Tensor:
        x, shape = xs[0], shape_of(xs)
        if not allowzero:
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)

    return run


@_op("Flatten")
def _flatten(ctx: _Ctx) -> OpFn:
    axis = int(ctx.attr("axis", 1))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = _axis(axis, x.dim())
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))

    return run


@_op("Transpose")
def _transpose(ctx: _Ctx) -> OpFn:
    perm = ctx.attr("perm")
    if perm is None:
        return lambda xs, tr: xs[0].permute(tuple(reversed(range(xs[0].dim()))))
    perm = tuple(int(p) for p in perm)
    return lambda xs, tr: xs[0].permute(perm)


@_op("Squeeze")
def _squeeze(ctx: _Ctx) -> OpFn:
    axes_of = ctx.ints(1, attr="axes")

    def run(xs: list, tr: bool) -> Tensor:
        x, axes = xs[0], axes_of(xs)
        if axes is None:
            return x.squeeze()
        return x.squeeze(tuple(_axis(a, x.dim()) for a in axes)) if axes else x

    return run


@_op("Unsqueeze")
def _unsqueeze(ctx: _Ctx) -> OpFn:
    axes_of = ctx.ints(1, attr="axes")

    def run(xs: list, tr: bool) -> Tensor:
        x, axes = xs[0], axes_of(xs)
        rank = x.dim() + len(axes)
        shape = list(x.shape)
        for a in sorted(_axis(a, rank) for a in axes):
            shape.insert(a, 1)
        return x.reshape(shape)

    return run


@_op("Concat")
def _concat(ctx: _Ctx) -> OpFn:
    axis = int(ctx.attr("axis"))
    return lambda xs, tr: torch.cat([x for x in xs if x is not None], dim=axis)


@_op("Split")
def _split(ctx: _Ctx) -> OpFn:
    axis = int(ctx.attr("axis", 0))
    sizes_of = ctx.ints(1, attr="split")
    num_outputs = ctx.attr("num_outputs")
    n = len(ctx.node.outputs)

    def run(xs: list, tr: bool):
        x = xs[0]
        a = _axis(axis, x.dim())
        sizes = sizes_of(xs)
        if not sizes:
            dim = x.shape[a]
            chunk = -(-dim // n) if num_outputs is not None else dim // n  # opset 18: last chunk smaller
            sizes = [min(chunk, dim - i * chunk) for i in range(n)]
        return tuple(torch.split(x, sizes, dim=a))

    return run


@_op("Slice")
def _slice(ctx: _Ctx) -> OpFn:
    if ctx.opset < 10:
        starts_of, ends_of = ctx.ints(99, attr="starts"), ctx.ints(99, attr="ends")
        axes_of, steps_of = ctx.ints(99, attr="axes"), (lambda xs: None)
    else:
        starts_of, ends_of, axes_of, steps_of = ctx.ints(1), ctx.ints(2), ctx.ints(3), ctx.ints(4)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        starts, ends = starts_of(xs), ends_of(xs)
        axes = axes_of(xs) or list(range(len(starts)))
        steps = steps_of(xs) or [1] * len(starts)
        index: list[slice] = [slice(None)] * x.dim()
        backwards = []
        for start, end, axis, step in zip(starts, ends, axes, steps):
            a = _axis(axis, x.dim())
            dim = x.shape[a]
            start = start + dim if start < 0 else start
            end = end + dim if end < 0 else end
            if step > 0:
                index[a] = slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
            else:  # clamps for negative steps: start in [0, dim-1], end in [-1, dim-1]
                backwards.append((a, min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step))
        y = x[tuple(index)]
        for a, start, end, step in backwards:
            y = y.index_select(a, torch.arange(start, end, step, device=y.device))
        return y

    return run


@_op("Gather")
def _gather(ctx: _Ctx) -> OpFn:
    axis = int(ctx.attr("axis", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x, idx = xs[0], xs[1].long()
        a = _axis(axis, x.dim())
        idx = torch.where(idx < 0, idx + x.shape[a], idx)
        out = x.index_select(a, idx.reshape(-1))
        return out.reshape(tuple(x.shape[:a]) + tuple(idx.shape) + tuple(x.shape[a + 1:]))

    return run


@_op("GatherElements")
def _gather_elements(ctx: _Ctx) -> OpFn:
    axis = int(ctx.attr("axis", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x, idx = xs[0], xs[1].long()
        a = _axis(axis, x.dim())
        return torch.gather(x, a, torch.where(idx < 0, idx + x.shape[a], idx))

    return run


@_op("ConstantOfShape")
def _constant_of_shape(ctx: _Ctx) -> OpFn:
    value = ctx.attr("value")
    arr = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    fill = arr[0].item()
    dtype = torch.from_numpy(arr[:1].copy()).dtype
    shape_of = ctx.ints(0)
    return lambda xs, tr: torch.full(shape_of(xs), fill, dtype=dtype, device=xs[0].device)


@_op("Expand")
def _expand(ctx: _Ctx) -> OpFn:
    shape_of = ctx.ints(1)
    return lambda xs, tr: xs[0].expand(torch.broadcast_shapes(tuple(xs[0].shape), tuple(shape_of(xs))))


@_op("Tile")
def _tile(ctx: _Ctx) -> OpFn:
    repeats_of = ctx.ints(1)
    return lambda xs, tr: xs[0].repeat(repeats_of(xs))


@_op("Range")
def _range(ctx: _Ctx) -> OpFn:
    def run(xs: list, tr: bool) -> Tensor:
        start, limit, delta = xs[0], xs[1], xs[2]
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)

    return run


@_op("Trilu")
def _trilu(ctx: _Ctx) -> OpFn:
    upper = bool(ctx.attr("upper", 1))
    k_of = ctx.scalar(1)

    def run(xs: list, tr: bool) -> Tensor:
        k = k_of(xs)
        k = 0 if k is None else int(k)
        return torch.triu(xs[0], k) if upper else torch.tril(xs[0], k)

    return run


@_op("NonZero")
def _nonzero(ctx: _Ctx) -> OpFn:
    return lambda xs, tr: torch.nonzero(xs[0]).t().contiguous()


@_op("DepthToSpace")
def _depth_to_space(ctx: _Ctx) -> OpFn:
    bs, mode = int(ctx.attr("blocksize")), ctx.attr("mode", "DCR")

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        n, c, h, w = x.shape
        if mode == "DCR":
            y = x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            y = x.reshape(n, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3)
        return y.reshape(n, c // (bs * bs), h * bs, w * bs)

    return run


@_op("SpaceToDepth")
def _space_to_depth(ctx: _Ctx) -> OpFn:
    bs = int(ctx.attr("blocksize"))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * bs * bs, h // bs, w // bs)

    return run


@_op("Pad")
def _pad(ctx: _Ctx) -> OpFn:
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ctx.error(f"Pad mode {mode!r} is not supported")
    if ctx.opset < 11:
        value_attr = float(ctx.attr("value", 0.0))
        pads_of, value_of, axes_of = ctx.ints(99, attr="pads"), (lambda xs: value_attr), (lambda xs: None)
    else:
        pads_of, value_of, axes_of = ctx.ints(1), ctx.scalar(2), ctx.ints(3)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        pads = pads_of(xs)
        axes = axes_of(xs)
        rank = x.dim()
        axes = list(range(rank)) if axes is None else [_axis(a, rank) for a in axes]
        n = len(axes)
        begins, ends = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begins[a], ends[a] = pads[i], pads[n + i]
        if mode == "constant":
            value = value_of(xs)
            value = 0 if value is None else (value.item() if isinstance(value, Tensor) else value)
            order = _torch_pad_order(begins, ends)
            while order and order[-1] == 0 and order[-2] == 0:  # drop untouched leading axes
                order = order[:-2]
            return F.pad(x, order, value=value) if order else x
        # reflect / edge / wrap on any axis (and negative pads): one gather per padded axis
        for a in range(rank):
            if begins[a] == 0 and ends[a] == 0:
                continue
            dim = x.shape[a]
            idx = torch.arange(-begins[a], dim + ends[a], device=x.device)
            if mode == "edge":
                idx = idx.clamp(0, dim - 1)
            elif mode == "wrap":
                idx = idx.remainder(dim)
            else:
                period = max(2 * (dim - 1), 1)
                idx = idx.abs().remainder(period)
                idx = torch.where(idx >= dim, period - idx, idx)
            x = x.index_select(a, idx)
        return x

    return run


# --------------------------------------------------------------------------------------------------
# resize


def _source_coords(ctm: str, out_size: int, in_size: int, scale: float, device: torch.device,
                   roi: tuple[float, float] | None) -> Tensor:
    """Input coordinate of every output index (ONNX Resize coordinate_transformation_mode), in float64."""
    x = torch.arange(out_size, dtype=torch.float64, device=device)
    if ctm == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        offset = in_size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(x)
    if ctm == "align_corners":
        return x * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(x)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if ctm == "tf_crop_and_resize":
        start, end = roi
        if out_size > 1:
            return start * (in_size - 1) + x * ((end - start) * (in_size - 1) / (out_size - 1))
        return torch.full_like(x, 0.5 * (start + end) * (in_size - 1))
    raise ValueError(ctm)


def _along(weights: Tensor, axis: int, rank: int, dtype: torch.dtype) -> Tensor:
    shape = [1] * rank
    shape[axis] = -1
    return weights.to(dtype).reshape(shape)


def _resize_axis(x: Tensor, axis: int, out_size: int, scale: float, cfg: dict,
                 roi: tuple[float, float] | None) -> Tensor:
    in_size = x.shape[axis]
    coords = _source_coords(cfg["ctm"], out_size, in_size, scale, x.device, roi)
    mode = cfg["mode"]
    outside = None
    if cfg["ctm"] == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_size - 1)
    if mode == "nearest":
        nearest = cfg["nearest_mode"]
        fl = torch.floor(coords)
        if nearest == "floor":
            idx = fl
        elif nearest == "ceil":
            idx = torch.ceil(coords)
        elif nearest == "round_prefer_ceil":
            idx = torch.where(coords - fl == 0.5, fl + 1, torch.round(coords))
        else:  # round_prefer_floor
            idx = torch.where(coords - fl == 0.5, fl, torch.round(coords))
        y = x.index_select(axis, idx.clamp(0, in_size - 1).long())
    elif mode == "linear":
        if outside is None:
            coords = coords.clamp(0, in_size - 1)
        c = coords.clamp(0, in_size - 1)
        lo = torch.floor(c).long()
        hi = (lo + 1).clamp(max=in_size - 1)
        w_hi = _along(c - lo, axis, x.dim(), x.dtype)
        y = x.index_select(axis, lo) * (1 - w_hi) + x.index_select(axis, hi) * w_hi
    else:  # cubic (Keys kernel with coefficient a)
        a = cfg["cubic_a"]
        fl = torch.floor(coords)
        t = coords - fl
        taps = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                ((a + 2) * t - (a + 3)) * t * t + 1,
                ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
        positions = [fl.long() + k for k in (-1, 0, 1, 2)]
        if cfg["exclude_outside"]:
            taps = [w * ((p >= 0) & (p < in_size)) for w, p in zip(taps, positions)]
            total = sum(taps)
            taps = [w / total for w in taps]
        y = sum(x.index_select(axis, p.clamp(0, in_size - 1)) * _along(w, axis, x.dim(), x.dtype)
                for w, p in zip(taps, positions))
    if outside is not None and bool(outside.any()):
        y = torch.where(_along(outside, axis, x.dim(), torch.bool), torch.full_like(y, cfg["extrapolation"]), y)
    return y


def _resize_builder(ctx: _Ctx, *, upsample: bool) -> OpFn:
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic", "bilinear", "trilinear"):
        raise ctx.error(f"Resize mode {mode!r} is not supported")
    mode = "linear" if mode in ("bilinear", "trilinear") else mode
    legacy = upsample or ctx.opset < 11  # Upsample / Resize-10: asymmetric, nearest rounds down
    cfg = {
        "mode": mode,
        "ctm": "asymmetric" if legacy else ctx.attr("coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": "floor" if legacy else ctx.attr("nearest_mode", "round_prefer_floor"),
        "cubic_a": float(ctx.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(ctx.attr("exclude_outside", 0)),
        "extrapolation": float(ctx.attr("extrapolation_value", 0.0)),
    }
    known = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
             "tf_half_pixel_for_nn", "tf_crop_and_resize"}
    if cfg["ctm"] not in known:
        raise ctx.error(f"coordinate_transformation_mode {cfg['ctm']!r} is not supported")
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    axes_attr = ctx.attr("axes")
    if legacy:
        scales_index, sizes_index, roi_index = 1, 99, 99
        attr_scales = ctx.attr("scales")
    else:
        scales_index, sizes_index, roi_index = 2, 3, 1
        attr_scales = None
    scales_const = ctx.const(scales_index) if attr_scales is None else np.asarray(attr_scales, np.float32)
    if int(ctx.attr("antialias", 0)):
        if scales_const is None or np.any(np.asarray(scales_const) < 1):
            raise ctx.error("Resize with antialias=1 when downsampling is not supported")

    def floats(xs: list, index: int) -> list[float] | None:
        if index == scales_index and scales_const is not None:
            arr = np.asarray(scales_const).reshape(-1)
        elif index >= len(xs) or xs[index] is None:
            return None
        else:
            arr = xs[index].detach().cpu().numpy().reshape(-1)
        return [float(v) for v in arr] if arr.size else None

    sizes_of = ctx.ints(sizes_index)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        rank = x.dim()
        axes = list(range(rank)) if axes_attr is None else [_axis(int(a), rank) for a in axes_attr]
        in_sizes = [x.shape[a] for a in axes]
        sizes = sizes_of(xs) if sizes_index < 99 else None
        sizes = sizes if sizes else None
        if sizes is not None:
            scales = [o / i for o, i in zip(sizes, in_sizes)]
            if policy != "stretch":
                pick = min if policy == "not_larger" else max
                s = pick(scales)
                scales = [s] * len(axes)
                sizes = [int(math.floor(s * i + 0.5)) for i in in_sizes]  # round half up, as onnxruntime
        else:
            scales = floats(xs, scales_index)
            if scales is None:
                raise AsgnasError("Resize needs scales or sizes")
            # output size = floor(in * scale), evaluated in float32 as onnxruntime does
            sizes = [int(np.float32(i) * np.float32(s)) for i, s in zip(in_sizes, scales)]
        roi = floats(xs, roi_index) if cfg["ctm"] == "tf_crop_and_resize" else None
        y = x
        for k, a in enumerate(axes):
            if sizes[k] == in_sizes[k] and scales[k] == 1.0 and cfg["ctm"] != "tf_crop_and_resize":
                continue  # identity along this axis
            axis_roi = (roi[k], roi[k + len(axes)]) if roi else None
            y = _resize_axis(y, a, sizes[k], scales[k], cfg, axis_roi)
        return y

    return run


_BUILDERS["Resize"] = lambda ctx: _resize_builder(ctx, upsample=False)
_BUILDERS["Upsample"] = lambda ctx: _resize_builder(ctx, upsample=True)


# --------------------------------------------------------------------------------------------------
# the module


def _is_float(value: Value) -> bool:
    return value.const is not None and value.const.dtype in _FLOAT_TYPES


def _read_as_data(value: Value, depth: int = 0) -> bool:
    """Some node reads ``value`` (directly or through Identity) at a data slot, not a configuration slot."""
    for node, index in value.uses:
        if node.op_type == "Identity" and depth < 16:
            if any(_read_as_data(out, depth + 1) for out in node.outputs):
                return True
        elif index not in _CONFIG_SLOTS.get(node.op_type, ()):
            return True
    return False


def default_trainable(value: Value) -> bool:
    """A float initializer of rank >= 1 read as data by some node (not only as a scale/pad/clip setting or a
    BN running statistic, also through Identity aliases)."""
    if not value.is_initializer or not _is_float(value) or len(value.const.shape) == 0:
        return False
    return _read_as_data(value)


_NAME_CHARS = re.compile(r"[^0-9A-Za-z_]")


def _unique_key(container: nn.Module, name: str, taken: set[str]) -> str:
    key = _NAME_CHARS.sub("_", name) or "t"
    if key[0].isdigit():
        key = "_" + key
    base, i = key, 0
    while key in taken or hasattr(container, key):
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _to_tensor(array: np.ndarray) -> Tensor:
    array = np.asarray(array)
    if array.dtype == np.bool_ or array.dtype.kind in "iufc":
        return torch.from_numpy(np.array(array, copy=True))
    raise TypeError(f"constant of numpy dtype {array.dtype} cannot become a torch tensor")


class _BnStat:
    """Where one BatchNormalization running statistic lives and how ``write_back`` returns it."""

    __slots__ = ("node", "slot", "key", "initializer", "original")

    def __init__(self, node: str, slot: int, key: str, initializer: str | None, original: np.ndarray | None):
        self.node = node
        self.slot = slot
        self.key = key
        self.initializer = initializer  # the BN's own initializer, or None for a private copy
        self.original = original  # value at construction (private copies are only written back when changed)


class OnnxModule(nn.Module):
    """Run ``model``'s graph in torch; float initializers are ``nn.Parameter``s.

    ``trainable(value)`` picks which float initializers become parameters (default: ``default_trainable``);
    the others are frozen buffers. Running statistics of BatchNormalization are buffers in ``stats``; when a
    statistic is not a BN-exclusive initializer (an ``Identity`` alias of another tensor, a tensor shared with
    another node) the node gets a private copy, so training never writes through an alias.

    ``forward(*inputs, **named_inputs)`` takes the graph inputs in order (or by name; numpy arrays are accepted)
    and returns one tensor, or a tuple for several graph outputs. ``outputs`` names the values to return
    instead of the graph outputs (e.g. the logits a trailing Softmax reads); the graph is not changed.
    """

    def __init__(self, model: Model, trainable: Callable[[Value], bool] | None = None,
                 outputs: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        graph = model.graph
        trainable = trainable or default_trainable
        self.params = nn.Module()
        self.stats = nn.Module()
        self.consts = nn.Module()
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = list(outputs) if outputs else [v.name for v in graph.outputs]
        for name in self.output_names:
            if name not in graph.values:
                raise AsgnasError(f"no value {name!r} to return", file=model.source)

        live = graph.live_nodes()
        order = [n for n in graph.toposort() if n in live]
        executed = [n for n in order if not (n.op_type == "Constant" and n.outputs[0].const is not None)]
        missing = [n for n in executed if n.domain not in ("", "ai.onnx") or n.op_type not in _BUILDERS]
        if missing:
            node = missing[0]
            where = f"domain {node.domain!r} " if node.domain not in ("", "ai.onnx") else ""
            raise AsgnasError(
                f"operator {where}{node.op_type} is not supported by the torch executor "
                f"({len(missing)} unsupported node(s))",
                file=model.source, node=node.name, op=node.op_type,
            )

        # values every executed node (or a graph output) reads
        read: dict[str, Value] = {}
        for node in executed:
            for v in node.inputs:
                if v is not None:
                    read.setdefault(v.name, v)
        for name in self.output_names:
            read.setdefault(name, graph.values[name])

        # BN running statistics: exclusive initializers are updated in place, everything else gets a copy
        bn_stat_inputs: dict[tuple[str, int], str] = {}  # (node, slot) -> env name it reads
        self._stats: list[_BnStat] = []
        stat_keys: set[str] = set()
        bound: dict[str, tuple[str, str]] = {}  # env name -> (container, key)
        for node in executed:
            if node.op_type != "BatchNormalization":
                continue
            for slot in _BN_STAT_SLOTS:
                v = node.inputs[slot] if slot < len(node.inputs) else None
                if v is None:
                    continue
                exclusive = v.is_initializer and all(u is node and i == slot for u, i in v.uses)
                if exclusive and not graph.is_output(v):
                    key = _unique_key(self.stats, v.name, stat_keys)
                    self.stats.register_buffer(key, _to_tensor(v.const.array))
                    bound[v.name] = ("stats", key)
                    self._stats.append(_BnStat(node.name, slot, key, v.name, None))
                    continue
                source = _constant_source(v)
                if source is None:
                    continue  # computed statistics: read at run time, never updated
                key = _unique_key(self.stats, f"{node.name}_{'running_mean' if slot == 3 else 'running_var'}",
                                  stat_keys)
                self.stats.register_buffer(key, _to_tensor(source))
                env_name = f"\x00{key}"
                bound[env_name] = ("stats", key)
                bn_stat_inputs[(node.name, slot)] = env_name
                self._stats.append(_BnStat(node.name, slot, key, None, np.array(source, copy=True)))

        # parameters and constants
        self._param_keys: dict[str, str] = {}  # initializer -> key in self.params
        param_keys: set[str] = set()
        const_keys: set[str] = set()
        frozen_arrays: dict[str, np.ndarray] = {}
        for name, v in read.items():
            if name in bound or v.const is None:
                continue
            if v.is_initializer and _is_float(v) and trainable(v):
                key = _unique_key(self.params, name, param_keys)
                self.params.register_parameter(key, nn.Parameter(_to_tensor(v.const.array)))
                self._param_keys[name] = key
                bound[name] = ("params", key)
            else:
                key = _unique_key(self.consts, name, const_keys)
                self.consts.register_buffer(key, _to_tensor(v.const.array), persistent=False)
                bound[name] = ("consts", key)
                frozen_arrays[name] = v.const.array
        self._bound = list(bound.items())

        def frozen(value: Value) -> np.ndarray | None:
            return frozen_arrays.get(value.name)

        # compile the steps
        graph_outputs = set(self.output_names)
        readers: dict[str, int] = {}
        for position, node in enumerate(executed):
            for v in node.inputs:
                if v is not None:
                    readers[v.name] = position
        self._steps: list[tuple[OpFn, list[str | None], list[str], list[str]]] = []
        for position, node in enumerate(executed):
            live_out = [bool(v.uses) and any(u in live for u, _ in v.uses) or v.name in graph_outputs
                        for v in node.outputs]
            stat_buffers = node.op_type == "BatchNormalization" and all(
                bound.get(bn_stat_inputs.get((node.name, slot), ""), ("",))[0] == "stats"
                or bound.get(node.inputs[slot].name, ("",))[0] == "stats"
                for slot in _BN_STAT_SLOTS)
            ctx = _Ctx(node, model.opset, frozen, live_out, stat_buffers)
            try:
                fn = _BUILDERS[node.op_type](ctx)
            except AsgnasError as err:
                raise err.with_context(file=model.source, node=node.name, op=node.op_type) from None
            except Exception as err:  # a malformed attribute: name the node
                raise AsgnasError(f"cannot compile node: {err}", file=model.source, node=node.name,
                                  op=node.op_type) from None
            inputs = []
            for slot, v in enumerate(node.inputs):
                if v is None:
                    inputs.append(None)
                else:
                    inputs.append(bn_stat_inputs.get((node.name, slot), v.name))
            while inputs and inputs[-1] is None:
                inputs.pop()
            free = sorted({v.name for v in node.inputs if v is not None and readers.get(v.name) == position
                           and v.name not in graph_outputs and v.name not in bound})
            self._steps.append((fn, inputs, [v.name for v in node.outputs], free))

        # every value read must come from somewhere: a dangling name fails now, not at the first forward
        available = set(bound) | set(self.input_names) | {v.name for n in executed for v in n.outputs}
        for node in executed:
            for v in node.inputs:
                if v is not None and v.name not in available:
                    raise AsgnasError(f"input {v.name!r} has no producer, initializer or graph input",
                                      file=model.source, node=node.name, op=node.op_type)
        for name in self.output_names:
            if name not in available:
                raise AsgnasError(f"graph output {name!r} has no producer", file=model.source)

    def extra_repr(self) -> str:
        return (f"nodes={len(self._steps)}, params={len(self._param_keys)}, bn_stats={len(self._stats)}, "
                f"inputs={self.input_names}, outputs={self.output_names}")

    # --- maps -------------------------------------------------------------------------------------
    @property
    def param_for_initializer(self) -> dict[str, nn.Parameter]:
        """Initializer name -> its ``nn.Parameter`` (the objects the optimizer sees)."""
        params = self.params._parameters
        return {init: params[key] for init, key in self._param_keys.items()}

    @property
    def stat_for_initializer(self) -> dict[str, Tensor]:
        """BN running-statistic initializer -> its buffer (statistics held as private copies are not listed)."""
        buffers = self.stats._buffers
        return {s.initializer: buffers[s.key] for s in self._stats if s.initializer is not None}

    @property
    def initializer_for_param(self) -> dict[str, str]:
        """Qualified parameter name (as in ``named_parameters()``) -> initializer name."""
        return {f"params.{key}": init for init, key in self._param_keys.items()}

    def initializer_of(self, param: Tensor) -> str:
        """The initializer a parameter came from (by identity)."""
        for init, p in self.param_for_initializer.items():
            if p is param:
                return init
        raise KeyError("not a parameter of this OnnxModule")

    # --- execution --------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        if len(args) > len(self.input_names):
            raise AsgnasError(f"model has {len(self.input_names)} inputs, got {len(args)}")
        env: dict[str, Any] = {}
        containers = {"params": self.params._parameters, "stats": self.stats._buffers,
                      "consts": self.consts._buffers}
        for name, (container, key) in self._bound:
            env[name] = containers[container][key]
        for name, value in zip(self.input_names, args):
            env[name] = value
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise AsgnasError(f"unknown input {name!r}; inputs are {self.input_names}")
            env[name] = value
        for name in self.input_names:
            if name not in env:
                raise AsgnasError(f"missing input {name!r}")
            if isinstance(env[name], np.ndarray):
                env[name] = torch.from_numpy(env[name])
        training = self.training
        for fn, inputs, outputs, free in self._steps:
            result = fn([None if n is None else env[n] for n in inputs], training)
            if isinstance(result, Tensor):
                env[outputs[0]] = result
            else:
                for name, tensor in zip(outputs, result):
                    env[name] = tensor
            for name in free:
                del env[name]
        results = tuple(env[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    # --- back to the IR ---------------------------------------------------------------------------
    @torch.no_grad()
    def write_back(self, model: Model | None = None) -> Model:
        """Copy trained parameters and BN running statistics into ``model``'s initializers (default: the model
        this module was built from) and return it.

        A BN statistic that was a private copy (an alias of another tensor) and changed gets an initializer of
        its own in the graph, replacing the alias, so the saved model carries what was learnt.
        """
        model = model if model is not None else self.model
        graph = model.graph
        values = graph.values

        def put(init: str, tensor: Tensor) -> None:
            v = values.get(init)
            if v is None or not v.is_initializer:
                raise AsgnasError(f"write_back: model has no initializer {init!r}", file=model.source)
            if tuple(v.const.shape) != tuple(tensor.shape):
                raise AsgnasError(f"write_back: initializer {init!r} has shape {v.const.shape}, "
                                  f"the module {tuple(tensor.shape)}", file=model.source)
            dtype = helper.tensor_dtype_to_np_dtype(v.const.dtype)
            v.const.array = tensor.detach().cpu().numpy().astype(dtype, copy=True)

        for init, param in self.param_for_initializer.items():
            put(init, param)
        nodes = {n.name: n for n in graph} if any(s.initializer is None for s in self._stats) else {}
        for stat in self._stats:
            tensor = self.stats._buffers[stat.key]
            if stat.initializer is not None:
                put(stat.initializer, tensor)
                continue
            array = tensor.detach().cpu().numpy()
            if np.array_equal(array, stat.original):
                continue
            node = nodes.get(stat.node)
            if node is None:
                raise AsgnasError(f"write_back: model has no node {stat.node!r}", file=model.source)
            current = node.inputs[stat.slot]
            dtype = helper.tensor_dtype_to_np_dtype(current.dtype or TensorProto.FLOAT)
            array = array.astype(dtype)
            if (current.is_initializer and not graph.is_output(current)
                    and all(u is node and i == stat.slot for u, i in current.uses)):
                current.const.array = array  # already its own (an earlier write_back untied it)
            elif (current.producer is not None and current.producer.op_type == "Identity"
                    and len(current.uses) == 1 and not graph.is_output(current)):
                materialize(graph, current, array)  # the alias becomes the BN's own initializer
            else:
                suffix = "running_mean" if stat.slot == 3 else "running_var"
                fresh = graph.add_initializer(f"{node.name}.{suffix}", array)
                node.set_input(stat.slot, fresh)
        return model


def _constant_source(value: Value) -> np.ndarray | None:
    """The constant behind ``value``, looking through Identity chains."""
    while value.const is None and value.producer is not None and value.producer.op_type == "Identity":
        value = value.producer.inputs[0]
    return None if value.const is None else value.const.array
