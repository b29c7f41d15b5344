"""What a model file must get right before any pass reads it, each failure one ``AsgnasError`` (exit 2).

Checked on the proto, in one walk over the main graph (subgraphs stay opaque): names that are valid UTF-8, each
value defined once (SSA: no name given by two nodes, two inputs, two initializers, or a node and an input),
known element types, declared dims that are positive and not astronomical, and tensors whose data is there and as
long as their shape needs (typed fields and raw data alike). The lifted graph must
be acyclic, and a Conv's weight must fit its input (``check_conv_fits``, once shapes are known).
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import onnx
from onnx import TensorProto

from asgnas.errors import AsgnasError
from asgnas.ir.model import Model

#: a declared tensor with more elements than this (2^40, terabytes) is a broken file, not a model to run
MAX_ELEMENTS = 1 << 40
_KNOWN_TYPES = frozenset(TensorProto.DataType.values()) - {TensorProto.UNDEFINED}
_TYPED_FIELD = {  # where a tensor keeps its values when not in raw_data, and how many entries per element
    TensorProto.FLOAT: ("float_data", 1), TensorProto.COMPLEX64: ("float_data", 2),
    TensorProto.DOUBLE: ("double_data", 1), TensorProto.COMPLEX128: ("double_data", 2),
    TensorProto.INT64: ("int64_data", 1), TensorProto.UINT32: ("uint64_data", 1),
    TensorProto.UINT64: ("uint64_data", 1), TensorProto.STRING: ("string_data", 1),
}


def check_proto(proto: onnx.ModelProto, where: str) -> None:
    """Raise on the first malformation of the main graph (see the module docstring)."""
    graph = proto.graph
    _check_names(graph, where)
    defined: dict[str, str] = {}

    def define(name: str, what: str, node: onnx.NodeProto | None = None) -> None:
        if name in defined and not (what == "initializer" and defined[name] == "input"):  # IR < 4: both
            raise AsgnasError(f"value '{name}' is defined twice (as {defined[name]} and as {what})", file=where,
                              node=node.name if node else None, op=node.op_type if node else None)
        defined[name] = what

    for info in graph.input:
        define(info.name, "input")
    for tensor in graph.initializer:
        define(tensor.name, "initializer")
    for node in graph.node:
        for name in node.output:
            if name:
                define(name, f"output of node {node.name or node.op_type}", node)
        if node.op_type in ("Conv", "ConvTranspose") and node.domain in ("", "ai.onnx"):
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group < 1:
                raise AsgnasError(f"group={group}: must be at least 1", file=where, node=node.name, op=node.op_type)
    inputs = {id(info) for info in graph.input}
    for info in _value_infos(graph):  # an empty input is no input to run or train on; empty values inside are
        _check_declared_type(info, where, allow_zero=id(info) not in inputs)
    for tensor, node in _tensors(graph):
        _check_tensor(tensor, where, node)


def _check_names(graph: onnx.GraphProto, where: str) -> None:
    """Protobuf hands names that are not valid UTF-8 over as bytes."""
    names: Iterable = (
        [graph.name], (i.name for i in _value_infos(graph)), (t.name for t in graph.initializer),
        *((n.name, n.op_type, n.domain, *n.input, *n.output) for n in graph.node),
    )
    for group in names:
        for name in group:
            if isinstance(name, bytes):
                raise AsgnasError(f"name {name!r} is not valid UTF-8", file=where)


def _value_infos(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _check_declared_type(info: onnx.ValueInfoProto, where: str, *, allow_zero: bool) -> None:
    if info.type.WhichOneof("value") != "tensor_type":
        return  # sequences, maps, optionals: opaque
    tensor_type = info.type.tensor_type
    if tensor_type.elem_type and tensor_type.elem_type not in _KNOWN_TYPES:
        raise AsgnasError(f"value '{info.name}' has unknown element type {tensor_type.elem_type}", file=where)
    dims = [d.dim_value for d in tensor_type.shape.dim if d.HasField("dim_value")]
    _check_dims(info.name, dims, where, allow_zero=allow_zero)


def _check_dims(name: str, dims: list[int], where: str, *, allow_zero: bool) -> None:
    if any(d < 0 or (d == 0 and not allow_zero) for d in dims):
        raise AsgnasError(f"value '{name}' declares dims {dims}: each must be "
                          f"{'at least 0' if allow_zero else 'positive'}", file=where)
    if math.prod(dims) > MAX_ELEMENTS:
        raise AsgnasError(f"value '{name}' declares dims {dims}: more than 2^40 elements", file=where)


def _tensors(graph: onnx.GraphProto) -> Iterator[tuple[TensorProto, onnx.NodeProto | None]]:
    for tensor in graph.initializer:
        yield tensor, None
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t, node


def _check_tensor(tensor: TensorProto, where: str, node: onnx.NodeProto | None) -> None:
    """Known type, sane dims, and data (as much as the shape needs, where counting is cheap)."""
    name = tensor.name or (f"value of {node.name}" if node else "?")
    context = {"file": where, "node": node.name if node else None, "op": node.op_type if node else None}
    if tensor.data_type not in _KNOWN_TYPES:
        raise AsgnasError(f"tensor '{name}' has unknown data type {tensor.data_type}", **context)
    _check_dims(name, list(tensor.dims), where, allow_zero=True)
    if tensor.data_location == TensorProto.EXTERNAL:
        return  # still on disk (a caller that reads the proto alone); its length is checked when it is read
    count = math.prod(tensor.dims)
    found, needed = _data_length(tensor, count)
    if found < needed:
        unit = "bytes" if tensor.HasField("raw_data") else "values"
        problem = "has no data" if found == 0 else f"holds {found} of the {needed} {unit} its shape needs"
        raise AsgnasError(f"tensor '{name}' {problem} (dims {list(tensor.dims)})", **context)


def _data_length(tensor: TensorProto, count: int) -> tuple[int, int]:
    """(available, needed) entries of the typed fields, or bytes of the raw data. Measuring raw data copies it
    (protobuf hands it over as new bytes), one tensor at a time: under a second per GB, freed at once."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data), _raw_bytes(tensor.data_type, count)
    bits = _SUB_BYTE_BITS.get(tensor.data_type)
    field, per_element = _TYPED_FIELD.get(tensor.data_type, ("int32_data", 1))
    found = len(getattr(tensor, field))
    if bits is not None:  # packed several to an entry
        return found, min(count, 1)
    return found, count * per_element


def _raw_bytes(data_type: int, count: int) -> int:
    """Bytes of raw data ``count`` elements need (0 where the element size is not known here)."""
    bits = _SUB_BYTE_BITS.get(data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0


_SUB_BYTE_BITS = {getattr(TensorProto, name): bits for name, bits in (
    ("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6))
    if hasattr(TensorProto, name)}


def check_conv_fits(model: Model) -> None:
    """Each Conv's weight fits its input: input channels = weight's second dim x group, output channels a
    multiple of group, one spatial rank (ConvTranspose: input channels = weight's first dim). Where the shapes are
    known; onnxruntime would refuse the rest when it runs."""
    for node in model.graph:
        if node.op_type not in ("Conv", "ConvTranspose") or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.inputs) < 2 or node.inputs[0] is None or node.inputs[1] is None:
            continue
        x, w = node.inputs[0].shape, node.inputs[1].shape
        if x is None or w is None or len(x) < 2 or len(w) < 2:
            continue
        group = node.attr("group") or 1
        problem = None
        if len(x) != len(w):
            problem = f"weight of rank {len(w)} for an input of rank {len(x)}"
        elif isinstance(x[1], int) and isinstance(w[0], int) and isinstance(w[1], int):
            if node.op_type == "Conv" and (x[1] != w[1] * group or w[0] % group):
                problem = f"weight {list(w)} with group={group} does not fit an input of {x[1]} channels"
            if node.op_type == "ConvTranspose" and (x[1] != w[0] or x[1] % group):
                problem = f"weight {list(w)} with group={group} does not fit an input of {x[1]} channels"
        if problem:
            raise AsgnasError(problem, file=model.source, node=node.name, op=node.op_type)
