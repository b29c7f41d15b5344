"""Channel rules of the stems (Conv, ConvTranspose, Gemm, MatMul) and the spatial ops (pooling, Resize)."""

from __future__ import annotations

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import pads_zero
from asgnas.passes.pruning.builder import Builder, Unsupported
from asgnas.passes.pruning.rules_common import broadcast_into, need_shape, pin_mixed
from asgnas.passes.pruning.shapes import ShapeEval


def a_conv(node: Node, b: Builder, se: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    need_shape(x, w, out)
    pin_mixed(b, node, x, range(2, x.rank or 0))
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
        b.consume(node, x, 1, "conv", weight=weight, foldable=pads_zero(node), why_not="it pads its input")
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
        b.consume(node, x, 1, "conv", weight=weight, foldable=pads_zero(node), why_not="it pads its input")
        g_out = b.virtual(node, "groups_out", groups)
        b.pin(g_out, None, f"{node.name} (Conv group={groups}): the group count is fixed")
        b.product(node, rows, [g_out, b.virtual(node, "per_group_out", c_out // groups)])


def a_conv_transpose(node: Node, b: Builder, se: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    need_shape(x, w, out)
    view = b.view(w)
    if view is None:
        raise Unsupported("ConvTranspose weight computed at runtime")
    if node.attr("group", 1) != 1:
        raise Unsupported(f"ConvTranspose group={node.attr('group')}")
    pin_mixed(b, node, x, range(2, x.rank or 0))
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
    need_shape(a, w, out)
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
        broadcast_into(b, c, out)
        if c.rank and c.shape[-1] == out.shape[1]:
            b.role(c, c.rank - 1, "param")


def a_matmul(node: Node, b: Builder, se: ShapeEval) -> None:
    a, w = node.inputs
    out = node.outputs[0]
    need_shape(a, w, out)
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
    need_shape(x, out)
    if x.rank < 3:
        raise Unsupported("pooling of a rank < 3 input")
    if len(node.outputs) > 1 and node.outputs[1].uses:
        raise Unsupported("MaxPool indices are used")
    for axis in (0, 1):
        b.same(b.k(x, axis), b.k(out, axis))
    pin_mixed(b, node, x, range(2, x.rank))


def a_resize(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
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
