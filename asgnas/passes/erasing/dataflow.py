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

from typing import Callable, Mapping

import numpy as np
from onnx import helper

from asgnas.ir import Graph, Node, Value
from asgnas.passes.erasing.ops import FOLDABLE, op_info

#: do not materialise folded constants above this many elements (they are never needed that large)
_MAX_FOLD = 1 << 20

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


Known = Mapping[Value, "np.ndarray | None"]


def _arr(known: Known, node: Node, index: int) -> np.ndarray | None:
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    value = node.inputs[index]
    if value.const is not None:
        return value.const.array
    return known.get(value)


def _axes(node: Node, known: Known, index: int) -> list[int] | None:
    axes = _arr(known, node, index)
    if axes is not None:
        return [int(a) for a in axes.reshape(-1)]
    attr = node.attr("axes")
    return None if attr is None else [int(a) for a in attr]


def _static_shape(value: Value) -> list[int] | None:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return list(value.shape)


def evaluate(node: Node, known: Known) -> list[np.ndarray | None] | None:
    """numpy semantics of the foldable ops (and ``Mod``, for shape inference); None when an input is unknown or
    anything is off. ``known`` holds the values of non-constant inputs already evaluated; static shapes are read
    off the values."""
    op = node.op_type
    try:
        if op in ("Shape", "Size"):
            shape = _static_shape(node.inputs[0])
            if shape is None:
                return None
            if op == "Size":
                return [np.array(int(np.prod(shape)), dtype=np.int64)]
            start, end = node.attr("start", 0), node.attr("end")
            return [np.array(shape[start:end], dtype=np.int64)]
        args = [_arr(known, node, i) for i in range(len(node.inputs))]
        present = [a for a, v in zip(args, node.inputs) if v is not None]
        if any(a is None for a in present[:1]) and op != "ConstantOfShape":
            return None
        x = args[0] if args else None
        if op in ("Identity",):
            out = x
        elif op == "Cast":
            out = x.astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))
        elif op == "Unsqueeze":
            axes = _axes(node, known, 1)
            if axes is None:
                return None
            rank = x.ndim + len(axes)
            out = x
            for axis in sorted(a % rank for a in axes):
                out = np.expand_dims(out, axis)
        elif op == "Squeeze":
            axes = _axes(node, known, 1)
            out = np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))
        elif op == "Concat":
            if any(a is None for a in present):
                return None
            out = np.concatenate(present, axis=node.attr("axis"))
        elif op == "Gather":
            if args[1] is None:
                return None
            out = np.take(x, args[1], axis=node.attr("axis", 0))
        elif op == "Reshape":
            if args[1] is None:
                return None
            shape = [int(d) for d in args[1]]
            if not node.attr("allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            out = x.reshape(shape)
        elif op == "Flatten":
            axis = node.attr("axis", 1) % max(x.ndim, 1)
            out = x.reshape(int(np.prod(x.shape[:axis])), -1)
        elif op == "Slice":
            starts, ends = args[1], args[2]
            if starts is None or ends is None:
                return None
            axes = list(range(len(starts))) if len(args) < 4 or args[3] is None else [int(a) for a in args[3]]
            steps = [1] * len(starts) if len(args) < 5 or args[4] is None else [int(s) for s in args[4]]
            index = [slice(None)] * x.ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                index[a % x.ndim] = slice(int(s), int(e), st)
            out = x[tuple(index)]
        elif op in ("Add", "Sub", "Mul", "Div", "Mod", "Equal", "Max", "Min"):
            if any(a is None for a in present):
                return None
            if op == "Add":
                out = present[0] + present[1]
            elif op == "Sub":
                out = present[0] - present[1]
            elif op == "Mul":
                out = present[0] * present[1]
            elif op == "Div":
                a, b = present
                out = (np.trunc(a / b).astype(a.dtype)) if np.issubdtype(a.dtype, np.integer) else a / b
            elif op == "Mod":
                out = (np.fmod if node.attr("fmod", 0) else np.mod)(present[0], present[1])
            elif op == "Equal":
                out = np.equal(present[0], present[1])
            else:
                out = (np.maximum if op == "Max" else np.minimum).reduce(np.broadcast_arrays(*present))
        elif op in ("Neg", "Abs", "Floor", "Ceil", "Sqrt"):
            out = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt}[op](x)
        elif op == "ConstantOfShape":
            if x is None:
                return None
            shape = [int(d) for d in x.reshape(-1)]
            if np.prod(shape, dtype=np.int64) > _MAX_FOLD:
                return None
            fill = node.attr("value")
            fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
            out = np.full(shape, fill[0], dtype=fill.dtype)
        elif op == "Range":
            if any(a is None for a in present):
                return None
            out = np.arange(present[0], present[1], present[2])
        elif op == "Where":
            if any(a is None for a in present):
                return None
            out = np.where(*present)
        elif op == "Expand":
            if args[1] is None:
                return None
            shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in args[1]))
            if np.prod(shape, dtype=np.int64) > _MAX_FOLD:
                return None
            out = np.broadcast_to(x, shape).copy()
        elif op == "Transpose":
            out = np.transpose(x, node.attr("perm"))
        elif op == "ReduceProd":
            axes = _axes(node, known, 1)
            keep = bool(node.attr("keepdims", 1))
            out = np.prod(x, axis=None if axes is None else tuple(axes), keepdims=keep)
        elif op == "Constant":
            return None  # lifted Constants already carry ``Value.const``
        else:
            return None
    except Exception:  # an odd constant chain is simply not folded
        return None
    if out is None:
        return None
    out = np.asarray(out)
    return [out] if out.size <= _MAX_FOLD else None


ConstOf = Callable[[Value], "np.ndarray | None"]
