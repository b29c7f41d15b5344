"""Reading operator parameters that may be attributes or (folded) inputs: axes, pads, slice bounds.

Shared by the analysis rules, the zero rules and the construction rewrites (``rules.py``, ``zeros.py``,
``rewrites.py``). Values computed at runtime raise ``Unsupported`` (the node is then pinned).
"""

from __future__ import annotations

import numpy as np

from asgnas.ir import Node, Value
from asgnas.passes.pruning.builder import Unsupported
from asgnas.passes.pruning.shapes import ShapeEval


def known_ints(se: ShapeEval, value: Value | None, what: str) -> np.ndarray | None:
    if value is None:
        return None
    ints = se.known_ints(value)
    if ints is None:
        raise Unsupported(f"{what} computed at runtime")
    return ints


def axis_attr(node: Node, rank: int, default: int = 0) -> int:
    axis = node.attr("axis", default)
    if not -rank <= axis < rank:
        raise Unsupported(f"axis {axis} out of range")
    return axis % rank


def pads_zero(node: Node) -> bool:
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return False
    return not any(node.attr("pads") or [])


def pad_amounts(node: Node, se: ShapeEval, rank: int) -> np.ndarray:
    """``[[before, after], ...]`` per axis, from the pads input (opset >= 11) or attribute."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        pads = known_ints(se, node.inputs[1], "Pad amounts")
    else:
        pads = np.asarray(node.attr("pads") or [0] * (2 * rank), dtype=np.int64)
    axes_in = node.inputs[3] if len(node.inputs) > 3 else None
    axes = list(range(rank)) if axes_in is None else [int(a) % rank for a in known_ints(se, axes_in, "Pad axes")]
    if len(pads) != 2 * len(axes):
        raise Unsupported("malformed Pad amounts")
    amounts = np.zeros((rank, 2), dtype=np.int64)
    for i, axis in enumerate(axes):
        amounts[axis] = (pads[i], pads[i + len(axes)])
    return amounts


def slice_params(node: Node, se: ShapeEval, rank: int) -> list[tuple[int, int, int, int]]:
    """``[(axis, start, end, step), ...]`` as known ints (raw, not clamped)."""
    if len(node.inputs) > 1:
        starts = known_ints(se, node.inputs[1], "Slice starts")
        ends = known_ints(se, node.inputs[2], "Slice ends")
        axes_v = node.inputs[3] if len(node.inputs) > 3 else None
        steps_v = node.inputs[4] if len(node.inputs) > 4 else None
        axes = known_ints(se, axes_v, "Slice axes") if axes_v is not None else np.arange(len(starts))
        steps = known_ints(se, steps_v, "Slice steps") if steps_v is not None else np.ones(len(starts), np.int64)
    else:
        starts = np.asarray(node.attr("starts"), np.int64)
        ends = np.asarray(node.attr("ends"), np.int64)
        axes = np.asarray(node.attr("axes") or list(range(len(starts))), np.int64)
        steps = np.ones(len(starts), np.int64)
    return [(int(a) % rank, int(s), int(e), int(t)) for a, s, e, t in zip(axes, starts, ends, steps)]


def reduce_axes(node: Node, se: ShapeEval, rank: int) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = known_ints(se, node.inputs[1], "reduction axes")
    else:
        axes = node.attr("axes")
    if axes is None or len(axes) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return []
        return list(range(rank))
    return sorted({int(a) % rank for a in axes})
