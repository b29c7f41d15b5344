"""Elementwise, activation, softmax, cast and dropout builders."""

from __future__ import annotations

import math
from functools import reduce
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import BUILDERS, BuildContext, OpFn, TORCH_DTYPES, positive_axis, register


# --------------------------------------------------------------------------------------------------
# elementwise


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[[BuildContext], OpFn]:
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
    BUILDERS[_name] = _unary(_fn)


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
    BUILDERS[_name] = (lambda f: lambda ctx: (lambda xs, tr: f(xs[0], xs[1])))(_fn)


@register("Mod")
def _mod(ctx: BuildContext) -> OpFn:
    fmod = ctx.attr("fmod", 0)
    return lambda xs, tr: torch.fmod(xs[0], xs[1]) if fmod else torch.remainder(xs[0], xs[1])


@register("Shrink")
def _shrink(ctx: BuildContext) -> OpFn:
    bias, lambd = float(ctx.attr("bias", 0.0)), float(ctx.attr("lambd", 0.5))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))

    return run


@register("IsInf")
def _is_inf(ctx: BuildContext) -> OpFn:
    negative, positive = bool(ctx.attr("detect_negative", 1)), bool(ctx.attr("detect_positive", 1))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        if negative and positive:
            return torch.isinf(x)
        if negative:
            return torch.isneginf(x)
        return torch.isposinf(x) if positive else torch.zeros_like(x, dtype=torch.bool)

    return run


@register("Sum", "Max", "Min", "Mean")
def _variadic(ctx: BuildContext) -> OpFn:
    fn = {"Sum": torch.add, "Mean": torch.add, "Max": torch.maximum, "Min": torch.minimum}[ctx.node.op_type]
    mean = ctx.node.op_type == "Mean"

    def run(xs: list, tr: bool) -> Tensor:
        out = reduce(fn, [x for x in xs if x is not None])
        return out / len(xs) if mean else out

    return run


@register("Where")
def _where(ctx: BuildContext) -> OpFn:
    return lambda xs, tr: torch.where(xs[0], xs[1], xs[2])


@register("LeakyRelu")
def _leaky_relu(ctx: BuildContext) -> OpFn:
    alpha = float(ctx.attr("alpha", 0.01))
    return lambda xs, tr: F.leaky_relu(xs[0], alpha)


@register("Elu")
def _elu(ctx: BuildContext) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: F.elu(xs[0], alpha)


@register("Celu")
def _celu(ctx: BuildContext) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: F.celu(xs[0], alpha)


@register("Selu")
def _selu(ctx: BuildContext) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return lambda xs, tr: gamma * torch.where(xs[0] > 0, xs[0], alpha * torch.expm1(xs[0]))


@register("ThresholdedRelu")
def _thresholded_relu(ctx: BuildContext) -> OpFn:
    alpha = float(ctx.attr("alpha", 1.0))
    return lambda xs, tr: torch.where(xs[0] > alpha, xs[0], torch.zeros_like(xs[0]))


@register("PRelu")
def _prelu(ctx: BuildContext) -> OpFn:
    # ONNX slopes broadcast unidirectionally (e.g. shape (C, 1, 1)); F.prelu wants a 1-D weight.
    return lambda xs, tr: torch.where(xs[0] >= 0, xs[0], xs[0] * xs[1])


@register("HardSigmoid")
def _hard_sigmoid(ctx: BuildContext) -> OpFn:
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    return lambda xs, tr: torch.clamp(xs[0] * alpha + beta, 0.0, 1.0)


@register("Gelu")
def _gelu(ctx: BuildContext) -> OpFn:
    approximate = ctx.attr("approximate", "none")
    return lambda xs, tr: F.gelu(xs[0], approximate=approximate)


@register("Clip")
def _clip(ctx: BuildContext) -> OpFn:
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


def _hardmax(x: Tensor, dim: int) -> Tensor:
    """1 at the first maximum along ``dim``, 0 elsewhere (torch's argmax also picks the first)."""
    return torch.zeros_like(x).scatter_(dim, x.argmax(dim=dim, keepdim=True), 1)


@register("Softmax", "LogSoftmax", "Hardmax")
def _softmax(ctx: BuildContext) -> OpFn:
    fn = {"Softmax": F.softmax, "LogSoftmax": F.log_softmax, "Hardmax": _hardmax}[ctx.node.op_type]
    if ctx.opset >= 13:
        axis = int(ctx.attr("axis", -1))
        return lambda xs, tr: fn(xs[0], dim=axis)
    axis = int(ctx.attr("axis", 1))

    def coerced(xs: list, tr: bool) -> Tensor:  # opset < 13: over the 2-D coercion [prod(:axis), prod(axis:)]
        x = xs[0]
        a = positive_axis(axis, x.dim())
        return fn(x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:])), dim=1).reshape(x.shape)

    return coerced


@register("Cast")
def _cast(ctx: BuildContext) -> OpFn:
    to = int(ctx.attr("to"))
    if to not in TORCH_DTYPES:
        raise ctx.error(f"Cast to ONNX type {to} is not supported in torch")
    dtype = TORCH_DTYPES[to]
    return lambda xs, tr: xs[0].to(dtype)


@register("CastLike")
def _cast_like(ctx: BuildContext) -> OpFn:
    return lambda xs, tr: xs[0].to(xs[1].dtype)


@register("Dropout")
def _dropout(ctx: BuildContext) -> OpFn:
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
