"""Matrix products (Gemm, Einsum) and reductions."""

from __future__ import annotations

from functools import reduce
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import BuildContext, OpFn, positive_axis, register


# --------------------------------------------------------------------------------------------------
# matrix products


@register("Gemm")
def _gemm(ctx: BuildContext) -> OpFn:
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


@register("Einsum")
def _einsum(ctx: BuildContext) -> OpFn:
    equation = ctx.attr("equation")
    return lambda xs, tr: torch.einsum(equation, *xs)


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


@register(*_REDUCE)
def _reduce(ctx: BuildContext) -> OpFn:
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
        dims = tuple(sorted({positive_axis(a, x.dim()) for a in axes}))
        if not dims:
            return x
        return fn(x, dims, keep)

    return run


@register("ArgMax", "ArgMin")
def _arg_reduce(ctx: BuildContext) -> OpFn:
    fn = torch.argmax if ctx.node.op_type == "ArgMax" else torch.argmin
    axis, keep = int(ctx.attr("axis", 0)), bool(ctx.attr("keepdims", 1))
    last = bool(ctx.attr("select_last_index", 0))

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = positive_axis(axis, x.dim())
        if not last:
            return fn(x, a, keepdim=keep)
        return x.shape[a] - 1 - fn(x.flip(a), a, keepdim=keep)

    return run


@register("CumSum")
def _cumsum(ctx: BuildContext) -> OpFn:
    exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
    axis_of = ctx.ints(1)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        a = positive_axis(axis_of(xs)[0], x.dim())
        if reverse:
            x = x.flip(a)
        y = torch.cumsum(x, a)
        if exclusive:
            y = y - x
        return y.flip(a) if reverse else y

    return run
