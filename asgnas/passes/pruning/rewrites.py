"""Construction rewrites: what changes on a node itself when its channel counts change.

Constants are sliced generically by ``prune_subnet``; these functions update the rest: depthwise Conv
``group``, GroupNormalization ``num_groups``, Reshape/Expand/Resize targets, Slice bounds, Split sizes, Gather
indices, the C'/C rescaling of a ReduceMean over channels. They read the original static shapes and folded
shape computations through ``RewriteCtx``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from asgnas.errors import AsgnasError
from asgnas.ir import Model, Node, Value
from asgnas.passes.pruning.attrs import reduce_axes, slice_params
from asgnas.passes.pruning.result import PruningAnalysis


class RewriteCtx:
    """What the rules' ``rewrite`` functions see: old and new channel counts, kept indices, IR helpers."""

    def __init__(self, model: Model, analysis: PruningAnalysis, kept_root: dict[int, np.ndarray]) -> None:
        self.model = model
        self.graph = model.graph
        self.analysis = analysis
        self.shape_eval = analysis.shape_eval
        self.kept_root = kept_root
        self.opset = model.opset

    def _root(self, value: Value, axis: int) -> int | None:
        if value.rank is None:
            return None
        return self.analysis.root_of(value.name, axis % value.rank)

    def kept(self, value: Value, axis: int) -> np.ndarray | None:
        """Kept indices along the axis, or None when it does not change."""
        root = self._root(value, axis)
        return None if root is None else self.kept_root.get(root)

    def old_dim(self, value: Value, axis: int) -> int | str | None:
        return value.shape[axis % value.rank]

    def new_dim(self, value: Value, axis: int) -> int | str | None:
        kept = self.kept(value, axis)
        return len(kept) if kept is not None else self.old_dim(value, axis)

    def virtual_size(self, node: Node, label: str) -> int:
        root, size = self.analysis.virtual_axis(node.name, label)
        kept = self.kept_root.get(root)
        return len(kept) if kept is not None else size

    def changed_key(self, key: int) -> bool:
        return self.analysis.key_root(key) in self.kept_root

    def depends_on_change(self, value: Value | None) -> bool:
        sv = self.shape_eval.ev(value) if value is not None else None
        return sv is not None and any(self.changed_key(k) for k in sv.tainted)

    def const_array(self, value: Value | None) -> np.ndarray | None:
        return None if value is None or value.const is None else value.const.array

    def set_const_input(self, node: Node, index: int, array: np.ndarray, label: str) -> None:
        """Give ``node`` its own constant at input ``index`` (never edits a constant others may read)."""
        value = self.graph.add_initializer(f"{node.name}_{label}", np.asarray(array))
        while len(node.inputs) <= index:
            node.inputs.append(None)
        node.set_input(index, value)

    def scale_output(self, node: Node, factor: float) -> None:
        """Multiply the node's first output by ``factor`` (a Mul after it; the output keeps its name)."""
        out = node.outputs[0]
        inner = self.graph.add_value(f"{out.name}_unscaled", out.dtype)
        node.outputs[0] = inner
        inner.producer = node
        out.producer = None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(out.dtype or TensorProto.FLOAT)
        const = self.graph.add_initializer(f"{node.name}_rescale", np.asarray(factor, dtype=dtype))
        self.graph.add_node("Mul", [inner, const], [out], name=f"{node.name}_rescale")

    def rewrite_shape_input(self, node: Node, index: int, src: Value, dst: Value, *, copy_zero: bool = False,
                            broadcast: bool = False) -> None:
        """Update the target-shape input so that it yields ``dst``'s new dims.

        An entry is rewritten when the output dim changes, when it was computed from a size that changes, or when
        it is a Reshape ``0`` copying an input dim that changes. A constant target becomes a new constant; a
        computed one goes through ``Where(mask, new values, old)`` so the symbolic entries stay computed.
        """
        shape_value = node.inputs[index]
        sv = self.shape_eval.ev(shape_value)
        length = sv.values.size if sv is not None else (shape_value.shape or [None])[0]
        if not isinstance(length, int):
            raise AsgnasError(f"cannot rewrite the shape input of {node.name}: unknown length", node=node.name)
        offset = dst.rank - length
        mask = np.zeros(length, dtype=bool)
        vals = np.zeros(length, dtype=np.int64)
        for e in range(length):
            j = e + offset
            if j < 0:
                continue
            new, old = self.new_dim(dst, j), self.old_dim(dst, j)
            need = new != old
            entry_known = sv is not None and bool(sv.known[e])
            entry = int(sv.values[e]) if entry_known else None
            if sv is not None and any(self.changed_key(k) for k in sv.taint[e]):
                need = True
            if copy_zero and entry == 0 and self.kept(src, j) is not None:
                need = True
            if broadcast and entry == 1:
                need = False
            if need:
                if not isinstance(new, int):
                    raise AsgnasError(f"{node.name}: new dim {j} is not static", node=node.name)
                mask[e], vals[e] = True, new
        if not mask.any():
            return
        if shape_value.const is not None or (sv is not None and sv.fully_known):
            base = sv.values.copy() if sv is not None else shape_value.const.array.astype(np.int64).reshape(-1)
            base[mask] = vals[mask]
            self.set_const_input(node, index, base, "shape")
            return
        cond = self.graph.add_initializer(f"{node.name}_shape_mask", mask)
        new_vals = self.graph.add_initializer(f"{node.name}_shape_new", vals)
        where = self.graph.add_node("Where", [cond, new_vals, shape_value], 1, name=f"{node.name}_shape")
        where.outputs[0].dtype = TensorProto.INT64
        where.outputs[0].shape = (length,)
        node.set_input(index, where.outputs[0])


def rewrite_conv(node: Node, ctx: RewriteCtx) -> None:
    x = node.inputs[0]
    groups = node.attr("group", 1)
    if groups > 1 and groups == ctx.old_dim(x, 1) and ctx.old_dim(node.inputs[1], 1) == 1:
        node.set_attr("group", ctx.new_dim(x, 1))  # depthwise stays depthwise


def rewrite_groupnorm(node: Node, ctx: RewriteCtx) -> None:
    node.set_attr("num_groups", ctx.virtual_size(node, "groups"))


def rewrite_reshape(node: Node, ctx: RewriteCtx) -> None:
    ctx.rewrite_shape_input(node, 1, node.inputs[0], node.outputs[0], copy_zero=not node.attr("allowzero", 0))


def rewrite_expand(node: Node, ctx: RewriteCtx) -> None:
    ctx.rewrite_shape_input(node, 1, node.inputs[0], node.outputs[0], broadcast=True)


def rewrite_resize(node: Node, ctx: RewriteCtx) -> None:
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    if sizes is not None and sizes.shape and sizes.shape[0]:
        ctx.rewrite_shape_input(node, 3, node.inputs[0], node.outputs[0])


def rewrite_slice(node: Node, ctx: RewriteCtx) -> None:
    x = node.inputs[0]
    params = slice_params(node, ctx.shape_eval, x.rank)
    changed = False
    starts, ends = [], []
    for axis, start, end, step in params:
        kept = ctx.kept(x, axis)
        if kept is not None:
            n = ctx.old_dim(x, axis)
            s, e, _ = slice(start, end, step).indices(n)
            start, end = int(np.searchsorted(kept, s)), int(np.searchsorted(kept, e))
            changed = True
        starts.append(start)
        ends.append(end)
    if len(node.inputs) > 1 and (ctx.depends_on_change(node.inputs[1]) or ctx.depends_on_change(node.inputs[2])):
        changed = True  # computed from sizes that change: write the (re)computed constants
    if not changed:
        return
    if len(node.inputs) > 1:
        ctx.set_const_input(node, 1, np.asarray(starts, np.int64), "starts")
        ctx.set_const_input(node, 2, np.asarray(ends, np.int64), "ends")
        axes = np.asarray([p[0] for p in params], np.int64)
        steps = np.asarray([p[3] for p in params], np.int64)
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            ctx.set_const_input(node, 3, axes, "axes")
        if len(node.inputs) > 4 and node.inputs[4] is not None:
            ctx.set_const_input(node, 4, steps, "steps")
    else:
        node.set_attr("starts", starts)
        node.set_attr("ends", ends)


def rewrite_split(node: Node, ctx: RewriteCtx) -> None:
    x = node.inputs[0]
    axis = node.attr("axis", 0) % x.rank
    if ctx.kept(x, axis) is None:
        return
    sizes = np.asarray([ctx.new_dim(out, axis) for out in node.outputs], np.int64)
    if ctx.opset >= 13:
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            ctx.set_const_input(node, 1, sizes, "split")
        else:
            node.inputs.append(None)
            ctx.set_const_input(node, 1, sizes, "split")
        if node.attr("num_outputs") is not None:
            node.del_attr("num_outputs")
    else:
        node.set_attr("split", [int(s) for s in sizes])


def rewrite_gather(node: Node, ctx: RewriteCtx) -> None:
    data, indices = node.inputs
    axis = node.attr("axis", 0) % data.rank
    kept = ctx.kept(data, axis)
    idx = ctx.const_array(indices)
    if kept is None or idx is None:
        return
    n = ctx.old_dim(data, axis)
    new_pos = np.full(n, -1, np.int64)
    new_pos[kept] = np.arange(len(kept))
    flat = np.asarray(idx, np.int64).reshape(-1)
    flat = np.where(flat < 0, flat + n, flat)
    if idx.ndim == 1:
        out_kept = ctx.kept(node.outputs[0], axis)
        if out_kept is not None:
            flat = flat[out_kept]
        new = new_pos[flat]
    else:
        new = new_pos[flat].reshape(idx.shape)
    if (new < 0).any():
        raise AssertionError(f"{node.name}: a gathered element was removed")
    ctx.set_const_input(node, 1, new.astype(idx.dtype), "indices")


# ==================================================================================================


def rewrite_reduce_mean(node: Node, ctx: RewriteCtx) -> None:
    """A mean over channels that lost some: sum / C' -> times C'/C restores sum / C (removed channels are 0)."""
    x = node.inputs[0]
    factor = 1.0
    for axis in reduce_axes(node, ctx.shape_eval, x.rank):
        kept = ctx.kept(x, axis)
        if kept is not None:
            factor *= len(kept) / ctx.old_dim(x, axis)
    if factor != 1.0:
        ctx.scale_output(node, factor)
