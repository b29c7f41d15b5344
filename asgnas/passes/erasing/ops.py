"""Per-op-type properties the erasing analysis needs, as data: one ``OpInfo`` entry per ONNX op type.

Everything the segment builder, the removal-structure checks (Z1-Z5), the validity oracle and the construction
need to know about an operator is here, so supporting a new op is one entry in ``op_registry.OPS``, not a code
change.
Op types absent from ``OP_TABLE`` (and every op outside the default domain, and every op with a subgraph) are
*unknown*: a segment boundary that is never removable and never lets its producers be removed.

The table is a view of ``op_registry.OPS``, where ``OpInfo`` and its vocabulary (spec 2.2) are declared; a
string ``zp`` names one of the ``ZP_PREDICATES`` below.
"""

from __future__ import annotations

from typing import Callable

from asgnas.ir import Node
from asgnas.passes.op_registry import OPS, OpInfo

#: ``pred(node, const_of)`` where ``const_of(value) -> np.ndarray | None`` evaluates folded side chains.
Predicate = Callable[[Node, Callable], bool]


# --- predicates for ops whose zero preservation depends on attributes or constant inputs ----------------------


def _scalar_or_none(node: Node, const_of: Callable, index: int):
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    return const_of(node.inputs[index])


def _clip_zp(node: Node, const_of: Callable) -> bool:
    # Clip(0) == 0 iff min <= 0 <= max (absent bounds are -inf / +inf)
    lo = _scalar_or_none(node, const_of, 1)
    hi = _scalar_or_none(node, const_of, 2)
    if len(node.inputs) > 1 and node.inputs[1] is not None and lo is None:
        return False  # a bound we cannot evaluate
    if len(node.inputs) > 2 and node.inputs[2] is not None and hi is None:
        return False
    lo_v = node.attr("min", float("-inf")) if lo is None else float(lo.reshape(-1)[0])
    hi_v = node.attr("max", float("inf")) if hi is None else float(hi.reshape(-1)[0])
    return lo_v <= 0.0 <= hi_v


def _pad_zp(node: Node, const_of: Callable) -> bool:
    # reflect / edge / wrap copy zeros; constant mode needs a zero fill value
    mode = node.attr("mode", "constant")
    if mode != "constant":
        return True
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        value = const_of(node.inputs[2])
        return value is not None and not value.any()
    return float(node.attr("value", 0.0)) == 0.0


def _resize_zp(node: Node, const_of: Callable) -> bool:
    # every interpolation mode is a linear combination of inputs; only crop-and-resize extrapolates a constant
    if node.attr("coordinate_transformation_mode", "half_pixel") == "tf_crop_and_resize":
        return float(node.attr("extrapolation_value", 0.0)) == 0.0
    return True


def _pow_zp(node: Node, const_of: Callable) -> bool:
    exponent = _scalar_or_none(node, const_of, 1)
    return exponent is not None and exponent.size > 0 and bool((exponent > 0).all())


def _shrink_zp(node: Node, const_of: Callable) -> bool:
    return float(node.attr("lambd", 0.5)) >= 0.0


def _div_zp(node: Node, const_of: Callable) -> bool:
    # x / c maps 0 to 0; c / x does not (asked only when exactly one input is data, so a known divisor is c)
    divisor = node.inputs[1] if len(node.inputs) > 1 else None
    return divisor is not None and const_of(divisor) is not None


#: ``OpInfo.zp`` by name, for ops whose zero preservation depends on attributes or constant inputs
ZP_PREDICATES: dict[str, Predicate] = {"clip": _clip_zp, "pad": _pad_zp, "resize": _resize_zp, "pow": _pow_zp,
                                       "shrink": _shrink_zp, "div": _div_zp}

#: a view of ``op_registry.OPS``: the ops the erasing analysis knows
OP_TABLE: dict[str, OpInfo] = {op: spec.erasing for op, spec in OPS.items() if spec.erasing is not None}


def op_info(node: Node) -> OpInfo | None:
    """The table entry, or None for an unknown op (non-default domain, subgraph holder, or not listed)."""
    if node.domain not in ("", "ai.onnx") or node.has_subgraphs:
        return None
    return OP_TABLE.get(node.op_type)


def is_zero_preserving(node: Node, info: OpInfo, const_of: Callable) -> bool:
    zp = info.zp
    return ZP_PREDICATES[zp](node, const_of) if isinstance(zp, str) else zp
