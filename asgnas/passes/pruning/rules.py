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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from asgnas.ir import Node, Value
from asgnas.passes.pruning.builder import Builder, Unsupported, relate_reshape
from asgnas.passes.pruning.shapes import ShapeEval

if TYPE_CHECKING:  # pragma: no cover
    from asgnas.passes.pruning.analysis import ZeroCtx
    from asgnas.passes.prune_construct import RewriteCtx

Analyze = Callable[[Node, Builder, ShapeEval], None]
Zero = Callable[[Node, "ZeroCtx"], "float | None"]
Rewrite = Callable[[Node, "RewriteCtx"], None]


@dataclass(frozen=True)
class OpRule:
    analyze: Analyze
    zero: Zero | None = None  # None: a removed channel's value after this op is unknown
    rewrite: Rewrite | None = None
    #: output axis i lines up with input axis i (numpy broadcasting from the right): ``zero`` runs once per live
    #: output axis with ``zc.axis`` set; otherwise once, on values common to all live axes
    aligned: bool = False


CHANNEL_RULES: dict[str, OpRule] = {}


def _register(ops: str, analyze: Analyze, zero: Zero | None = None, rewrite: Rewrite | None = None,
              aligned: bool = True) -> None:
    for op in ops.split():
        CHANNEL_RULES[op] = OpRule(analyze, zero, rewrite, aligned)


# ==================================================================================================
# helpers


def _need_shape(*values: Value | None) -> None:
    for value in values:
        if value is not None and value.shape is None:
            raise Unsupported(f"unknown shape of {value.name}")


def _identity_axes(b: Builder, src: Value, dst: Value) -> None:
    _need_shape(src, dst)
    if src.rank != dst.rank:
        raise Unsupported(f"rank changes from {src.rank} to {dst.rank}")
    for axis in range(src.rank):
        b.same(b.k(src, axis), b.k(dst, axis))


def _broadcast_into(b: Builder, value: Value, out: Value) -> None:
    """Numpy broadcasting: an operand axis equal to the output axis shares its indexing; size 1 broadcasts."""
    _need_shape(value, out)
    offset = out.rank - value.rank
    if offset < 0:
        raise Unsupported(f"{value.name} has a higher rank than the output")
    for axis, dim in enumerate(value.shape):
        odim = out.shape[axis + offset]
        if dim == 1 and odim != 1:
            continue  # broadcast along this axis: the operand does not depend on the output's index
        if dim is None or odim is None or dim != odim:
            raise Unsupported(f"cannot match dim {dim} of {value.name} to {odim}")
        b.same(b.k(value, axis), b.k(out, axis + offset))


def _ints(se: ShapeEval, value: Value | None, what: str) -> np.ndarray | None:
    if value is None:
        return None
    ints = se.known_ints(value)
    if ints is None:
        raise Unsupported(f"{what} computed at runtime")
    return ints


def _axis(node: Node, rank: int, default: int = 0) -> int:
    axis = node.attr("axis", default)
    if not -rank <= axis < rank:
        raise Unsupported(f"axis {axis} out of range")
    return axis % rank


def _pads_zero(node: Node) -> bool:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return False
    return not any(node.attr("pads") or [])


# ==================================================================================================
# zero functions


def _z_first(node: Node, zc: "ZeroCtx") -> float | None:
    return zc.z(node.inputs[0])


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _unary(fn: Callable[[Node, float], float | None]) -> Zero:
    def zero(node: Node, zc: "ZeroCtx") -> float | None:
        z = zc.z(node.inputs[0])
        if z is None:
            return None
        try:
            return _finite(fn(node, z))
        except (ValueError, OverflowError, ZeroDivisionError):
            return None

    return zero


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


UNARY: dict[str, Callable[[Node, float], float | None]] = {
    "Relu": lambda n, z: max(z, 0.0),
    "LeakyRelu": lambda n, z: z if z >= 0 else n.attr("alpha", 0.01) * z,
    "Elu": lambda n, z: z if z > 0 else n.attr("alpha", 1.0) * math.expm1(z),
    "Celu": lambda n, z: max(0.0, z) + min(0.0, n.attr("alpha", 1.0) * math.expm1(z / n.attr("alpha", 1.0))),
    "Selu": lambda n, z: n.attr("gamma", 1.0507009873554805)
    * (z if z > 0 else n.attr("alpha", 1.6732632423543772) * math.expm1(z)),
    "ThresholdedRelu": lambda n, z: z if z > n.attr("alpha", 1.0) else 0.0,
    "Sigmoid": lambda n, z: _sigmoid(z),
    "HardSigmoid": lambda n, z: max(0.0, min(1.0, n.attr("alpha", 0.2) * z + n.attr("beta", 0.5))),
    "HardSwish": lambda n, z: z * max(0.0, min(1.0, z / 6.0 + 0.5)),
    "Tanh": lambda n, z: math.tanh(z),
    "Softplus": lambda n, z: _softplus(z),
    "Softsign": lambda n, z: z / (1.0 + abs(z)),
    "Mish": lambda n, z: z * math.tanh(_softplus(z)),
    "Gelu": lambda n, z: (
        0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
        if n.attr("approximate", "none") == "tanh"
        else 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))
    ),
    "Erf": lambda n, z: math.erf(z),
    "Exp": lambda n, z: math.exp(z),
    "Log": lambda n, z: math.log(z) if z > 0 else None,
    "Sqrt": lambda n, z: math.sqrt(z) if z >= 0 else None,
    "Reciprocal": lambda n, z: 1.0 / z if z != 0 else None,
    "Neg": lambda n, z: -z,
    "Abs": lambda n, z: abs(z),
    "Sign": lambda n, z: float(np.sign(z)),
    "Sin": lambda n, z: math.sin(z),
    "Cos": lambda n, z: math.cos(z),
    "Floor": lambda n, z: float(math.floor(z)),
    "Ceil": lambda n, z: float(math.ceil(z)),
    "Round": lambda n, z: float(np.round(z)),
    "Shrink": lambda n, z: (z + n.attr("bias", 0.0)) if z < -n.attr("lambd", 0.5)
    else (z - n.attr("bias", 0.0)) if z > n.attr("lambd", 0.5) else 0.0,
    "Identity": lambda n, z: z,
    "Cast": lambda n, z: z,
}


def _z_add(node: Node, zc: "ZeroCtx") -> float | None:
    vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    return None if any(v is None for v in vals) else float(sum(vals))


def _z_sub(node: Node, zc: "ZeroCtx") -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    return None if a is None or b is None else a - b


def _z_mul(node: Node, zc: "ZeroCtx") -> float | None:
    vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    if any(v == 0 for v in vals):
        return 0.0  # a zero factor wins whatever the other side is
    return None if any(v is None for v in vals) else _finite(float(np.prod(vals)))


def _z_div(node: Node, zc: "ZeroCtx") -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    if a is None or b is None or b == 0:
        return None
    return a / b


def _z_pow(node: Node, zc: "ZeroCtx") -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    if a is None or b is None:
        return None
    try:
        return _finite(float(a**b))
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def _z_reduce_all(fn: Callable[[list[float]], float]) -> Zero:
    def zero(node: Node, zc: "ZeroCtx") -> float | None:
        vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
        return None if any(v is None for v in vals) else float(fn(vals))

    return zero


def _z_where(node: Node, zc: "ZeroCtx") -> float | None:
    cond, x, y = zc.operand(node, 0), zc.operand(node, 1), zc.operand(node, 2)
    if cond is not None:
        return x if cond else y
    return x if x is not None and x == y else None


def _z_compare(fn: Callable[[float, float], bool]) -> Zero:
    def zero(node: Node, zc: "ZeroCtx") -> float | None:
        a, b = zc.operand(node, 0), zc.operand(node, 1)
        return None if a is None or b is None else float(fn(a, b))

    return zero


def _z_prelu(node: Node, zc: "ZeroCtx") -> float | None:
    x = zc.operand(node, 0)
    if x is None or x >= 0:
        return x
    slope = zc.operand(node, 1)
    return None if slope is None else slope * x


def _z_clip(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    if z is None:
        return None
    lo = zc.scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else node.attr("min")
    hi = zc.scalar(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else node.attr("max")
    if (len(node.inputs) > 1 and node.inputs[1] is not None and lo is None) or (
        len(node.inputs) > 2 and node.inputs[2] is not None and hi is None
    ):
        return None
    if lo is not None:
        z = max(z, lo)
    if hi is not None:
        z = min(z, hi)
    return z


def _z_norm(scale_index: int, bias_index: int) -> Zero:
    """Batch/instance/group norm: a zero scale (or a constant input channel) leaves exactly the bias."""

    def zero(node: Node, zc: "ZeroCtx") -> float | None:
        if len(node.inputs) <= bias_index or node.inputs[bias_index] is None:
            return None
        if zc.axis is not None and zc.axis != 1:
            return None  # a removed slab along another axis is normalised per channel: not one constant
        scale = zc.z(node.inputs[scale_index])
        if scale != 0 and (node.op_type == "BatchNormalization" or zc.z(node.inputs[0]) is None):
            return None  # BN of a constant keeps (c - mean) * scale / std: per channel
        return zc.z(node.inputs[bias_index])

    return zero


def _z_stem(own_axes: Callable[[Node], set[int]]) -> Zero:
    """A stem zeroes the slabs of its own output axis (its rows are in the group); a removed slab along an axis
    it passes through from its input would be ``bias + z * sum(W)``: only exact as 0 (input slab 0, no bias)."""

    def zero(node: Node, zc: "ZeroCtx") -> float | None:
        if zc.axis is None or zc.axis in own_axes(node):
            return 0.0
        has_bias = node.op_type != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None
        return 0.0 if zc.z(node.inputs[0]) == 0 and not has_bias else None

    return zero


def _z_gemm(node: Node, zc: "ZeroCtx") -> float | None:
    c = node.inputs[2] if len(node.inputs) > 2 else None
    value = 0.0 if c is None else _times(node.attr("beta", 1.0), zc.operand(node, 2))
    if zc.axis is not None and zc.axis != 1:  # rows of A passed through: A's slab must be zero
        if zc.z_at(node.inputs[0], 1 if node.attr("transA", 0) else 0) != 0:
            return None
    return value


def _times(a: float, b: float | None) -> float | None:
    return None if b is None else a * b


def _z_contract(node: Node, zc: "ZeroCtx") -> float | None:
    """A @ B of activations: a slab along A's rows is zero iff A's is; along B's columns iff B's is; along a
    batch axis iff either is."""
    a, b = node.inputs
    rank = node.outputs[0].rank
    if zc.axis == rank - 2:
        return 0.0 if zc.z_at(a, a.rank - 2) == 0 else None
    if zc.axis == rank - 1:
        return 0.0 if zc.z_at(b, b.rank - 1) == 0 else None
    return 0.0 if zc.z(a) == 0 or zc.z(b) == 0 else None


def _z_transpose(node: Node, zc: "ZeroCtx") -> float | None:
    x = node.inputs[0]
    if zc.axis is None:
        return zc.z(x)
    perm = node.attr("perm") or list(range(x.rank))[::-1]
    return zc.z_at(x, perm[zc.axis])


def _z_expand(node: Node, zc: "ZeroCtx") -> float | None:
    return zc.operand(node, 0)


def _z_avgpool(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    if z == 0 or not node.attr("count_include_pad", 0) or _pads_zero(node):
        return z
    return None


def _z_lppool(node: Node, zc: "ZeroCtx") -> float | None:
    return 0.0 if zc.z(node.inputs[0]) == 0 else None


def _z_resize(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return z if z == node.attr("extrapolation_value", 0.0) else None
    return z


def _z_pad(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    mode = node.attr("mode", "constant")
    if z is None or mode != "constant":
        return z
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        value = zc.scalar(node.inputs[2])
    else:
        value = node.attr("value", 0.0)
    if value is not None and value == z:
        return z
    # padding a removed slab with a different constant makes it non-uniform, unless the only padded axis is the
    # slab's own axis (new channels were added, the slab is untouched)
    padded = zc.padded_axes(node)
    if padded is not None and zc.axis is not None and set(padded) <= {zc.axis}:
        return z
    return None


def _z_concat(node: Node, zc: "ZeroCtx") -> float | None:
    out = node.outputs[0]
    if out.rank is None:
        return None
    axis = _axis(node, out.rank)
    inputs = [v for v in node.inputs if v is not None]
    if zc.axis is not None and zc.axis != axis:  # a slab across the concat axis spans every input
        vals = [zc.z_at(v, zc.axis) for v in inputs]
    else:
        vals = [zc.z_at(v, axis) for v in inputs if zc.live(v, axis)] or [zc.z_at(v, axis) for v in inputs]
    return vals[0] if vals and all(v is not None and v == vals[0] for v in vals) else None


def _z_softmax(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    x = node.inputs[0]
    if z is None or x.shape is None:
        return None
    default = -1 if zc.opset >= 13 else 1
    axis = node.attr("axis", default) % x.rank
    dims = x.shape[axis:] if zc.opset < 13 else (x.shape[axis],)
    if not all(isinstance(d, int) for d in dims):
        return None
    n = int(np.prod(dims))
    if node.op_type == "Softmax":
        return 1.0 / n
    if node.op_type == "LogSoftmax":
        return -math.log(n)
    return None


def _z_reduce(node: Node, zc: "ZeroCtx") -> float | None:
    z = zc.z(node.inputs[0])
    n = zc.reduced_count(node)
    if z is None or n is None:
        return None
    op = node.op_type
    if op in ("ReduceMean", "ReduceMax", "ReduceMin"):
        return z
    if op == "ReduceSum":
        return z * n
    if op == "ReduceL1":
        return abs(z) * n
    if op == "ReduceL2":
        return abs(z) * math.sqrt(n)
    if op == "ReduceSumSquare":
        return z * z * n
    return 0.0 if z == 0 and op == "ReduceProd" else None


# ==================================================================================================
# analysis rules


def a_unary(node: Node, b: Builder, se: ShapeEval) -> None:
    x = node.inputs[0]
    for out in node.outputs:
        if out.uses or b.graph.is_output(out):
            _identity_axes(b, x, out)


def a_elementwise(node: Node, b: Builder, se: ShapeEval) -> None:
    out = node.outputs[0]
    for value in node.inputs:
        if value is not None:
            _broadcast_into(b, value, out)


def a_batchnorm(node: Node, b: Builder, se: ShapeEval) -> None:
    x = node.inputs[0]
    _identity_axes(b, x, node.outputs[0])
    if x.rank < 2:
        raise Unsupported("BatchNormalization of a rank < 2 input")
    channel = b.k(x, 1)
    for index, role in ((1, "param"), (2, "param"), (3, "stat"), (4, "stat")):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            continue
        if value.rank != 1:
            raise Unsupported(f"BatchNormalization input {index} is not 1-d")
        b.same(b.k(value, 0), channel)
        b.role(value, 0, role)
    for extra in node.outputs[1:]:  # training mode: running statistics out
        if extra.rank == 1:
            b.same(b.k(extra, 0), channel)
    if node.attr("training_mode", 0):  # batch statistics mix the batch and spatial elements
        _pin_mixed(b, node, x, range(0, 1))
        _pin_mixed(b, node, x, range(2, x.rank))


def a_instancenorm(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    if x.rank < 3:
        raise Unsupported("InstanceNormalization of a rank < 3 input")
    for axis in (0, 1):
        b.same(b.k(x, axis), b.k(out, axis))
    for axis in range(2, x.rank):
        b.pin(b.k(x, axis), None, f"{node.name} (InstanceNormalization) normalizes over this axis")
    for value in node.inputs[1:3]:
        if value is not None:
            b.same(b.k(value, 0), b.k(x, 1))
            b.role(value, 0, "param")


def a_groupnorm(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    groups = node.attr("num_groups")
    channels = x.shape[1]
    if not isinstance(channels, int) or not groups or channels % groups:
        raise Unsupported(f"GroupNormalization num_groups={groups} with {channels} channels")
    for axis in (0, 1):
        b.same(b.k(x, axis), b.k(out, axis))
    for axis in range(2, x.rank):
        b.pin(b.k(x, axis), None, f"{node.name} (GroupNormalization) normalizes over this axis")
    g = b.virtual(node, "groups", groups)
    per = b.virtual(node, "channels_per_group", channels // groups)
    # whole GroupNorm groups go (exact); the group width is fixed
    b.pin(per, None, f"{node.name} (GroupNormalization): channels per group are fixed, whole groups go")
    b.product(node, b.k(x, 1), [g, per])
    for value in node.inputs[1:3]:
        if value is None:
            continue
        size = value.shape[0] if value.shape else None
        b.same(b.k(value, 0), b.k(x, 1) if size == channels else g)
        b.role(value, 0, "param")


def a_layernorm(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axis = _axis(node, x.rank, -1)
    for a in range(x.rank):
        b.same(b.k(x, a), b.k(out, a))
    for a in range(axis, x.rank):
        b.pin(b.k(x, a), None, f"{node.name} (LayerNormalization) normalizes over this axis: removing channels "
                               f"changes the statistics of the others")
    for value in node.inputs[1:3]:
        if value is not None:
            _broadcast_into(b, value, x)


def _pin_mixed(b: Builder, node: Node, value: Value, axes: range) -> None:
    """Axes an op mixes (a kernel slides over them): their elements may never go."""
    for axis in axes:
        b.pin(b.k(value, axis), None, f"{node.name} ({node.op_type}) mixes elements along this axis")


def a_conv(node: Node, b: Builder, se: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    _need_shape(x, w, out)
    _pin_mixed(b, node, x, range(2, x.rank or 0))
    view = b.view(w)
    if view is None:
        raise Unsupported("Conv weight computed at runtime")
    if x.rank < 3 or w.rank != x.rank:
        raise Unsupported("Conv of unexpected rank")
    groups = node.attr("group", 1)
    c_in, c_out = x.shape[1], w.shape[0]
    if not isinstance(c_in, int) or not isinstance(c_out, int):
        raise Unsupported("unknown channel count")
    rows = b.k(out, 1)
    b.same(b.k(w, 0), rows)
    b.role(w, 0, "param")
    if bias is not None:
        b.same(b.k(bias, 0), rows)
        b.role(bias, 0, "param")
    b.stem(out, 1)
    const, perm = view
    weight = (const.name, perm[1])
    if groups == 1:
        b.same(b.k(x, 1), b.k(w, 1))
        b.role(w, 1, "consumer")
        b.consume(node, x, 1, "conv", weight=weight, foldable=_pads_zero(node), why_not="it pads its input")
    elif groups == c_in and w.shape[1] == 1:
        # depthwise: input channel c feeds output channels [c*m, (c+1)*m) only
        mult = c_out // groups
        if mult == 1:
            b.same(b.k(x, 1), rows)
        else:
            m = b.virtual(node, "multiplier", mult)
            b.pin(m, None, f"{node.name} (Conv): depthwise channel multiplier is fixed")
            b.product(node, rows, [b.k(x, 1), m])
    else:
        if c_in % groups or c_out % groups:
            raise Unsupported(f"group={groups} does not divide the channels")
        # grouped: one channel position per group goes at a time (equal group widths); the group count is fixed
        g_in = b.virtual(node, "groups_in", groups)
        b.pin(g_in, None, f"{node.name} (Conv group={groups}): the group count is fixed")
        b.product(node, b.k(x, 1), [g_in, b.k(w, 1)])
        b.role(w, 1, "consumer")
        b.consume(node, x, 1, "conv", weight=weight, foldable=_pads_zero(node), why_not="it pads its input")
        g_out = b.virtual(node, "groups_out", groups)
        b.pin(g_out, None, f"{node.name} (Conv group={groups}): the group count is fixed")
        b.product(node, rows, [g_out, b.virtual(node, "per_group_out", c_out // groups)])


def a_conv_transpose(node: Node, b: Builder, se: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    _need_shape(x, w, out)
    view = b.view(w)
    if view is None:
        raise Unsupported("ConvTranspose weight computed at runtime")
    if node.attr("group", 1) != 1:
        raise Unsupported(f"ConvTranspose group={node.attr('group')}")
    _pin_mixed(b, node, x, range(2, x.rank or 0))
    rows = b.k(out, 1)
    b.same(b.k(w, 1), rows)
    b.role(w, 1, "param")
    if bias is not None:
        b.same(b.k(bias, 0), rows)
        b.role(bias, 0, "param")
    b.stem(out, 1)
    b.same(b.k(x, 1), b.k(w, 0))
    b.role(w, 0, "consumer")
    const, perm = view
    b.consume(node, x, 1, "dense", weight=(const.name, perm[0]), foldable=False,
              why_not="a transposed convolution spreads a constant channel unevenly")


def a_gemm(node: Node, b: Builder, se: ShapeEval) -> None:
    a, w = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    _need_shape(a, w, out)
    view = b.view(w)
    if view is None or b.view(a) is not None:
        raise Unsupported("Gemm without exactly one constant weight")
    ka = 0 if node.attr("transA", 0) else 1
    kw = 1 if node.attr("transB", 0) else 0
    b.same(b.k(a, 1 - ka), b.k(out, 0))
    b.same(b.k(w, 1 - kw), b.k(out, 1))
    b.role(w, 1 - kw, "param")
    b.stem(out, 1)
    b.same(b.k(a, ka), b.k(w, kw))
    b.role(w, kw, "consumer")
    const, perm = view
    b.consume(node, a, ka, "gemm", weight=(const.name, perm[kw]), foldable=True)
    if c is not None:
        _broadcast_into(b, c, out)
        if c.rank and c.shape[-1] == out.shape[1]:
            b.role(c, c.rank - 1, "param")


def a_matmul(node: Node, b: Builder, se: ShapeEval) -> None:
    a, w = node.inputs
    out = node.outputs[0]
    _need_shape(a, w, out)
    if a.rank < 2 or w.rank < 2:
        raise Unsupported("MatMul of a 1-d operand")
    view_w, view_a = b.view(w), b.view(a)
    if view_w is not None and view_a is None and w.rank == 2:  # a Linear: x @ W
        for axis in range(a.rank - 1):
            b.same(b.k(a, axis), b.k(out, axis))
        b.same(b.k(w, 1), b.k(out, -1))
        b.role(w, 1, "param")
        b.stem(out, -1)
        b.same(b.k(a, -1), b.k(w, 0))
        b.role(w, 0, "consumer")
        const, perm = view_w
        b.consume(node, a, -1, "matmul", weight=(const.name, perm[0]), foldable=True)
        return
    if view_w is not None or view_a is not None:
        raise Unsupported("MatMul with a constant operand in an unsupported position")
    # two activations (attention): broadcast batch axes, contract K
    batch_out = out.rank - 2
    for value in (a, w):
        offset = batch_out - (value.rank - 2)
        for axis in range(value.rank - 2):
            dim, odim = value.shape[axis], out.shape[axis + offset]
            if dim == 1 and odim != 1:
                continue
            if dim is None or dim != odim:
                raise Unsupported("MatMul batch dims do not match")
            b.same(b.k(value, axis), b.k(out, axis + offset))
    b.same(b.k(a, -2), b.k(out, -2))
    b.same(b.k(w, -1), b.k(out, -1))
    b.same(b.k(a, -1), b.k(w, -2))
    b.consume(node, a, -1, "contract", other=w, foldable=False)


def a_pool(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    if x.rank < 3:
        raise Unsupported("pooling of a rank < 3 input")
    if len(node.outputs) > 1 and node.outputs[1].uses:
        raise Unsupported("MaxPool indices are used")
    for axis in (0, 1):
        b.same(b.k(x, axis), b.k(out, axis))
    _pin_mixed(b, node, x, range(2, x.rank))


def a_resize(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    if x.rank != out.rank:
        raise Unsupported("Resize changes the rank")
    for axis in range(x.rank):
        if x.shape[axis] == out.shape[axis] and x.shape[axis] is not None:
            b.same(b.k(x, axis), b.k(out, axis))
        else:  # interpolated along this axis: its elements mix
            reason = f"{node.name} ({node.op_type}) interpolates along this axis"
            b.pin(b.k(x, axis), None, reason)
            b.pin(b.k(out, axis), None, reason)
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None and sizes.shape is not None and sizes.shape[0] not in (0, x.rank):
        raise Unsupported("Resize sizes with axes")


def pad_amounts(node: Node, se: ShapeEval, rank: int) -> np.ndarray:
    """``[[before, after], ...]`` per axis, from the pads input (opset >= 11) or attribute."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        pads = _ints(se, node.inputs[1], "Pad amounts")
    else:
        pads = np.asarray(node.attr("pads") or [0] * (2 * rank), dtype=np.int64)
    axes_in = node.inputs[3] if len(node.inputs) > 3 else None
    axes = list(range(rank)) if axes_in is None else [int(a) % rank for a in _ints(se, axes_in, "Pad axes")]
    if len(pads) != 2 * len(axes):
        raise Unsupported("malformed Pad amounts")
    amounts = np.zeros((rank, 2), dtype=np.int64)
    for i, axis in enumerate(axes):
        amounts[axis] = (pads[i], pads[i + len(axes)])
    return amounts


def a_pad(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    amounts = pad_amounts(node, se, x.rank)
    if (amounts < 0).any():
        raise Unsupported("Pad with negative amounts (cropping)")
    mode = node.attr("mode", "constant")
    for axis in range(x.rank):
        before, after = (int(v) for v in amounts[axis])
        kx, ko = b.k(x, axis), b.k(out, axis)
        if before == after == 0:
            b.same(kx, ko)
            continue
        n = x.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Pad along an axis of unknown size")
        b.link(kx, np.arange(n), ko, before + np.arange(n))
        added = np.r_[np.arange(before), before + n + np.arange(after)]
        b.pin(ko, added, f"{node.name} (Pad) adds these elements")
        if mode != "constant":
            reason = f"{node.name} (Pad mode={mode}) copies elements along this axis"
            b.pin(kx, None, reason)
            b.pin(ko, None, reason)


def a_concat(node: Node, b: Builder, se: ShapeEval) -> None:
    out = node.outputs[0]
    _need_shape(out, *node.inputs)
    axis = _axis(node, out.rank)
    offset = 0
    ko = b.k(out, axis)
    for value in node.inputs:
        if value is None:
            continue
        for a in range(out.rank):
            if a != axis:
                b.same(b.k(value, a), b.k(out, a))
        n = value.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Concat of an input of unknown width")
        if n:
            b.link(b.k(value, axis), np.arange(n), ko, offset + np.arange(n))
        offset += n
    if offset != out.shape[axis]:
        raise Unsupported("Concat widths do not add up")


def a_split(node: Node, b: Builder, se: ShapeEval) -> None:
    x = node.inputs[0]
    _need_shape(x, *node.outputs)
    axis = _axis(node, x.rank)
    kx = b.k(x, axis)
    offset = 0
    for out in node.outputs:
        for a in range(x.rank):
            if a != axis:
                b.same(b.k(x, a), b.k(out, a))
        n = out.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Split into parts of unknown width")
        if n:
            b.link(kx, offset + np.arange(n), b.k(out, axis), np.arange(n))
        offset += n
    if offset != x.shape[axis]:
        raise Unsupported("Split parts do not add up")


def slice_params(node: Node, se: ShapeEval, rank: int) -> list[tuple[int, int, int, int]]:
    """``[(axis, start, end, step), ...]`` as known ints (raw, not clamped)."""
    if len(node.inputs) > 1:
        starts = _ints(se, node.inputs[1], "Slice starts")
        ends = _ints(se, node.inputs[2], "Slice ends")
        axes_v = node.inputs[3] if len(node.inputs) > 3 else None
        steps_v = node.inputs[4] if len(node.inputs) > 4 else None
        axes = _ints(se, axes_v, "Slice axes") if axes_v is not None else np.arange(len(starts))
        steps = _ints(se, steps_v, "Slice steps") if steps_v is not None else np.ones(len(starts), np.int64)
    else:
        starts = np.asarray(node.attr("starts"), np.int64)
        ends = np.asarray(node.attr("ends"), np.int64)
        axes = np.asarray(node.attr("axes") or list(range(len(starts))), np.int64)
        steps = np.ones(len(starts), np.int64)
    return [(int(a) % rank, int(s), int(e), int(t)) for a, s, e, t in zip(axes, starts, ends, steps)]


def a_slice(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    params = {axis: (s, e, t) for axis, s, e, t in slice_params(node, se, x.rank)}
    for axis in range(x.rank):
        kx, ko = b.k(x, axis), b.k(out, axis)
        if axis not in params:
            b.same(kx, ko)
            continue
        n = x.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Slice along an axis of unknown size")
        start, end, step = params[axis]
        if step == 0:
            raise Unsupported("Slice step 0")
        idx = np.arange(n)[slice(start, end, step)]
        if out.shape[axis] != len(idx):
            raise Unsupported("Slice output width does not match its bounds")
        if len(idx):
            b.link(kx, idx, ko, np.arange(len(idx)))
        if step != 1:
            reason = f"{node.name} (Slice step={step}) along this axis"
            b.pin(kx, None, reason)
            b.pin(ko, None, reason)


def a_gather(node: Node, b: Builder, se: ShapeEval) -> None:
    data, indices = node.inputs
    out = node.outputs[0]
    _need_shape(data, out)
    axis = _axis(node, data.rank)
    idx = b.const_array(indices)
    if idx is None and indices.rank is None:
        raise Unsupported("Gather indices of unknown rank")
    q = idx.ndim if idx is not None else indices.rank
    for a in range(data.rank):  # axes before and after the gathered one map through
        if a < axis:
            b.same(b.k(data, a), b.k(out, a))
        elif a > axis:
            b.same(b.k(data, a), b.k(out, a + q - 1))
    kd = b.k(data, axis)
    if idx is not None:
        n = data.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Gather along an axis of unknown size")
        flat = np.asarray(idx, np.int64).reshape(-1)
        flat = np.where(flat < 0, flat + n, flat)
        if idx.ndim == 1:
            b.link(kd, flat, b.k(out, axis), np.arange(len(flat)))
        else:  # selection by position (q/k/v of a packed projection): the axis keeps its size
            b.pin(kd, None, f"{node.name} (Gather) selects by position along this axis")
        return
    if b.view(data) is not None and axis == 0 and data.rank == 2:
        # an embedding table: its columns are the channels of the looked-up vectors
        b.role(data, 1, "param")
        b.stem(out, -1)
        return
    b.pin(kd, None, f"{node.name} (Gather) indexes this axis at runtime")


def a_transpose(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    if x.rank is None:
        raise Unsupported("unknown rank")
    perm = node.attr("perm") or list(range(x.rank))[::-1]
    for i, p in enumerate(perm):
        b.same(b.k(x, p), b.k(out, i))


def a_reshape(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    relate_reshape(b, node, x, out)
    if node.op_type == "Reshape":
        sv = se.ev(node.inputs[1])
        if sv is not None:
            for j, dim in enumerate(out.shape):
                if not isinstance(dim, int) and j < len(sv.taint):
                    for key in sv.taint[j]:  # a symbolic target entry may not depend on channel counts
                        b.pin(key, None, f"{node.name} (Reshape) computes a symbolic dim from this axis")


def a_expand(node: Node, b: Builder, se: ShapeEval) -> None:
    _broadcast_into(b, node.inputs[0], node.outputs[0])


def a_tile(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    repeats = _ints(se, node.inputs[1], "Tile repeats")
    for axis in range(x.rank):
        if repeats[axis] == 1:
            b.same(b.k(x, axis), b.k(out, axis))
        else:
            reason = f"{node.name} (Tile) repeats this axis"
            b.pin(b.k(x, axis), None, reason)
            b.pin(b.k(out, axis), None, reason)


def a_softmax(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _identity_axes(b, x, out)
    default = -1 if b.model.opset >= 13 else 1
    axis = _axis(node, x.rank, default)
    mixed = [axis] if b.model.opset >= 13 else list(range(axis, x.rank))
    for a in mixed:
        b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) normalizes over this axis")


def reduce_axes(node: Node, se: ShapeEval, rank: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = _ints(se, node.inputs[1], "reduction axes")
    else:
        axes = node.attr("axes")
    if axes is None or len(axes) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted({int(a) % rank for a in axes})


_SUM_LIKE = {"ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare"}


def a_reduce(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axes = reduce_axes(node, se, x.rank)
    keep = node.attr("keepdims", 1)
    j = 0
    for a in range(x.rank):
        if a in axes:
            if node.op_type in _SUM_LIKE:
                b.consume(node, x, a, "dense", foldable=False, why_not=f"{node.op_type} sums over the channels")
            else:
                b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) reduces over this axis")
            j += 1 if keep else 0
        else:
            b.same(b.k(x, a), b.k(out, j))
            j += 1


def a_argreduce(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axis = _axis(node, x.rank)
    keep = node.attr("keepdims", 1)
    j = 0
    for a in range(x.rank):
        if a == axis:
            b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) reduces over this axis")
            j += 1 if keep else 0
        else:
            b.same(b.k(x, a), b.k(out, j))
            j += 1


def a_none(node: Node, b: Builder, se: ShapeEval) -> None:
    """Constants: sliced by construction like initializers; no relation of their own."""


def a_fresh(node: Node, b: Builder, se: ShapeEval) -> None:
    """A tensor whose size is fixed by the op (ConstantOfShape, Range, Shape): it can never shrink."""
    for out in node.outputs:
        b.pin_value(out, f"{node.name} ({node.op_type}) makes a tensor of fixed size")


# ==================================================================================================
# construction rewrites (the rc methods are in prune_construct.RewriteCtx)


def r_conv(node: Node, rc: "RewriteCtx") -> None:
    x = node.inputs[0]
    groups = node.attr("group", 1)
    if groups > 1 and groups == rc.old_dim(x, 1) and rc.old_dim(node.inputs[1], 1) == 1:
        node.set_attr("group", rc.new_dim(x, 1))  # depthwise stays depthwise


def r_groupnorm(node: Node, rc: "RewriteCtx") -> None:
    node.set_attr("num_groups", rc.virtual_size(node, "groups"))


def r_reshape(node: Node, rc: "RewriteCtx") -> None:
    rc.rewrite_shape_input(node, 1, node.inputs[0], node.outputs[0], copy_zero=not node.attr("allowzero", 0))


def r_expand(node: Node, rc: "RewriteCtx") -> None:
    rc.rewrite_shape_input(node, 1, node.inputs[0], node.outputs[0], broadcast=True)


def r_resize(node: Node, rc: "RewriteCtx") -> None:
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None and sizes.shape and sizes.shape[0]:
        rc.rewrite_shape_input(node, 3, node.inputs[0], node.outputs[0])


def r_slice(node: Node, rc: "RewriteCtx") -> None:
    x = node.inputs[0]
    params = slice_params(node, rc.shape_eval, x.rank)
    changed = False
    starts, ends = [], []
    for axis, start, end, step in params:
        kept = rc.kept(x, axis)
        if kept is not None:
            n = rc.old_dim(x, axis)
            s, e, _ = slice(start, end, step).indices(n)
            start, end = int(np.searchsorted(kept, s)), int(np.searchsorted(kept, e))
            changed = True
        starts.append(start)
        ends.append(end)
    if len(node.inputs) > 1 and (rc.depends_on_change(node.inputs[1]) or rc.depends_on_change(node.inputs[2])):
        changed = True  # computed from sizes that change: write the (re)computed constants
    if not changed:
        return
    if len(node.inputs) > 1:
        rc.set_const_input(node, 1, np.asarray(starts, np.int64), "starts")
        rc.set_const_input(node, 2, np.asarray(ends, np.int64), "ends")
        axes = np.asarray([p[0] for p in params], np.int64)
        steps = np.asarray([p[3] for p in params], np.int64)
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            rc.set_const_input(node, 3, axes, "axes")
        if len(node.inputs) > 4 and node.inputs[4] is not None:
            rc.set_const_input(node, 4, steps, "steps")
    else:
        node.set_attr("starts", starts)
        node.set_attr("ends", ends)


def r_split(node: Node, rc: "RewriteCtx") -> None:
    x = node.inputs[0]
    axis = node.attr("axis", 0) % x.rank
    if rc.kept(x, axis) is None:
        return
    sizes = np.asarray([rc.new_dim(out, axis) for out in node.outputs], np.int64)
    if rc.opset >= 13:
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            rc.set_const_input(node, 1, sizes, "split")
        else:
            node.inputs.append(None)
            rc.set_const_input(node, 1, sizes, "split")
        if node.attr("num_outputs") is not None:
            node.del_attr("num_outputs")
    else:
        node.set_attr("split", [int(s) for s in sizes])


def r_gather(node: Node, rc: "RewriteCtx") -> None:
    data, indices = node.inputs
    axis = node.attr("axis", 0) % data.rank
    kept = rc.kept(data, axis)
    idx = rc.const_array(indices)
    if kept is None or idx is None:
        return
    n = rc.old_dim(data, axis)
    new_pos = np.full(n, -1, np.int64)
    new_pos[kept] = np.arange(len(kept))
    flat = np.asarray(idx, np.int64).reshape(-1)
    flat = np.where(flat < 0, flat + n, flat)
    if idx.ndim == 1:
        out_kept = rc.kept(node.outputs[0], axis)
        if out_kept is not None:
            flat = flat[out_kept]
        new = new_pos[flat]
    else:
        new = new_pos[flat].reshape(idx.shape)
    if (new < 0).any():
        raise AssertionError(f"{node.name}: a gathered element was removed")
    rc.set_const_input(node, 1, new.astype(idx.dtype), "indices")


# ==================================================================================================
# the table

_register("Relu LeakyRelu Elu Celu Selu ThresholdedRelu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish "
          "Gelu Erf Exp Log Sqrt Reciprocal Neg Abs Sign Sin Cos Floor Ceil Round Shrink",
          a_unary)
for _op, _fn in UNARY.items():
    CHANNEL_RULES[_op] = OpRule(a_unary, _unary(_fn), aligned=True)
_register("Identity Cast Dropout", a_unary, _z_first)
_register("Add Sum", a_elementwise, _z_add)
_register("Sub", a_elementwise, _z_sub)
_register("Mul", a_elementwise, _z_mul)
_register("Div", a_elementwise, _z_div)
_register("Pow", a_elementwise, _z_pow)
_register("Max", a_elementwise, _z_reduce_all(max))
_register("Min", a_elementwise, _z_reduce_all(min))
_register("Mean", a_elementwise, _z_reduce_all(lambda v: sum(v) / len(v)))
_register("Where", a_elementwise, _z_where)
_register("PRelu", a_elementwise, _z_prelu)
_register("Clip", a_elementwise, _z_clip)
_register("Equal", a_elementwise, _z_compare(lambda a, b: a == b))
_register("Less", a_elementwise, _z_compare(lambda a, b: a < b))
_register("Greater", a_elementwise, _z_compare(lambda a, b: a > b))
_register("LessOrEqual", a_elementwise, _z_compare(lambda a, b: a <= b))
_register("GreaterOrEqual", a_elementwise, _z_compare(lambda a, b: a >= b))
_register("And", a_elementwise, _z_compare(lambda a, b: bool(a) and bool(b)))
_register("Or", a_elementwise, _z_compare(lambda a, b: bool(a) or bool(b)))
_register("Xor", a_elementwise, _z_compare(lambda a, b: bool(a) != bool(b)))
_register("Not", a_unary, _unary(lambda n, z: float(not z)))
_register("IsNaN IsInf Mod", a_elementwise)
_register("BatchNormalization", a_batchnorm, _z_norm(1, 2))
_register("InstanceNormalization", a_instancenorm, _z_norm(1, 2))
_register("GroupNormalization", a_groupnorm, _z_norm(1, 2), r_groupnorm)
_register("LayerNormalization", a_layernorm, aligned=False)
_register("Conv", a_conv, _z_stem(lambda n: {1}), r_conv)
_register("ConvTranspose", a_conv_transpose, _z_stem(lambda n: {1}))
_register("Gemm", a_gemm, _z_gemm)
_z_linear = _z_stem(lambda n: {n.outputs[0].rank - 1})
_register("MatMul", a_matmul, lambda n, zc: _z_linear(n, zc) if zc.is_linear(n) else _z_contract(n, zc))
_register("MaxPool GlobalMaxPool GlobalAveragePool", a_pool, _z_first)
_register("AveragePool", a_pool, _z_avgpool)
_register("LpPool GlobalLpPool", a_pool, _z_lppool)
_register("Resize Upsample", a_resize, _z_resize, r_resize)
_register("Pad", a_pad, _z_pad)
_register("Concat", a_concat, _z_concat)
_register("Split", a_split, _z_first, r_split, aligned=False)
_register("Slice", a_slice, _z_first, r_slice)
_z_embedding = _z_stem(lambda n: {n.outputs[0].rank - 1})
_register("Gather", a_gather, lambda n, zc: _z_embedding(n, zc) if zc.is_embedding(n) else zc.z(n.inputs[0]),
          r_gather, aligned=False)
_register("Transpose", a_transpose, _z_transpose)
_register("Reshape", a_reshape, _z_first, r_reshape, aligned=False)
_register("Flatten Squeeze Unsqueeze", a_reshape, _z_first, aligned=False)
_register("Expand", a_expand, _z_expand, r_expand)
_register("Tile", a_tile, _z_first)
_register("Softmax LogSoftmax Hardmax", a_softmax, _z_softmax)
_register("ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum "
          "ReduceLogSumExp", a_reduce, _z_reduce, aligned=False)
_register("ArgMax ArgMin", a_argreduce, aligned=False)
_register("Constant", a_none, aligned=False)
_register("Shape Size ConstantOfShape Range EyeLike RandomNormal RandomUniform RandomNormalLike "
          "RandomUniformLike", a_fresh, aligned=False)


def coverage() -> dict[str, list[str]]:
    """Op types by treatment (for docs and reports)."""
    return {"handled": sorted(CHANNEL_RULES)}


__all__: list[Any] = ["CHANNEL_RULES", "OpRule", "UNARY", "coverage"]
