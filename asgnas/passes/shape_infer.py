"""``shape-infer``: dtypes and shapes on every value.

Reads: the IR. Writes: ``Value.dtype``/``Value.shape`` everywhere it can; report: how many values have full shapes.
Static inference is onnx's (with data propagation, so Shape->Gather->Concat chains resolve), on a probe where the
small constant chains its data propagation does not cover (``Mod``, ``Reshape``/``Range`` of shape arithmetic, as
torch's exporter writes for ``unflatten``) are folded with numpy into Constants; where it leaves holes, chains that
read the shapes it found are folded too and it runs again. Where holes remain, a fallback runs the model in
onnxruntime twice (once when no input dim is symbolic), with the symbolic input dims set to two different sizes,
reading the missing values as extra outputs: dims equal in both runs are static, dims that differ stay symbolic
(see ``fill_by_running``). Declared shapes (value_info) that contradict inference from the graph inputs are
replaced by the inferred ones, with a warning (see ``declared_shapes``).
``ensure_shapes`` is what every analysis calls: both steps, only when some value lacks its shape.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from asgnas.errors import AsgnasError
from asgnas.ir import Model, Node, Value, lower
from asgnas.ir.model import apply_value_info, gc_paused
from asgnas.ir.wellformed import check_conv_fits
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.declared_shapes import trust_inferred
from asgnas.passes.folding import FOLDABLE, evaluate


def _complete(value: Value) -> bool:
    return bool(value.dtype) and value.shape is not None and None not in value.shape


def infer_static(model: Model) -> None:
    """onnx shape inference (data propagation on), results copied onto the IR's values."""
    with gc_paused():
        _infer_static(model)


def _infer_static(model: Model) -> None:
    probe = lower(model, weights=False)  # shapes need no weight data: skip copying it
    _check_declared_once(model, probe)
    _replace_folded(model, probe, _fold_shape_constants(model), set())  # constant arithmetic onnx does not propagate
    _run_onnx_inference(model, probe)
    missing = len(holes(model))
    for _ in range(_FOLD_ROUNDS):
        folded = _fold_shape_constants(model) if missing else {}
        if not _replace_folded(model, probe, folded, {v.name for v in holes(model)}):
            return
        _run_onnx_inference(model, probe)
        before, missing = missing, len(holes(model))
        if missing >= before:
            return


#: a folded value feeds shapes; bigger constants are not shape arithmetic (and not worth materialising)
_FOLD_LIMIT = 4096
#: after the first inference, each round can fold what the last one resolved (``Shape`` of an inferred value)
_FOLD_ROUNDS = 3
_FOLD_OPS = FOLDABLE | {"Mod"}


def _fold_shape_constants(model: Model) -> dict[str, np.ndarray]:
    """Outputs of non-Constant nodes computable from small constants and static shapes, by value name (in graph
    order: a node listed before its producers is simply not folded)."""
    known: dict[Value, np.ndarray | None] = {}
    folded: dict[str, np.ndarray] = {}
    for node in model.graph:
        if node.op_type not in _FOLD_OPS or node.op_type == "Constant" or node.domain not in ("", "ai.onnx") \
                or node.has_subgraphs:
            continue
        if not all(v is None or (known.get(v) is not None if v.const is None else v.const.size <= _FOLD_LIMIT)
                   for v in (node.inputs[1:] if node.op_type in ("Shape", "Size") else node.inputs)):
            continue
        results = evaluate(node, known) or []
        dtype = _onnx_dtype(node, known)
        for out, array in itertools.zip_longest(node.outputs, results[:len(node.outputs)]):
            ok = array is not None and array.size <= _FOLD_LIMIT and array.dtype == dtype and (
                not out.dtype or onnx.helper.np_dtype_to_tensor_dtype(array.dtype) == out.dtype)
            known[out] = array if ok else None
            if ok:
                folded[out.name] = array
    return folded


def _onnx_dtype(node: Node, known: dict[Value, np.ndarray | None]) -> np.dtype | None:
    """The element type ONNX gives the output (numpy may differ: ``arange`` of int32 is int64)."""
    op = node.op_type
    if op in ("Shape", "Size"):
        return np.dtype(np.int64)
    if op == "Equal":
        return np.dtype(bool)
    if op == "Cast":
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(node.attr("to")))
    if op == "ConstantOfShape":
        fill = node.attr("value")
        return np.dtype(np.float32) if fill is None else np.asarray(fill).dtype
    source = node.inputs[1] if op == "Where" else node.inputs[0]
    array = None if source is None else source.const.array if source.const is not None else known.get(source)
    return None if array is None else array.dtype


def _replace_folded(model: Model, proto: onnx.ModelProto, folded: dict[str, np.ndarray], missing: set[str]) -> bool:
    """Turn, in place, each folded node of ``proto`` that feeds an unfolded node or has a ``missing`` shape into a
    Constant, which onnx's inference reads (the other folded nodes no longer matter). False when none changed."""
    values = model.graph.values
    needed = {
        name for name in folded
        if name in missing or any(any(o.name not in folded for o in user.outputs) for user in values[name].consumers)
    }
    changed = False
    for node in proto.graph.node if needed else ():
        if len(node.output) == 1 and node.output[0] in needed and node.op_type != "Constant":
            name = node.output[0]
            node.Clear()
            node.op_type = "Constant"
            node.output.append(name)
            attr = node.attribute.add()
            attr.name, attr.type = "value", onnx.AttributeProto.TENSOR
            _fill_tensor(attr.t, folded[name])
            changed = True
    return changed


def _fill_tensor(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    """``numpy_helper.from_array`` without its generality (a few hundred small numeric arrays per model)."""
    if array.dtype.kind not in "biuf":
        tensor.CopyFrom(numpy_helper.from_array(array))
        return
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.dims.extend(array.shape)
    tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _run_onnx_inference(model: Model, proto: onnx.ModelProto) -> None:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as err:  # inference errors mean an inconsistent model, not a crash of ours
        raise AsgnasError(f"shape inference failed: {err}", file=model.source) from None
    values = model.graph.values
    for info in itertools.chain(inferred.graph.value_info, inferred.graph.output):
        value = values.get(info.name)
        if value is not None and not _complete(value):
            apply_value_info(value, info)
            if value.shape is not None:  # onnx names dims it could not infer "unk__N": they are holes
                value.shape = tuple(None if isinstance(d, str) and d.startswith("unk__") else d for d in value.shape)


def fill_by_running(model: Model, holes: list[Value]) -> int:
    """Fill ``holes`` by executing the model (see module docstring). Returns how many were filled.

    A dim equal in both runs is static. A dim that is k times the (single) symbolic input dim in both runs gets
    that symbol, ``k*batch`` for k > 1, as torch's exporters write it; any other differing dim is None. Symbols
    rather than None because the channel analysis matches reshapes of the batch symbol for symbol (a None there
    pins the channels it touches), and cost counts a symbol as 1 like None, so its totals do not move.
    """
    from asgnas.runtime import model_feeds, session

    symbols = input_symbols(model)
    probe = lower(model)
    known_outputs = {o.name for o in probe.graph.output}
    for value in holes:
        if value.name not in known_outputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(value.name))
    runs = []
    try:
        sess = session(probe, device="cpu")
        names = [o.name for o in sess.get_outputs()]
        for size in (2, 3) if symbols else (2,):  # without symbolic inputs a second run sees the same shapes
            runs.append(dict(zip(names, sess.run(names, model_feeds(model, seed=0, symbolic_dim=size)))))
    except Exception:
        return 0  # the fallback is best effort; static results stand
    symbol = symbols[0] if len(symbols) == 1 else None
    data_dependent = _downstream_of_data_dependent_shapes(model)
    filled = 0
    for value in holes:
        got = [run.get(value.name) for run in runs]
        if not all(isinstance(g, np.ndarray) for g in got) or len({g.ndim for g in got}) != 1:
            continue  # not computed, or no tensor (a sequence comes back as a list, a map as a dict)
        value.dtype = value.dtype or onnx.helper.np_dtype_to_tensor_dtype(got[0].dtype)
        # a count that grows with the batch on random data (NonZero's) is no multiple of the batch symbol
        value_symbol = None if value.name in data_dependent else symbol
        value.shape = tuple(_run_dim([g.shape[axis] for g in got], value_symbol) for axis in range(got[0].ndim))
        filled += 1
    return filled


#: ops whose output size depends on the input's values, not only its shape
_DATA_DEPENDENT_SHAPES = frozenset({"NonZero", "Unique", "Compress", "NonMaxSuppression", "Loop", "Scan", "If"})


def _downstream_of_data_dependent_shapes(model: Model) -> set[str]:
    """Names of the values computed from an output of a ``_DATA_DEPENDENT_SHAPES`` op."""
    reached: set[str] = set()
    for node in model.graph.toposort():
        if node.op_type in _DATA_DEPENDENT_SHAPES or any(v is not None and v.name in reached for v in node.inputs):
            reached.update(v.name for v in node.outputs if v is not None)
    return reached


def _run_dim(sizes: list[int], symbol: str | None) -> int | str | None:
    """One dim from the runs at symbolic size 2 and 3 (see ``fill_by_running``)."""
    if len(set(sizes)) == 1:
        return int(sizes[0])
    small, large = sizes
    if symbol is None or small % 2 or small // 2 * 3 != large:
        return None
    k = small // 2
    return symbol if k == 1 else f"{k}*{symbol}"


def input_symbols(model: Model) -> list[str]:
    """The symbolic dims of the graph inputs (the batch, usually), sorted."""
    return sorted({d for v in model.graph.inputs for d in (v.shape or ()) if isinstance(d, str)})


def holes(model: Model) -> list[Value]:
    """Tensor values whose dtype or some dim is unknown: None, or a symbol that is neither an input's nor ``k*``
    one (``fill_by_running`` replaces those too, so the analyses see batch-sized dims under the input's symbol)."""
    symbols = input_symbols(model)
    known = set(symbols)

    def known_dim(dim: int | str | None) -> bool:
        if isinstance(dim, int) or dim in known:
            return True
        factor, star, symbol = dim.partition("*") if isinstance(dim, str) else ("", "", "")
        return bool(star) and factor.isdigit() and symbol in known

    return [
        v for n in model.graph for v in n.outputs
        if v.non_tensor_type is None and not (v.dtype and v.shape is not None and all(map(known_dim, v.shape)))
    ]


def infer_shapes(model: Model, fallback: bool = True) -> int:
    """Static inference, then (``fallback``) onnxruntime for the holes. Returns how many the runtime filled."""
    infer_static(model)
    check_conv_fits(model)  # the analyses read channel counts off weights: they must agree with the input
    missing = holes(model)
    return fill_by_running(model, missing) if missing and fallback else 0


#: models whose declared shapes were checked against inference: what a model declares is checked once (later
#: shapes are our own inference's, and the values a rewrite adds start without one)
_CHECKED: "weakref.WeakSet[Model]" = weakref.WeakSet()


def _check_declared_once(model: Model, probe: onnx.ModelProto | None = None) -> bool:
    """``declared_shapes.trust_inferred`` on the first call for ``model``; True when it replaced some shape."""
    if model in _CHECKED:
        return False
    _CHECKED.add(model)
    return trust_inferred(model, lower(model, weights=False) if probe is None else probe)


def ensure_shapes(model: Model) -> bool:
    """Shapes everywhere, inferred only when some value lacks one (``infer_shapes`` with its fallback): what the
    analyses and cost call before reading shapes. Declared shapes that contradict inference are replaced on the
    first call, holes or not. True when some were missing or replaced (and may have changed)."""
    if not _open_holes(model):
        if not _check_declared_once(model):
            return False
        if not _open_holes(model):  # a declared rank that was wrong leaves the dims inference did not know
            return True
    infer_shapes(model)
    unfillable = frozenset(v.name for v in holes(model))
    if unfillable:
        AnalysisManager(model).store(UNFILLABLE_KEY, unfillable)
    return True


#: ``model.analyses`` key: the holes the last inference could not fill (data-dependent sizes), so that
#: ``ensure_shapes`` does not run the model again for them; a rewrite (it preserves nothing) drops it
UNFILLABLE_KEY = "unfillable_shapes"


def _open_holes(model: Model) -> list[Value]:
    unfillable = model.analyses.get(UNFILLABLE_KEY, frozenset())
    return [value for value in holes(model) if value.name not in unfillable]


def forget_shapes(model: Model) -> None:
    """Drop the shapes of computed values (graph outputs keep theirs): after a rewrite that changed them."""
    for value in model.graph.values.values():
        if value.producer is not None and not model.graph.is_output(value):
            value.shape = None
    AnalysisManager(model).forget(UNFILLABLE_KEY)


@register_pass
class ShapeInferPass(Pass):
    name = "shape-infer"
    summary = "infer dtypes and shapes of every value (onnx inference, onnxruntime fallback for holes)"
    options = (Option("fallback", bool, True, "run the model in onnxruntime to fill what static inference leaves"),
               Option("afresh", bool, False, "forget the shapes of computed values first (after a rewrite)"))
    preserves = ALL_ANALYSES  # filling shapes changes no structure the analyses describe

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        if self.config["afresh"]:
            forget_shapes(model)
        filled = infer_shapes(model, self.config["fallback"])
        total = sum(len(n.outputs) for n in model.graph)
        known = sum(1 for n in model.graph for v in n.outputs if v.shape is not None and v.dtype)
        return {"values": total, "with_shape": known, "filled_by_runtime": filled}
