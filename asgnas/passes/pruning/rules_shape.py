"""Channel rules of data movement: padding, concatenation, slicing, gathering, layout and shape ops."""

from __future__ import annotations

import numpy as np

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import axis_attr, known_ints, pad_amounts, slice_params
from asgnas.passes.pruning.builder import Builder, Unsupported, relate_reshape
from asgnas.passes.pruning.rules_common import broadcast_into, need_shape
from asgnas.passes.pruning.shapes import ShapeEval


def analyze_pad(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    amounts = pad_amounts(node, shape_eval, x.rank)
    if (amounts < 0).any():
        raise Unsupported("Pad with negative amounts (cropping)")
    mode = node.attr("mode", "constant")
    for axis in range(x.rank):
        before, after = (int(v) for v in amounts[axis])
        kx, ko = builder.k(x, axis), builder.k(out, axis)
        if before == after == 0:
            builder.same(kx, ko)
            continue
        n = x.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Pad along an axis of unknown size")
        builder.link(kx, np.arange(n), ko, before + np.arange(n))
        added = np.r_[np.arange(before), before + n + np.arange(after)]
        builder.pin(ko, added, f"{node.name} (Pad) adds these elements")
        if mode != "constant":
            reason = f"{node.name} (Pad mode={mode}) copies elements along this axis"
            builder.pin(kx, None, reason)
            builder.pin(ko, None, reason)


def analyze_concat(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    out = node.outputs[0]
    need_shape(out, *node.inputs)
    axis = axis_attr(node, out.rank)
    offset = 0
    ko = builder.k(out, axis)
    for value in node.inputs:
        if value is None:
            continue
        for a in range(out.rank):
            if a != axis:
                builder.same(builder.k(value, a), builder.k(out, a))
        n = value.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Concat of an input of unknown width")
        if n:
            builder.link(builder.k(value, axis), np.arange(n), ko, offset + np.arange(n))
        offset += n
    if offset != out.shape[axis]:
        raise Unsupported("Concat widths do not add up")


def analyze_split(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x = node.inputs[0]
    need_shape(x, *node.outputs)
    axis = axis_attr(node, x.rank)
    kx = builder.k(x, axis)
    offset = 0
    for out in node.outputs:
        for a in range(x.rank):
            if a != axis:
                builder.same(builder.k(x, a), builder.k(out, a))
        n = out.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Split into parts of unknown width")
        if n:
            builder.link(kx, offset + np.arange(n), builder.k(out, axis), np.arange(n))
        offset += n
    if offset != x.shape[axis]:
        raise Unsupported("Split parts do not add up")


def analyze_slice(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    params = {axis: (s, e, t) for axis, s, e, t in slice_params(node, shape_eval, x.rank)}
    for axis in range(x.rank):
        kx, ko = builder.k(x, axis), builder.k(out, axis)
        if axis not in params:
            builder.same(kx, ko)
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
            builder.link(kx, idx, ko, np.arange(len(idx)))
        if step != 1:
            reason = f"{node.name} (Slice step={step}) along this axis"
            builder.pin(kx, None, reason)
            builder.pin(ko, None, reason)


def analyze_gather(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    data, indices = node.inputs
    out = node.outputs[0]
    need_shape(data, out)
    axis = axis_attr(node, data.rank)
    idx = builder.const_array(indices)
    if idx is None and indices.rank is None:
        raise Unsupported("Gather indices of unknown rank")
    q = idx.ndim if idx is not None else indices.rank
    for a in range(data.rank):  # axes before and after the gathered one map through
        if a < axis:
            builder.same(builder.k(data, a), builder.k(out, a))
        elif a > axis:
            builder.same(builder.k(data, a), builder.k(out, a + q - 1))
    kd = builder.k(data, axis)
    if idx is not None:
        n = data.shape[axis]
        if not isinstance(n, int):
            raise Unsupported("Gather along an axis of unknown size")
        flat = np.asarray(idx, np.int64).reshape(-1)
        flat = np.where(flat < 0, flat + n, flat)
        if idx.ndim == 1:
            builder.link(kd, flat, builder.k(out, axis), np.arange(len(flat)))
        else:  # selection by position (q/k/v of a packed projection): the axis keeps its size
            builder.pin(kd, None, f"{node.name} (Gather) selects by position along this axis")
        return
    if builder.view(data) is not None and axis == 0 and data.rank == 2:
        # an embedding table: its columns are the channels of the looked-up vectors
        builder.role(data, 1, "param")
        builder.stem(out, -1)
        return
    builder.pin(kd, None, f"{node.name} (Gather) indexes this axis at runtime")


def analyze_transpose(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    if x.rank is None:
        raise Unsupported("unknown rank")
    perm = node.attr("perm") or list(range(x.rank))[::-1]
    for i, p in enumerate(perm):
        builder.same(builder.k(x, p), builder.k(out, i))


def analyze_reshape(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    relate_reshape(builder, node, x, out)
    if node.op_type == "Reshape":
        sv = shape_eval.ev(node.inputs[1])
        if sv is not None:
            for j, dim in enumerate(out.shape):
                if not isinstance(dim, int) and j < len(sv.taint):
                    for key in sv.taint[j]:  # a symbolic target entry may not depend on channel counts
                        builder.pin(key, None, f"{node.name} (Reshape) computes a symbolic dim from this axis")


def analyze_expand(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    broadcast_into(builder, node.inputs[0], node.outputs[0])


def analyze_tile(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    repeats = known_ints(shape_eval, node.inputs[1], "Tile repeats")
    for axis in range(x.rank):
        if repeats[axis] == 1:
            builder.same(builder.k(x, axis), builder.k(out, axis))
        else:
            reason = f"{node.name} (Tile) repeats this axis"
            builder.pin(builder.k(x, axis), None, reason)
            builder.pin(builder.k(out, axis), None, reason)


def analyze_none(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    """Constants: sliced by construction like initializers; no relation of their own."""


def analyze_fresh(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    """A tensor whose size is fixed by the op (ConstantOfShape, Range, Shape): it can never shrink."""
    for out in node.outputs:
        builder.pin_value(out, f"{node.name} ({node.op_type}) makes a tensor of fixed size")


def analyze_shaped_like(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    """EyeLike, Random*Like: the output takes the input's shape but its entries depend on the position (or are
    random), so removing a channel of either side is no slice of the other: neither may shrink."""
    builder.pin_node(node, f"{node.name} ({node.op_type}) fills a tensor of its input's shape by position or at random")
