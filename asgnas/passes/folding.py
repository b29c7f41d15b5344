"""Shape folding: numpy semantics of the small constant ops that compute shapes, scales and axes.

Shared by shape inference (``shape_infer``: folds chains onnx's data propagation does not cover) and the erasing
analysis (``erasing.dataflow``: evaluates side chains on demand). Reads the IR, writes nothing.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from onnx import helper

from asgnas.ir import Node, Value

#: do not materialise folded constants above this many elements (they are never needed that large)
_MAX_FOLD = 1 << 20

#: the data-input-independent ops whose output is a constant (folded side chains are evaluated through these)
FOLDABLE = frozenset(
    "Constant Identity Cast Unsqueeze Squeeze Concat Gather Reshape Slice Add Sub Mul Div Neg Shape Size "
    "ConstantOfShape Range Equal Where Expand Transpose Flatten Abs Floor Ceil Max Min ReduceProd Sqrt".split()
)

Known = Mapping[Value, "np.ndarray | None"]


def _arr(known: Known, node: Node, index: int) -> np.ndarray | None:
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    value = node.inputs[index]
    if value.const is not None:
        return value.const.array
    return known.get(value)


def _axes(node: Node, known: Known, index: int) -> list[int] | None:
    axes = _arr(known, node, index)
    if axes is not None:
        return [int(a) for a in axes.reshape(-1)]
    attr = node.attr("axes")
    return None if attr is None else [int(a) for a in attr]


def _static_shape(value: Value) -> list[int] | None:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return list(value.shape)


def evaluate(node: Node, known: Known) -> list[np.ndarray | None] | None:
    """numpy semantics of the foldable ops (and ``Mod``, for shape inference); None when an input is unknown or
    anything is off. ``known`` holds the values of non-constant inputs already evaluated; static shapes are read
    off the values."""
    op = node.op_type
    try:
        if op in ("Shape", "Size"):
            shape = _static_shape(node.inputs[0])
            if shape is None:
                return None
            if op == "Size":
                return [np.array(int(np.prod(shape)), dtype=np.int64)]
            start, end = node.attr("start", 0), node.attr("end")
            return [np.array(shape[start:end], dtype=np.int64)]
        args = [_arr(known, node, i) for i in range(len(node.inputs))]
        present = [a for a, v in zip(args, node.inputs) if v is not None]
        if any(a is None for a in present[:1]) and op != "ConstantOfShape":
            return None
        x = args[0] if args else None
        if op in ("Identity",):
            out = x
        elif op == "Cast":
            out = x.astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))
        elif op == "Unsqueeze":
            axes = _axes(node, known, 1)
            if axes is None:
                return None
            rank = x.ndim + len(axes)
            out = x
            for axis in sorted(a % rank for a in axes):
                out = np.expand_dims(out, axis)
        elif op == "Squeeze":
            axes = _axes(node, known, 1)
            out = np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))
        elif op == "Concat":
            if any(a is None for a in present):
                return None
            out = np.concatenate(present, axis=node.attr("axis"))
        elif op == "Gather":
            if args[1] is None:
                return None
            out = np.take(x, args[1], axis=node.attr("axis", 0))
        elif op == "Reshape":
            if args[1] is None:
                return None
            shape = [int(d) for d in args[1]]
            if not node.attr("allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            out = x.reshape(shape)
        elif op == "Flatten":
            axis = node.attr("axis", 1) % max(x.ndim, 1)
            out = x.reshape(int(np.prod(x.shape[:axis])), -1)
        elif op == "Slice":
            starts, ends = args[1], args[2]
            if starts is None or ends is None:
                return None
            axes = list(range(len(starts))) if len(args) < 4 or args[3] is None else [int(a) for a in args[3]]
            steps = [1] * len(starts) if len(args) < 5 or args[4] is None else [int(s) for s in args[4]]
            index = [slice(None)] * x.ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                index[a % x.ndim] = slice(int(s), int(e), st)
            out = x[tuple(index)]
        elif op in ("Add", "Sub", "Mul", "Div", "Mod", "Equal", "Max", "Min"):
            if any(a is None for a in present):
                return None
            if op == "Add":
                out = present[0] + present[1]
            elif op == "Sub":
                out = present[0] - present[1]
            elif op == "Mul":
                out = present[0] * present[1]
            elif op == "Div":
                a, b = present
                out = (np.trunc(a / b).astype(a.dtype)) if np.issubdtype(a.dtype, np.integer) else a / b
            elif op == "Mod":
                out = (np.fmod if node.attr("fmod", 0) else np.mod)(present[0], present[1])
            elif op == "Equal":
                out = np.equal(present[0], present[1])
            else:
                out = (np.maximum if op == "Max" else np.minimum).reduce(np.broadcast_arrays(*present))
        elif op in ("Neg", "Abs", "Floor", "Ceil", "Sqrt"):
            out = {"Neg": np.negative, "Abs": np.abs, "Floor": np.floor, "Ceil": np.ceil, "Sqrt": np.sqrt}[op](x)
        elif op == "ConstantOfShape":
            if x is None:
                return None
            shape = [int(d) for d in x.reshape(-1)]
            if np.prod(shape, dtype=np.int64) > _MAX_FOLD:
                return None
            fill = node.attr("value")
            fill = np.zeros(1, np.float32) if fill is None else np.asarray(fill).reshape(-1)
            out = np.full(shape, fill[0], dtype=fill.dtype)
        elif op == "Range":
            if any(a is None for a in present):
                return None
            out = np.arange(present[0], present[1], present[2])
        elif op == "Where":
            if any(a is None for a in present):
                return None
            out = np.where(*present)
        elif op == "Expand":
            if args[1] is None:
                return None
            shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in args[1]))
            if np.prod(shape, dtype=np.int64) > _MAX_FOLD:
                return None
            out = np.broadcast_to(x, shape).copy()
        elif op == "Transpose":
            out = np.transpose(x, node.attr("perm"))
        elif op == "ReduceProd":
            axes = _axes(node, known, 1)
            keep = bool(node.attr("keepdims", 1))
            out = np.prod(x, axis=None if axes is None else tuple(axes), keepdims=keep)
        elif op == "Constant":
            return None  # lifted Constants already carry ``Value.const``
        else:
            return None
    except Exception:  # an odd constant chain is simply not folded
        return None
    if out is None:
        return None
    out = np.asarray(out)
    return [out] if out.size <= _MAX_FOLD else None


__all__ = ["FOLDABLE", "Known", "evaluate"]
