"""The asgnas IR: an SSA graph of Nodes and Values lifted from ONNX.

Design (in the spirit of MLIR's operations and values):
- a ``Value`` is one tensor name; it knows its producer node and its uses ``(node, input_index)``, so producer
  and consumer queries are O(1) and rewrites (``replace_all_uses_with``) are local;
- a ``Node`` is one ONNX NodeProto; attributes stay as their protos until read (lifting large models stays cheap),
  and subgraph attributes (If/Loop/Scan bodies) stay opaque protos; the outer values a subgraph reads are tracked as
  ``implicit_inputs`` so no pass deletes them;
- constant data (initializers, ``Constant`` outputs) hangs off the value as a lazily decoded ``ConstTensor``.

Graph edits go through ``Graph`` / ``Node`` methods so the use lists never go stale.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from asgnas.errors import AsgnasError

Dim = int | str | None
Shape = tuple[Dim, ...]

class CycleError(ValueError):
    """The graph is not a DAG."""


#: Input index recorded for a use from inside a node's subgraph (If/Loop/Scan body).
IMPLICIT_USE = -1


class ConstTensor:
    """Constant data: an initializer or a Constant's value. Decoded to numpy on first access, re-encoded only if set."""

    __slots__ = ("_proto", "_array")

    def __init__(self, proto: TensorProto | None = None, array: np.ndarray | None = None) -> None:
        if proto is None and array is None:
            raise ValueError("ConstTensor needs a proto or an array")
        self._proto = proto
        self._array = array

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            try:
                self._array = numpy_helper.to_array(self._proto)
            except ValueError as err:  # raw data longer than the dims need (shorter is refused at load)
                raise AsgnasError(f"tensor '{self._proto.name}' data does not fit its dims "
                                  f"{list(self._proto.dims)}: {err}") from None
        return self._array

    @array.setter
    def array(self, value: np.ndarray) -> None:
        self._array = np.asarray(value)
        self._proto = None  # stale: re-encode at lowering

    @property
    def shape(self) -> tuple[int, ...]:
        if self._proto is not None:
            return tuple(self._proto.dims)
        return tuple(self._array.shape)

    @property
    def dtype(self) -> int:
        """ONNX element type (TensorProto.FLOAT, ...)."""
        if self._proto is not None:
            return self._proto.data_type
        return helper.np_dtype_to_tensor_dtype(self._array.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * helper.tensor_dtype_to_np_dtype(self.dtype).itemsize

    def to_proto(self, name: str) -> TensorProto:
        if self._proto is not None and self._proto.name == name:
            return self._proto
        if self._proto is not None and self._array is None:
            proto = TensorProto()
            proto.CopyFrom(self._proto)
            proto.name = name
            return proto
        proto = numpy_helper.from_array(self.array, name)
        self._proto = proto
        return proto


class Value:
    """One SSA value (an ONNX tensor name) with its producer, its uses, and what is known of its type."""

    __slots__ = ("name", "dtype", "shape", "producer", "uses", "const", "non_tensor_type", "__weakref__")

    def __init__(self, name: str, dtype: int = 0, shape: Shape | None = None) -> None:
        self.name = name
        self.dtype = dtype  # ONNX element type, 0 = unknown
        self.shape = shape  # None = unknown rank
        self.producer: Node | None = None
        self.uses: list[tuple[Node, int]] = []
        self.const: ConstTensor | None = None
        #: the declared type of a value that is no tensor (sequence, map, optional, sparse): opaque to the analyses
        self.non_tensor_type: onnx.TypeProto | None = None

    def __repr__(self) -> str:
        return f"Value({self.name!r})"

    @property
    def is_initializer(self) -> bool:
        return self.const is not None and self.producer is None

    @property
    def consumers(self) -> list[Node]:
        """Distinct consumer nodes in use order (a node reading the value twice appears once)."""
        seen: dict[int, Node] = {}
        for node, _ in self.uses:
            seen.setdefault(id(node), node)
        return list(seen.values())

    def const_array(self) -> np.ndarray | None:
        return None if self.const is None else self.const.array

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)


class Node:
    """One operator. ``inputs`` holds ``Value`` or ``None`` for an omitted optional input."""

    __slots__ = (
        "name",
        "op_type",
        "domain",
        "inputs",
        "outputs",
        "implicit_inputs",
        "doc_string",
        "_attr_protos",
        "_attrs",
        "_dirty_attrs",
        "__weakref__",
    )

    def __init__(self, name: str, op_type: str, domain: str = "") -> None:
        self.name = name
        self.op_type = op_type
        self.domain = domain
        self.inputs: list[Value | None] = []
        self.outputs: list[Value] = []
        self.implicit_inputs: list[Value] = []
        self.doc_string = ""
        self._attr_protos: dict[str, AttributeProto] = {}
        self._attrs: dict[str, Any] = {}
        self._dirty_attrs = False

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op_type})"

    # --- attributes -------------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """Attribute values decoded to Python (ints, floats, lists, numpy for tensors, protos for graphs)."""
        for key, proto in self._attr_protos.items():
            if key not in self._attrs:
                self._attrs[key] = _decode_attribute(proto)
        return self._attrs

    def attr(self, key: str, default: Any = None) -> Any:
        if key in self._attrs:
            return self._attrs[key]
        proto = self._attr_protos.get(key)
        if proto is None:
            return default
        value = self._attrs[key] = _decode_attribute(proto)
        return value

    def set_attr(self, key: str, value: Any) -> None:
        self.attrs  # decode everything before the protos go stale
        self._attrs[key] = value
        self._attr_protos.pop(key, None)
        self._dirty_attrs = True

    def del_attr(self, key: str) -> None:
        self.attrs
        self._attrs.pop(key, None)
        self._attr_protos.pop(key, None)
        self._dirty_attrs = True

    def attribute_protos(self) -> list[AttributeProto]:
        """Attributes as protos for lowering; untouched ones are the lifted protos themselves."""
        if not self._dirty_attrs:
            return list(self._attr_protos.values())
        out = []
        for key, value in self.attrs.items():
            proto = self._attr_protos.get(key)
            out.append(proto if proto is not None else _encode_attribute(key, value))
        return out

    @property
    def has_subgraphs(self) -> bool:
        if not self._attr_protos:
            return False
        return any(
            p.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for p in self._attr_protos.values()
        )

    # --- inputs -----------------------------------------------------------------------------------
    def set_input(self, index: int, value: Value | None) -> None:
        """Rewire input ``index`` to ``value``, keeping both values' use lists right."""
        old = self.inputs[index]
        if old is value:
            return
        if old is not None:
            _remove_use(old, self, index)
        self.inputs[index] = value
        if value is not None:
            value.uses.append((self, index))

    def data_inputs(self) -> list[Value]:
        """Inputs that are not omitted (may include constants)."""
        return [v for v in self.inputs if v is not None]


def _remove_use(value: Value, node: Node, index: int) -> None:
    for i, (user, idx) in enumerate(value.uses):
        if user is node and idx == index:
            del value.uses[i]
            return


def _decode_attribute(proto: AttributeProto) -> Any:
    if proto.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        return proto  # opaque: subgraphs are never interpreted
    value = helper.get_attribute_value(proto)
    if proto.type == AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if proto.type == AttributeProto.STRING:
        return value.decode("utf-8", errors="replace")
    if proto.type == AttributeProto.STRINGS:
        return [v.decode("utf-8", errors="replace") for v in value]
    if proto.type in (AttributeProto.INTS, AttributeProto.FLOATS):
        return list(value)
    return value


def _encode_attribute(key: str, value: Any) -> AttributeProto:
    if isinstance(value, AttributeProto):
        proto = AttributeProto()
        proto.CopyFrom(value)
        proto.name = key
        return proto
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, np.integer):
        value = int(value)
    elif isinstance(value, np.floating):
        value = float(value)
    elif isinstance(value, (list, tuple)):
        value = [v.item() if isinstance(v, np.generic) else v for v in value]
    return helper.make_attribute(key, value)


class Graph:
    """The top-level graph: nodes (insertion-ordered), values by name, graph inputs and outputs."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.doc_string = ""
        self._nodes: dict[Node, None] = {}  # ordered set: O(1) removal
        self.values: dict[str, Value] = {}
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self._node_names: set[str] = set()
        self._counter = itertools.count()

    # --- queries ----------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(list(self._nodes))

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def value(self, name: str) -> Value:
        return self.values[name]

    def node_by_name(self, name: str) -> Node | None:
        for node in self._nodes:
            if node.name == name:
                return node
        return None

    def initializers(self) -> list[Value]:
        return [v for v in self.values.values() if v.is_initializer]

    def is_output(self, value: Value) -> bool:
        return any(v is value for v in self.outputs)

    # --- names ------------------------------------------------------------------------------------
    def unique_value_name(self, base: str) -> str:
        name = base
        while name in self.values:
            name = f"{base}_{next(self._counter)}"
        return name

    def unique_node_name(self, base: str) -> str:
        name = base
        while name in self._node_names:
            name = f"{base}_{next(self._counter)}"
        return name

    # --- construction -----------------------------------------------------------------------------
    def get_or_create_value(self, name: str) -> Value:
        value = self.values.get(name)
        if value is None:
            value = self.values[name] = Value(name)
        return value

    def add_value(self, name: str, dtype: int = 0, shape: Shape | None = None) -> Value:
        """A fresh value; ``name`` is made unique."""
        value = Value(self.unique_value_name(name), dtype, shape)
        self.values[value.name] = value
        return value

    def add_initializer(self, name: str, array: np.ndarray) -> Value:
        array = np.asarray(array)
        value = self.add_value(name, helper.np_dtype_to_tensor_dtype(array.dtype), tuple(array.shape))
        value.const = ConstTensor(array=array)
        return value

    def add_node(
        self,
        op_type: str,
        inputs: Sequence[Value | None],
        outputs: Sequence[Value | str] | int = 1,
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        domain: str = "",
    ) -> Node:
        """Create a node. ``outputs`` are existing unproduced values, names for new values, or a count."""
        node = Node(self.unique_node_name(name or op_type), op_type, domain)
        self._node_names.add(node.name)
        for index, value in enumerate(inputs):
            node.inputs.append(value)
            if value is not None:
                value.uses.append((node, index))
        if isinstance(outputs, int):
            outputs = [f"{node.name}_out{i}" for i in range(outputs)]
        for out in outputs:
            value = self.add_value(out) if isinstance(out, str) else out
            if value.producer is not None:
                raise ValueError(f"value {value.name} already has a producer")
            value.producer = node
            node.outputs.append(value)
        for key, val in (attrs or {}).items():
            node._attrs[key] = val
        node._dirty_attrs = bool(attrs)
        self._nodes[node] = None
        return node

    def _insert_lifted(self, node: Node) -> None:
        """Register a node built by the lifter (inputs/outputs already wired)."""
        self._nodes[node] = None
        self._node_names.add(node.name)

    # --- edits ------------------------------------------------------------------------------------
    def remove_node(self, node: Node) -> None:
        """Detach and delete a node. Its outputs lose their producer; callers rewire users first."""
        for index, value in enumerate(node.inputs):
            if value is not None:
                _remove_use(value, node, index)
        for value in node.implicit_inputs:
            _remove_use(value, node, IMPLICIT_USE)
        for value in node.outputs:
            value.producer = None
            if not value.uses and not self.is_output(value) and value.const is None:
                self.values.pop(value.name, None)
        del self._nodes[node]
        self._node_names.discard(node.name)

    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        """Every reader of ``old`` (nodes and graph outputs) reads ``new`` instead."""
        for node, index in list(old.uses):
            if index == IMPLICIT_USE:
                continue  # subgraph captures refer by name; they are never rewired
            node.set_input(index, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_value(self, value: Value) -> None:
        if value.uses or value.producer is not None:
            raise ValueError(f"value {value.name} is still in use")
        self.values.pop(value.name, None)

    # --- order ------------------------------------------------------------------------------------
    def toposort(self) -> list[Node]:
        """Topological order, keeping the insertion order wherever the dependencies allow it.

        Linear when the order is already valid (the common case after lifting); otherwise Kahn's algorithm with
        the insertion index as priority, O(n log n).
        """
        nodes = list(self._nodes)
        members = self._nodes
        done: set[Node] = set()
        for node in nodes:  # the common case: every producer comes first (one pass, no per-node sets)
            for v in itertools.chain(node.inputs, node.implicit_inputs):
                if v is not None and v.producer is not None and v.producer not in done and v.producer in members:
                    break
            else:
                done.add(node)
                continue
            break
        else:
            return nodes
        position = {node: i for i, node in enumerate(nodes)}

        def producers(node: Node) -> set[Node]:
            return {
                v.producer
                for v in itertools.chain(node.inputs, node.implicit_inputs)
                if v is not None and v.producer is not None and v.producer in position
            }

        preds = {node: producers(node) for node in nodes}
        indegree = {node: len(p) for node, p in preds.items()}
        successors: dict[Node, list[Node]] = {node: [] for node in nodes}
        for node, ps in preds.items():
            for p in ps:
                successors[p].append(node)
        ready = [(position[n], n.name, n) for n in nodes if indegree[n] == 0]
        heapq.heapify(ready)
        result: list[Node] = []
        while ready:
            _, _, node = heapq.heappop(ready)
            result.append(node)
            for user in successors[node]:
                indegree[user] -= 1
                if indegree[user] == 0:
                    heapq.heappush(ready, (position[user], user.name, user))
        if len(result) != len(nodes):
            stuck = next(n for n in nodes if indegree[n] > 0)
            raise CycleError(f"graph has a cycle through node {stuck.name} ({stuck.op_type})")
        return result

    def reorder(self) -> None:
        self._nodes = dict.fromkeys(self.toposort())

    # --- traversal --------------------------------------------------------------------------------
    def live_nodes(self) -> set[Node]:
        """Nodes some graph output depends on (through data or subgraph captures)."""
        live: set[Node] = set()
        stack = [v.producer for v in self.outputs if v.producer is not None]
        while stack:
            node = stack.pop()
            if node in live:
                continue
            live.add(node)
            for value in itertools.chain(node.inputs, node.implicit_inputs):
                if value is not None and value.producer is not None and value.producer not in live:
                    stack.append(value.producer)
        return live
