"""Shape and data-movement builders."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import TORCH_DTYPES, BuildContext, OpFn, positive_axis, register, torch_pad_order


# --------------------------------------------------------------------------------------------------
# shape and data movement


@register("Constant")
def _constant(ctx: BuildContext) -> OpFn:
    # lifted Constants are bound as buffers and never executed; reaching here means an unreadable value
    raise ctx.error("Constant without a readable value (sparse or string tensors are not supported)")


@register("Shape")
def _shape(ctx: BuildContext) -> OpFn:
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")

    def run(xs: list, tr: bool) -> Tensor:
        dims = list(xs[0].shape)
        dims = dims[start:] if end is None else dims[start:int(end)]  # Python slicing clamps as ONNX does
        return torch.tensor(dims, dtype=torch.int64, device=xs[0].device)

    return run


@register("Size")
def _size(ctx: BuildContext) -> OpFn:
    return lambda xs, tr: torch.tensor(xs[0].numel(), dtype=torch.int64, device=xs[0].device)


@register("Reshape")
def _reshape(ctx: BuildContext) -> OpFn:
    allowzero = bool(ctx.attr("allowzero", 0))
    shape_of = ctx.ints(1, attr="shape")

    def run(xs: list, tr: bool) -> Tensor:
        x, shape = xs[0], shape_of(xs)
        if not allowzero:
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return x.reshape(shape)

    return run


@register("Flatten")
def _flatten(ctx: BuildContext) -> OpFn:
    axis = int(ctx.attr("axis", 1))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = positive_axis(axis, x.dim())
        return x.reshape(math.prod(x.shape[:a]), math.prod(x.shape[a:]))

    return run


@register("Transpose")
def _transpose(ctx: BuildContext) -> OpFn:
    perm = ctx.attr("perm")
    if perm is None:
        return lambda xs, tr: xs[0].permute(tuple(reversed(range(xs[0].dim()))))
    perm = tuple(int(p) for p in perm)
    return lambda xs, tr: xs[0].permute(perm)


@register("Squeeze")
def _squeeze(ctx: BuildContext) -> OpFn:
    axes_of = ctx.ints(1, attr="axes")

    def run(xs: list, tr: bool) -> Tensor:
        x, axes = xs[0], axes_of(xs)
        if axes is None:
            return x.squeeze()
        return x.squeeze(tuple(positive_axis(a, x.dim()) for a in axes)) if axes else x

    return run


@register("Unsqueeze")
def _unsqueeze(ctx: BuildContext) -> OpFn:
    axes_of = ctx.ints(1, attr="axes")

    def run(xs: list, tr: bool) -> Tensor:
        x, axes = xs[0], axes_of(xs)
        rank = x.dim() + len(axes)
        shape = list(x.shape)
        for a in sorted(positive_axis(a, rank) for a in axes):
            shape.insert(a, 1)
        return x.reshape(shape)

    return run


@register("Concat")
def _concat(ctx: BuildContext) -> OpFn:
    axis = int(ctx.attr("axis"))
    return lambda xs, tr: torch.cat([x for x in xs if x is not None], dim=axis)


@register("Split")
def _split(ctx: BuildContext) -> OpFn:
    axis = int(ctx.attr("axis", 0))
    sizes_of = ctx.ints(1, attr="split")
    num_outputs = ctx.attr("num_outputs")
    n = len(ctx.node.outputs)

    def run(xs: list, tr: bool):
        x = xs[0]
        a = positive_axis(axis, x.dim())
        sizes = sizes_of(xs)
        if not sizes:
            dim = x.shape[a]
            chunk = -(-dim // n) if num_outputs is not None else dim // n  # opset 18: last chunk smaller
            sizes = [min(chunk, dim - i * chunk) for i in range(n)]
        return tuple(torch.split(x, sizes, dim=a))

    return run


@register("Slice")
def _slice(ctx: BuildContext) -> OpFn:
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
            a = positive_axis(axis, x.dim())
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


@register("Gather")
def _gather(ctx: BuildContext) -> OpFn:
    axis = int(ctx.attr("axis", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x, idx = xs[0], xs[1].long()
        a = positive_axis(axis, x.dim())
        idx = torch.where(idx < 0, idx + x.shape[a], idx)
        out = x.index_select(a, idx.reshape(-1))
        return out.reshape(tuple(x.shape[:a]) + tuple(idx.shape) + tuple(x.shape[a + 1:]))

    return run


@register("GatherElements")
def _gather_elements(ctx: BuildContext) -> OpFn:
    axis = int(ctx.attr("axis", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x, idx = xs[0], xs[1].long()
        a = positive_axis(axis, x.dim())
        return torch.gather(x, a, torch.where(idx < 0, idx + x.shape[a], idx))

    return run


@register("ConstantOfShape")
def _constant_of_shape(ctx: BuildContext) -> OpFn:
    value = ctx.attr("value")
    arr = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    fill = arr[0].item()
    dtype = torch.from_numpy(arr[:1].copy()).dtype
    shape_of = ctx.ints(0)
    return lambda xs, tr: torch.full(shape_of(xs), fill, dtype=dtype, device=xs[0].device)


@register("Expand")
def _expand(ctx: BuildContext) -> OpFn:
    shape_of = ctx.ints(1)
    return lambda xs, tr: xs[0].expand(torch.broadcast_shapes(tuple(xs[0].shape), tuple(shape_of(xs))))


@register("Tile")
def _tile(ctx: BuildContext) -> OpFn:
    repeats_of = ctx.ints(1)
    return lambda xs, tr: xs[0].repeat(repeats_of(xs))


@register("Range")
def _range(ctx: BuildContext) -> OpFn:
    def run(xs: list, tr: bool) -> Tensor:
        start, limit, delta = xs[0], xs[1], xs[2]
        return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)

    return run


@register("Trilu")
def _trilu(ctx: BuildContext) -> OpFn:
    upper = bool(ctx.attr("upper", 1))
    k_of = ctx.scalar(1)

    def run(xs: list, tr: bool) -> Tensor:
        k = k_of(xs)
        k = 0 if k is None else int(k)
        return torch.triu(xs[0], k) if upper else torch.tril(xs[0], k)

    return run


@register("EyeLike")
def _eye_like(ctx: BuildContext) -> OpFn:
    to, k = ctx.attr("dtype"), int(ctx.attr("k", 0))
    if to is not None and int(to) not in TORCH_DTYPES:
        raise ctx.error(f"EyeLike dtype {to} is not supported in torch")
    dtype = None if to is None else TORCH_DTYPES[int(to)]

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        ones = torch.ones(x.shape, dtype=torch.bool, device=x.device)
        return (ones.triu(k) & ones.tril(k)).to(dtype or x.dtype)  # ones on diagonal k only

    return run


@register("NonZero")
def _nonzero(ctx: BuildContext) -> OpFn:
    return lambda xs, tr: torch.nonzero(xs[0]).t().contiguous()


@register("DepthToSpace")
def _depth_to_space(ctx: BuildContext) -> OpFn:
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


@register("SpaceToDepth")
def _space_to_depth(ctx: BuildContext) -> OpFn:
    bs = int(ctx.attr("blocksize"))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * bs * bs, h // bs, w // bs)

    return run


@register("Pad")
def _pad(ctx: BuildContext) -> OpFn:
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
        axes = list(range(rank)) if axes is None else [positive_axis(a, rank) for a in axes]
        n = len(axes)
        begins, ends = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            begins[a], ends[a] = pads[i], pads[n + i]
        if mode == "constant":
            value = value_of(xs)
            value = 0 if value is None else (value.item() if isinstance(value, Tensor) else value)
            order = torch_pad_order(begins, ends)
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
