"""``verify``: run the current model and a reference in onnxruntime on the same seeded inputs and compare.

Reads: the IR, the pipeline's reference (the latest checkpoint marked as reference, e.g. the group-sparse model
``zero-groups`` saved; else the pipeline's input model), or ``reference=PATH``.
Writes: report key ``verify`` = ``{"ok", "max_abs_diff", "max_rel_diff", "outputs": {...}}``. ``max_rel_diff`` is
the largest absolute difference divided by the reference output's largest magnitude (the output's scale).
Raises ``VerifyFailed`` (CLI exit status 1) when ``max_rel_diff`` exceeds ``rtol``, or when an output of either
model holds NaN or Inf (such outputs count as infinitely different: ``outputs[name]["non_finite"]`` says how many).
The model is also checked with ``onnx.checker`` (full check) before it runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

from asgnas.errors import AsgnasError, ResultRejected
from asgnas.ir import Model, load_model, lower
from asgnas.passes.analysis_manager import ALL_ANALYSES
from asgnas.passes.base import Option, Pass, PassContext, register_pass


class VerifyFailed(ResultRejected):
    """The outputs differ by more than the tolerance (exit status 1, not 2: the input was fine)."""


def compare_models(
    model: Model, reference: Model, *, seeds: int = 2, symbolic_dim: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """Max abs/rel differences over all outputs and seeds. Outputs are matched by position."""
    from asgnas.runtime import model_feeds, session

    proto = lower(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:
        raise AsgnasError(f"model fails onnx.checker: {str(err).splitlines()[0]}") from None
    current_sess = session(proto, device)
    reference_sess = session(reference, device)
    ref_names = [o.name for o in reference_sess.get_outputs()]
    cur_names = [o.name for o in current_sess.get_outputs()]
    if len(ref_names) != len(cur_names):
        raise AsgnasError(f"model has {len(cur_names)} outputs, reference has {len(ref_names)}")
    _check_inputs(current_sess, reference_sess)
    per_output = {name: {"max_abs_diff": 0.0, "scale": 0.0} for name in cur_names}
    for seed in range(seeds):
        feeds = model_feeds(reference, seed=seed, symbolic_dim=symbolic_dim)
        expected = reference_sess.run(ref_names, feeds)
        wanted = {i.name for i in current_sess.get_inputs()}
        actual = current_sess.run(cur_names, {k: v for k, v in feeds.items() if k in wanted})
        for name, got, want in _tensor_pairs(cur_names, actual, expected):
            if got.shape != want.shape:
                raise AsgnasError(f"output {name} has shape {got.shape}, reference {want.shape}")
            diff = _distance(got, want)
            entry = per_output[name]
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float(diff.max(initial=0.0)))
            scale = np.abs(want).max(initial=0.0) if want.dtype.kind in "biufc" else 0.0
            entry["scale"] = max(entry["scale"], float(scale))
            for side, array in (("model", got), ("reference", want)):
                if count := _non_finite_count(array):
                    entry.setdefault("non_finite", {}).setdefault(side, 0)
                    entry["non_finite"][side] += count
    for entry in per_output.values():
        entry["max_rel_diff"] = entry["max_abs_diff"] / max(entry["scale"], 1e-12)
        if "non_finite" in entry:  # NaN would vanish in max(): such outputs compare as infinitely far apart
            entry["max_abs_diff"] = entry["max_rel_diff"] = math.inf
    return {
        "max_abs_diff": max(e["max_abs_diff"] for e in per_output.values()),
        "max_rel_diff": max(e["max_rel_diff"] for e in per_output.values()),
        "outputs": per_output,
    }


def _tensor_pairs(names: list[str], actual: list[Any], expected: list[Any]) -> list[tuple[str, Any, Any]]:
    """(name, model's, reference's) array per output; outputs that are no tensors (a sequence, a map, an
    optional) are taken apart into the arrays they hold, each compared under the output's name."""
    pairs = []
    for name, got, want in zip(names, actual, expected):
        got_parts, want_parts = _arrays(got), _arrays(want)
        if len(got_parts) != len(want_parts):
            raise AsgnasError(f"output {name} holds {len(got_parts)} tensors, the reference's {len(want_parts)}")
        pairs += [(name, g, w) for g, w in zip(got_parts, want_parts)]
    return pairs


def _arrays(value: Any) -> list[np.ndarray]:
    """The arrays a runtime value holds: itself, a sequence's elements, a map's keys and values (in key order);
    an empty optional holds none."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [array for item in value for array in _arrays(item)]
    if isinstance(value, dict):
        keys = sorted(value)
        return [np.asarray(keys)] + [array for key in keys for array in _arrays(value[key])]
    return [np.asarray(value)]


def _distance(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Elementwise |got - want|; values that are no numbers (strings) are 0 where equal, else infinitely apart."""
    if got.dtype.kind in "biufc" and want.dtype.kind in "biufc":
        return np.abs(got.astype(np.complex128 if "c" in got.dtype.kind + want.dtype.kind else np.float64) - want)
    return np.where(got == want, 0.0, np.inf)


def _non_finite_count(array: np.ndarray) -> int:
    """NaN and Inf values in a (floating or complex) output; other types cannot hold them."""
    if not np.issubdtype(array.dtype, np.inexact):
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))


def non_finite_reason(result: dict[str, Any]) -> str | None:
    """'output y of the model has 3 NaN/Inf values, ...' for the outputs ``compare_models`` found non-finite."""
    parts = [
        f"output {name} of the {side} has {count} NaN/Inf value{'s' if count > 1 else ''}"
        for name, entry in result["outputs"].items()
        for side, count in entry.get("non_finite", {}).items()
    ]
    return ", ".join(parts) or None


def _check_inputs(current_sess: Any, reference_sess: Any) -> None:
    """Every input of the model must be one of the reference's, with the same element type and rank and equal
    fixed dims (the slim model may have dropped inputs it no longer reads)."""
    reference_inputs = {i.name: i for i in reference_sess.get_inputs()}
    for given in current_sess.get_inputs():
        ref = reference_inputs.get(given.name)
        if ref is None:
            raise AsgnasError(f"model input '{given.name}' is not an input of the reference "
                              f"(reference inputs: {', '.join(reference_inputs)})")
        fixed_dims_differ = any(isinstance(a, int) and isinstance(b, int) and a != b
                                for a, b in zip(given.shape, ref.shape))
        if given.type != ref.type or len(given.shape) != len(ref.shape) or fixed_dims_differ:
            raise AsgnasError(f"model input '{given.name}' is {given.type} {given.shape}, "
                              f"in the reference {ref.type} {ref.shape}")


@register_pass
class VerifyPass(Pass):
    name = "verify"
    summary = "compare outputs with the reference model in onnxruntime (max abs/rel diff); fail above rtol"
    options = (
        Option("rtol", float, 1e-4, "largest allowed difference relative to the output's scale", minimum=0),
        Option("seeds", int, 2, "number of seeded random input sets", minimum=1),
        Option("reference", str, "auto", "auto (latest reference checkpoint, else the input model) or a path"),
        Option("batch", int, 2, "size used for symbolic input dims", minimum=1),
        Option("device", str, "cpu", "onnxruntime device", choices=("cpu", "cuda", "auto")),
    )
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        ref_option = self.config["reference"]
        reference = ctx.reference() if ref_option == "auto" else load_model(ref_option)
        result = compare_models(
            model, reference, seeds=self.config["seeds"], symbolic_dim=self.config["batch"],
            device=self.config["device"],
        )
        result["ok"] = result["max_rel_diff"] <= self.config["rtol"]
        result["rtol"] = self.config["rtol"]
        result["reference"] = ctx.reference_name or "input" if ref_option == "auto" else ref_option
        ctx.results[self.report_key] = result
        if reason := non_finite_reason(result):
            raise VerifyFailed(f"outputs are not finite: {reason}")
        if not result["ok"]:
            raise VerifyFailed(
                f"outputs differ: max_rel_diff {result['max_rel_diff']:.3g} > rtol {self.config['rtol']:g} "
                f"(max_abs_diff {result['max_abs_diff']:.3g})"
            )
        return result
