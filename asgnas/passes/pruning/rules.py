"""``CHANNEL_RULES``: how channels flow through each operator -- one table entry per op type.

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
from asgnas.passes.pruning.attrs import known_ints, pad_amounts, reduce_axes, slice_params
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


CHANNEL_RULES: dict[str, OpRule] = {}


def _register(ops: str, analyze: Analyze, zero: Zero | None = None, rewrite: Rewrite | None = None,
              aligned: bool = True, carries_channels: bool = True) -> None:
    for op in ops.split():
        CHANNEL_RULES[op] = OpRule(analyze, zero, rewrite, aligned, carries_channels)


# the table: op types -> (analyze, zero, rewrite)

_register("Relu LeakyRelu Elu Celu Selu ThresholdedRelu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish "
          "Gelu Erf Exp Log Sqrt Reciprocal Neg Abs Sign Sin Cos Floor Ceil Round Shrink",
          a_unary)
for _op, _fn in UNARY.items():
    CHANNEL_RULES[_op] = OpRule(a_unary, z_unary(_fn), aligned=True)
_register("Identity Cast", a_unary, z_first)
_register("Dropout", a_unary, z_dropout)
_register("Add Sum", a_elementwise, z_add)
_register("Sub", a_elementwise, z_sub)
_register("Mul", a_elementwise, z_mul)
_register("Div", a_elementwise, z_div)
_register("Pow", a_elementwise, z_pow)
_register("Max", a_elementwise, z_reduce_all(max))
_register("Min", a_elementwise, z_reduce_all(min))
_register("Mean", a_elementwise, z_reduce_all(lambda v: sum(v) / len(v)))
_register("Where", a_elementwise, z_where)
_register("PRelu", a_elementwise, z_prelu)
_register("Clip", a_elementwise, z_clip)
_register("Equal", a_elementwise, z_compare(lambda a, b: a == b))
_register("Less", a_elementwise, z_compare(lambda a, b: a < b))
_register("Greater", a_elementwise, z_compare(lambda a, b: a > b))
_register("LessOrEqual", a_elementwise, z_compare(lambda a, b: a <= b))
_register("GreaterOrEqual", a_elementwise, z_compare(lambda a, b: a >= b))
_register("And", a_elementwise, z_compare(lambda a, b: bool(a) and bool(b)))
_register("Or", a_elementwise, z_compare(lambda a, b: bool(a) or bool(b)))
_register("Xor", a_elementwise, z_compare(lambda a, b: bool(a) != bool(b)))
_register("Not", a_unary, z_unary(lambda n, z: float(not z)))
_register("IsNaN IsInf", a_elementwise, z_unary(lambda n, z: 0.0))  # a removed channel's value is finite
_register("Mod", a_elementwise)
_register("BatchNormalization", a_batchnorm, z_norm(1, 2))
_register("InstanceNormalization", a_instancenorm, z_norm(1, 2))
_register("GroupNormalization", a_groupnorm, z_norm(1, 2), r_groupnorm)
_register("LayerNormalization", a_layernorm, aligned=False)
_register("RMSNormalization", a_rmsnorm, z_rmsnorm, aligned=False)
_register("Conv", a_conv, z_stem(lambda n: {1}), r_conv)
_register("ConvTranspose", a_conv_transpose, z_stem(lambda n: {1}))
_register("Gemm", a_gemm, z_gemm)
z_linear = z_stem(lambda n: {n.outputs[0].rank - 1})
_register("MatMul", a_matmul, lambda n, zc: z_linear(n, zc) if zc.is_linear(n) else z_contract(n, zc))
_register("MaxPool GlobalMaxPool GlobalAveragePool", a_pool, z_first)
_register("AveragePool", a_pool, z_avgpool)
_register("LpPool GlobalLpPool", a_pool, z_lppool)
_register("Resize Upsample", a_resize, z_resize, r_resize)
_register("Pad", a_pad, z_pad)
_register("Concat", a_concat, z_concat)
_register("Split", a_split, z_first, r_split, aligned=False)
_register("Slice", a_slice, z_first, r_slice)
z_embedding = z_stem(lambda n: {n.outputs[0].rank - 1})
_register("Gather", a_gather, lambda n, zc: z_embedding(n, zc) if zc.is_embedding(n) else zc.z(n.inputs[0]),
          r_gather, aligned=False)
_register("Transpose", a_transpose, z_transpose)
_register("Reshape", a_reshape, z_first, r_reshape, aligned=False)
_register("Flatten Squeeze Unsqueeze", a_reshape, z_first, aligned=False)
_register("Expand", a_expand, z_expand, r_expand)
_register("Tile", a_tile, z_first)
_register("Softmax LogSoftmax Hardmax", a_softmax, z_softmax)
_register("ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum "
          "ReduceLogSumExp", a_reduce, z_reduce, aligned=False)
_register("ReduceMean", a_reduce, z_reduce, r_reduce_mean, aligned=False)
_register("ArgMax ArgMin", a_argreduce, aligned=False)
_register("Constant", a_none, aligned=False)
_register("Shape Size ConstantOfShape Range RandomNormal RandomUniform", a_fresh, aligned=False,
          carries_channels=False)
_register("EyeLike RandomNormalLike RandomUniformLike", a_shaped_like, aligned=False, carries_channels=False)


def coverage() -> dict[str, list[str]]:
    """Op types by treatment (for docs and reports)."""
    return {"handled": sorted(CHANNEL_RULES)}


__all__ = ["CHANNEL_RULES", "OpRule", "UNARY", "coverage", "pad_amounts", "reduce_axes", "slice_params",
           "known_ints"]
