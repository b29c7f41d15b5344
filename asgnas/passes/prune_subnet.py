"""Physically remove zero channel groups; the ``prune-subnet`` pass.

``construct_pruned(model, analysis, zero_ids)`` reads ``analysis`` (``analyze_pruning`` of this very model) and
the removable groups ``zero_ids`` (callers pass groups whose parameters are exactly zero; the result equals the
zeroed model). Writes: the IR, in place --
1. constant contributions of removed channels that are not zero (Sigmoid/Softplus/... before an unpadded conv or
   a Linear, see ``Fold``) are added to the consumer's bias (computed on the original weights);
2. every node whose channel counts change is updated by its rule's ``rewrite`` (``rules.py``): depthwise Conv
   ``group``, GroupNormalization ``num_groups``, Reshape/Expand/Resize targets, Slice bounds, Split sizes,
   Gather indices, ReduceMean over channels rescaled by C'/C (a shared shape constant is never edited in place:
   the node gets its own);
3. every constant member of a changed space (producer rows, biases, norm parameters and statistics, consumer
   columns, Constant nodes) is sliced along its axis (vectorised ``np.take``);
4. the shapes of computed values are dropped (stale): callers infer them once they are done rewriting.
A space never ends with zero channels: if every channel of a space would go, the lowest-id group touching it is
kept (it is zero, so the model stays exact) and reported in ``kept_to_avoid_empty``; the validity oracle
(hierarchy pass) already refuses such selections, this is the backstop.

``prune-subnet``: re-runs the analysis, removes every removable group whose parameters are all exactly zero.
Report key ``prune-subnet``: what was removed and (``cost=true``) the cost before/after.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from asgnas.errors import AsgnasError
from asgnas.ir import ConstTensor, Model, Node, Value
from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.groups import group_is_zero
from asgnas.passes.pruning.analysis import ANALYSIS_KEY, PruningAnalysis, analyze_pruning
from asgnas.passes.pruning.rewrites import RewriteCtx
from asgnas.passes.pruning.rules import CHANNEL_RULES
from asgnas.passes.shape_infer import forget_shapes


def construct_pruned(model: Model, analysis: PruningAnalysis, zero_ids: set[int]) -> dict[str, Any]:
    """Remove the channel groups ``zero_ids`` from ``model`` in place; returns what was done."""
    if not analysis.describes(model):
        raise AsgnasError("construct_pruned: the analysis was computed for another model")
    graph = model.graph
    by_id = analysis.groups
    skipped = sorted(g for g in zero_ids if not (0 <= g < len(by_id)) or not by_id[g].removable)
    active = sorted(g for g in zero_ids if 0 <= g < len(by_id) and by_id[g].removable)

    # a space never ends empty: keep (zero) groups until every space has a channel left
    kept_nonempty: list[int] = []
    while True:
        masks = analysis.removed_masks(active)
        empty = next((root for root, mask in masks.items() if mask.all()), None)
        if empty is None:
            break
        victim = min(g for g in active if analysis.removes_from(g, empty))
        active.remove(victim)
        kept_nonempty.append(victim)
    kept_root = {root: np.flatnonzero(~mask) for root, mask in masks.items() if mask.any()}
    rc = RewriteCtx(model, analysis, kept_root)

    # 1. bias folds, on the original weights
    pending_folds = []
    nodes_by_name = {n.name: n for n in graph}
    for fold in analysis.folds:
        wname, waxis = fold.weight
        wvalue = graph.values.get(wname)
        kept = kept_root.get(analysis.root_of(wname, waxis))
        if kept is None or wvalue is None or wvalue.const is None:
            continue
        array = wvalue.const.array.astype(np.float64)
        removed = np.setdiff1d(np.arange(array.shape[waxis]), kept)
        taken = np.take(array, removed, axis=waxis).sum(axis=waxis)  # removed columns, summed
        node = nodes_by_name[fold.node]
        if fold.kind == "conv":
            contrib = fold.z * taken.reshape(taken.shape[0], -1).sum(axis=1)
        else:
            contrib = fold.z * taken.reshape(-1)
            if fold.kind == "gemm":
                contrib = contrib * node.attr("alpha", 1.0)
        pending_folds.append((node, fold.kind, contrib))

    # 2. node rewrites (on the original shapes and shape computations)
    touched: dict[Node, None] = {}
    for root in kept_root:
        for value, _ in analysis.root_members(root):
            if value.producer is not None:
                touched[value.producer] = None
            for user, _ in value.uses:
                touched[user] = None
    position = {n: i for i, n in enumerate(graph.toposort())}
    for node in sorted(touched, key=lambda n: position.get(n, -1)):
        rule = CHANNEL_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is not None and rule.rewrite is not None and node in graph:
            rule.rewrite(node, rc)

    # 3. slice every constant member of a changed space
    sliced: dict[str, np.ndarray] = {}
    for root, kept in kept_root.items():
        for value, axis in analysis.root_members(root):
            if value.const is None:
                continue
            array = sliced.get(value.name, value.const.array)
            sliced[value.name] = np.take(array, kept, axis=axis)
    for name, array in sliced.items():
        _set_constant(graph.values[name], array)

    # 4. folds, on the sliced tensors
    for node, kind, contrib in pending_folds:
        out = node.outputs[0]
        kept = rc.kept(out, 1 if kind in ("conv", "gemm") else -1)
        if kept is not None:
            contrib = contrib[kept]
        _add_bias(model, node, kind, contrib)

    forget_shapes(model)  # stale now; the caller infers them once (construct-subnet after dce, prune-subnet's cost)
    AnalysisManager(model).forget(ANALYSIS_KEY)  # its relations describe the graph before the cut

    removed_channels: dict[str, int] = {}
    for gid in active:
        space = by_id[gid].space
        removed_channels[space] = removed_channels.get(space, 0) + 1
    return {
        "removed_groups": len(active),
        "removed_group_ids": active,
        "kept_to_avoid_empty": kept_nonempty,
        "skipped_not_removable": skipped,
        "removed_per_space": removed_channels,
        "folded_biases": len(pending_folds),
    }


def _set_constant(value: Value, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    node = value.producer
    if node is not None and node.op_type == "Constant":
        for key in ("value_float", "value_floats", "value_int", "value_ints"):
            if node.attr(key) is not None:
                node.del_attr(key)
        node.set_attr("value", array)
    if value.const is None:
        value.const = ConstTensor(array=array)
    else:
        value.const.array = array
    value.shape = tuple(array.shape)


def _add_bias(model: Model, node: Node, kind: str, contrib: np.ndarray) -> None:
    """Add ``contrib`` (one value per output channel) to the node's output through its bias."""
    graph = model.graph
    if kind == "conv":
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        dtype = node.inputs[1].const.array.dtype if node.inputs[1].const is not None else np.float32
        old = bias.const.array if bias is not None and bias.const is not None else np.zeros(len(contrib), dtype)
        value = graph.add_initializer(f"{node.name}_bias", (old + contrib).astype(old.dtype))
        while len(node.inputs) < 3:
            node.inputs.append(None)
        node.set_input(2, value)
        return
    if kind == "gemm":
        c = node.inputs[2] if len(node.inputs) > 2 else None
        beta = node.attr("beta", 1.0)
        if c is not None and c.const is not None and beta != 0:
            old = c.const.array
            value = graph.add_initializer(f"{node.name}_C", (old + contrib / beta).astype(old.dtype))
        else:
            value = graph.add_initializer(f"{node.name}_C", contrib.astype(np.float32))
            node.set_attr("beta", 1.0)
        while len(node.inputs) < 3:
            node.inputs.append(None)
        node.set_input(2, value)
        return
    # matmul: y = x @ W  ->  y = (x @ W) + contrib, keeping the output's name
    out = node.outputs[0]
    inner = graph.add_value(f"{out.name}_nobias", out.dtype)
    node.outputs[0] = inner
    inner.producer = node
    out.producer = None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(out.dtype or TensorProto.FLOAT)
    const = graph.add_initializer(f"{node.name}_bias", contrib.astype(dtype))
    graph.add_node("Add", [inner, const], [out], name=f"{node.name}_bias_add")


@register_pass
class PruneSubnetPass(Pass):
    name = "prune-subnet"
    summary = "physically remove every exactly-zero channel group (slice rows and columns, update attributes)"
    options = (Option("cost", bool, True, "report the cost before/after (infers the new shapes; construct-subnet "
                                         "turns it off and infers them once, at its end)"),)

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        from asgnas.passes.cost import total_cost

        before = total_cost(model) if self.config["cost"] else None
        analysis = analyze_pruning(model)
        zero = {g.id for g in analysis.groups if g.removable and group_is_zero(model, g)}
        result = construct_pruned(model, analysis, zero) if zero else {"removed_groups": 0}
        if before is not None:
            result["cost"] = {"before": before, "after": total_cost(model)}
        return result


__all__ = ["construct_pruned"]
