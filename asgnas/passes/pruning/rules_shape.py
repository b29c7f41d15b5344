"""Channel rules of data movement: padding, concatenation, slicing, gathering, layout and shape ops."""

from __future__ import annotations

import numpy as np

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import axis_attr, known_ints, pad_amounts, slice_params
from asgnas.passes.pruning.builder import Builder, Unsupported, relate_reshape
from asgnas.passes.pruning.rules_common import broadcast_into, need_shape
from asgnas.passes.pruning.shapes import ShapeEval


def a_pad(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
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
    need_shape(out, *node.inputs)
    axis = axis_attr(node, out.rank)
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
    need_shape(x, *node.outputs)
    axis = axis_attr(node, x.rank)
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


def a_slice(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
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
    need_shape(data, out)
    axis = axis_attr(node, data.rank)
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
    broadcast_into(b, node.inputs[0], node.outputs[0])


def a_tile(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    repeats = known_ints(se, node.inputs[1], "Tile repeats")
    for axis in range(x.rank):
        if repeats[axis] == 1:
            b.same(b.k(x, axis), b.k(out, axis))
        else:
            reason = f"{node.name} (Tile) repeats this axis"
            b.pin(b.k(x, axis), None, reason)
            b.pin(b.k(out, axis), None, reason)


def a_none(node: Node, b: Builder, se: ShapeEval) -> None:
    """Constants: sliced by construction like initializers; no relation of their own."""


def a_fresh(node: Node, b: Builder, se: ShapeEval) -> None:
    """A tensor whose size is fixed by the op (ConstantOfShape, Range, Shape): it can never shrink."""
    for out in node.outputs:
        b.pin_value(out, f"{node.name} ({node.op_type}) makes a tensor of fixed size")


def a_shaped_like(node: Node, b: Builder, se: ShapeEval) -> None:
    """EyeLike, Random*Like: the output takes the input's shape but its entries depend on the position (or are
    random), so removing a channel of either side is no slice of the other: neither may shrink."""
    b.pin_node(node, f"{node.name} ({node.op_type}) fills a tensor of its input's shape by position or at random")
