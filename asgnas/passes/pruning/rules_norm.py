"""Channel rules of ops that look across an axis: normalizations, softmax, reductions."""

from __future__ import annotations

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import axis_attr, reduce_axes
from asgnas.passes.pruning.builder import Builder, Unsupported
from asgnas.passes.pruning.rules_common import broadcast_into, identity_axes, need_shape, pin_mixed
from asgnas.passes.pruning.shapes import ShapeEval


def analyze_batchnorm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x = node.inputs[0]
    identity_axes(builder, x, node.outputs[0])
    if x.rank < 2:
        raise Unsupported("BatchNormalization of a rank < 2 input")
    channel = builder.k(x, 1)
    for index, role in ((1, "param"), (2, "param"), (3, "stat"), (4, "stat")):
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            continue
        if value.rank != 1:
            raise Unsupported(f"BatchNormalization input {index} is not 1-d")
        builder.same(builder.k(value, 0), channel)
        builder.role(value, 0, role)
    for extra in node.outputs[1:]:  # training mode: running statistics out
        if extra.rank == 1:
            builder.same(builder.k(extra, 0), channel)
    if node.attr("training_mode", 0):  # batch statistics mix the batch and spatial elements
        pin_mixed(builder, node, x, range(0, 1))
        pin_mixed(builder, node, x, range(2, x.rank))


def analyze_instancenorm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    if x.rank < 3:
        raise Unsupported("InstanceNormalization of a rank < 3 input")
    for axis in (0, 1):
        builder.same(builder.k(x, axis), builder.k(out, axis))
    for axis in range(2, x.rank):
        builder.pin(builder.k(x, axis), None, f"{node.name} (InstanceNormalization) normalizes over this axis")
    for value in node.inputs[1:3]:
        if value is not None:
            builder.same(builder.k(value, 0), builder.k(x, 1))
            builder.role(value, 0, "param")


def analyze_groupnorm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    groups = node.attr("num_groups")
    channels = x.shape[1]
    if not isinstance(channels, int) or not groups or channels % groups:
        raise Unsupported(f"GroupNormalization num_groups={groups} with {channels} channels")
    for axis in (0, 1):
        builder.same(builder.k(x, axis), builder.k(out, axis))
    for axis in range(2, x.rank):
        builder.pin(builder.k(x, axis), None, f"{node.name} (GroupNormalization) normalizes over this axis")
    g = builder.virtual(node, "groups", groups)
    per = builder.virtual(node, "channels_per_group", channels // groups)
    # whole GroupNorm groups go (exact); the group width is fixed
    builder.pin(per, None, f"{node.name} (GroupNormalization): channels per group are fixed, whole groups go")
    builder.product(node, builder.k(x, 1), [g, per])
    for value in node.inputs[1:3]:
        if value is None:
            continue
        size = value.shape[0] if value.shape else None
        builder.same(builder.k(value, 0), builder.k(x, 1) if size == channels else g)
        builder.role(value, 0, "param")


def analyze_layernorm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    _normalize_trailing(node, builder, "removing channels changes the statistics of the others")


def analyze_rmsnorm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    """RMSNormalization (opset 23): a LayerNormalization without centring or bias. A zeroed channel adds nothing
    to the sum of squares, but the mean divides by the axis size, so removing it rescales the others."""
    _normalize_trailing(node, builder, "the mean square divides by the axis size, so removing channels rescales the "
                                 "others")


def _normalize_trailing(node: Node, builder: Builder, why: str) -> None:
    """Axes from ``axis`` on are normalized (pinned, ``why``); the rest pass through; scale/bias broadcast in."""
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    axis = axis_attr(node, x.rank, -1)
    for a in range(x.rank):
        builder.same(builder.k(x, a), builder.k(out, a))
    for a in range(axis, x.rank):
        builder.pin(builder.k(x, a), None, f"{node.name} ({node.op_type}) normalizes over this axis: {why}")
    for value in node.inputs[1:3]:
        if value is not None:
            broadcast_into(builder, value, x)


def analyze_softmax(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    identity_axes(builder, x, out)
    default = -1 if builder.model.opset >= 13 else 1
    axis = axis_attr(node, x.rank, default)
    mixed = [axis] if builder.model.opset >= 13 else list(range(axis, x.rank))
    for a in mixed:
        builder.pin(builder.k(x, a), None, f"{node.name} ({node.op_type}) normalizes over this axis")


#: reductions a zero channel does not change (ReduceMean too: construction rescales it by C'/C, which restores
#: the original mean exactly -- this is what makes RMSNorm decompositions prunable; LayerNorm ones stay refused
#: because ``x - mean`` is not zero on a removed channel)
_SUM_LIKE = {"ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceMean"}


def analyze_reduce(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    axes = reduce_axes(node, shape_eval, x.rank)
    keep = node.attr("keepdims", 1)
    j = 0
    for a in range(x.rank):
        if a in axes:
            if node.op_type in _SUM_LIKE:
                builder.consume(node, x, a, "dense", foldable=False,
                                why_not=f"{node.op_type} reduces over the channels")
            else:
                builder.pin(builder.k(x, a), None, f"{node.name} ({node.op_type}) reduces over this axis")
            j += 1 if keep else 0
        else:
            builder.same(builder.k(x, a), builder.k(out, j))
            j += 1


def analyze_argreduce(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    axis = axis_attr(node, x.rank)
    keep = node.attr("keepdims", 1)
    j = 0
    for a in range(x.rank):
        if a == axis:
            builder.pin(builder.k(x, a), None, f"{node.name} ({node.op_type}) reduces over this axis")
            j += 1 if keep else 0
        else:
            builder.same(builder.k(x, a), builder.k(out, j))
            j += 1
