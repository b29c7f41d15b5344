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

    def __init__(self, b: Builder, root_of_key: list[int], root_live: set[int], opset: int,
                 se: ShapeEval) -> None:
        self.b = b
        self.root_of_key = root_of_key
        self.root_live = root_live
        self.opset = opset
        self.se = se
        self.values: dict[str, dict[int | str, float | None]] = {}
        self._scalar: dict[str, float | None] = {}
        self.axis: int | None = None  # output axis being evaluated (aligned rules)
        self.out: Value | None = None

    def live(self, value: Value, axis: int) -> bool:
        if value.rank is None:
            return False
        key = self.b.keys.get((value.name, axis % value.rank))
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
            key = self.b.keys.get((value.name, a))
            if key is not None and self.b.roles.get(key, "param") == "param" \
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
            amounts = pad_amounts(node, self.se, x.rank)
        except Unsupported:
            return None
        return [a for a in range(x.rank) if amounts[a].any()]

    def reduced_count(self, node: Node) -> int | None:
        x = node.inputs[0]
        try:
            axes = reduce_axes(node, self.se, x.rank)
        except Unsupported:
            return None
        dims = [x.shape[a] for a in axes]
        return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None

    def is_linear(self, node: Node) -> bool:
        return self.b.view(node.inputs[1]) is not None and self.b.view(node.inputs[0]) is None

    def is_embedding(self, node: Node) -> bool:
        return self.b.view(node.inputs[0]) is not None and self.b.const_array(node.inputs[1]) is None


Zero = Callable[[Node, ZeroCtx], "float | None"]


def z_first(node: Node, zc: ZeroCtx) -> float | None:
    return zc.z(node.inputs[0])


def z_dropout(node: Node, zc: ZeroCtx) -> float | None:
    """Inference Dropout is the identity; a training-mode one scales a random subset, so only 0 survives."""
    z = zc.z(node.inputs[0])
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is not None and zc.scalar(training) != 0:
        return z if z == 0 else None
    return z


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def z_unary(fn: Callable[[Node, float], float | None]) -> Zero:
    def zero(node: Node, zc: ZeroCtx) -> float | None:
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


def z_add(node: Node, zc: ZeroCtx) -> float | None:
    vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    return None if any(v is None for v in vals) else float(sum(vals))


def z_sub(node: Node, zc: ZeroCtx) -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    return None if a is None or b is None else a - b


def z_mul(node: Node, zc: ZeroCtx) -> float | None:
    vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
    if any(v == 0 for v in vals):
        return 0.0  # a zero factor wins whatever the other side is
    return None if any(v is None for v in vals) else _finite(float(np.prod(vals)))


def z_div(node: Node, zc: ZeroCtx) -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    if a is None or b is None or b == 0:
        return None
    return a / b


def z_pow(node: Node, zc: ZeroCtx) -> float | None:
    a, b = zc.operand(node, 0), zc.operand(node, 1)
    if a is None or b is None:
        return None
    try:
        return _finite(float(a**b))
    except (ZeroDivisionError, OverflowError, ValueError):
        return None


def z_reduce_all(fn: Callable[[list[float]], float]) -> Zero:
    def zero(node: Node, zc: ZeroCtx) -> float | None:
        vals = [zc.operand(node, i) for i, v in enumerate(node.inputs) if v is not None]
        return None if any(v is None for v in vals) else float(fn(vals))

    return zero


def z_where(node: Node, zc: ZeroCtx) -> float | None:
    cond, x, y = zc.operand(node, 0), zc.operand(node, 1), zc.operand(node, 2)
    if cond is not None:
        return x if cond else y
    return x if x is not None and x == y else None


def z_compare(fn: Callable[[float, float], bool]) -> Zero:
    def zero(node: Node, zc: ZeroCtx) -> float | None:
        a, b = zc.operand(node, 0), zc.operand(node, 1)
        return None if a is None or b is None else float(fn(a, b))

    return zero


def z_prelu(node: Node, zc: ZeroCtx) -> float | None:
    x = zc.operand(node, 0)
    if x is None or x >= 0:
        return x
    slope = zc.operand(node, 1)
    return None if slope is None else slope * x


def z_clip(node: Node, zc: ZeroCtx) -> float | None:
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


def z_norm(scale_index: int, bias_index: int) -> Zero:
    """Batch/instance/group norm: a zero scale (or a constant input channel) leaves exactly the bias."""

    def zero(node: Node, zc: ZeroCtx) -> float | None:
        if len(node.inputs) <= bias_index or node.inputs[bias_index] is None:
            return None
        if zc.axis is not None and zc.axis != 1:
            return None  # a removed slab along another axis is normalised per channel: not one constant
        scale = zc.z(node.inputs[scale_index])
        if scale != 0 and (node.op_type == "BatchNormalization" or zc.z(node.inputs[0]) is None):
            return None  # BN of a constant keeps (c - mean) * scale / std: per channel
        return zc.z(node.inputs[bias_index])

    return zero


def z_rmsnorm(node: Node, zc: ZeroCtx) -> float | None:
    """``x / sqrt(mean(x^2) + eps) * scale``: a zero input slab stays 0 (with a positive epsilon)."""
    epsilon = node.attr("epsilon", 1e-5)
    return 0.0 if epsilon > 0 and zc.z(node.inputs[0]) == 0 else None


def z_stem(own_axes: Callable[[Node], set[int]]) -> Zero:
    """A stem zeroes the slabs of its own output axis (its rows are in the group); a removed slab along an axis
    it passes through from its input would be ``bias + z * sum(W)``: only exact as 0 (input slab 0, no bias)."""

    def zero(node: Node, zc: ZeroCtx) -> float | None:
        if zc.axis is None or zc.axis in own_axes(node):
            return 0.0
        has_bias = node.op_type != "MatMul" and len(node.inputs) > 2 and node.inputs[2] is not None
        return 0.0 if zc.z(node.inputs[0]) == 0 and not has_bias else None

    return zero


def z_gemm(node: Node, zc: ZeroCtx) -> float | None:
    c = node.inputs[2] if len(node.inputs) > 2 else None
    value = 0.0 if c is None else _times(node.attr("beta", 1.0), zc.operand(node, 2))
    if zc.axis is not None and zc.axis != 1:  # rows of A passed through: A's slab must be zero
        if zc.z_at(node.inputs[0], 1 if node.attr("transA", 0) else 0) != 0:
            return None
    return value


def _times(a: float, b: float | None) -> float | None:
    return None if b is None else a * b


def z_contract(node: Node, zc: ZeroCtx) -> float | None:
    """A @ B of activations: a slab along A's rows is zero iff A's is; along B's columns iff B's is; along a
    batch axis iff either is."""
    a, b = node.inputs
    rank = node.outputs[0].rank
    if zc.axis == rank - 2:
        return 0.0 if zc.z_at(a, a.rank - 2) == 0 else None
    if zc.axis == rank - 1:
        return 0.0 if zc.z_at(b, b.rank - 1) == 0 else None
    return 0.0 if zc.z(a) == 0 or zc.z(b) == 0 else None


def z_transpose(node: Node, zc: ZeroCtx) -> float | None:
    x = node.inputs[0]
    if zc.axis is None:
        return zc.z(x)
    perm = node.attr("perm") or list(range(x.rank))[::-1]
    return zc.z_at(x, perm[zc.axis])


def z_expand(node: Node, zc: ZeroCtx) -> float | None:
    return zc.operand(node, 0)


def z_avgpool(node: Node, zc: ZeroCtx) -> float | None:
    z = zc.z(node.inputs[0])
    if z == 0 or not node.attr("count_include_pad", 0) or pads_zero(node):
        return z
    return None


def z_lppool(node: Node, zc: ZeroCtx) -> float | None:
    return 0.0 if zc.z(node.inputs[0]) == 0 else None


def z_resize(node: Node, zc: ZeroCtx) -> float | None:
    z = zc.z(node.inputs[0])
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return z if z == node.attr("extrapolation_value", 0.0) else None
    return z


def z_pad(node: Node, zc: ZeroCtx) -> float | None:
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


def z_concat(node: Node, zc: ZeroCtx) -> float | None:
    out = node.outputs[0]
    if out.rank is None:
        return None
    axis = axis_attr(node, out.rank)
    inputs = [v for v in node.inputs if v is not None]
    if zc.axis is not None and zc.axis != axis:  # a slab across the concat axis spans every input
        vals = [zc.z_at(v, zc.axis) for v in inputs]
    else:
        vals = [zc.z_at(v, axis) for v in inputs if zc.live(v, axis)] or [zc.z_at(v, axis) for v in inputs]
    return vals[0] if vals and all(v is not None and v == vals[0] for v in vals) else None


def z_softmax(node: Node, zc: ZeroCtx) -> float | None:
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


def z_reduce(node: Node, zc: ZeroCtx) -> float | None:
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
