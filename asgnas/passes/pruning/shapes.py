"""Partial evaluation of shape computations (small int tensors), with the axes each entry depends on.

Exporters compute Reshape targets, Slice bounds and Pad amounts with ``Shape -> Gather -> Unsqueeze -> Concat``
chains. ``ShapeEval`` folds them: every entry is a known int or unknown, and carries the axis keys whose size
it was derived from (its *taint*). A tainted entry may only reach a sink whose construction rewrites it (a
Reshape/Expand target, Resize sizes); anywhere else the tainting axes are pinned, because removing channels
would change a computed size that nothing updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto

from asgnas.ir import Node, Value
from asgnas.passes.pruning.builder import Builder, Unsupported

_INT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8}
MAX_ENTRIES = 64

#: (op, input index) pairs whose shape input the construction rewrites
SHAPE_SINKS = {("Reshape", 1), ("Expand", 1), ("Resize", 3), ("Slice", 1), ("Slice", 2)}


@dataclass
class ShapeVal:
    """A small int tensor: ``values`` (valid where ``known``) and per-entry taint (sets of axis keys)."""

    values: np.ndarray  # int64, flattened
    known: np.ndarray  # bool
    taint: list[frozenset[int]]
    scalar: bool
    dims: tuple[int, ...] | None = None  # the real shape when not 0-d/1-d (generic folding only)

    def array(self) -> np.ndarray:
        if self.dims is not None:
            return self.values.reshape(self.dims)
        return self.values.reshape(()) if self.scalar else self.values

    @property
    def fully_known(self) -> bool:
        return bool(self.known.all())

    @property
    def tainted(self) -> frozenset[int]:
        out: frozenset[int] = frozenset()
        for t in self.taint:
            out |= t
        return out

    def take(self, idx: np.ndarray, scalar: bool) -> "ShapeVal":
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return ShapeVal(self.values[idx], self.known[idx], [self.taint[i] for i in idx], scalar)


def _const(values: np.ndarray) -> ShapeVal:
    flat = np.asarray(values).astype(np.int64).reshape(-1)
    return ShapeVal(flat, np.ones(flat.shape, bool), [frozenset()] * flat.size, np.ndim(values) == 0)


class ShapeEval:
    """Memoised evaluation over the IR; ``ev(value)`` is None for anything that is not a small int tensor."""

    def __init__(self, builder: Builder) -> None:
        self.b = builder
        self.memo: dict[str, ShapeVal | None] = {}

    def ev(self, value: Value | None) -> ShapeVal | None:
        if value is None:
            return None
        if value.name in self.memo:
            return self.memo[value.name]
        self.memo[value.name] = None  # cycle guard
        try:
            result = self._ev(value)
        except (Unsupported, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError):
            result = None
        self.memo[value.name] = result
        return result

    def known_ints(self, value: Value | None) -> np.ndarray | None:
        sv = self.ev(value)
        return None if sv is None or not sv.fully_known else sv.values.copy()

    def _ev(self, value: Value) -> ShapeVal | None:
        if value.dtype and value.dtype not in _INT_TYPES:
            return None  # a size turned into floats (e.g. an attention scale) leaves the shape world here
        if value.const is not None:
            array = value.const.array
            if array.dtype.kind not in "iu" or array.size > MAX_ENTRIES:
                return None
            sv = _const(array)
            if array.ndim > 1:
                sv.dims = tuple(array.shape)
            return sv
        node = value.producer
        if node is None or node.domain not in ("", "ai.onnx"):
            return None
        fn = _EVAL.get(node.op_type)
        if node.outputs[0] is not value:
            return None
        result = fn(self, node) if fn is not None else None
        return result if result is not None else self._fold(node, value)

    def _fold(self, node: Node, value: Value) -> ShapeVal | None:
        """Any other op whose inputs are all known: run it (onnx's reference implementation). Every entry of the
        result carries the union of the inputs' taints."""
        if node.op_type in ("Shape", "Size") or node.has_subgraphs:
            return None
        feeds, taint = {}, frozenset()
        for inp in node.inputs:
            if inp is None:
                continue
            if inp.const is not None and inp.const.array.dtype.kind not in "iu":
                array = inp.const.array
                if array.size > MAX_ENTRIES * 16:
                    return None
            else:
                sv = self.ev(inp)
                if sv is None or not sv.fully_known:
                    return None
                array, taint = sv.array(), taint | sv.tainted
            feeds[inp.name] = array
        try:
            from onnx.reference import ReferenceEvaluator

            proto = onnx.helper.make_node(node.op_type, [v.name if v is not None else "" for v in node.inputs],
                                          [v.name for v in node.outputs], domain=node.domain or None)
            proto.attribute.extend(node.attribute_protos())
            result = np.asarray(ReferenceEvaluator(proto).run(None, feeds)[0])
        except Exception:
            return None
        if result.dtype.kind not in "iu" or result.size > MAX_ENTRIES:
            return None
        flat = result.astype(np.int64).reshape(-1)
        return ShapeVal(flat, np.ones(flat.shape, bool), [taint] * flat.size, result.ndim == 0,
                        tuple(result.shape) if result.ndim > 1 else None)


def _shape(se: ShapeEval, node: Node) -> ShapeVal | None:
    x = node.inputs[0]
    if x.rank is None:
        return None
    rank = x.rank
    start = node.attr("start", 0)
    end = node.attr("end", rank)
    start = max(0, start + rank if start < 0 else start)
    end = min(rank, end + rank if end < 0 else end)
    axes = list(range(start, end))
    vals = np.array([x.shape[a] if isinstance(x.shape[a], int) else 0 for a in axes], dtype=np.int64)
    known = np.array([isinstance(x.shape[a], int) for a in axes], dtype=bool)
    return ShapeVal(vals, known, [frozenset([se.b.k(x, a)]) for a in axes], False)


def _size(se: ShapeEval, node: Node) -> ShapeVal | None:
    x = node.inputs[0]
    if x.rank is None:
        return None
    taint = frozenset(se.b.k(x, a) for a in range(x.rank))
    known = all(isinstance(d, int) for d in x.shape)
    val = int(np.prod([d for d in x.shape if isinstance(d, int)], dtype=np.int64)) if known else 0
    return ShapeVal(np.array([val], np.int64), np.array([known]), [taint], True)


def _passthrough(se: ShapeEval, node: Node) -> ShapeVal | None:
    sv = se.ev(node.inputs[0])
    if sv is None or sv.dims is not None:
        return None
    out = node.outputs[0]
    scalar = out.rank == 0 if out.rank is not None else sv.scalar
    if node.op_type in ("Unsqueeze",):
        scalar = False
    elif node.op_type == "Squeeze" and sv.values.size == 1:
        scalar = True
    return ShapeVal(sv.values, sv.known, sv.taint, scalar)


def _gather(se: ShapeEval, node: Node) -> ShapeVal | None:
    data = se.ev(node.inputs[0])
    idx = se.b.const_array(node.inputs[1])
    if data is None or idx is None or data.dims is not None or data.scalar or node.attr("axis", 0) != 0 or idx.ndim > 1:
        return None
    n = data.values.size
    flat = np.asarray(idx, dtype=np.int64).reshape(-1)
    flat = np.where(flat < 0, flat + n, flat)
    return data.take(flat, idx.ndim == 0)


def _concat(se: ShapeEval, node: Node) -> ShapeVal | None:
    parts = [se.ev(v) for v in node.inputs]
    if any(p is None or p.dims is not None for p in parts):
        return None
    return ShapeVal(
        np.concatenate([p.values for p in parts]), np.concatenate([p.known for p in parts]),
        [t for p in parts for t in p.taint], False,
    )


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[ShapeEval, Node], ShapeVal | None]:
    def run(se: ShapeEval, node: Node) -> ShapeVal | None:
        a, b = se.ev(node.inputs[0]), se.ev(node.inputs[1])
        if a is None or b is None or a.dims is not None or b.dims is not None:
            return None
        n = max(a.values.size, b.values.size)
        if a.values.size not in (1, n) or b.values.size not in (1, n):
            return None

        def wide(sv: ShapeVal) -> ShapeVal:
            if sv.values.size == n:
                return sv
            return ShapeVal(np.repeat(sv.values, n), np.repeat(sv.known, n), sv.taint * n, sv.scalar)

        a, b = wide(a), wide(b)
        known = a.known & b.known
        safe_b = np.where(known & (b.values != 0), b.values, 1)
        vals = np.where(known, fn(np.where(known, a.values, 0), safe_b), 0).astype(np.int64)
        known = known & ~((b.values == 0) & (node.op_type in ("Div", "Mod")))
        return ShapeVal(vals, known, [x | y for x, y in zip(a.taint, b.taint)], a.scalar and b.scalar)

    return run


def _slice(se: ShapeEval, node: Node) -> ShapeVal | None:
    data = se.ev(node.inputs[0])
    if data is None or data.scalar or data.dims is not None:
        return None
    params = [se.known_ints(v) if v is not None else None for v in node.inputs[1:5]]
    starts, ends, axes, steps = (params + [None] * 4)[:4]
    if starts is None or ends is None or (axes is not None and list(axes) not in ([0], [-1])):
        return None
    step = int(steps[0]) if steps is not None else 1
    idx = np.arange(data.values.size)[slice(int(starts[0]), int(ends[0]), step)]
    return data.take(idx, False)


def _reshape(se: ShapeEval, node: Node) -> ShapeVal | None:
    data = se.ev(node.inputs[0])
    out = node.outputs[0]
    if data is None or out.rank not in (0, 1):
        return None
    return ShapeVal(data.values, data.known, data.taint, out.rank == 0)


def _neg(se: ShapeEval, node: Node) -> ShapeVal | None:
    a = se.ev(node.inputs[0])
    if a is None or a.dims is not None:
        return None
    return ShapeVal(-a.values if node.op_type == "Neg" else np.abs(a.values), a.known, a.taint, a.scalar)


_EVAL: dict[str, Callable[[ShapeEval, Node], ShapeVal | None]] = {
    "Shape": _shape,
    "Size": _size,
    "Identity": _passthrough,
    "Cast": _passthrough,
    "Unsqueeze": _passthrough,
    "Squeeze": _passthrough,
    "Gather": _gather,
    "Concat": _concat,
    "Slice": _slice,
    "Reshape": _reshape,
    "Neg": _neg,
    "Abs": _neg,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(lambda a, b: np.trunc(a / b).astype(np.int64)),
    "Mod": _binary(np.mod),
    "Max": _binary(np.maximum),
    "Min": _binary(np.minimum),
}


def check_shape_uses(se: ShapeEval, nodes: list[Node]) -> None:
    """Pin the axes behind every computed size that reaches a place construction cannot rewrite."""
    b = se.b
    for node in nodes:
        for index, value in enumerate(node.inputs):
            if value is None or value.dtype not in _INT_TYPES or value.const is not None:
                continue
            sv = se.ev(value)
            taint = sv.tainted if sv is not None else _upstream_taint(se, value)
            if not taint:
                continue
            if (node.op_type, index) in SHAPE_SINKS and sv is not None:
                continue
            if node.op_type in _EVAL and se.ev(node.outputs[0]) is not None:
                continue  # still a shape computation: checked where it ends up
            reason = f"size of {b.describe(next(iter(taint)))} is used by {node.name} ({node.op_type})"
            for key in taint:
                b.pin(key, None, reason)


def _upstream_taint(se: ShapeEval, value: Value) -> frozenset[int]:
    """Taint of a value the evaluator could not fold: the union of its producer's evaluable inputs."""
    node = value.producer
    if node is None:
        return frozenset()
    out: frozenset[int] = frozenset()
    for inp in node.inputs:
        sv = se.ev(inp)
        if sv is not None:
            out |= sv.tainted
    return out
