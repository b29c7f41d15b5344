"""``CHANNEL_RULES``: how channels flow through each operator -- one table entry per op type, a view of
``op_registry.OPS`` (which names the rules; ``ANALYZE``, ``ZERO_RULES`` and ``REWRITE`` below turn the names into
the functions of ``rules_*.py``, ``zeros.py`` and ``rewrites.py``).

An entry (``OpRule``) has three parts:
- ``analyze(node, builder, shape_eval)``: the relations between the node's axes (``builder.py`` vocabulary); raise
  ``Unsupported`` for an attribute value or input it does not handle (the node is then pinned, never guessed);
- ``zero(node, ctx)``: the value a removed channel has at the node's output, given the values at its inputs
  (``ctx.z(value)``, ``ctx.operand(node, i)`` for broadcasting operands); ``None`` = not a known constant.
  A stem whose rows are zeroed outputs 0; ``Sigmoid`` maps 0 to 0.5; ``Mul`` by 0 is 0 whatever the other side;
- ``rewrite(node, ctx)``: what construction must update on the node itself when channel counts change (Conv
  ``group``, Reshape targets, Slice bounds, Split sizes, ...). Slicing constants is generic and not listed here.
Ops missing from the table are unknown: every axis they touch is pinned (the conservative OTOv2 choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from asgnas.ir import Node
from asgnas.passes.op_registry import OPS, Channels
from asgnas.passes.pruning.builder import Builder
from asgnas.passes.pruning.rewrites import (
    RewriteCtx, rewrite_conv, rewrite_expand, rewrite_gather, rewrite_groupnorm, rewrite_reduce_mean, rewrite_reshape,
    rewrite_resize, rewrite_slice, rewrite_split,
)
from asgnas.passes.pruning.rules_conv import (
    analyze_conv, analyze_conv_transpose, analyze_gemm, analyze_matmul, analyze_pool, analyze_resize,
)
from asgnas.passes.pruning.rules_elementwise import analyze_elementwise, analyze_unary
from asgnas.passes.pruning.rules_norm import (
    analyze_argreduce, analyze_batchnorm, analyze_groupnorm, analyze_instancenorm, analyze_layernorm, analyze_reduce,
    analyze_rmsnorm, analyze_softmax,
)
from asgnas.passes.pruning.rules_shape import (
    analyze_concat, analyze_expand, analyze_fresh, analyze_gather, analyze_none, analyze_pad, analyze_reshape,
    analyze_shaped_like, analyze_slice, analyze_split, analyze_tile, analyze_transpose,
)
from asgnas.passes.pruning.shapes import ShapeEval
from asgnas.passes.pruning.zeros import (
    UNARY, Zero, zero_add, zero_avgpool, zero_clip, zero_compare, zero_concat, zero_contract, zero_div, zero_dropout,
    zero_expand, zero_first, zero_gemm, zero_lppool, zero_mul, zero_norm, zero_pad, zero_pow, zero_prelu, zero_reduce,
    zero_reduce_all, zero_resize, zero_rmsnorm, zero_softmax, zero_stem, zero_sub, zero_transpose, zero_unary,
    zero_where,
)

Analyze = Callable[[Node, Builder, ShapeEval], None]
Rewrite = Callable[[Node, RewriteCtx], None]


@dataclass(frozen=True)
class OpRule:
    analyze: Analyze
    zero: Zero | None = None  # None: a removed channel's value after this op is unknown
    rewrite: Rewrite | None = None
    #: output axis i lines up with input axis i (numpy broadcasting from the right): ``zero`` runs once per live
    #: output axis with ``ctx.axis`` set; otherwise once, on values common to all live axes
    aligned: bool = False
    #: False: ``analyze`` pins every output axis, so no removable channel group runs through the op
    carries_channels: bool = True


ANALYZE: dict[str, Analyze] = {
    "unary": analyze_unary, "elementwise": analyze_elementwise, "batchnorm": analyze_batchnorm,
    "instancenorm": analyze_instancenorm, "groupnorm": analyze_groupnorm, "layernorm": analyze_layernorm,
    "rmsnorm": analyze_rmsnorm, "softmax": analyze_softmax, "reduce": analyze_reduce, "argreduce": analyze_argreduce,
    "conv": analyze_conv, "conv_transpose": analyze_conv_transpose, "gemm": analyze_gemm, "matmul": analyze_matmul,
    "pool": analyze_pool, "resize": analyze_resize, "pad": analyze_pad, "concat": analyze_concat,
    "split": analyze_split, "slice": analyze_slice, "gather": analyze_gather, "transpose": analyze_transpose,
    "reshape": analyze_reshape, "expand": analyze_expand, "tile": analyze_tile, "none": analyze_none,
    "fresh": analyze_fresh, "shaped_like": analyze_shaped_like,
}

REWRITE: dict[str, Rewrite] = {
    "conv": rewrite_conv, "groupnorm": rewrite_groupnorm, "reshape": rewrite_reshape, "expand": rewrite_expand,
    "resize": rewrite_resize, "slice": rewrite_slice, "split": rewrite_split, "gather": rewrite_gather,
    "reduce_mean": rewrite_reduce_mean,
}

zero_channel_stem = zero_stem(lambda node: {1})  # Conv, ConvTranspose: the rows are channel axis 1
# a Linear (MatMul by a weight), an embedding table: the rows are the last axis
zero_last_axis_stem = zero_stem(lambda node: {node.outputs[0].rank - 1})

#: the zero rules ``op_registry`` names; ``"unary"`` is ``zero_unary`` of the op's own ``zeros.UNARY`` function
ZERO_RULES: dict[str, Zero] = {
    "first": zero_first, "dropout": zero_dropout, "add": zero_add, "sub": zero_sub, "mul": zero_mul,
    "div": zero_div, "pow": zero_pow,
    "max": zero_reduce_all(max), "min": zero_reduce_all(min), "mean": zero_reduce_all(lambda v: sum(v) / len(v)),
    "where": zero_where, "prelu": zero_prelu, "clip": zero_clip,
    "equal": zero_compare(lambda a, b: a == b),
    "less": zero_compare(lambda a, b: a < b),
    "greater": zero_compare(lambda a, b: a > b),
    "less_or_equal": zero_compare(lambda a, b: a <= b),
    "greater_or_equal": zero_compare(lambda a, b: a >= b),
    "and": zero_compare(lambda a, b: bool(a) and bool(b)),
    "or": zero_compare(lambda a, b: bool(a) or bool(b)),
    "xor": zero_compare(lambda a, b: bool(a) != bool(b)),
    "not": zero_unary(lambda node, z: float(not z)),
    "finite": zero_unary(lambda node, z: 0.0),  # IsNaN, IsInf: a removed channel's value is finite
    "norm": zero_norm(1, 2), "rmsnorm": zero_rmsnorm,
    "channel_stem": zero_channel_stem,
    "gemm": zero_gemm,
    "matmul": lambda node, ctx: zero_last_axis_stem(node, ctx) if ctx.is_linear(node) else zero_contract(node, ctx),
    "avgpool": zero_avgpool, "lppool": zero_lppool, "resize": zero_resize, "pad": zero_pad, "concat": zero_concat,
    "gather": lambda node, ctx: zero_last_axis_stem(node, ctx) if ctx.is_embedding(node) else ctx.z(node.inputs[0]),
    "transpose": zero_transpose, "expand": zero_expand, "softmax": zero_softmax, "reduce": zero_reduce,
}


def _zero_rule(op: str, name: str | None) -> Zero | None:
    if name is None:
        return None
    return zero_unary(UNARY[op]) if name == "unary" else ZERO_RULES[name]


def _channel_rule(op: str, channels: Channels) -> OpRule:
    rewrite = REWRITE[channels.rewrite] if channels.rewrite else None
    return OpRule(ANALYZE[channels.analyze], _zero_rule(op, channels.zero), rewrite, channels.aligned,
                  channels.carries_channels)


#: a view of ``op_registry.OPS``: the ops with a channel rule
CHANNEL_RULES: dict[str, OpRule] = {op: _channel_rule(op, spec.channels) for op, spec in OPS.items()
                                    if spec.channels is not None}


__all__ = ["ANALYZE", "CHANNEL_RULES", "OpRule", "REWRITE", "ZERO_RULES"]
