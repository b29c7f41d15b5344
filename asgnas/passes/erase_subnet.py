"""Sub-network construction, erasing side (spec 4): delete erased structures, rewire joints, drop dead code.

``construct_erased(model, analysis, zero_ids)`` rewrites ``model`` in place:
1. delete the nodes of the erased structures (their groups must be zero, or the result differs);
2. for every reader of a deleted tensor, worklist until nothing changes:
   - an Add/Sum operand goes (one operand left: the joint becomes that operand; Sub's right operand likewise);
   - a Concat operand goes together with its channels: the per-channel ops up to the next stems are sliced and
     the stems lose those input columns (``erasing.channels``); one operand left: the Concat becomes it;
   - any other reader is starved and deleted in turn (its outputs are deleted tensors);
3. dead-code elimination (``asgnas.passes.dce``): whatever no output needs any more (the right U-Net of spec 2.7).
The graph inputs/outputs keep their names, shapes and dtypes (a joint producing a graph output is replaced by an
Identity rather than renaming the output). The set must be valid for the oracle (``hierarchy``); it is checked
first. Exactness: the result computes what the zeroed model computes (spec 4.4), up to summation order.

Registered pass ``erase-subnet``: requires ``model.analyses["erasing_groups"]`` (computed when missing),
erases every removable erase group that is exactly zero (``group_is_zero``) - all of them when the set is valid,
else a greedy valid subset (``strict=true`` fails instead) - and reports what went.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Collection

import numpy as np

from asgnas.errors import AsgnasError
from asgnas.ir import Graph, Model, Node, Value
from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.cost import total_cost
from asgnas.passes.dce import eliminate_dead_code
from asgnas.passes.erasing import ANALYSIS_KEY, ErasingAnalysis
from asgnas.passes.erasing.bypass import bypass_problem, expand_target, may_broadcast
from asgnas.passes.erasing.channels import ChannelPlan, trace_channels
from asgnas.passes.erasing.dataflow import DataFlow
from asgnas.passes.erasing.ops import op_info
from asgnas.passes.groups import group_is_zero
from asgnas.passes.hierarchy import HierarchyOracle
from asgnas.passes.shape_infer import ensure_shapes


class _Rewriter:
    def __init__(self, model: Model, analysis: ErasingAnalysis) -> None:
        self.model = model
        self.graph: Graph = model.graph
        self.flow = DataFlow(self.graph)
        self.nodes = {n.name: n for n in self.graph}
        # joints come from the analysis: a shape-computing Concat is never one (spec 8.1)
        self.joints: dict[str, str] = {}
        for seg in analysis.graph.segments:
            if seg.kind == "joint":
                node = self.nodes.get(seg.nodes[0])
                info = op_info(node) if node is not None else None
                if info is not None:
                    self.joints[node.name] = info.joint
        self.deleted: deque[Value] = deque()
        self.log: dict[str, list[str]] = {"bypassed": [], "sliced": [], "starved": [], "dropped_operands": []}

    # --- primitive edits ----------------------------------------------------------------------------------------
    def delete(self, node: Node) -> None:
        for out in node.outputs:
            if self.graph.is_output(out):
                raise AsgnasError(f"erasing would delete graph output {out.name} (node {node.name})")
            if out.uses:
                self.deleted.append(out)
        self.graph.remove_node(node)
        self.nodes.pop(node.name, None)

    def _set_inputs(self, node: Node, inputs: list[Value | None]) -> None:
        for i in range(len(node.inputs)):
            node.set_input(i, None)
        node.inputs = [None] * len(inputs)
        for i, value in enumerate(inputs):
            node.set_input(i, value)

    def _bypass(self, node: Node, keep: Value) -> None:
        """``node`` (a joint left with one operand) becomes ``keep``."""
        out = node.outputs[0]
        if may_broadcast(out, keep):
            # the dropped operand broadcast the result: expand along the dims it broadcast
            if problem := bypass_problem(out, keep):  # the analysis marks such structures not removable
                raise AsgnasError(f"cannot erase: {problem}", node=node.name, op=node.op_type)
            target = np.array(expand_target(out, keep), dtype=np.int64)
            shape = self.graph.add_initializer(f"{node.name}_shape", target)
            name = node.name
            self.graph.remove_node(node)
            self.nodes.pop(name, None)
            expand = self.graph.add_node("Expand", [keep, shape], [out], name=name)
            self.nodes[expand.name] = expand
            self.flow.adopt(expand)
            self.log["bypassed"].append(name)
            return
        name = node.name
        if self.graph.is_output(out):  # keep the output's name: an Identity instead of renaming
            self.graph.remove_node(node)
            identity = self.graph.add_node("Identity", [keep], [out], name=name)
            self.nodes[name] = identity
            self.flow.adopt(identity)
        else:
            self.graph.replace_all_uses_with(out, keep)
            self.graph.remove_node(node)
            self.nodes.pop(name, None)
        self.log["bypassed"].append(name)

    # --- readers of deleted tensors -------------------------------------------------------------------------------
    def run(self, erase_nodes: list[str]) -> None:
        for name in erase_nodes:
            node = self.nodes.get(name)
            if node is None:
                continue
            for out in node.outputs:
                if self.graph.is_output(out):
                    raise AsgnasError(f"erasing would delete graph output {out.name} (node {node.name})")
            self.graph.remove_node(node)
            self.nodes.pop(name, None)
            self.deleted.extend(out for out in node.outputs)
        while self.deleted:
            value = self.deleted.popleft()
            for user in value.consumers:
                if user not in self.graph:
                    continue
                self._reader(user, value)

    def _reader(self, user: Node, value: Value) -> None:
        slots = [i for i, v in enumerate(user.inputs) if v is value]
        kind = self.joints.get(user.name, "")
        if slots and (kind == "sum" or (kind == "sub" and all(s == 1 for s in slots))):
            self.log["dropped_operands"].append(f"{user.name}:{value.name}")
            keep = [v for i, v in enumerate(user.inputs) if i not in slots]
            if not keep:
                self.delete(user)
            elif len(keep) == 1:
                self._bypass(user, keep[0])
            else:
                self._set_inputs(user, keep)
            return
        if slots and kind == "concat":
            self._concat(user, slots)
            return
        self.log["starved"].append(user.name)
        self.delete(user)

    def _concat(self, node: Node, slots: list[int]) -> None:
        plan = trace_channels(self.flow, node)
        if not isinstance(plan, ChannelPlan):
            raise AsgnasError(f"cannot drop Concat operand: {plan}", node=node.name, op=node.op_type)
        positions = sorted({p for s in slots for p in range(*plan.slot_range(s))})
        self._apply_plan(plan, positions)
        self.log["dropped_operands"].append(f"{node.name}:{node.inputs[slots[0]].name}")
        keep = [v for i, v in enumerate(node.inputs) if i not in slots]  # output shapes: updated by the plan
        if not keep:
            self.delete(node)
        elif len(keep) == 1:
            self._bypass(node, keep[0])
        else:
            self._set_inputs(node, keep)

    def _apply_plan(self, plan: ChannelPlan, positions: list[int]) -> None:
        def mapped(base: int, block: int) -> list[int]:
            return [base + p * block + j for p in positions for j in range(block)]

        for touch in plan.touches:
            node = self.nodes[touch.node]
            index = mapped(touch.base, touch.block)
            for slot, axis in touch.slices:
                self._slice_operand(node, slot, axis, index)
            if touch.role == "reshape":
                self._fix_reshape(node, len(index))
            else:
                self.log["sliced"].append(touch.node)
        for name, axis, base, block in plan.values:
            value = self.graph.values.get(name)
            if value is None or value.shape is None:
                continue
            shape = list(value.shape)
            shape[axis] = shape[axis] - len(positions) * block
            value.shape = tuple(shape)

    def _slice_operand(self, node: Node, slot: int, axis: int, index: list[int]) -> None:
        value = node.inputs[slot]
        array = self.flow.const_of(value)
        if array is None:
            raise AsgnasError(f"operand {slot} of {node.name} is not constant", node=node.name, op=node.op_type)
        sliced = np.delete(array, index, axis=axis)
        owned = value.is_initializer and all(user is node and i == slot for user, i in value.uses)
        if owned and not self.graph.is_output(value):
            value.const.array = sliced
            value.shape = tuple(sliced.shape)
        else:  # shared or computed constant: give this reader its own sliced copy
            node.set_input(slot, self.graph.add_initializer(f"{value.name}_sliced", sliced))

    def _fix_reshape(self, node: Node, removed: int) -> None:
        target = self.flow.const_of(node.inputs[1])
        if target is None:
            raise AsgnasError("reshape target not constant", node=node.name, op=node.op_type)
        target = np.array(target, dtype=np.int64).reshape(-1)
        if target[-1] > 0:  # an explicit flattened size (0 / -1 adapt by themselves)
            target[-1] -= removed
            node.set_input(1, self.graph.add_initializer(f"{node.inputs[1].name}_sliced", target))


def construct_erased(
    model: Model,
    analysis: ErasingAnalysis,
    zero_ids: Collection[int],
    *,
    oracle: HierarchyOracle | None = None,
) -> dict[str, Any]:
    """Erase the structures ``zero_ids`` (erase-group ids of ``analysis``) from ``model``, in place.

    Raises ``AsgnasError`` when the set is not valid. Returns what was removed and the cost before/after.
    """
    groups = analysis.by_id()
    ids = sorted(set(zero_ids))
    for gid in ids:
        group = groups.get(gid)
        if group is None or group.kind != "erase":
            raise AsgnasError(f"erase construction: {gid} is not an erase group of this analysis")
    oracle = oracle or HierarchyOracle(analysis)
    reason = oracle.why_invalid(ids)
    if reason:
        raise AsgnasError(f"erase construction: the set is not valid: {reason}")
    before = total_cost(model)
    nodes_before = len(model.graph)
    ensure_shapes(model)
    rewriter = _Rewriter(model, analysis)
    erase_nodes = [name for gid in ids for name in groups[gid].nodes]
    rewriter.run(erase_nodes)
    dead_nodes, dead_inits = eliminate_dead_code(model.graph)
    # fixed point: DCE never leaves a reader of a deleted tensor, so a second worklist round has nothing to do
    assert not rewriter.deleted
    # the analyses describe the old graph (segments, plans, oracle state): drop them and those built on them
    AnalysisManager(model).forget(ANALYSIS_KEY)
    after = total_cost(model)
    removed = oracle.removed_segments(ids)
    return {
        "erased_groups": ids,
        "removed_segments": [s.id for s in oracle.analysis.graph.segments if s.id in removed],
        "nodes_before": nodes_before,
        "nodes_after": len(model.graph),
        "dead_code_nodes": dead_nodes,
        "dead_code_initializers": dead_inits,
        **rewriter.log,
        "params_before": before["params"],
        "params_after": after["params"],
        "macs_before": before["macs"],
        "macs_after": after["macs"],
    }


def zero_erase_groups(model: Model, analysis: ErasingAnalysis) -> list[int]:
    """Ids of the removable erase groups whose parameters (auxiliary slices included) are exactly zero."""
    return [g.id for g in analysis.removable() if group_is_zero(model, g)]


def select_erasable(analysis: ErasingAnalysis, ids: Collection[int],
                    oracle: HierarchyOracle | None = None) -> tuple[list[int], list[int]]:
    """(erasable, skipped): all of ``ids`` when they are valid together, else a greedy valid subset in the given
    order (a skipped zero structure simply stays in the network: it contributes zero anyway)."""
    oracle = oracle or HierarchyOracle(analysis)
    ids = list(dict.fromkeys(ids))
    oracle.reset()
    if oracle.is_valid(ids):
        for gid in ids:
            oracle.try_remove(gid)  # leave the oracle holding the set (construct_erased re-checks it)
        return ids, []
    chosen: list[int] = []
    skipped: list[int] = []
    for gid in ids:
        (chosen if oracle.try_remove(gid) else skipped).append(gid)
    return chosen, skipped


@register_pass
class EraseSubnetPass(Pass):
    name = "erase-subnet"
    summary = "erase every zero removal structure (GeZIG), rewire joints, slice Concat consumers, drop dead code"
    options = (Option("strict", bool, False, "fail when the zero structures cannot all be erased together"),)
    requires = (ANALYSIS_KEY,)

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        analysis = AnalysisManager(model).get(ANALYSIS_KEY)
        zero = zero_erase_groups(model, analysis)
        oracle = HierarchyOracle(analysis)
        if self.config["strict"] and not oracle.is_valid(zero):
            raise AsgnasError(f"zero structures are not erasable together: {oracle.why_invalid(zero)}")
        chosen, skipped = select_erasable(analysis, zero, oracle)
        if not chosen:
            return {"zero_groups": zero, "erased_groups": [], "skipped": skipped}
        result = construct_erased(model, analysis, chosen, oracle=oracle)
        return {"zero_groups": zero, "skipped": skipped, **result}
