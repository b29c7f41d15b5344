"""The channel path after a Concat joint: where the channels of one Concat operand go until the next stems.

Erasing an operand of a Concat removes its channels from the Concat's output (spec 4, pass 2), so everything that
reads those channels must drop them too: per-channel ops between the Concat and the next stems lose their slices,
the stems lose their input columns. ``trace_channels`` walks that path once and returns a ``ChannelPlan``; it
returns a reason string instead when some reader cannot drop channels (a graph output, a grouped conv, a shape
read, ...), in which case the Concat is not an erase-joint. A Transpose moves the channels to another axis (NHWC
<-> NCHW layout changes, as tf2onnx and jax2onnx write them around every Conv).

Spec 2.4 Z3: per-channel *additive* constants on the path (BatchNorm/InstanceNorm scale+bias, the constant of an
``Add(x, c)``) turn zero channels into non-zero ones; their slices must be zeroed together with the erased operand,
so the plan lists them as ``aux`` slices (owned float initializers only, else the Concat is not an erase-joint).

Index bookkeeping: channel ``i`` of the Concat output (its own coordinates) lands at positions
``[base + i * block, base + (i + 1) * block)`` of a reader's channel axis; a nested Concat adds to ``base``, a
Flatten multiplies both by the flattened spatial size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from asgnas.ir import Node, Value
from asgnas.passes.erasing.dataflow import DataFlow
from asgnas.passes.erasing.ops import is_zero_preserving, op_info


@dataclass
class Touch:
    """One reader on the channel path that loses the removed channels."""

    node: str
    role: str  # "affine" | "stem" | "reshape"
    slices: list[tuple[int, int]]  # (input slot, axis of that operand) to slice at construction
    aux: list[tuple[str, int]]  # (initializer, axis): additive per-channel constants zeroed with the operand
    base: int
    block: int
    extent: int  # size of the channel axis in this reader's coordinates (for MAC fractions)


@dataclass
class ChannelPlan:
    concat: str
    axis: int
    widths: list[int]  # channel width of every Concat input, in input order
    touches: list[Touch] = field(default_factory=list)
    values: list[tuple[str, int, int, int]] = field(default_factory=list)  # (value, axis, base, block) that shrink

    def slot_range(self, slot: int) -> tuple[int, int]:
        lo = sum(self.widths[:slot])
        return lo, lo + self.widths[slot]

    @staticmethod
    def positions(lo: int, hi: int, base: int, block: int) -> list[int]:
        return [base + i * block + j for i in range(lo, hi) for j in range(block)]


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _rank(value: Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def _channel_dim(value: Value, axis: int) -> int | None:
    if value.shape is None or axis >= len(value.shape):
        return None
    dim = value.shape[axis]
    return dim if isinstance(dim, int) else None


def _operand_axis(flow: DataFlow, node: Node, slot: int, data_rank: int, axis: int) -> tuple[str, int | None]:
    """How constant operand ``slot`` broadcasts over the channel axis: ("scalar", None) or ("channel", its axis)."""
    value = node.inputs[slot]
    shape = value.shape if value.const is None else value.const.shape
    if shape is None:
        const = flow.const_of(value)
        if const is None:
            return "unknown", None
        shape = const.shape
    offset = data_rank - len(shape)
    position = axis - offset
    if position < 0 or shape[position] == 1:
        return "scalar", None
    return "channel", position


def trace_channels(flow: DataFlow, concat: Node) -> ChannelPlan | str:
    """The plan for dropping channel ranges of ``concat``'s output, or why that is impossible."""
    out = concat.outputs[0]
    rank = _rank(out)
    if rank is None:
        return f"Concat {concat.name}: output rank unknown"
    axis = _norm_axis(int(concat.attr("axis", 0)), rank)
    widths = []
    for value in concat.inputs:
        width = None if value is None else _channel_dim(value, axis)
        if width is None:
            return f"Concat {concat.name}: input widths along axis {axis} are not static"
        widths.append(width)
    plan = ChannelPlan(concat.name, axis, widths)
    stack: list[tuple[Value, int, int, int]] = [(out, axis, 0, 1)]
    visited: set[tuple[str, int, int]] = set()
    while stack:
        value, ax, base, block = stack.pop()
        if (value.name, base, block) in visited:
            continue
        visited.add((value.name, base, block))
        if flow.graph.is_output(value):
            return f"Concat {concat.name}: channels reach graph output {value.name}"
        plan.values.append((value.name, ax, base, block))
        for user in value.consumers:
            why = _follow(flow, plan, user, value, ax, base, block, stack)
            if why:
                return f"Concat {concat.name}: {why}"
    return plan


def _follow(
    flow: DataFlow,
    plan: ChannelPlan,
    user: Node,
    value: Value,
    ax: int,
    base: int,
    block: int,
    stack: list[tuple[Value, int, int, int]],
) -> str | None:
    """Handle one reader of a channel-carrying value; returns a reason when it cannot drop channels."""
    what = f"channel reader {user.name} ({user.op_type})"
    if not flow.is_data_node(user):
        return f"{what} reads the shape of the channel tensor"
    info = op_info(user)
    role = info.channel if info is not None else ""
    slots = [i for i, v in enumerate(user.inputs) if v is value]
    data_slots = flow.data_slots(user)
    rank = _rank(value)
    if rank is None:
        return f"{what}: rank unknown"
    if any(v.uses for v in user.outputs[1:]):
        return f"{what} has several used outputs"

    if role == "concat" and len(data_slots) >= 2:
        if _norm_axis(int(user.attr("axis", 0)), rank) != ax:
            return f"{what} concatenates along another axis"
        for slot in slots:
            offset = 0
            for other in user.inputs[:slot]:
                width = _channel_dim(other, ax)
                if width is None:
                    return f"{what}: input widths not static"
                offset += width
            stack.append((user.outputs[0], ax, base + offset, block))
        return None
    if len(data_slots) != 1 or len(slots) != 1:
        return f"{what} combines it with other data"
    slot = slots[0]
    extent = _channel_dim(value, ax) or 0
    out = user.outputs[0]

    if user.op_type == "Transpose":  # a layout change (NHWC <-> NCHW): the channels move to axis perm.index(ax)
        perm = [_norm_axis(int(a), rank) for a in (user.attr("perm") or range(rank - 1, -1, -1))]
        if sorted(perm) != list(range(rank)):
            return f"{what}: perm {perm} is not a permutation of the {rank} axes"
        stack.append((out, perm.index(ax), base, block))
        return None

    if role == "transparent":
        if not is_zero_preserving(user, info, flow.const_of):
            return f"{what} does not map zero to zero"
        if user.op_type in ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                            "GlobalLpPool") and ax != 1:
            return f"{what} pools over the channel axis"
        if user.op_type == "Slice":
            axes_value = user.inputs[3] if len(user.inputs) > 3 else None
            axes = flow.const_of(axes_value) if axes_value is not None else None
            if axes_value is None:
                return f"{what} slices every axis"
            if axes is None or ax in {_norm_axis(int(a), rank) for a in axes.reshape(-1)}:
                return f"{what} slices the channel axis"
        if user.op_type == "Pad":
            pads = flow.const_of(user.inputs[1]) if len(user.inputs) > 1 and user.inputs[1] is not None else None
            axes = user.inputs[3] if len(user.inputs) > 3 else None
            if pads is None or axes is not None or pads.size != 2 * rank or pads[ax] or pads[ax + rank]:
                return f"{what} pads the channel axis"
        if user.op_type in ("Resize", "Upsample"):
            if user.op_type == "Resize" and len(user.inputs) > 3 and user.inputs[3] is not None:
                return f"{what} is given output sizes"
            scales_slot = 2 if user.op_type == "Resize" else 1
            scales = flow.const_of(user.inputs[scales_slot]) if len(user.inputs) > scales_slot else None
            if scales is None or scales.size != rank or float(scales.reshape(-1)[ax]) != 1.0:
                return f"{what} rescales the channel axis"
        stack.append((out, ax, base, block))
        return None

    if role == "reduce":
        axes_value = user.inputs[1] if len(user.inputs) > 1 and user.inputs[1] is not None else None
        if axes_value is not None:
            axes_array = flow.const_of(axes_value)
            axes = None if axes_array is None else [int(a) for a in axes_array.reshape(-1)]
        else:
            axes = user.attr("axes")
        if axes is None or (not axes and user.attr("noop_with_empty_axes", 0)):
            return f"{what} reduces every axis"
        axes = {_norm_axis(int(a), rank) for a in axes}
        if not axes or ax in axes:
            return f"{what} reduces the channel axis"
        new_ax = ax if user.attr("keepdims", 1) else ax - sum(a < ax for a in axes)
        stack.append((out, new_ax, base, block))
        return None

    if role == "affine":
        touch = Touch(user.name, "affine", [], [], base, block, extent)
        if user.op_type in ("BatchNormalization", "InstanceNormalization"):
            if ax != 1 or slot != 0:
                return f"{what} normalises another axis"
            owned_slots = (1, 2)
            for s in range(1, len(user.inputs)):
                if user.inputs[s] is not None:
                    touch.slices.append((s, 0))
            for s in owned_slots:
                root = flow.resolve_param(user.inputs[s])
                if root is None or any(n is not user for n, _ in flow.param_users(root)):
                    return f"{what}: its scale/bias {user.inputs[s].name} is not an owned parameter (Z3)"
                touch.aux.append((root.name, 0))
        else:  # element-wise op with one constant operand (PRelu slope, Add/Sub/Mul/Div constant)
            other = 1 - slot if len(user.inputs) == 2 else None
            if other is None or user.inputs[other] is None:
                return f"{what}: unsupported operand layout"
            if user.op_type == "Div" and slot != 0:
                return f"{what} divides by the channels"
            kind, position = _operand_axis(flow, user, other, rank, ax)
            if kind == "unknown":
                return f"{what}: constant operand not known"
            additive = user.op_type in ("Add", "Sub")
            if kind == "scalar":
                if additive:
                    const = flow.const_of(user.inputs[other])
                    if const is None or const.any():
                        return f"{what} adds a constant to every channel"
                stack.append((out, ax, base, block))
                return None
            touch.slices.append((other, position))
            if additive:
                root = flow.resolve_param(user.inputs[other])
                if root is None or any(n is not user for n, _ in flow.param_users(root)):
                    return f"{what}: its per-channel constant is not an owned parameter (Z3)"
                touch.aux.append((root.name, position))
        plan.touches.append(touch)
        stack.append((out, ax, base, block))
        return None

    if role == "flatten":
        shape = value.shape
        if not all(isinstance(d, int) and d >= 0 for d in shape[ax:]):
            return f"{what}: channel and trailing dims not static"
        if user.op_type == "Flatten":
            start = _norm_axis(int(user.attr("axis", 1)), rank)
        else:
            out_shape = out.shape
            if flow.const_of(user.inputs[1]) is None or out_shape is None:
                return f"{what}: target shape unknown"
            if tuple(out_shape) == tuple(shape):
                stack.append((out, ax, base, block))
                return None
            start = len(out_shape) - 1
            # a flatten of the trailing axes: same leading dims (symbolic batch allowed), product at the end
            if tuple(out_shape[:start]) != tuple(shape[:start]) or out_shape[start] != int(np.prod(shape[start:])):
                return f"{what} is not a flatten of trailing axes"
        if start != ax:
            return f"{what} does not flatten from the channel axis"
        factor = int(np.prod(shape[ax + 1:], dtype=np.int64))
        if user.op_type == "Reshape":  # its target shape may spell the flattened size out: fixed at construction
            plan.touches.append(Touch(user.name, "reshape", [], [], base * factor, block * factor, extent * factor))
        stack.append((out, ax, base * factor, block * factor))
        return None

    if role == "stem":
        op = user.op_type
        if op in ("Conv", "ConvTranspose"):
            if slot != 0 or ax != 1:
                return f"{what} reads the channels as weights or on another axis"
            if int(user.attr("group", 1)) != 1:
                return f"{what} is a grouped convolution"
            weight_axis = 1 if op == "Conv" else 0
            plan.touches.append(Touch(user.name, "stem", [(1, weight_axis)], [], base, block, extent))
            return None
        if op == "Gemm":
            if slot != 0 or user.attr("transA", 0) or ax != 1 or rank != 2:
                return f"{what} does not contract the channel axis with a constant"
            if flow.is_data(user.inputs[1]):
                return f"{what} multiplies two activations"
            weight_axis = 1 if user.attr("transB", 0) else 0
            plan.touches.append(Touch(user.name, "stem", [(1, weight_axis)], [], base, block, extent))
            return None
        if op == "MatMul":
            weight = user.inputs[1]
            if slot != 0 or ax != rank - 1 or flow.is_data(weight) or _rank(weight) is None or _rank(weight) < 2:
                return f"{what} does not contract the channel axis with a constant"
            plan.touches.append(Touch(user.name, "stem", [(1, _rank(weight) - 2)], [], base, block, extent))
            return None
    return f"{what} cannot drop channels"
