"""Channel rules of element-wise ops: one output element per input element (numpy broadcasting)."""

from __future__ import annotations

from asgnas.ir import Node
from asgnas.passes.pruning.builder import Builder
from asgnas.passes.pruning.rules_common import broadcast_into, identity_axes
from asgnas.passes.pruning.shapes import ShapeEval


def a_unary(node: Node, b: Builder, se: ShapeEval) -> None:
    x = node.inputs[0]
    for out in node.outputs:
        if out.uses or b.graph.is_output(out):
            identity_axes(b, x, out)


def a_elementwise(node: Node, b: Builder, se: ShapeEval) -> None:
    out = node.outputs[0]
    for value in node.inputs:
        if value is not None:
            broadcast_into(b, value, out)
