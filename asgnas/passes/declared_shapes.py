"""Declared shapes that contradict the graph: value_info (or a graph output's type) that says one thing while
inference from the graph inputs says another, e.g. a batch declared 1 on a value the input's symbolic batch flows
through (as jax2onnx writes). onnx's inference keeps a declared dim over an inferred symbol, so the analyses would
read the declaration; inference from the graph alone, without the declarations, is trusted instead.

A declaration is replaced where inference knows better: a different rank or element type, or a dim inference knows
(a number, or a symbol it did not make up) that differs from the declared one. A declared number that differs is a
contradiction and is reported once, naming the values; a declared symbol that inference names otherwise (or finds
to be a number) is only less precise and is replaced silently. Where inference knows nothing, the declaration stays.
"""

from __future__ import annotations

import warnings

import onnx

from asgnas.errors import AsgnasWarning
from asgnas.ir import Model, Value
from asgnas.ir.core import Shape
from asgnas.ir.model import _shape_from_type, _value_info

#: values named in the warning (the count says how many there are)
_NAMED = 3


def trust_inferred(model: Model, probe: onnx.ModelProto) -> bool:
    """Replace, on ``model``'s values and in ``probe`` (its lowering, read by the inference that follows), each
    declared type that inference from the graph knows better; warn once about real contradictions. True when
    some type changed."""
    declared = {v.name: v for n in model.graph for v in n.outputs if v.shape is not None and v.non_tensor_type is None}
    inferred = _infer_undeclared(probe) if declared else None
    if inferred is None:
        return False
    replaced: dict[str, Value] = {}
    contradicted = []
    for name, value in declared.items():
        found = inferred.get(name)
        if found is None:
            continue
        dtype, shape = found
        merged, conflict = _merge(value, dtype, shape)
        if merged != (value.dtype, value.shape):
            value.dtype, value.shape = merged
            replaced[name] = value
        if conflict:
            contradicted.append(name)
    _rewrite(probe, replaced)
    if contradicted:
        named = ", ".join(contradicted[:_NAMED]) + (f" and {len(contradicted) - _NAMED} more"
                                                   if len(contradicted) > _NAMED else "")
        warnings.warn(AsgnasWarning(
            f"{model.source or 'model'}: declared shapes contradict what the graph computes from its inputs for "
            f"{named}; the inferred ones are used"))
    return bool(replaced)


def _infer_undeclared(probe: onnx.ModelProto) -> dict[str, tuple[int, Shape | None]] | None:
    """onnx's inference on ``probe`` without value_info and without the graph outputs' shapes, or None where it
    fails (the inference with the declarations that follows reports an inconsistent model)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(probe)
    del bare.graph.value_info[:]
    for output in bare.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(bare, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return None
    return {info.name: _shape_from_type(info.type) for info in (*inferred.graph.value_info, *inferred.graph.output)
            if info.type.HasField("tensor_type")}


def _known(dim: int | str | None) -> bool:
    """A dim inference knows: onnx names the ones it could not infer ``unk__N``."""
    return isinstance(dim, int) or (isinstance(dim, str) and not dim.startswith("unk__"))


def _merge(value: Value, dtype: int, shape: Shape | None) -> tuple[tuple[int, Shape | None], bool]:
    """The type to keep for ``value`` given the inferred one, and whether the declaration contradicted it."""
    conflict = bool(dtype and value.dtype and dtype != value.dtype)
    new_dtype = dtype or value.dtype
    if shape is None:
        return (new_dtype, value.shape), conflict
    if len(shape) != len(value.shape):
        return (new_dtype, tuple(d if _known(d) else None for d in shape)), True
    dims = tuple(inferred if _known(inferred) else declared for declared, inferred in zip(value.shape, shape))
    conflict = conflict or any(isinstance(d, int) and d != kept for d, kept in zip(value.shape, dims))
    return (new_dtype, dims), conflict


def _rewrite(probe: onnx.ModelProto, replaced: dict[str, Value]) -> None:
    """The probe declares the replaced types, so the inference that reads it starts from them."""
    for info in (*probe.graph.value_info, *probe.graph.output) if replaced else ():
        value = replaced.get(info.name)
        if value is not None:
            info.CopyFrom(_value_info(value))
