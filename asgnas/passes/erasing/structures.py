"""Minimal removal structures (GeZIGs), spec 2.4: which segments can be erased, with Z1-Z5.

Every segment owning trainable variables becomes one ``Group(kind="erase")``; ``removable`` says whether it is a
minimal removal structure and ``reason`` (naming node and op) says why not otherwise:
- it owns trainable variables (float initializers in parameter slots: weights, biases, norm scale/bias);
- Z2: every consumer is an erase-joint operand (Add/Sum, Sub's right operand, a Concat whose channels can be
  dropped); Mul, boundaries, unknown ops and shape readers are not;
- Z1: zeroing its variables makes its output identically zero: a forward walk from the head, each vertex either
  killed by its zeroed variables or zero-preserving on a zero input;
- Z3: additive per-channel constants after a Concat join as auxiliary slices (``channels.py``);
- Z4: none of its variables is read outside the segment (weight tying, exporter dedup of equal initializers);
- Z5: it does not produce a graph output.
The group's ``params`` are all its trainable variables plus the auxiliary slices; ``num_params`` / ``macs`` what
erasing it removes: its own initializers and MACs plus the consumer columns and per-channel slices after Concats
(cost.py conventions: one MAC per multiply-add, per-element ops count their output elements).
"""

from __future__ import annotations

from typing import Callable

from asgnas.ir import Node, Value
from asgnas.passes.erasing.bypass import bypass_problem
from asgnas.passes.erasing.channels import ChannelPlan
from asgnas.passes.erasing.dataflow import DataFlow
from asgnas.passes.erasing.ops import op_info
from asgnas.passes.erasing.segments import ERASABLE, SHAPE, Segment, SegmentGraph, node_zero
from asgnas.passes.groups import Group, TensorSlice


def trainable_params(flow: DataFlow, node: Node) -> list[str]:
    """Initializer names of a node's trainable variables (through exporter aliases, see ``ALIAS_OPS``).

    Unknown ops: every float initializer they read (so they still get a group, marked not removable).
    """
    info = op_info(node)
    data = set(flow.data_slots(node))
    slots = range(len(node.inputs)) if info is None else (*info.mul_slots, *info.add_slots, *info.param_slots)
    names: list[str] = []
    for slot in slots:
        if slot < len(node.inputs) and slot not in data:
            root = flow.resolve_param(node.inputs[slot])
            if root is not None and root.name not in names:
                names.append(root.name)
    return names


def build_groups(
    flow: DataFlow,
    sg: SegmentGraph,
    node_costs: dict[str, dict[str, int]],
    id_offset: int = 0,
) -> list[Group]:
    nodes = {n.name: n for n in flow.data_nodes}
    groups: list[Group] = []
    users_of: dict[str, list[tuple[Node, Value]]] = {}  # exporters alias one weight into every layer: walk it once

    def param_users(root: Value) -> list[tuple[Node, Value]]:
        users = users_of.get(root.name)
        if users is None:
            users = users_of[root.name] = flow.param_users(root)
        return users

    for seg in sg.segments:
        seg_nodes = [nodes[n] for n in seg.nodes]
        inside = set(seg_nodes)
        owned: dict[str, None] = {}  # ordered set: a long segment owns thousands
        shared: dict[str, str] = {}  # param -> a node outside the segment reading it
        for node in seg_nodes:
            for name in trainable_params(flow, node):
                if name in owned or name in shared:
                    continue
                outside = [(u, a) for u, a in param_users(flow.graph.values[name]) if u not in inside]
                if outside:
                    user, alias = outside[0]
                    via = "" if alias.name == name else f" (alias {alias.name})"
                    shared[name] = f"{name}{via} is shared with node {user.name} ({user.op_type})"
                else:
                    owned[name] = None
        if not owned:
            # nothing of its own to zero: parameter-free for the search space (weight-tied convs, pools whose
            # BN constants the exporter shared); noted on the segment so reports can say why
            if shared:
                seg.note = f"only shared parameters: {next(iter(shared.values()))}"
            continue
        group = Group(id=id_offset + len(groups), kind="erase", nodes=list(seg.nodes), params=[], space=seg.id,
                      segment=seg.index)
        seg.group = group.id
        reason = _check(flow, sg, seg, seg_nodes, list(owned), shared)
        aux, extra_params, extra_macs = _concat_consequences(flow, sg, seg, nodes, node_costs)
        group.params = [TensorSlice(p) for p in owned] + aux
        group.removable = not reason
        group.reason = reason
        group.num_params = _owned_size(flow, seg_nodes, param_users) + extra_params
        group.macs = sum(node_costs.get(n, {}).get("macs", 0) for n in seg.nodes) + extra_macs
        groups.append(group)
    return groups


def _check(
    flow: DataFlow,
    sg: SegmentGraph,
    seg: Segment,
    seg_nodes: list[Node],
    params: list[str],
    shared: dict[str, str],
) -> str:
    """Empty when ``seg`` is a minimal removal structure, else the first violated condition.

    Z4 refinement: the group holds only the segment's *own* variables; a variable also read outside (weight tying,
    exporter dedup of equal initializers) is never zeroed, so the segment is removable only when it is
    zero-invariant without it.
    """
    head = seg_nodes[0]
    if seg.kind == "unknown":
        return f"unknown op {head.op_type} (node {head.name})"
    if seg.feeds_output:  # Z5
        return f"feeds graph output {seg.outputs[0]} (node {seg.nodes[-1]})"
    if not seg.out_edges:
        return f"no consumers: node {seg.nodes[-1]} ({seg_nodes[-1].op_type}) is dead code"
    for consumer, kind in seg.out_edges:  # Z2
        if kind == ERASABLE:
            continue
        target = sg.segments[consumer]
        if kind == SHAPE:
            return f"the shape of {seg.nodes[-1]} is read by node {target.nodes[0]} ({target.op})"
        why = sg.concat_failures.get(target.nodes[0])
        if why:
            return f"consumer {target.nodes[0]} ({target.op}) is not an erase-joint: {why}"
        what = "an unknown op" if target.kind == "unknown" else "not an erase-joint"
        return f"consumer {target.nodes[0]} ({target.op}) is {what}"
    if problem := _unbuildable_bypass(sg, seg, seg_nodes):
        return problem
    zeroed = set(params)  # Z1: walk forward with the group's variables at zero
    state, breaker = False, None
    for node in seg_nodes:
        info = op_info(node)
        kill, zp = node_zero(flow, node, info, zeroed) if info is not None else (False, False)
        if not kill and state and not zp:
            breaker = node
        state = kill or (state and zp)
    if not state:
        if shared:  # Z4: what would have zeroed it is shared
            return f"not zero-invariant without a shared parameter: {next(iter(shared.values()))}"
        if breaker is not None:
            return f"not zero-invariant: node {breaker.name} ({breaker.op_type}) maps zero to non-zero"
        return f"not zero-invariant: zeroing its parameters does not zero node {seg.nodes[-1]}"
    return ""


def _unbuildable_bypass(sg: SegmentGraph, seg: Segment, seg_nodes: list[Node]) -> str:
    """Erased, the segment leaves each two-operand Add/Sub/Sum it feeds with one operand, which the joint then
    becomes: where that needs an Expand to a shape that is not static, construction could not build it."""
    for consumer, kind in seg.out_edges:
        target = sg.segments[consumer]
        if kind != ERASABLE or target.kind != "joint" or target.op == "Concat":
            continue
        for out in seg_nodes[-1].outputs:
            for joint in out.consumers:
                if joint.name != target.nodes[0] or not joint.outputs:
                    continue
                others = {id(v): v for v in joint.inputs if v is not None and v is not out}
                if len(others) == 1 and (problem := bypass_problem(joint.outputs[0], *others.values())):
                    return f"{problem} (node {joint.name}, op {joint.op_type})"
    return ""


def _owned_size(flow: DataFlow, seg_nodes: list[Node],
                param_users: Callable[[Value], list[tuple[Node, Value]]]) -> int:
    """Elements of the float initializers only this segment reads (removed with it)."""
    inside = set(seg_nodes)
    seen: set[str] = set()
    total = 0
    for node in seg_nodes:
        data = set(flow.data_slots(node))
        for slot, value in enumerate(node.inputs):
            if value is None or slot in data:
                continue
            root = flow.resolve_param(value)
            if root is None or root.name in seen:
                continue
            seen.add(root.name)
            if all(user in inside for user, _ in param_users(root)):
                total += root.const.size
    return total


def _concat_consequences(
    flow: DataFlow,
    sg: SegmentGraph,
    seg: Segment,
    nodes: dict[str, Node],
    node_costs: dict[str, dict[str, int]],
) -> tuple[list[TensorSlice], int, int]:
    """Auxiliary slices (Z3) plus the parameters/MACs of the consumer columns that go with the segment."""
    aux: list[TensorSlice] = []
    params = macs = 0
    last = nodes[seg.nodes[-1]]
    for consumer, kind in seg.out_edges:
        target = sg.segments[consumer]
        plan = sg.concat_plans.get(target.nodes[0])
        if kind != ERASABLE or plan is None:
            continue
        concat = nodes[target.nodes[0]]
        for slot, value in enumerate(concat.inputs):
            if value is None or value.producer is not last:
                continue
            lo, hi = plan.slot_range(slot)
            a, p, m = _plan_cost(flow, plan, lo, hi, nodes, node_costs)
            aux += a
            params += p
            macs += m
    return aux, params, macs


def _plan_cost(
    flow: DataFlow,
    plan: ChannelPlan,
    lo: int,
    hi: int,
    nodes: dict[str, Node],
    node_costs: dict[str, dict[str, int]],
) -> tuple[list[TensorSlice], int, int]:
    aux: list[TensorSlice] = []
    params = macs = 0
    for touch in plan.touches:
        positions = ChannelPlan.positions(lo, hi, touch.base, touch.block)
        aux += [TensorSlice(name, axis, positions) for name, axis in touch.aux]
        node = nodes[touch.node]
        for slot, axis in touch.slices:
            value = node.inputs[slot]
            shape = value.const.shape if value.const is not None else value.shape
            if shape and shape[axis]:
                params += int(len(positions) * (_prod(shape) // shape[axis]))
        if touch.extent:
            macs += node_costs.get(touch.node, {}).get("macs", 0) * len(positions) // touch.extent
    return aux, params, macs


def _prod(shape: tuple) -> int:
    total = 1
    for d in shape:
        total *= int(d) if isinstance(d, int) else 1
    return total
