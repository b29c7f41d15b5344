"""``Model``: a lifted ONNX model (graph + opsets + metadata), and lifting/lowering to and from ``ModelProto``.

Lifting is one linear walk over the proto; attributes and tensor data stay as protos until a pass reads them,
so an unchanged model lowers back to the very same protos (bit-identical onnxruntime outputs).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Iterable

import numpy as np

import onnx
from onnx import GraphProto, ModelProto, NodeProto, ValueInfoProto, helper

from asgnas.ir.core import IMPLICIT_USE, ConstTensor, Graph, Node, Shape, Value


class Model:
    """A lifted model. ``graph`` is the IR; everything else is carried through unchanged."""

    def __init__(self, graph: Graph, opset_imports: dict[str, int], ir_version: int = onnx.IR_VERSION) -> None:
        self.graph = graph
        self.opset_imports = dict(opset_imports)
        self.ir_version = ir_version
        self.producer_name = "asgnas"
        self.producer_version = ""
        self.domain = ""
        self.model_version = 0
        self.doc_string = ""
        self.metadata_props: dict[str, str] = {}
        self.functions: list[onnx.FunctionProto] = []  # opaque local functions
        self.initializer_inputs: list[str] = []  # IR<4 style: initializers also listed as graph inputs
        self.source: str | None = None  # the file it was loaded from, for error messages
        self.analyses: dict[str, Any] = {}  # results of analysis passes, keyed by analysis name

    @property
    def opset(self) -> int:
        """Version of the default ONNX domain."""
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 0))

    def copy(self) -> "Model":
        """An independent deep copy (via lowering; constants are shared copy-on-write through their protos)."""
        clone = lift(lower(self))
        clone.source = self.source
        return clone

    @classmethod
    def from_proto(cls, proto: ModelProto) -> "Model":
        return lift(proto)

    def to_proto(self) -> ModelProto:
        return lower(self)


# --------------------------------------------------------------------------------------------------
# lifting


def _shape_from_type(type_proto: onnx.TypeProto) -> tuple[int, Shape | None]:
    if not type_proto.HasField("tensor_type"):
        return 0, None
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return tensor_type.elem_type, None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tensor_type.elem_type, tuple(dims)


def apply_value_info(value: Value, info: ValueInfoProto) -> None:
    if info.type.WhichOneof("value") not in (None, "tensor_type"):
        value.non_tensor_type = info.type
        return
    dtype, shape = _shape_from_type(info.type)
    if dtype:
        value.dtype = dtype
    if shape is not None:
        value.shape = shape


def subgraph_captures(graph: GraphProto) -> set[str]:
    """Names a subgraph (recursively) reads from enclosing scopes."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    captured: set[str] = set()
    for node in graph.node:
        for name in node.input:
            if name and name not in defined:
                captured.add(name)
        for attr in node.attribute:
            for sub in _attr_graphs(attr):
                captured |= {n for n in subgraph_captures(sub) if n not in defined}
        defined.update(o for o in node.output if o)
    for out in graph.output:
        if out.name not in defined:
            captured.add(out.name)
    return captured


def _attr_graphs(attr: onnx.AttributeProto) -> Iterable[GraphProto]:
    if attr.type == onnx.AttributeProto.GRAPH:
        return (attr.g,)
    if attr.type == onnx.AttributeProto.GRAPHS:
        return tuple(attr.graphs)
    return ()


def lift(proto: ModelProto) -> Model:
    """ModelProto -> Model. Node names are kept; unnamed nodes get ``<op_type>_<index>`` names."""
    with gc_paused():
        return _lift(proto)


@contextmanager
def gc_paused():
    """Building ~10^5 acyclic objects triggers the cyclic GC over and over (quadratic-looking time): pause it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lift(proto: ModelProto) -> Model:
    gp = proto.graph
    graph = Graph(gp.name or "main")
    graph.doc_string = gp.doc_string
    values = graph.values

    for tensor in gp.initializer:
        value = values[tensor.name] = Value(tensor.name, tensor.data_type, tuple(tensor.dims))
        value.const = ConstTensor(tensor)
    if len(gp.sparse_initializer):
        raise onnx.checker.ValidationError("sparse initializers are not supported")

    initializer_inputs = []
    for info in gp.input:
        if info.name in values:  # an initializer also declared as an input (IR < 4)
            initializer_inputs.append(info.name)
            continue
        value = graph.get_or_create_value(info.name)
        apply_value_info(value, info)
        graph.inputs.append(value)

    taken_names = {n.name for n in gp.node if n.name}
    for index, np_node in enumerate(gp.node):
        name = np_node.name
        if not name:
            name = f"{np_node.op_type}_{index}"
            while name in taken_names:
                name = f"{name}_"
            taken_names.add(name)
        node = Node(name, np_node.op_type, np_node.domain)
        node.doc_string = np_node.doc_string
        for i, input_name in enumerate(np_node.input):
            if not input_name:
                node.inputs.append(None)
                continue
            value = values.get(input_name)
            if value is None:
                value = values[input_name] = Value(input_name)
            node.inputs.append(value)
            value.uses.append((node, i))
        for output_name in np_node.output:
            if not output_name:
                # an omitted optional output (e.g. Dropout's mask): keep the slot with a fresh name
                output_name = graph.unique_value_name(f"{name}_unused")
            value = values.get(output_name)
            if value is None:
                value = values[output_name] = Value(output_name)
            value.producer = node
            node.outputs.append(value)
        for attr in np_node.attribute:
            node._attr_protos[attr.name] = attr
            for sub in _attr_graphs(attr):
                for captured in sorted(subgraph_captures(sub)):
                    value = graph.get_or_create_value(captured)
                    if value not in node.implicit_inputs:
                        node.implicit_inputs.append(value)
                        value.uses.append((node, IMPLICIT_USE))
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.outputs:
            _lift_constant(node)
        graph._insert_lifted(node)

    for info in gp.value_info:
        value = values.get(info.name)
        if value is not None:
            apply_value_info(value, info)
    for info in gp.output:
        value = graph.get_or_create_value(info.name)
        apply_value_info(value, info)
        graph.outputs.append(value)

    opsets = {op.domain: op.version for op in proto.opset_import}
    model = Model(graph, opsets, proto.ir_version or lowest_ir_version(proto))
    model.producer_name = proto.producer_name
    model.producer_version = proto.producer_version
    model.domain = proto.domain
    model.model_version = proto.model_version
    model.doc_string = proto.doc_string
    model.metadata_props = {p.key: p.value for p in proto.metadata_props}
    model.functions = list(proto.functions)
    model.initializer_inputs = initializer_inputs
    return model


def lowest_ir_version(proto: ModelProto) -> int:
    """The IR version a file that leaves it unset (0, which no checker or runtime accepts) is given: the lowest
    its opsets allow, so nothing it could rely on is newer."""
    return helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)


def _lift_constant(node: Node) -> None:
    """Expose a Constant's value as numpy on its output value (the node itself stays)."""
    protos = node._attr_protos
    out = node.outputs[0]
    if "value" in protos:
        out.const = ConstTensor(protos["value"].t)
    else:
        for key in ("value_float", "value_floats", "value_int", "value_ints"):
            if key in protos:
                raw = node.attr(key)
                dtype = np.float32 if "float" in key else np.int64
                out.const = ConstTensor(array=np.asarray(raw, dtype=dtype))
                break
    if out.const is not None:
        out.dtype = out.const.dtype
        out.shape = out.const.shape


# --------------------------------------------------------------------------------------------------
# lowering


def _value_info(value: Value) -> ValueInfoProto:
    info = ValueInfoProto()
    info.name = value.name
    if value.non_tensor_type is not None:
        info.type.CopyFrom(value.non_tensor_type)
        return info
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = value.dtype
    if value.shape is not None:
        tensor_type.shape.SetInParent()  # a scalar has a shape with no dims, not no shape
        dims = tensor_type.shape.dim
        for d in value.shape:
            dim = dims.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    return info


def _node_proto(node: Node) -> NodeProto:
    proto = NodeProto()
    proto.name = node.name
    proto.op_type = node.op_type
    if node.domain:
        proto.domain = node.domain
    if node.doc_string:
        proto.doc_string = node.doc_string
    proto.input.extend("" if v is None else v.name for v in node.inputs)
    proto.output.extend(v.name for v in node.outputs)
    proto.attribute.extend(node.attribute_protos())
    return proto


#: float initializers larger than this are left out of ``lower(weights=False)`` (shape-only lowering)
SHAPE_ONLY_LIMIT = 64


def lower(model: Model, weights: bool = True) -> ModelProto:
    """Model -> ModelProto in topological order, with initializers, inputs, outputs and known value infos.

    ``weights=False`` is for analyses that only need shapes (onnx shape inference, a model's shape-only runs):
    large float initializers become typed graph inputs instead of data, so nothing big is copied or serialized;
    the small and integer constants that shapes are computed from stay.
    """
    with gc_paused():
        return _lower(model, weights)


def _is_weight(value: Value) -> bool:
    return value.const.size > SHAPE_ONLY_LIMIT and np.issubdtype(
        helper.tensor_dtype_to_np_dtype(value.const.dtype), np.floating)


def _lower(model: Model, weights: bool = True) -> ModelProto:
    graph = model.graph
    order = graph.toposort()
    proto = ModelProto()
    gp = proto.graph  # filled in place: no copy of a large graph
    gp.name = graph.name
    if graph.doc_string:
        gp.doc_string = graph.doc_string
    gp.node.extend(_node_proto(n) for n in order)

    input_names = {v.name for v in graph.inputs}
    output_names = {v.name for v in graph.outputs}
    initializers = [v for v in graph.values.values() if v.is_initializer]
    as_inputs = [] if weights else [v for v in initializers if _is_weight(v)]
    if as_inputs:
        skipped = {id(v) for v in as_inputs}
        initializers = [v for v in initializers if id(v) not in skipped]
    gp.initializer.extend(v.const.to_proto(v.name) for v in initializers)
    gp.input.extend(_value_info(v) for v in graph.inputs)
    gp.input.extend(_value_info(v) for v in as_inputs)
    init_names = {v.name for v in initializers}
    gp.input.extend(_initializer_inputs(model, initializers, input_names))
    gp.output.extend(_value_info(v) for v in graph.outputs)
    skip = input_names | output_names | init_names | {v.name for v in as_inputs}
    gp.value_info.extend(
        _value_info(v)
        for n in order
        for v in n.outputs
        if v.name not in skip and (v.dtype or v.shape is not None or v.non_tensor_type is not None)
        and v.const is None
    )

    proto.ir_version = model.ir_version
    proto.producer_name = model.producer_name
    proto.producer_version = model.producer_version
    if model.domain:
        proto.domain = model.domain
    proto.model_version = model.model_version
    if model.doc_string:
        proto.doc_string = model.doc_string
    proto.opset_import.extend(helper.make_opsetid(d, v) for d, v in model.opset_imports.items())
    for key, val in model.metadata_props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, val
    proto.functions.extend(model.functions)
    return proto


def _initializer_inputs(model: Model, initializers: list[Value], input_names: set[str]) -> list[ValueInfoProto]:
    """Initializers the file also declared as graph inputs stay declared (in their order; removed ones are gone).
    IR < 4 requires every initializer to be an input: there, those that rewrites created (a sliced weight under a
    new name, a Reshape's new shape) are declared too."""
    by_name = {v.name: v for v in initializers if v.name not in input_names}
    order = [name for name in model.initializer_inputs if name in by_name]
    if model.ir_version < 4:
        declared = set(order)
        order += [name for name in by_name if name not in declared]
    return [
        helper.make_tensor_value_info(name, by_name[name].const.dtype, list(by_name[name].const.shape))
        for name in order
    ]


def model_nbytes(model: Model) -> int:
    """Bytes of constant data (decides external-data saving)."""
    return sum(v.const.nbytes for v in model.graph.values.values() if v.const is not None)

