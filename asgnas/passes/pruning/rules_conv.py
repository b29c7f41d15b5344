"""Channel rules of the stems (Conv, ConvTranspose, Gemm, MatMul) and the spatial ops (pooling, Resize)."""

from __future__ import annotations

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import pads_zero
from asgnas.passes.pruning.builder import Builder, Unsupported
from asgnas.passes.pruning.rules_common import broadcast_into, need_shape, pin_mixed
from asgnas.passes.pruning.shapes import ShapeEval


def analyze_conv(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    need_shape(x, w, out)
    pin_mixed(builder, node, x, range(2, x.rank or 0))
    view = builder.view(w)
    if view is None:
        raise Unsupported("Conv weight computed at runtime")
    if x.rank < 3 or w.rank != x.rank:
        raise Unsupported("Conv of unexpected rank")
    groups = node.attr("group", 1)
    c_in, c_out = x.shape[1], w.shape[0]
    if not isinstance(c_in, int) or not isinstance(c_out, int):
        raise Unsupported("unknown channel count")
    rows = builder.k(out, 1)
    builder.same(builder.k(w, 0), rows)
    builder.role(w, 0, "param")
    if bias is not None:
        builder.same(builder.k(bias, 0), rows)
        builder.role(bias, 0, "param")
    builder.stem(out, 1)
    const, perm = view
    weight = (const.name, perm[1])
    if groups == 1:
        builder.same(builder.k(x, 1), builder.k(w, 1))
        builder.role(w, 1, "consumer")
        builder.consume(node, x, 1, "conv", weight=weight, foldable=pads_zero(node), why_not="it pads its input")
    elif groups == c_in and w.shape[1] == 1:
        # depthwise: input channel c feeds output channels [c*m, (c+1)*m) only
        mult = c_out // groups
        if mult == 1:
            builder.same(builder.k(x, 1), rows)
        else:
            m = builder.virtual(node, "multiplier", mult)
            builder.pin(m, None, f"{node.name} (Conv): depthwise channel multiplier is fixed")
            builder.product(node, rows, [builder.k(x, 1), m])
    else:
        if c_in % groups or c_out % groups:
            raise Unsupported(f"group={groups} does not divide the channels")
        # grouped: one channel position per group goes at a time (equal group widths); the group count is fixed
        g_in = builder.virtual(node, "groups_in", groups)
        builder.pin(g_in, None, f"{node.name} (Conv group={groups}): the group count is fixed")
        builder.product(node, builder.k(x, 1), [g_in, builder.k(w, 1)])
        builder.role(w, 1, "consumer")
        builder.consume(node, x, 1, "conv", weight=weight, foldable=pads_zero(node), why_not="it pads its input")
        g_out = builder.virtual(node, "groups_out", groups)
        builder.pin(g_out, None, f"{node.name} (Conv group={groups}): the group count is fixed")
        builder.product(node, rows, [g_out, builder.virtual(node, "per_group_out", c_out // groups)])


def analyze_conv_transpose(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    need_shape(x, w, out)
    view = builder.view(w)
    if view is None:
        raise Unsupported("ConvTranspose weight computed at runtime")
    if node.attr("group", 1) != 1:
        raise Unsupported(f"ConvTranspose group={node.attr('group')}")
    pin_mixed(builder, node, x, range(2, x.rank or 0))
    rows = builder.k(out, 1)
    builder.same(builder.k(w, 1), rows)
    builder.role(w, 1, "param")
    if bias is not None:
        builder.same(builder.k(bias, 0), rows)
        builder.role(bias, 0, "param")
    builder.stem(out, 1)
    builder.same(builder.k(x, 1), builder.k(w, 0))
    builder.role(w, 0, "consumer")
    const, perm = view
    builder.consume(node, x, 1, "dense", weight=(const.name, perm[0]), foldable=False,
              why_not="a transposed convolution spreads a constant channel unevenly")


def analyze_gemm(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    a, w = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    out = node.outputs[0]
    need_shape(a, w, out)
    view = builder.view(w)
    if view is None or builder.view(a) is not None:
        raise Unsupported("Gemm without exactly one constant weight")
    ka = 0 if node.attr("transA", 0) else 1
    kw = 1 if node.attr("transB", 0) else 0
    builder.same(builder.k(a, 1 - ka), builder.k(out, 0))
    builder.same(builder.k(w, 1 - kw), builder.k(out, 1))
    builder.role(w, 1 - kw, "param")
    builder.stem(out, 1)
    builder.same(builder.k(a, ka), builder.k(w, kw))
    builder.role(w, kw, "consumer")
    const, perm = view
    builder.consume(node, a, ka, "gemm", weight=(const.name, perm[kw]), foldable=True)
    if c is not None:
        broadcast_into(builder, c, out)
        if c.rank and c.shape[-1] == out.shape[1]:
            builder.role(c, c.rank - 1, "param")


def analyze_matmul(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    a, w = node.inputs
    out = node.outputs[0]
    need_shape(a, w, out)
    if a.rank < 2 or w.rank < 2:
        raise Unsupported("MatMul of a 1-d operand")
    view_w, view_a = builder.view(w), builder.view(a)
    if view_w is not None and view_a is None and w.rank == 2:  # a Linear: x @ W
        for axis in range(a.rank - 1):
            builder.same(builder.k(a, axis), builder.k(out, axis))
        builder.same(builder.k(w, 1), builder.k(out, -1))
        builder.role(w, 1, "param")
        builder.stem(out, -1)
        builder.same(builder.k(a, -1), builder.k(w, 0))
        builder.role(w, 0, "consumer")
        const, perm = view_w
        builder.consume(node, a, -1, "matmul", weight=(const.name, perm[0]), foldable=True)
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
            builder.same(builder.k(value, axis), builder.k(out, axis + offset))
    builder.same(builder.k(a, -2), builder.k(out, -2))
    builder.same(builder.k(w, -1), builder.k(out, -1))
    builder.same(builder.k(a, -1), builder.k(w, -2))
    builder.consume(node, a, -1, "contract", other=w, foldable=False)


def analyze_pool(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    if x.rank < 3:
        raise Unsupported("pooling of a rank < 3 input")
    if len(node.outputs) > 1 and node.outputs[1].uses:
        raise Unsupported("MaxPool indices are used")
    for axis in (0, 1):
        builder.same(builder.k(x, axis), builder.k(out, axis))
    pin_mixed(builder, node, x, range(2, x.rank))


def analyze_resize(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    need_shape(x, out)
    if x.rank != out.rank:
        raise Unsupported("Resize changes the rank")
    for axis in range(x.rank):
        if x.shape[axis] == out.shape[axis] and x.shape[axis] is not None:
            builder.same(builder.k(x, axis), builder.k(out, axis))
        else:  # interpolated along this axis: its elements mix
            reason = f"{node.name} ({node.op_type}) interpolates along this axis"
            builder.pin(builder.k(x, axis), None, reason)
            builder.pin(builder.k(out, axis), None, reason)
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None and sizes.shape is not None and sizes.shape[0] not in (0, x.rank):
        raise Unsupported("Resize sizes with axes")
