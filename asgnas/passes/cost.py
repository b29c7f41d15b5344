"""``cost``: parameters and multiply-accumulates (MACs) per node and in total.

Reads: the IR and its shapes (runs static shape inference first if a value lacks one). Writes: report key ``cost``
= ``{"params", "macs", "per_node": {...}, "before": {...}, "after": {...}}``; ``before`` is the pipeline's input
model, ``after`` the current one. Symbolic dims (the batch) count as 1, so MACs are per sample.
Parameters are the floating-point initializer elements; a shared initializer counts once, at its first consumer.
Conventions: one MAC per multiply-add of a Conv/Gemm/MatMul; element-wise ops, norms and pooling count one
operation per output element (per kernel tap for pooling), reductions and global pools one per input element, as
thop/fvcore-style counters do; data movement and tensor generators (Shape, EyeLike, Random*) count none.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from onnx import helper

from asgnas.ir import Model, Node, Value
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager
from asgnas.passes.base import Pass, PassContext, register_pass
from asgnas.passes.op_registry import OPS
from asgnas.passes.shape_infer import ensure_shapes  # unknown dims would count as 1


def _numel(value: Value | None) -> int:
    if value is None or value.shape is None:
        return 0
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in value.shape)


def _dims(value: Value | None) -> list[int]:
    if value is None or value.shape is None:
        return []
    return [d if isinstance(d, int) and d > 0 else 1 for d in value.shape]


def _conv(node: Node) -> int:
    weight = node.inputs[1]
    kernel = _dims(weight)
    if not kernel:
        return 0
    # weight [Cout, Cin/group, k...]: each output element takes Cin/group * prod(k) MACs
    return _numel(node.outputs[0]) * math.prod(kernel[1:])


def _conv_transpose(node: Node) -> int:
    weight = node.inputs[1]
    kernel = _dims(weight)
    if not kernel:
        return 0
    # weight [Cin, Cout/group, k...]: each input element scatters into Cout/group * prod(k) outputs
    return _numel(node.inputs[0]) * math.prod(kernel[1:])


def _gemm(node: Node) -> int:
    a = _dims(node.inputs[0])
    out = _dims(node.outputs[0])
    if len(a) != 2 or len(out) != 2:
        return 0
    k = a[0] if node.attr("transA", 0) else a[1]
    return out[0] * out[1] * k


def _matmul(node: Node) -> int:
    a = _dims(node.inputs[0])
    if not a:
        return 0
    return _numel(node.outputs[0]) * a[-1]


def _pool(node: Node) -> int:
    kernel = node.attr("kernel_shape") or []
    return _numel(node.outputs[0]) * (math.prod(kernel) if kernel else 1)


def _global_pool(node: Node) -> int:
    return _numel(node.inputs[0])


def _elementwise(node: Node) -> int:
    return _numel(node.outputs[0])


def _free(node: Node) -> int:
    return 0


#: the MAC counters ``op_registry`` names
MAC_COUNTERS: dict[str, Callable[[Node], int]] = {
    "conv": _conv, "conv_transpose": _conv_transpose, "gemm": _gemm, "matmul": _matmul, "pool": _pool,
    "input_elements": _global_pool, "output_elements": _elementwise, "none": _free,
}

#: a view of ``op_registry.OPS``: the ops with a MAC rule (any other op: one operation per output element)
MAC_RULES: dict[str, Callable[[Node], int]] = {op: MAC_COUNTERS[spec.macs] for op, spec in OPS.items()
                                               if spec.macs is not None}


def _is_parameter(value: Value) -> bool:
    return value.is_initializer and _floating(value.const.dtype)


@lru_cache(maxsize=None)
def _floating(elem_type: int) -> bool:
    return bool(np.issubdtype(helper.tensor_dtype_to_np_dtype(elem_type), np.floating))


def node_costs(model: Model) -> dict[str, dict[str, int]]:
    """``{node name: {"op", "params", "macs"}}``; nodes with neither are left out."""
    counted: set[str] = set()
    costs = {}
    for node in model.graph.toposort():
        params = 0
        for value in node.inputs:
            if value is not None and value.name not in counted and _is_parameter(value):
                counted.add(value.name)
                params += value.const.size
        rule = MAC_RULES.get(node.op_type, _elementwise)
        macs = rule(node)
        if params or macs:
            costs[node.name] = {"op": node.op_type, "params": params, "macs": int(macs)}
    return costs


def _totals(per_node: dict[str, dict[str, int]]) -> dict[str, int]:
    return {
        "params": sum(c["params"] for c in per_node.values()),
        "macs": sum(c["macs"] for c in per_node.values()),
    }


def total_cost(model: Model) -> dict[str, int]:
    ensure_shapes(model)
    return _totals(node_costs(model))


@register_pass
class CostPass(Pass):
    name = "cost"
    summary = "count parameters and MACs per node and in total (before = pipeline input, after = now)"
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        ensure_shapes(model)
        per_node = node_costs(model)
        after = _totals(per_node)
        before = total_cost(ctx.input_model) if ctx.input_model is not None else after
        AnalysisManager(model).store("cost", per_node)
        return {**after, "before": before, "after": after, "per_node": per_node}
