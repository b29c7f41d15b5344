"""Construction rewrites: what changes on a node itself when its channel counts change.

Constants are sliced generically by ``prune_construct``; these functions update the rest: depthwise Conv
``group``, GroupNormalization ``num_groups``, Reshape/Expand/Resize targets, Slice bounds, Split sizes, Gather
indices, the C'/C rescaling of a ReduceMean over channels. They read the original static shapes and folded
shape computations through ``RewriteCtx``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from asgnas.ir import Node
from asgnas.passes.pruning.attrs import reduce_axes, slice_params

if TYPE_CHECKING:  # pragma: no cover
    from asgnas.passes.prune_construct import RewriteCtx


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


def r_reduce_mean(node: Node, rc: "RewriteCtx") -> None:
    """A mean over channels that lost some: sum / C' -> times C'/C restores sum / C (removed channels are 0)."""
    x = node.inputs[0]
    factor = 1.0
    for axis in reduce_axes(node, rc.shape_eval, x.rank):
        kept = rc.kept(x, axis)
        if kept is not None:
            factor *= len(kept) / rc.old_dim(x, axis)
    if factor != 1.0:
        rc.scale_output(node, factor)
