"""Channel rules of element-wise ops: one output element per input element (numpy broadcasting)."""

from __future__ import annotations

from asgnas.ir import Node
from asgnas.passes.pruning.builder import Builder
from asgnas.passes.pruning.rules_common import broadcast_into, identity_axes
from asgnas.passes.pruning.shapes import ShapeEval


def analyze_unary(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    x = node.inputs[0]
    for out in node.outputs:
        if out.uses or builder.graph.is_output(out):
            identity_axes(builder, x, out)


def analyze_elementwise(node: Node, builder: Builder, shape_eval: ShapeEval) -> None:
    out = node.outputs[0]
    for value in node.inputs:
        if value is not None:
            broadcast_into(builder, value, out)
