"""Per-op-type properties the erasing analysis needs, as data: one ``OpInfo`` entry per ONNX op type.

Everything the segment builder, the removal-structure checks (Z1-Z5), the validity oracle and the construction
need to know about an operator is here, so supporting a new op is one table entry, not a code change.
Op types absent from ``OP_TABLE`` (and every op outside the default domain, and every op with a subgraph) are
*unknown*: a segment boundary that is never removable and never lets its producers be removed.

Vocabulary (spec 2.2):
- ``joint``: how the op combines several *data* inputs. ``"sum"``: every operand may be erased (Add, Sum);
  ``"sub"``: only operand 1 (Sub: x - 0 == x); ``"concat"``: any operand, with consumer column removal (the
  Concat's channel path is checked separately, see ``channels.py``). An op with >= 2 data inputs and no
  ``joint`` is a *boundary* (Mul, MatMul of two activations, Where, ...): a singleton segment whose producers
  are not removable.
- ``zp``: zero-preserving, f(0) == 0 for the data input, whatever its constant inputs. For ops with additive
  constant operands (``add_slots``) that also needs those operands absent or zero, checked by the caller.
- ``mul_slots`` / ``add_slots``: non-data operands that scale / shift the output (Conv weight / bias, BN scale /
  bias, the constant of an ``Add(x, c)``). All-zero ``mul`` and ``add`` operands make the output zero for any input
  (``kill``); zero ``add`` operands alone make a zero input give a zero output.
- ``param_slots``: further trainable operands (PRelu slope). Trainable variables are float initializers in
  ``mul_slots + add_slots + param_slots``; ``stat_slots`` are non-trainable float state removed with the op (BN
  running statistics).
- ``absorbing``: data slots where a zero operand forces a zero output (Mul, MatMul); used when a boundary op is
  starved by the death of one operand.
- ``shape_only``: the output depends on the input's shape, not its values (Shape, Size): such readers are
  side-chain (non-data) nodes.
- ``channel``: role on the channel path after a Concat joint (spec 2.4 Z3 / spec 4 pass 2):
  ``"transparent"`` (acts per channel and maps zero to zero; needs nothing), ``"reduce"`` (reduces other axes),
  ``"affine"`` (per-channel constants that must be sliced, additive ones join the structure as auxiliary
  slices), ``"flatten"`` (channel -> block of columns), ``"stem"`` (contracts the channels: its input columns
  go), ``"concat"`` (nested Concat: offset), ``""`` (cannot carry a removed channel range: the Concat is not an
  erase-joint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from asgnas.ir import Node

#: ``pred(node, const_of)`` where ``const_of(value) -> np.ndarray | None`` evaluates folded side chains.
Predicate = Callable[[Node, Callable], bool]


@dataclass(frozen=True)
class OpInfo:
    joint: str = ""
    zp: bool | Predicate = False
    mul_slots: tuple[int, ...] = ()
    add_slots: tuple[int, ...] = ()
    param_slots: tuple[int, ...] = ()
    stat_slots: tuple[int, ...] = ()
    absorbing: tuple[int, ...] = ()
    shape_only: bool = False
    channel: str = ""


# --- predicates for ops whose zero preservation depends on attributes or constant inputs ----------------------


def _scalar_or_none(node: Node, const_of: Callable, index: int):
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    return const_of(node.inputs[index])


def _clip_zp(node: Node, const_of: Callable) -> bool:
    # Clip(0) == 0 iff min <= 0 <= max (absent bounds are -inf / +inf)
    lo = _scalar_or_none(node, const_of, 1)
    hi = _scalar_or_none(node, const_of, 2)
    if len(node.inputs) > 1 and node.inputs[1] is not None and lo is None:
        return False  # a bound we cannot evaluate
    if len(node.inputs) > 2 and node.inputs[2] is not None and hi is None:
        return False
    lo_v = node.attr("min", float("-inf")) if lo is None else float(lo.reshape(-1)[0])
    hi_v = node.attr("max", float("inf")) if hi is None else float(hi.reshape(-1)[0])
    return lo_v <= 0.0 <= hi_v


def _pad_zp(node: Node, const_of: Callable) -> bool:
    # reflect / edge / wrap copy zeros; constant mode needs a zero fill value
    mode = node.attr("mode", "constant")
    if mode != "constant":
        return True
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        value = const_of(node.inputs[2])
        return value is not None and not value.any()
    return float(node.attr("value", 0.0)) == 0.0


def _resize_zp(node: Node, const_of: Callable) -> bool:
    # every interpolation mode is a linear combination of inputs; only crop-and-resize extrapolates a constant
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return float(node.attr("extrapolation_value", 0.0)) == 0.0
    return True


def _pow_zp(node: Node, const_of: Callable) -> bool:
    exponent = _scalar_or_none(node, const_of, 1)
    return exponent is not None and exponent.size > 0 and bool((exponent > 0).all())


def _shrink_zp(node: Node, const_of: Callable) -> bool:
    return float(node.attr("lambd", 0.5)) >= 0.0


def _div_zp(node: Node, const_of: Callable) -> bool:
    # x / c maps 0 to 0; c / x does not (asked only when exactly one input is data, so a known divisor is c)
    divisor = node.inputs[1] if len(node.inputs) > 1 else None
    return divisor is not None and const_of(divisor) is not None


OP_TABLE: dict[str, OpInfo] = {}


def _set(names: str, info: OpInfo) -> None:
    for name in names.split():
        OP_TABLE[name] = info


# stems: trainable, shape-changing, contract the channel axis
OP_TABLE["Conv"] = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,), absorbing=(0, 1), channel="stem")
OP_TABLE["ConvTranspose"] = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,), absorbing=(0, 1), channel="stem")
OP_TABLE["Gemm"] = OpInfo(zp=True, mul_slots=(0, 1), add_slots=(2,), absorbing=(0, 1), channel="stem")
OP_TABLE["MatMul"] = OpInfo(zp=True, mul_slots=(0, 1), absorbing=(0, 1), channel="stem")

# normalisations: IN/LN/GN(0) = bias; zero once scale and bias are zero
# BN(0) = bias - mean * scale / sqrt(var + eps): not zero-preserving even with a zero bias, zero once scale and
# bias are zero (``kill``)
OP_TABLE["BatchNormalization"] = OpInfo(zp=False, mul_slots=(1,), add_slots=(2,), stat_slots=(3, 4), channel="affine")
OP_TABLE["InstanceNormalization"] = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,), channel="affine")
OP_TABLE["LayerNormalization"] = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,))
OP_TABLE["GroupNormalization"] = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,))
OP_TABLE["RMSNormalization"] = OpInfo(zp=True, mul_slots=(1,))  # x / rms(x) * scale: 0 -> 0, no bias

# element-wise binary ops: joints/boundaries with >= 2 data inputs, affine with one data input and a constant
OP_TABLE["Add"] = OpInfo(joint="sum", zp=True, add_slots=(0, 1), channel="affine")
OP_TABLE["Sum"] = OpInfo(joint="sum", zp=True, add_slots=tuple(range(16)))
OP_TABLE["Sub"] = OpInfo(joint="sub", zp=True, add_slots=(0, 1), channel="affine")
OP_TABLE["Mul"] = OpInfo(zp=True, mul_slots=(0, 1), absorbing=(0, 1), channel="affine")
OP_TABLE["Div"] = OpInfo(zp=_div_zp, absorbing=(0,), channel="affine")
OP_TABLE["Concat"] = OpInfo(joint="concat", zp=False, channel="concat")
OP_TABLE["PRelu"] = OpInfo(zp=True, param_slots=(1,), channel="affine")

# zero-preserving unary ops that act per element (channel-transparent)
_set(
    "Relu LeakyRelu Tanh Elu Selu Celu Mish HardSwish Gelu Softsign Sin Sinh Tan Asin Asinh Atan Atanh Erf Abs Neg "
    "Sqrt Sign Floor Ceil Round ThresholdedRelu Identity Dropout Cast",
    OpInfo(zp=True, channel="transparent"),
)
OP_TABLE["Clip"] = OpInfo(zp=_clip_zp, channel="transparent")
OP_TABLE["Shrink"] = OpInfo(zp=_shrink_zp, channel="transparent")
OP_TABLE["Pow"] = OpInfo(zp=_pow_zp)
# pooling / resampling act on spatial axes only
_set("MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool", OpInfo(zp=True, channel="transparent"))
OP_TABLE["Resize"] = OpInfo(zp=_resize_zp, channel="transparent")
OP_TABLE["Upsample"] = OpInfo(zp=True, channel="transparent")
OP_TABLE["Pad"] = OpInfo(zp=_pad_zp, channel="transparent")
OP_TABLE["Slice"] = OpInfo(zp=True, channel="transparent")
OP_TABLE["Flatten"] = OpInfo(zp=True, channel="flatten")
OP_TABLE["Reshape"] = OpInfo(zp=True, channel="flatten")
# zero-preserving data movement / reductions without a channel role
_set(
    "Transpose Squeeze Unsqueeze Split Gather GatherElements GatherND Expand Tile DepthToSpace SpaceToDepth "
    "ReduceProd CumSum Trilu Compress LRN",
    OpInfo(zp=True),
)
# reductions keep the channels when they reduce other axes (global pooling written as ReduceMean)
_set("ReduceSum ReduceMean ReduceMax ReduceMin ReduceL1 ReduceL2 ReduceSumSquare", OpInfo(zp=True, channel="reduce"))
# not zero-preserving
_set(
    "Sigmoid HardSigmoid Softmax LogSoftmax Exp Log Cos Cosh Acos Acosh Softplus Reciprocal Not ReduceLogSumExp "
    "ReduceLogSum IsNaN IsInf Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Max Min Mean Where "
    "ConstantOfShape Range OneHot ArgMax ArgMin TopK NonZero Einsum Hardmax Mod BitShift",
    OpInfo(zp=False),
)
# shape readers: side-chain nodes, never data flow
_set("Shape Size EyeLike RandomNormalLike RandomUniformLike", OpInfo(shape_only=True))


def op_info(node: Node) -> OpInfo | None:
    """The table entry, or None for an unknown op (non-default domain, subgraph holder, or not listed)."""
    if node.domain not in ("", "ai.onnx") or node.has_subgraphs:
        return None
    return OP_TABLE.get(node.op_type)


def is_zero_preserving(node: Node, info: OpInfo, const_of: Callable) -> bool:
    zp = info.zp
    return zp(node, const_of) if callable(zp) else bool(zp)
