"""Segment (dependency) graph, spec 2.3 with its refinements.

Vertices are the data nodes (side chains folded away, see ``dataflow.py``). A data node is
- a **joint** when it combines >= 2 data operands and is an erase-joint (Add/Sum, Sub, a Concat whose channel path
  checks out): a singleton segment;
- a **boundary** when it combines >= 2 data operands otherwise (Mul, MatMul, Where, a Concat whose channels cannot
  be dropped): a singleton segment whose producers are never removable;
- **unknown** when the op table has no entry: a singleton boundary;
- a **chain** vertex otherwise (one data operand).
A chain grows from its head along the unique consumer while (a) the current vertex has exactly one consumer,
counting graph outputs and shape readers, and (b) that consumer is a chain vertex reading it directly. So a
multi-consumer vertex ends its segment inclusively, a joint consumer ends it exclusively, and a vertex feeding a
graph output ends it (spec 2.3 steps 3-7). Every data node lies in exactly one segment (asserted).

Edges carry a kind, which is what the validity oracle needs:
``erasable`` (an erase-joint operand), ``plain`` (the operand of a chain or boundary), ``absorb`` (a boundary
operand that zeroes the output when zero: Mul, MatMul) and ``shape`` (the consumer reads the producer's shape
through a side chain). Linear: one pass over the data nodes and their uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asgnas.ir import Node
from asgnas.passes.erasing.bypass import lone_keep_problems
from asgnas.passes.erasing.channels import ChannelPlan, trace_channels
from asgnas.passes.erasing.dataflow import DataFlow
from asgnas.passes.erasing.ops import OpInfo, is_zero_preserving, op_info

ERASABLE, PLAIN, ABSORB, SHAPE = "erasable", "plain", "absorb", "shape"


@dataclass
class Segment:
    """One vertex of the segment graph: an ordered run of trace vertices (ONNX node names)."""

    id: str
    index: int
    nodes: list[str]
    kind: str  # "chain" | "joint" | "boundary" | "unknown"
    op: str  # op type of the head node
    in_edges: list[tuple[int, str]] = field(default_factory=list)  # (producer segment index, edge kind)
    out_edges: list[tuple[int, str]] = field(default_factory=list)  # (consumer segment index, edge kind)
    reads_input: bool = False  # some operand is a graph input (a producer that never dies)
    input_kinds: list[str] = field(default_factory=list)  # edge kinds of the graph-input operands
    feeds_output: bool = False
    outputs: list[str] = field(default_factory=list)  # graph outputs it produces
    zero_transparent: bool = False  # fed zeros (params as they are), it outputs zeros
    group: int | None = None  # id of its erase group (segments with trainable parameters of their own)
    note: str = ""  # why a segment with parameters has no group (all of them shared)

    @property
    def producers(self) -> list[int]:
        return sorted({p for p, _ in self.in_edges})

    @property
    def consumers(self) -> list[int]:
        return sorted({c for c, _ in self.out_edges})

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "nodes": self.nodes,
            "kind": self.kind,
            "op": self.op,
            "producers": self.producers,
            "consumers": self.consumers,
            "in_edges": [list(e) for e in self.in_edges],
            "reads_input": self.reads_input,
            "feeds_output": self.feeds_output,
            "zero_transparent": self.zero_transparent,
            "group": self.group,
            "note": self.note,
        }


@dataclass
class SegmentGraph:
    """D = (V_d, E_d). ``segments[i].index == i``; ids are ``s<i>`` in topological order of the heads."""

    segments: list[Segment]
    by_node: dict[str, int]  # data node name -> segment index
    concat_plans: dict[str, ChannelPlan]  # erase-joint Concats (node name -> channel plan)
    concat_failures: dict[str, str]  # Concats with >= 2 data inputs that are not erase-joints, with the reason
    #: joint segment index -> {operand's producer segment index (-1: a graph input): why the joint cannot be
    #: bypassed to that operand alone}: a removal set that leaves the joint only that operand is not buildable
    lone_keep_problems: dict[int, dict[int, str]] = field(default_factory=dict)

    def by_id(self) -> dict[str, Segment]:
        return {s.id: s for s in self.segments}

    def to_json(self) -> dict[str, Any]:
        return {"segments": [s.to_json() for s in self.segments], "concat_failures": self.concat_failures}


def classify(flow: DataFlow, node: Node) -> tuple[str, OpInfo | None, ChannelPlan | str | None]:
    """(kind, table entry, channel plan for Concat joints / reason when a Concat is not one)."""
    info = op_info(node)
    if info is None:
        return "unknown", None, None
    if len(flow.data_slots(node)) + sum(flow.is_data(v) for v in node.implicit_inputs) < 2:
        return "chain", info, None
    if info.joint == "concat":
        plan = trace_channels(flow, node)
        return ("joint" if isinstance(plan, ChannelPlan) else "boundary"), info, plan
    if info.joint:
        return "joint", info, None
    return "boundary", info, None


def _slot_kind(kind: str, info: OpInfo | None, slot: int) -> str:
    if kind == "joint":
        assert info is not None
        if info.joint == "sub" and slot != 1:
            return PLAIN
        return ERASABLE
    if kind == "boundary" and info is not None and slot in info.absorbing:
        return ABSORB
    return PLAIN


def build_segment_graph(flow: DataFlow) -> SegmentGraph:
    graph = flow.graph
    output_values = {id(v) for v in graph.outputs}
    kinds: dict[Node, tuple[str, OpInfo | None]] = {}
    plans: dict[str, ChannelPlan] = {}
    failures: dict[str, str] = {}
    for node in flow.data_nodes:
        kind, info, plan = classify(flow, node)
        kinds[node] = (kind, info)
        if isinstance(plan, ChannelPlan):
            plans[node.name] = plan
        elif isinstance(plan, str):
            failures[node.name] = plan

    def consumers(node: Node) -> tuple[set[Node], bool, bool]:
        """(distinct data consumers incl. shape sinks, feeds a graph output, some consumer is a shape sink)."""
        users: set[Node] = set()
        via_shape = False
        feeds_output = False
        for out in node.outputs:
            if id(out) in output_values:
                feeds_output = True
            for user, _ in out.uses:
                if flow.is_data_node(user):
                    users.add(user)
                else:  # a shape reader: the data nodes it feeds depend on this tensor
                    sinks = flow.shape_sinks(user)
                    if sinks:
                        via_shape = True
                        users |= sinks
        return users, feeds_output, via_shape

    def next_in_chain(node: Node) -> Node | None:
        """The vertex that continues ``node``'s segment, or None when the segment ends at ``node``."""
        if kinds[node][0] != "chain":
            return None
        users, feeds_output, via_shape = consumers(node)
        if feeds_output or via_shape or len(users) != 1:
            return None
        (user,) = users
        if kinds[user][0] != "chain":
            return None  # joints and boundaries start their own segment (exclusive end)
        return user

    continued: set[Node] = set()  # nodes that extend their producer's segment
    successor: dict[Node, Node] = {}
    for node in flow.data_nodes:
        nxt = next_in_chain(node)
        if nxt is not None:
            successor[node] = nxt
            continued.add(nxt)

    segments: list[Segment] = []
    by_node: dict[str, int] = {}
    for node in flow.data_nodes:  # topological order: heads come in order
        if node in continued:
            continue
        kind, info = kinds[node]
        seg = Segment(id=f"s{len(segments)}", index=len(segments), nodes=[], kind=kind, op=node.op_type)
        cur: Node | None = node
        while cur is not None:
            seg.nodes.append(cur.name)
            by_node[cur.name] = seg.index
            cur = successor.get(cur)
        segments.append(seg)
    if len(by_node) != len(flow.data_nodes):  # spec 2.3 step 8
        missing = [n.name for n in flow.data_nodes if n.name not in by_node][:5]
        raise AssertionError(f"data nodes outside every segment: {missing}")

    nodes_by_name = {n.name: n for n in flow.data_nodes}
    edge_sets: list[dict[tuple[int, str], None]] = [dict() for _ in segments]
    for seg in segments:
        head_kind, head_info = kinds[nodes_by_name[seg.nodes[0]]]
        for name in seg.nodes:
            node = nodes_by_name[name]
            for slot, value in enumerate(node.inputs):
                if value is None or not flow.is_data(value):
                    continue
                kind = _slot_kind(head_kind, head_info, slot)
                if value.producer is None:
                    seg.reads_input = True
                    seg.input_kinds.append(kind)
                    continue
                producer = by_node[value.producer.name]
                if producer != seg.index:
                    edge_sets[seg.index][(producer, kind)] = None
            for value in node.implicit_inputs:
                if flow.is_data(value) and value.producer is not None:
                    producer = by_node[value.producer.name]
                    if producer != seg.index:
                        edge_sets[seg.index][(producer, PLAIN)] = None
            for out in node.outputs:
                if id(out) in output_values:
                    seg.feeds_output = True
                    seg.outputs.append(out.name)
    # shape edges: the sinks of a Shape reading a segment's tensor depend on that segment
    for side in flow.side_nodes:
        for value in side.inputs:
            if value is None or not flow.is_data(value) or value.producer is None:
                continue
            producer = by_node[value.producer.name]
            for sink in flow.shape_sinks(side):
                consumer = by_node[sink.name]
                if consumer != producer:
                    edge_sets[consumer][(producer, SHAPE)] = None
    for seg in segments:
        seg.in_edges = list(edge_sets[seg.index])
        for producer, kind in seg.in_edges:
            segments[producer].out_edges.append((seg.index, kind))

    for seg in segments:
        seg.zero_transparent = _zero_transparent(flow, [nodes_by_name[n] for n in seg.nodes], seg.kind)
    lone = {seg.index: problems for seg in segments if seg.kind == "joint" and seg.op != "Concat"
            if (problems := lone_keep_problems(nodes_by_name[seg.nodes[0]], by_node))}
    return SegmentGraph(segments, by_node, plans, failures, lone)


def node_zero(flow: DataFlow, node: Node, info: OpInfo, zeroed: set[str]) -> tuple[bool, bool]:
    """(kill, zp) of one node when the initializers named in ``zeroed`` are zero.

    kill: the output is zero for every input (a zero multiplicative operand and zero additive ones);
    zp: a zero data input gives a zero output.
    """
    data = set(flow.data_slots(node))

    def is_zero(slot: int) -> bool:
        value = node.inputs[slot]
        root = flow.resolve_param(value)
        if root is not None:  # a trainable variable: zero only if zeroed with the group (training moves it)
            return root.name in zeroed
        const = flow.const_of(value)
        return const is not None and not const.any()

    def present(slots: tuple[int, ...]) -> list[int]:
        return [s for s in slots if s < len(node.inputs) and node.inputs[s] is not None and s not in data]

    adds_zero = all(is_zero(s) for s in present(info.add_slots))
    muls = present(info.mul_slots)
    kill = bool(muls) and any(is_zero(s) for s in muls) and adds_zero
    zp = is_zero_preserving(node, info, flow.const_of) and adds_zero
    return kill, zp


def _zero_transparent(flow: DataFlow, nodes: list[Node], kind: str) -> bool:
    if kind == "joint":
        return True  # a sum / concatenation of zeros is zero
    if kind == "unknown":
        return False
    for node in nodes:
        info = op_info(node)
        if info is None or not node_zero(flow, node, info, set())[1]:
            return False
    return True
