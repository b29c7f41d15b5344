"""Data flow vs side chains: which tensors carry activations, and lazy evaluation of the constant side chains.

Spec 2.1: constant/shape sub-graphs (Constant, Shape -> Gather -> Concat -> Unsqueeze chains computing shapes,
scales, axes; Identity aliases of initializers) are not data flow and must never become segment vertices or joints.
Rather than rewriting the IR, the analysis *folds* them logically:

- a value is **data** when it depends on a graph input through ops that read values (a ``Shape`` reads only the
  shape, so its output is not data); a node is a data node when it reads a data input and is not shape-only;
- every other node is a **side** node: attached to the data nodes it (transitively) feeds, never a vertex;
- ``const_of(value)`` evaluates a side value with numpy when it is a compile-time constant (initializers, Constant
  outputs, static shapes), memoised, on demand only (what the checks need: pads, scales, axes, clip bounds).

One topological walk: O(nodes + edges).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper

from asgnas.ir import Graph, Node, Value
from asgnas.passes.erasing.ops import op_info
from asgnas.passes.folding import FOLDABLE, evaluate

#: layout ops through which a side tensor is still "that initializer" (zero the initializer, zero the alias):
#: the exporters' Identity dedup aliases and the legacy Linear's ``Transpose(weight)``
ALIAS_OPS = frozenset({"Identity", "Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"})


class DataFlow:
    """Data/side classification of one graph plus a constant evaluator for the side chains."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order: list[Node] = graph.toposort()
        self.position: dict[Node, int] = {n: i for i, n in enumerate(self.order)}
        self._data: set[Value] = set(graph.inputs)
        self.data_nodes: list[Node] = []
        self.side_nodes: list[Node] = []
        for node in self.order:
            info = op_info(node)
            reads_data = any(v is not None and v in self._data for v in node.inputs) or any(
                v in self._data for v in node.implicit_inputs
            )
            if reads_data and not (info is not None and info.shape_only):
                self.data_nodes.append(node)
                self._data.update(node.outputs)
            else:
                self.side_nodes.append(node)
        self._is_data_node = set(self.data_nodes)
        self._const: dict[Value, np.ndarray | None] = {}
        self._sinks: dict[Node, frozenset[Node]] = {}
        self._params: dict[Value, Value | None] = {}

    def adopt(self, node: Node) -> None:
        """Register a data node created by a rewrite (its outputs carry data)."""
        self.data_nodes.append(node)
        self._is_data_node.add(node)
        self._data.update(node.outputs)

    # --- classification ---------------------------------------------------------------------------------------
    def is_data(self, value: Value | None) -> bool:
        return value is not None and value in self._data

    def is_data_node(self, node: Node) -> bool:
        return node in self._is_data_node

    def data_slots(self, node: Node) -> list[int]:
        return [i for i, v in enumerate(node.inputs) if v is not None and v in self._data]

    def shape_sinks(self, side: Node) -> frozenset[Node]:
        """Data nodes a side node feeds (through further side nodes): who needs the shape a ``Shape`` reads."""
        done = self._sinks.get(side)
        if done is not None:
            return done
        # iterative post-order over the side sub-graph below ``side``
        stack: list[tuple[Node, bool]] = [(side, False)]
        while stack:
            node, expanded = stack.pop()
            if node in self._sinks:
                continue
            users = {user for out in node.outputs for user, _ in out.uses}
            if not expanded:
                stack.append((node, True))
                stack.extend((u, False) for u in users if not self.is_data_node(u) and u not in self._sinks)
                continue
            sinks: set[Node] = set()
            for user in users:
                if self.is_data_node(user):
                    sinks.add(user)
                else:
                    sinks |= self._sinks.get(user, frozenset())
            self._sinks[node] = frozenset(sinks)
        return self._sinks[side]

    # --- parameters -------------------------------------------------------------------------------------------
    def resolve_param(self, value: Value | None) -> Value | None:
        """The float initializer a non-data operand is (possibly through ``ALIAS_OPS`` aliases), else None."""
        if value is None:
            return None
        if value in self._params:
            return self._params[value]
        root = self._resolve_param(value)
        self._params[value] = root
        return root

    def _resolve_param(self, value: Value | None) -> Value | None:
        seen = 0
        while value is not None and not value.is_initializer:
            producer = value.producer
            if producer is None or producer.op_type not in ALIAS_OPS or self.is_data(value) or seen > 64:
                return None
            value = producer.inputs[0]
            seen += 1
        if value is None or value.const is None:
            return None
        dtype = helper.tensor_dtype_to_np_dtype(value.const.dtype)
        return value if np.issubdtype(dtype, np.floating) else None

    def param_users(self, root: Value) -> list[tuple[Node, Value]]:
        """Every non-alias node reading initializer ``root`` (directly or via ``ALIAS_OPS``), with the alias."""
        users: list[tuple[Node, Value]] = []
        stack = [root]
        while stack:
            value = stack.pop()
            for user, slot in value.uses:
                if user.op_type in ALIAS_OPS and slot == 0 and not self.is_data_node(user):
                    stack.extend(user.outputs)
                else:
                    users.append((user, value))
        return users

    # --- constant folding -------------------------------------------------------------------------------------
    def const_of(self, value: Value | None) -> np.ndarray | None:
        """The value of a folded side tensor (memoised), or None when it is data or not a compile-time constant."""
        if value is None or self.is_data(value):
            return None
        if value.const is not None:
            return value.const.array
        if value in self._const:
            return self._const[value]
        # evaluate the producers bottom-up without recursion (side chains can be long in big exports)
        stack = [value]
        while stack:
            top = stack[-1]
            if top in self._const or top.const is not None:
                stack.pop()
                continue
            node = top.producer
            if node is None or self.is_data_node(node) or node.op_type not in FOLDABLE or node.has_subgraphs:
                self._const[top] = None
                stack.pop()
                continue
            pending = [
                v for v in node.inputs
                if v is not None and v.const is None and v not in self._const and not self.is_data(v)
                and not (node.op_type in ("Shape", "Size") and v is node.inputs[0])
            ]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            results = evaluate(node, self._const)
            for i, out in enumerate(node.outputs):
                self._const[out] = results[i] if results is not None and i < len(results) else None
        return self._const.get(value)


ConstOf = Callable[[Value], "np.ndarray | None"]
