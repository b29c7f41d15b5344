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

from dataclasses import dataclass
from typing import Callable

import numpy as np

from asgnas.ir import Node, Value
from asgnas.passes.pruning.attrs import axis_attr, known_ints, pad_amounts, pads_zero, reduce_axes, slice_params
from asgnas.passes.pruning.builder import Builder, Unsupported, relate_reshape
from asgnas.passes.pruning.rewrites import (RewriteCtx, r_conv, r_expand, r_gather, r_groupnorm, r_reduce_mean, r_reshape,
                                            r_resize, r_slice, r_split)
from asgnas.passes.pruning.shapes import ShapeEval
from asgnas.passes.pruning.zeros import (
    UNARY, Zero, z_add, z_avgpool, z_clip, z_compare, z_concat, z_contract, z_div, z_dropout, z_expand, z_first,
    z_gemm, z_lppool, z_mul, z_norm, z_pad, z_pow, z_prelu, z_reduce, z_reduce_all, z_resize, z_rmsnorm, z_softmax,
    z_stem, z_sub, z_transpose, z_unary, z_where,
)

Analyze = Callable[[Node, Builder, ShapeEval], None]
Rewrite = Callable[[Node, RewriteCtx], None]


@dataclass(frozen=True)
class OpRule:
    analyze: Analyze
    zero: Zero | None = None  # None: a removed channel's value after this op is unknown
    rewrite: Rewrite | None = None
    #: output axis i lines up with input axis i (numpy broadcasting from the right): ``zero`` runs once per live
    #: output axis with ``zc.axis`` set; otherwise once, on values common to all live axes
    aligned: bool = False
    #: False: ``analyze`` pins every output axis, so no removable channel group runs through the op
    carries_channels: bool = True


CHANNEL_RULES: dict[str, OpRule] = {}


def _register(ops: str, analyze: Analyze, zero: Zero | None = None, rewrite: Rewrite | None = None,
              aligned: bool = True, carries_channels: bool = True) -> None:
    for op in ops.split():
        CHANNEL_RULES[op] = OpRule(analyze, zero, rewrite, aligned, carries_channels)


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
    """Numpy broadcasting: an operand axis equal to the output axis shares its indexing; size 1 broadcasts.
    An operand is never larger than the result, so a symbolic dim against a declared 1 (value_info that does not
    match the data, as some exporters write for the batch) is the same axis too."""
    _need_shape(value, out)
    offset = out.rank - value.rank
    if offset < 0:
        raise Unsupported(f"{value.name} has a higher rank than the output")
    for axis, dim in enumerate(value.shape):
        odim = out.shape[axis + offset]
        if dim == 1 and odim != 1:
            continue  # broadcast along this axis: the operand does not depend on the output's index
        symbolic_against_one = isinstance(dim, str) and odim == 1
        if dim is None or odim is None or (dim != odim and not symbolic_against_one):
            raise Unsupported(f"cannot match dim {dim} of {value.name} to {odim}")
        b.same(b.k(value, axis), b.k(out, axis + offset))








# ==================================================================================================


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
    _normalize_trailing(node, b, "removing channels changes the statistics of the others")


def a_rmsnorm(node: Node, b: Builder, se: ShapeEval) -> None:
    """RMSNormalization (opset 23): a LayerNormalization without centring or bias. A zeroed channel adds nothing
    to the sum of squares, but the mean divides by the axis size, so removing it rescales the others."""
    _normalize_trailing(node, b, "the mean square divides by the axis size, so removing channels rescales the "
                                 "others")


def _normalize_trailing(node: Node, b: Builder, why: str) -> None:
    """Axes from ``axis`` on are normalized (pinned, ``why``); the rest pass through; scale/bias broadcast in."""
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axis = axis_attr(node, x.rank, -1)
    for a in range(x.rank):
        b.same(b.k(x, a), b.k(out, a))
    for a in range(axis, x.rank):
        b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) normalizes over this axis: {why}")
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
    _need_shape(x, *node.outputs)
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
    _broadcast_into(b, node.inputs[0], node.outputs[0])


def a_tile(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    repeats = known_ints(se, node.inputs[1], "Tile repeats")
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
    axis = axis_attr(node, x.rank, default)
    mixed = [axis] if b.model.opset >= 13 else list(range(axis, x.rank))
    for a in mixed:
        b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) normalizes over this axis")




#: reductions a zero channel does not change (ReduceMean too: construction rescales it by C'/C, which restores
#: the original mean exactly -- this is what makes RMSNorm decompositions prunable; LayerNorm ones stay refused
#: because ``x - mean`` is not zero on a removed channel)
_SUM_LIKE = {"ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceMean"}


def a_reduce(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axes = reduce_axes(node, se, x.rank)
    keep = node.attr("keepdims", 1)
    j = 0
    for a in range(x.rank):
        if a in axes:
            if node.op_type in _SUM_LIKE:
                b.consume(node, x, a, "dense", foldable=False, why_not=f"{node.op_type} reduces over the channels")
            else:
                b.pin(b.k(x, a), None, f"{node.name} ({node.op_type}) reduces over this axis")
            j += 1 if keep else 0
        else:
            b.same(b.k(x, a), b.k(out, j))
            j += 1


def a_argreduce(node: Node, b: Builder, se: ShapeEval) -> None:
    x, out = node.inputs[0], node.outputs[0]
    _need_shape(x, out)
    axis = axis_attr(node, x.rank)
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


def a_shaped_like(node: Node, b: Builder, se: ShapeEval) -> None:
    """EyeLike, Random*Like: the output takes the input's shape but its entries depend on the position (or are
    random), so removing a channel of either side is no slice of the other: neither may shrink."""
    b.pin_node(node, f"{node.name} ({node.op_type}) fills a tensor of its input's shape by position or at random")


# ==================================================================================================


# ==================================================================================================
# the table

_register("Relu LeakyRelu Elu Celu Selu ThresholdedRelu Sigmoid HardSigmoid HardSwish Tanh Softplus Softsign Mish "
          "Gelu Erf Exp Log Sqrt Reciprocal Neg Abs Sign Sin Cos Floor Ceil Round Shrink",
          a_unary)
for _op, _fn in UNARY.items():
    CHANNEL_RULES[_op] = OpRule(a_unary, z_unary(_fn), aligned=True)
_register("Identity Cast", a_unary, z_first)
_register("Dropout", a_unary, z_dropout)
_register("Add Sum", a_elementwise, z_add)
_register("Sub", a_elementwise, z_sub)
_register("Mul", a_elementwise, z_mul)
_register("Div", a_elementwise, z_div)
_register("Pow", a_elementwise, z_pow)
_register("Max", a_elementwise, z_reduce_all(max))
_register("Min", a_elementwise, z_reduce_all(min))
_register("Mean", a_elementwise, z_reduce_all(lambda v: sum(v) / len(v)))
_register("Where", a_elementwise, z_where)
_register("PRelu", a_elementwise, z_prelu)
_register("Clip", a_elementwise, z_clip)
_register("Equal", a_elementwise, z_compare(lambda a, b: a == b))
_register("Less", a_elementwise, z_compare(lambda a, b: a < b))
_register("Greater", a_elementwise, z_compare(lambda a, b: a > b))
_register("LessOrEqual", a_elementwise, z_compare(lambda a, b: a <= b))
_register("GreaterOrEqual", a_elementwise, z_compare(lambda a, b: a >= b))
_register("And", a_elementwise, z_compare(lambda a, b: bool(a) and bool(b)))
_register("Or", a_elementwise, z_compare(lambda a, b: bool(a) or bool(b)))
_register("Xor", a_elementwise, z_compare(lambda a, b: bool(a) != bool(b)))
_register("Not", a_unary, z_unary(lambda n, z: float(not z)))
_register("IsNaN IsInf", a_elementwise, z_unary(lambda n, z: 0.0))  # a removed channel's value is finite
_register("Mod", a_elementwise)
_register("BatchNormalization", a_batchnorm, z_norm(1, 2))
_register("InstanceNormalization", a_instancenorm, z_norm(1, 2))
_register("GroupNormalization", a_groupnorm, z_norm(1, 2), r_groupnorm)
_register("LayerNormalization", a_layernorm, aligned=False)
_register("RMSNormalization", a_rmsnorm, z_rmsnorm, aligned=False)
_register("Conv", a_conv, z_stem(lambda n: {1}), r_conv)
_register("ConvTranspose", a_conv_transpose, z_stem(lambda n: {1}))
_register("Gemm", a_gemm, z_gemm)
z_linear = z_stem(lambda n: {n.outputs[0].rank - 1})
_register("MatMul", a_matmul, lambda n, zc: z_linear(n, zc) if zc.is_linear(n) else z_contract(n, zc))
_register("MaxPool GlobalMaxPool GlobalAveragePool", a_pool, z_first)
_register("AveragePool", a_pool, z_avgpool)
_register("LpPool GlobalLpPool", a_pool, z_lppool)
_register("Resize Upsample", a_resize, z_resize, r_resize)
_register("Pad", a_pad, z_pad)
_register("Concat", a_concat, z_concat)
_register("Split", a_split, z_first, r_split, aligned=False)
_register("Slice", a_slice, z_first, r_slice)
z_embedding = z_stem(lambda n: {n.outputs[0].rank - 1})
_register("Gather", a_gather, lambda n, zc: z_embedding(n, zc) if zc.is_embedding(n) else zc.z(n.inputs[0]),
          r_gather, aligned=False)
_register("Transpose", a_transpose, z_transpose)
_register("Reshape", a_reshape, z_first, r_reshape, aligned=False)
_register("Flatten Squeeze Unsqueeze", a_reshape, z_first, aligned=False)
_register("Expand", a_expand, z_expand, r_expand)
_register("Tile", a_tile, z_first)
_register("Softmax LogSoftmax Hardmax", a_softmax, z_softmax)
_register("ReduceSum ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceSumSquare ReduceLogSum "
          "ReduceLogSumExp", a_reduce, z_reduce, aligned=False)
_register("ReduceMean", a_reduce, z_reduce, r_reduce_mean, aligned=False)
_register("ArgMax ArgMin", a_argreduce, aligned=False)
_register("Constant", a_none, aligned=False)
_register("Shape Size ConstantOfShape Range RandomNormal RandomUniform", a_fresh, aligned=False,
          carries_channels=False)
_register("EyeLike RandomNormalLike RandomUniformLike", a_shaped_like, aligned=False, carries_channels=False)


def coverage() -> dict[str, list[str]]:
    """Op types by treatment (for docs and reports)."""
    return {"handled": sorted(CHANNEL_RULES)}


__all__ = ["CHANNEL_RULES", "OpRule", "UNARY", "coverage", "pad_amounts", "reduce_axes", "slice_params",
           "known_ints"]
