"""``CHANNEL_RULES``: how channels flow through each operator -- one table entry per op type, a view of
``op_registry.OPS`` (which names the rules; ``ANALYZE``, ``ZERO_RULES`` and ``REWRITE`` below turn the names into
the functions of ``rules_*.py``, ``zeros.py`` and ``rewrites.py``).

An entry (``OpRule``) has three parts:
- ``analyze(node, b, se)``: the relations between the node's axes (``builder.py`` vocabulary); raise
  ``Unsupported`` for an attribute value or input it does not handle (the node is then pinned, never guessed);
- ``zero(node, zc)``: the value a removed channel has at the node's output, given the values at its inputs
  (``zc.z(value)``, ``zc.operand(node, i)`` for broadcasting operands); ``None`` = not a known constant.
  A stem whose rows are zeroed outputs 0; ``Sigmoid`` maps 0 to 0.5; ``Mul`` by 0 is 0 whatever the other side;
- ``rewrite(node, rc)``: what construction must update on the node itself when channel counts change (Conv
  ``group``, Reshape targets, Slice bounds, Split sizes, ...). Slicing constants is generic and not listed here.
Ops missing from the table are unknown: every axis they touch is pinned (the conservative OTOv2 choice).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from asgnas.ir import Node
from asgnas.passes.op_registry import OPS, Channels
from asgnas.passes.pruning.builder import Builder
from asgnas.passes.pruning.rewrites import (RewriteCtx, r_conv, r_expand, r_gather, r_groupnorm, r_reduce_mean, r_reshape,
                                            r_resize, r_slice, r_split)
from asgnas.passes.pruning.rules_conv import a_conv, a_conv_transpose, a_gemm, a_matmul, a_pool, a_resize
from asgnas.passes.pruning.rules_elementwise import a_elementwise, a_unary
from asgnas.passes.pruning.rules_norm import (a_argreduce, a_batchnorm, a_groupnorm, a_instancenorm, a_layernorm,
                                              a_reduce, a_rmsnorm, a_softmax)
from asgnas.passes.pruning.rules_shape import (a_concat, a_expand, a_fresh, a_gather, a_none, a_pad, a_reshape,
                                               a_shaped_like, a_slice, a_split, a_tile, a_transpose)
from asgnas.passes.pruning.shapes import ShapeEval
from asgnas.passes.pruning.zeros import (
    UNARY, Zero, z_add, z_avgpool, z_clip, z_compare, z_concat, z_contract, z_div, z_dropout, z_expand, z_first,
    z_gemm, z_lppool, z_mul, z_norm, z_pad, z_pow, z_prelu, z_reduce, z_reduce_all, z_resize, z_rmsnorm, z_softmax,
    z_stem, z_sub, z_transpose, z_unary, z_where,
)

Analyze = Callable[[Node, Builder, ShapeEval], None]
Rewrite = Callable[[Node, RewriteCtx], None]


@dataclass(frozen=True)
class OpRule:
    analyze: Analyze
    zero: Zero | None = None  # None: a removed channel's value after this op is unknown
    rewrite: Rewrite | None = None
    #: output axis i lines up with input axis i (numpy broadcasting from the right): ``zero`` runs once per live
    #: output axis with ``zc.axis`` set; otherwise once, on values common to all live axes
    aligned: bool = False
    #: False: ``analyze`` pins every output axis, so no removable channel group runs through the op
    carries_channels: bool = True


ANALYZE: dict[str, Analyze] = {
    "unary": a_unary, "elementwise": a_elementwise, "batchnorm": a_batchnorm, "instancenorm": a_instancenorm,
    "groupnorm": a_groupnorm, "layernorm": a_layernorm, "rmsnorm": a_rmsnorm, "softmax": a_softmax,
    "reduce": a_reduce, "argreduce": a_argreduce, "conv": a_conv, "conv_transpose": a_conv_transpose,
    "gemm": a_gemm, "matmul": a_matmul, "pool": a_pool, "resize": a_resize, "pad": a_pad, "concat": a_concat,
    "split": a_split, "slice": a_slice, "gather": a_gather, "transpose": a_transpose, "reshape": a_reshape,
    "expand": a_expand, "tile": a_tile, "none": a_none, "fresh": a_fresh, "shaped_like": a_shaped_like,
}

REWRITE: dict[str, Rewrite] = {
    "conv": r_conv, "groupnorm": r_groupnorm, "reshape": r_reshape, "expand": r_expand, "resize": r_resize,
    "slice": r_slice, "split": r_split, "gather": r_gather, "reduce_mean": r_reduce_mean,
}

z_channel_stem = z_stem(lambda n: {1})  # Conv, ConvTranspose: the rows are channel axis 1
z_last_axis_stem = z_stem(lambda n: {n.outputs[0].rank - 1})  # a Linear (MatMul by a weight), an embedding table

#: the zero rules ``op_registry`` names; ``"unary"`` is ``z_unary`` of the op's own ``zeros.UNARY`` function
ZERO_RULES: dict[str, Zero] = {
    "first": z_first, "dropout": z_dropout, "add": z_add, "sub": z_sub, "mul": z_mul, "div": z_div, "pow": z_pow,
    "max": z_reduce_all(max), "min": z_reduce_all(min), "mean": z_reduce_all(lambda v: sum(v) / len(v)),
    "where": z_where, "prelu": z_prelu, "clip": z_clip,
    "equal": z_compare(lambda a, b: a == b),
    "less": z_compare(lambda a, b: a < b),
    "greater": z_compare(lambda a, b: a > b),
    "less_or_equal": z_compare(lambda a, b: a <= b),
    "greater_or_equal": z_compare(lambda a, b: a >= b),
    "and": z_compare(lambda a, b: bool(a) and bool(b)),
    "or": z_compare(lambda a, b: bool(a) or bool(b)),
    "xor": z_compare(lambda a, b: bool(a) != bool(b)),
    "not": z_unary(lambda n, z: float(not z)),
    "finite": z_unary(lambda n, z: 0.0),  # IsNaN, IsInf: a removed channel's value is finite
    "norm": z_norm(1, 2), "rmsnorm": z_rmsnorm,
    "channel_stem": z_channel_stem,
    "gemm": z_gemm,
    "matmul": lambda n, zc: z_last_axis_stem(n, zc) if zc.is_linear(n) else z_contract(n, zc),
    "avgpool": z_avgpool, "lppool": z_lppool, "resize": z_resize, "pad": z_pad, "concat": z_concat,
    "gather": lambda n, zc: z_last_axis_stem(n, zc) if zc.is_embedding(n) else zc.z(n.inputs[0]),
    "transpose": z_transpose, "expand": z_expand, "softmax": z_softmax, "reduce": z_reduce,
}


def _zero_rule(op: str, name: str | None) -> Zero | None:
    if name is None:
        return None
    return z_unary(UNARY[op]) if name == "unary" else ZERO_RULES[name]


def _channel_rule(op: str, channels: Channels) -> OpRule:
    rewrite = REWRITE[channels.rewrite] if channels.rewrite else None
    return OpRule(ANALYZE[channels.analyze], _zero_rule(op, channels.zero), rewrite, channels.aligned,
                  channels.carries_channels)


#: a view of ``op_registry.OPS``: the ops with a channel rule
CHANNEL_RULES: dict[str, OpRule] = {op: _channel_rule(op, spec.channels) for op, spec in OPS.items()
                                    if spec.channels is not None}


__all__ = ["ANALYZE", "CHANNEL_RULES", "OpRule", "REWRITE", "ZERO_RULES"]
