"""Zero rules: what a removed channel holds after each operator (f(0) and friends).

A group's parameters are zeroed, so at a stem's output a removed channel is exactly 0. After ``Sigmoid`` it is
0.5, after ``Softplus`` log 2, after ``Mul`` by anything 0 again. ``analysis.py`` runs these functions in
topological order (per live output axis for *aligned* ops, see ``OpRule.aligned``) and checks the result wherever
a removed channel is summed into something that stays: 0 is exact, a constant is folded into the consumer's
bias, anything else pins the space. ``None`` means "not one known constant".
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from asgnas.ir import Node, Value
from asgnas.passes.pruning.attrs import axis_attr, pad_amounts, pads_zero, reduce_axes
from asgnas.passes.pruning.builder import Builder, Unsupported
from asgnas.passes.pruning.shapes import ShapeEval


class ZeroCtx:
    """What the zero functions of the rules see.

    ``values[name][axis]`` is what a removed channel along live ``axis`` of the value holds there (``"*"``: the
    value has no live axis). While an *aligned* rule runs, ``axis`` is the output axis being evaluated and
    ``z(v)``/``operand`` read the input axis aligned with it (numpy broadcasting), so a slab along one axis is never
    confused with a slab along another (a Linear over tokens passes the channels through with its bias added).
    """

    def __init__(self, builder: Builder, root_of_key: list[int], root_live: set[int], opset: int,
                 shape_eval: ShapeEval) -> None:
        self.builder = builder
        self.root_of_key = root_of_key
        self.root_live = root_live
        self.opset = opset
        self.shape_eval = shape_eval
        self.values: dict[str, dict[int | str, float | None]] = {}
        self._scalar: dict[str, float | None] = {}
        self.axis: int | None = None  # output axis being evaluated (aligned rules)
        self.out: Value | None = None

    def live(self, value: Value, axis: int) -> bool:
        if value.rank is None:
            return False
        key = self.builder.keys.get((value.name, axis % value.rank))
        return key is not None and self.root_of_key[key] in self.root_live

    def live_axes(self, value: Value | None) -> list[int]:
        if value is None or value.rank is None:
            return []
        return [a for a in range(value.rank) if self.live(value, a)]

    def scalar(self, value: Value | None) -> float | None:
        """The value of a constant whose elements are all equal; None otherwise."""
        if value is None or value.const is None:
            return None
        if value.name not in self._scalar:
            array = value.const.array
            if array.size == 0 or array.dtype.kind not in "fiub":
                result = None
            else:
                first = array.reshape(-1)[0]
                result = float(first) if np.all(array == first) else None
            self._scalar[value.name] = result
        return self._scalar[value.name]

    def _aligned(self, value: Value) -> int | None:
        if self.axis is None or self.out is None or value.rank is None or self.out.rank is None:
            return None
        axis = self.axis - (self.out.rank - value.rank)
        return axis if 0 <= axis < value.rank else None

    def z(self, value: Value | None) -> float | None:
        """The input's removed slab along the axis aligned with the output axis being evaluated (or common to
        all its live axes when none is)."""
        if value is None:
            return None
        return self.z_at(value, self._aligned(value))

    def z_at(self, value: Value | None, axis: int | None) -> float | None:
        if value is None:
            return None
        if value.const is not None:
            if value.is_initializer and self._is_live_param(value, axis):
                return 0.0  # zeroed with the group
            return self.scalar(value)
        entry = self.values.get(value.name)
        if entry is None:
            return None
        if axis is not None and value.rank:
            axis %= value.rank
            if axis in entry:
                return entry[axis]
        vals = list(entry.values())
        return vals[0] if vals and all(v is not None and v == vals[0] for v in vals) else None

    def _is_live_param(self, value: Value, axis: int | None) -> bool:
        axes = range(value.rank or 0) if axis is None else [axis]
        for a in axes:
            key = self.builder.keys.get((value.name, a))
            if key is not None and self.builder.roles.get(key, "param") == "param" \
                    and self.root_of_key[key] in self.root_live:
                return True
        return False

    def operand(self, node: Node, index: int) -> float | None:
        """Input ``index`` as seen on a removed slab of the output: its own removed slab where it shares the
        axis, its (constant) value where it broadcasts along it; None if these differ."""
        value = node.inputs[index]
        out = self.out if self.out is not None else node.outputs[0]
        if value is None or value.rank is None or out.rank is None or value.shape is None:
            return self.z(value)
        offset = out.rank - value.rank
        axes = [self.axis] if self.axis is not None else self.live_axes(out)
        member = broadcast = False
        for axis in axes:
            dim = value.shape[axis - offset] if axis >= offset else 1
            if dim == 1 and out.shape[axis] != 1:
                broadcast = True
            else:
                member = True
        if not broadcast:
            return self.z(value)
        if not member:
            return self.scalar(value)
        z, k = self.z(value), self.scalar(value)
        return z if z is not None and z == k else None

    def padded_axes(self, node: Node) -> list[int] | None:
        x = node.inputs[0]
        try:
            amounts = pad_amounts(node, self.shape_eval, x.rank)
        except Unsupported:
            return None
        return [a for a in range(x.rank) if amounts[a].any()]

    def reduced_count(self, node: Node) -> int | None:
        x = node.inputs[0]
        try:
            axes = reduce_axes(node, self.shape_eval, x.rank)
        except Unsupported:
            return None
        dims = [x.shape[a] for a in axes]
        return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None

    def is_linear(self, node: Node) -> bool:
        return self.builder.view(node.inputs[1]) is not None and self.builder.view(node.inputs[0]) is None

    def is_embedding(self, node: Node) -> bool:
        return self.builder.view(node.inputs[0]) is not None and self.builder.const_array(node.inputs[1]) is None


Zero = Callable[[Node, ZeroCtx], "float | None"]


def zero_first(node: Node, ctx: ZeroCtx) -> float | None:
    return ctx.z(node.inputs[0])


def zero_dropout(node: Node, ctx: ZeroCtx) -> float | None:
    """Inference Dropout is the identity; a training-mode one scales a random subset, so only 0 survives."""
    z = ctx.z(node.inputs[0])
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is not None and ctx.scalar(training) != 0:
        return z if z == 0 else None
    return z


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def zero_unary(fn: Callable[[Node, float], float | None]) -> Zero:
    def zero(node: Node, ctx: ZeroCtx) -> float | None:
        z = ctx.z(node.inputs[0])
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
    "Relu": lambda node, z: max(z, 0.0),
    "LeakyRelu": lambda node, z: z if z >= 0 else node.attr("alpha", 0.01) * z,
    "Elu": lambda node, z: z if z > 0 else node.attr("alpha", 1.0) * math.expm1(z),
    "Celu": lambda node, z: max(0.0, z) + min(0.0, node.attr("alpha", 1.0) * math.expm1(z / node.attr("alpha", 1.0))),
    "Selu": lambda node, z: node.attr("gamma", 1.0507009873554805)
    * (z if z > 0 else node.attr("alpha", 1.6732632423543772) * math.expm1(z)),
    "ThresholdedRelu": lambda node, z: z if z > node.attr("alpha", 1.0) else 0.0,
    "Sigmoid": lambda node, z: _sigmoid(z),
    "HardSigmoid": lambda node, z: max(0.0, min(1.0, node.attr("alpha", 0.2) * z + node.attr("beta", 0.5))),
    "HardSwish": lambda node, z: z * max(0.0, min(1.0, z / 6.0 + 0.5)),
    "Tanh": lambda node, z: math.tanh(z),
    "Softplus": lambda node, z: _softplus(z),
    "Softsign": lambda node, z: z / (1.0 + abs(z)),
    "Mish": lambda node, z: z * math.tanh(_softplus(z)),
    "Gelu": lambda node, z: (
        0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
        if node.attr("approximate", "none") == "tanh"
        else 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))
    ),
    "Erf": lambda node, z: math.erf(z),
    "Exp": lambda node, z: math.exp(z),
    "Log": lambda node, z: math.log(z) if z > 0 else None,
    "Sqrt": lambda node, z: math.sqrt(z) if z >= 0 else None,
    "Reciprocal": lambda node, z: 1.0 / z if z != 0 else None,
    "Neg": lambda node, z: -z,
    "Abs": lambda node, z: abs(z),
    "Sign": lambda node, z: float(np.sign(z)),
    "Sin": lambda node, z: math.sin(z),
    "Cos": lambda node, z: math.cos(z),
    "Floor": lambda node, z: float(math.floor(z)),
    "Ceil": lambda node, z: float(math.ceil(z)),
    "Round": lambda node, z: float(np.round(z)),
    "Shrink": lambda node, z: (z + node.attr("bias", 0.0)) if z < -node.attr("lambd", 0.5)
    else (z - node.attr("bias", 0.0)) if z > node.attr("lambd", 0.5) else 0.0,
    "Identity": lambda node, z: z,
    "Cast": lambda node, z: z,
}


def zero_add(node: Node, ctx: ZeroCtx) -> float | None:
    vals = [ctx.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    return None if any(v is None for v in vals) else float(sum(vals))


def zero_sub(node: Node, ctx: ZeroCtx) -> float | None:
    a, b = ctx.operand(node, 0), ctx.operand(node, 1)
    return None if a is None or b is None else a - b


def zero_mul(node: Node, ctx: ZeroCtx) -> float | None:
    vals = [ctx.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    if any(v == 0 for v in vals):
        return 0.0  # a zero factor wins whatever the other side is
    return None if any(v is None for v in vals) else _finite(float(np.prod(vals)))


def zero_div(node: Node, ctx: ZeroCtx) -> float | None:
    a, b = ctx.operand(node, 0), ctx.operand(node, 1)
    if a is None or b is None or b == 0:
        return None
    return a / b


def zero_pow(node: Node, ctx: ZeroCtx) -> float | None:
    a, b = ctx.operand(node, 0), ctx.operand(node, 1)
    if a is None or b is None:
        return None
    try:
        return _finite(float(a**b))
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def zero_reduce_all(fn: Callable[[list[float]], float]) -> Zero:
    def zero(node: Node, ctx: ZeroCtx) -> float | None:
        vals = [ctx.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
        return None if any(v is None for v in vals) else float(fn(vals))

    return zero


def zero_where(node: Node, ctx: ZeroCtx) -> float | None:
    cond, x, y = ctx.operand(node, 0), ctx.operand(node, 1), ctx.operand(node, 2)
    if cond is not None:
        return x if cond else y
    return x if x is not None and x == y else None


def zero_compare(fn: Callable[[float, float], bool]) -> Zero:
    def zero(node: Node, ctx: ZeroCtx) -> float | None:
        a, b = ctx.operand(node, 0), ctx.operand(node, 1)
        return None if a is None or b is None else float(fn(a, b))

    return zero


def zero_prelu(node: Node, ctx: ZeroCtx) -> float | None:
    x = ctx.operand(node, 0)
    if x is None or x >= 0:
        return x
    slope = ctx.operand(node, 1)
    return None if slope is None else slope * x


def zero_clip(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    if z is None:
        return None
    lo = ctx.scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else node.attr("min")
    hi = ctx.scalar(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else node.attr("max")
    if (len(node.inputs) > 1 and node.inputs[1] is not None and lo is None) or (
        len(node.inputs) > 2 and node.inputs[2] is not None and hi is None
    ):
        return None
    if lo is not None:
        z = max(z, lo)
    if hi is not None:
        z = min(z, hi)
    return z


def zero_norm(scale_index: int, bias_index: int) -> Zero:
    """Batch/instance/group norm: a zero scale (or a constant input channel) leaves exactly the bias."""

    def zero(node: Node, ctx: ZeroCtx) -> float | None:
        if len(node.inputs) <= bias_index or node.inputs[bias_index] is None:
            return None
        if ctx.axis is not None and ctx.axis != 1:
            return None  # a removed slab along another axis is normalised per channel: not one constant
        scale = ctx.z(node.inputs[scale_index])
        if scale != 0 and (node.op_type == "BatchNormalization" or ctx.z(node.inputs[0]) is None):
            return None  # BN of a constant keeps (c - mean) * scale / std: per channel
        return ctx.z(node.inputs[bias_index])

    return zero


def zero_rmsnorm(node: Node, ctx: ZeroCtx) -> float | None:
    """``x / sqrt(mean(x^2) + eps) * scale``: a zero input slab stays 0 (with a positive epsilon)."""
    epsilon = node.attr("epsilon", 1e-5)
    return 0.0 if epsilon > 0 and ctx.z(node.inputs[0]) == 0 else None


def zero_stem(own_axes: Callable[[Node], set[int]]) -> Zero:
    """A stem zeroes the slabs of its own output axis (its rows are in the group); a removed slab along an axis
    it passes through from its input would be ``bias + z * sum(W)``: only exact as 0 (input slab 0, no bias)."""

    def zero(node: Node, ctx: ZeroCtx) -> float | None:
        if ctx.axis is None or ctx.axis in own_axes(node):
            return 0.0
        has_bias = node.op_type != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None
        return 0.0 if ctx.z(node.inputs[0]) == 0 and not has_bias else None

    return zero


def zero_gemm(node: Node, ctx: ZeroCtx) -> float | None:
    c = node.inputs[2] if len(node.inputs) > 2 else None
    value = 0.0 if c is None else _times(node.attr("beta", 1.0), ctx.operand(node, 2))
    if ctx.axis is not None and ctx.axis != 1:  # rows of A passed through: A's slab must be zero
        if ctx.z_at(node.inputs[0], 1 if node.attr("transA", 0) else 0) != 0:
            return None
    return value


def _times(a: float, b: float | None) -> float | None:
    return None if b is None else a * b


def zero_contract(node: Node, ctx: ZeroCtx) -> float | None:
    """A @ B of activations: a slab along A's rows is zero iff A's is; along B's columns iff B's is; along a
    batch axis iff either is."""
    a, b = node.inputs
    rank = node.outputs[0].rank
    if ctx.axis == rank - 2:
        return 0.0 if ctx.z_at(a, a.rank - 2) == 0 else None
    if ctx.axis == rank - 1:
        return 0.0 if ctx.z_at(b, b.rank - 1) == 0 else None
    return 0.0 if ctx.z(a) == 0 or ctx.z(b) == 0 else None


def zero_transpose(node: Node, ctx: ZeroCtx) -> float | None:
    x = node.inputs[0]
    if ctx.axis is None:
        return ctx.z(x)
    perm = node.attr("perm") or list(range(x.rank))[::-1]
    return ctx.z_at(x, perm[ctx.axis])


def zero_expand(node: Node, ctx: ZeroCtx) -> float | None:
    return ctx.operand(node, 0)


def zero_avgpool(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    if z == 0 or not node.attr("count_include_pad", 0) or pads_zero(node):
        return z
    return None


def zero_lppool(node: Node, ctx: ZeroCtx) -> float | None:
    return 0.0 if ctx.z(node.inputs[0]) == 0 else None


def zero_resize(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return z if z == node.attr("extrapolation_value", 0.0) else None
    return z


def zero_pad(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    mode = node.attr("mode", "constant")
    if z is None or mode != "constant":
        return z
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        value = ctx.scalar(node.inputs[2])
    else:
        value = node.attr("value", 0.0)
    if value is not None and value == z:
        return z
    # padding a removed slab with a different constant makes it non-uniform, unless the only padded axis is the
    # slab's own axis (new channels were added, the slab is untouched)
    padded = ctx.padded_axes(node)
    if padded is not None and ctx.axis is not None and set(padded) <= {ctx.axis}:
        return z
    return None


def zero_concat(node: Node, ctx: ZeroCtx) -> float | None:
    out = node.outputs[0]
    if out.rank is None:
        return None
    axis = axis_attr(node, out.rank)
    inputs = [v for v in node.inputs if v is not None]
    if ctx.axis is not None and ctx.axis != axis:  # a slab across the concat axis spans every input
        vals = [ctx.z_at(v, ctx.axis) for v in inputs]
    else:
        vals = [ctx.z_at(v, axis) for v in inputs if ctx.live(v, axis)] or [ctx.z_at(v, axis) for v in inputs]
    return vals[0] if vals and all(v is not None and v == vals[0] for v in vals) else None


def zero_softmax(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    x = node.inputs[0]
    if z is None or x.shape is None:
        return None
    default = -1 if ctx.opset >= 13 else 1
    axis = node.attr("axis", default) % x.rank
    dims = x.shape[axis:] if ctx.opset < 13 else (x.shape[axis],)
    if not all(isinstance(d, int) for d in dims):
        return None
    n = int(np.prod(dims))
    if node.op_type == "Softmax":
        return 1.0 / n
    if node.op_type == "LogSoftmax":
        return -math.log(n)
    return None


def zero_reduce(node: Node, ctx: ZeroCtx) -> float | None:
    z = ctx.z(node.inputs[0])
    n = ctx.reduced_count(node)
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
