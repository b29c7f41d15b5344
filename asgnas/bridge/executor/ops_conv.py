"""Convolution, normalization and pooling builders."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from asgnas.bridge.distributed import batch_norm_train

from .registry import BuildContext, OpFn, positive_axis, register, torch_pad_order


# --------------------------------------------------------------------------------------------------
# convolution


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


def _window_pads(ctx: BuildContext
                 ) -> Callable[[Sequence[int], Sequence[int], Sequence[int], Sequence[int]], list[int]]:
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
    return F.pad(x, torch_pad_order(begins, ends), value=value), [0] * nd


@register("Conv")
def _conv(ctx: BuildContext) -> OpFn:
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


@register("ConvTranspose")
def _conv_transpose(ctx: BuildContext) -> OpFn:
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
            y = F.pad(y, torch_pad_order([0] * nd, grow))
        y = y[(slice(None), slice(None)) + tuple(slice(bg, st) for bg, st in zip(begins, stops))]
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * nd)
        return y

    return run


# --------------------------------------------------------------------------------------------------
# normalization


@register("BatchNormalization")
def _batch_norm(ctx: BuildContext) -> OpFn:
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


@register("InstanceNormalization")
def _instance_norm(ctx: BuildContext) -> OpFn:
    eps = float(ctx.attr("epsilon", 1e-5))
    return lambda xs, tr: F.instance_norm(xs[0], weight=xs[1], bias=xs[2], eps=eps)


@register("LayerNormalization")
def _layer_norm(ctx: BuildContext) -> OpFn:
    axis, eps = int(ctx.attr("axis", -1)), float(ctx.attr("epsilon", 1e-5))
    extra = any(ctx.live_out[1:])

    def run(xs: list, tr: bool):
        x, scale = xs[0], xs[1]
        bias = xs[2] if len(xs) > 2 else None
        a = positive_axis(axis, x.dim())
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


@register("GroupNormalization")
def _group_norm(ctx: BuildContext) -> OpFn:
    groups, eps = int(ctx.attr("num_groups")), float(ctx.attr("epsilon", 1e-5))

    def run(xs: list, tr: bool) -> Tensor:
        x, scale, bias = xs[0], xs[1], xs[2]
        channels = x.shape[1]
        if scale.numel() != channels:  # opset 18: one scale/bias per group
            scale = scale.repeat_interleave(channels // groups)
            bias = bias.repeat_interleave(channels // groups)
        return F.group_norm(x, groups, scale, bias, eps)

    return run


@register("RMSNormalization")
def _rms_norm(ctx: BuildContext) -> OpFn:
    axis, eps = int(ctx.attr("axis", -1)), float(ctx.attr("epsilon", 1e-5))

    def run(xs: list, tr: bool) -> Tensor:
        x, scale = xs[0], xs[1]
        dims = tuple(range(positive_axis(axis, x.dim()), x.dim()))
        return x * torch.rsqrt(x.square().mean(dims, keepdim=True) + eps) * scale

    return run


@register("LRN")
def _lrn(ctx: BuildContext) -> OpFn:
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


@register("MaxPool")
def _max_pool(ctx: BuildContext) -> OpFn:
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


@register("AveragePool")
def _avg_pool(ctx: BuildContext) -> OpFn:
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
                     torch_pad_order(pads[:nd], pads[nd:]))
        return y / _AVG_POOL[nd](mask, kernel, strides, 0, ceil_mode, True)

    return run


@register("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: BuildContext) -> OpFn:
    if ctx.node.op_type == "GlobalAveragePool":
        return lambda xs, tr: xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)
    return lambda xs, tr: xs[0].amax(dim=tuple(range(2, xs[0].dim())), keepdim=True)


@register("LpPool")
def _lp_pool(ctx: BuildContext) -> OpFn:
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    nd = len(kernel)
    strides = [int(s) for s in ctx.attr("strides", [1] * nd)]
    if any(int(d) != 1 for d in ctx.attr("dilations", [1] * nd)) or int(ctx.attr("ceil_mode", 0)):
        raise ctx.error("LpPool with dilations or ceil_mode is not supported")
    p = float(ctx.attr("p", 2))
    pads_of = _window_pads(ctx)
    ones, taps = [1] * nd, math.prod(kernel)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        pads = pads_of(x.shape[2:], kernel, strides, ones)
        # (sum |x|^p)^(1/p); padded cells add 0, so a window mean that counts them times the window size is the sum
        padded, pad = _apply_pads(x.abs().pow(p), pads, 0.0, kernel)
        window_sum = _AVG_POOL[nd](padded, kernel, strides, pad, False, True) * taps
        return _root(window_sum, p)

    return run


@register("GlobalLpPool")
def _global_lp_pool(ctx: BuildContext) -> OpFn:
    p = float(ctx.attr("p", 2))
    return lambda xs, tr: _root(xs[0].abs().pow(p).sum(dim=tuple(range(2, xs[0].dim())), keepdim=True), p)


def _root(total: Tensor, p: float) -> Tensor:
    """total^(1/p) with gradient 0, not NaN, where total is 0 (a window of channels the optimizer zeroed)."""
    positive = total > 0
    return torch.where(positive, torch.where(positive, total, torch.ones_like(total)).pow(1.0 / p), total)
