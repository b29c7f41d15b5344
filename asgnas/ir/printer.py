"""A readable, MLIR-flavoured text form of the IR, for ``--print-ir-after-all`` and debugging.

    graph main (%input: f32[N,3,32,32]) -> (%output: f32[N,10]) {
      %x = Conv(%input, @conv.weight: f32[16,3,3,3], @conv.bias: f32[16]) {group=1, kernel_shape=[3,3]} : f32[N,16,32,32]  // /conv/Conv
    }
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import AttributeProto, TensorProto, helper

from asgnas.ir.core import Graph, Node, Value
from asgnas.ir.model import Model

_SHORT_DTYPES = {
    TensorProto.FLOAT: "f32",
    TensorProto.FLOAT16: "f16",
    TensorProto.BFLOAT16: "bf16",
    TensorProto.DOUBLE: "f64",
    TensorProto.INT64: "i64",
    TensorProto.INT32: "i32",
    TensorProto.INT8: "i8",
    TensorProto.UINT8: "u8",
    TensorProto.BOOL: "bool",
}


def format_type(value: Value) -> str:
    dtype = _SHORT_DTYPES.get(value.dtype) or (
        helper.tensor_dtype_to_string(value.dtype).removeprefix("TensorProto.").lower() if value.dtype else "?"
    )
    if value.shape is None:
        return f"{dtype}[*]"
    return f"{dtype}[{','.join('?' if d is None else str(d) for d in value.shape)}]"


def _format_operand(value: Value | None) -> str:
    if value is None:
        return "<none>"
    if value.is_initializer:
        return f"@{value.name}: {format_type(value)}"
    return f"%{value.name}"


def _format_attr(value: Any) -> str:
    if isinstance(value, AttributeProto):
        return "<subgraph>"
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return f"dense<{value.tolist()}>"
        return f"dense<{value.dtype}{list(value.shape)}>"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return repr(value)
    return str(value).replace(" ", "")


def format_node(node: Node) -> str:
    results = ", ".join(f"%{v.name}" for v in node.outputs)
    op = node.op_type if not node.domain else f"{node.domain}.{node.op_type}"
    operands = ", ".join(_format_operand(v) for v in node.inputs)
    attrs = node.attrs
    attr_text = (
        " {" + ", ".join(f"{k}={_format_attr(v)}" for k, v in sorted(attrs.items())) + "}" if attrs else ""
    )
    types = ", ".join(format_type(v) for v in node.outputs)
    return f"{results} = {op}({operands}){attr_text} : {types}  // {node.name}"


def format_graph(graph: Graph) -> str:
    ins = ", ".join(f"%{v.name}: {format_type(v)}" for v in graph.inputs)
    outs = ", ".join(f"%{v.name}: {format_type(v)}" for v in graph.outputs)
    lines = [f"graph {graph.name} ({ins}) -> ({outs}) {{"]
    lines.extend(f"  {format_node(n)}" for n in graph.toposort())
    lines.append("}")
    return "\n".join(lines)


def format_model(model: Model) -> str:
    opsets = ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in sorted(model.opset_imports.items()))
    return f"// opsets: {opsets}\n{format_graph(model.graph)}"
