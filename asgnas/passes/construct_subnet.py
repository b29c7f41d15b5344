"""``construct-subnet``: physically remove every group whose parameters are exactly zero.

Reads: the IR's initializer values (a group is removed iff all its slices are exactly zero; the analyses are
re-run on the current model, so any group-sparse model works, not just one this pipeline zeroed). Writes: the
slim IR: erased structures first (nodes deleted, joints rewired, Concat consumers sliced), then, on the re-analysed
result, pruned channels (producer rows and consumer columns sliced, channel-count attributes and constants
updated), then dead-code elimination and shape inference. Between the two, ``fold-gates`` removes the
training-only gates of ``train{gates=true}`` that stayed 1 (``asgnas.passes.gates``): the slim model has none.
Report key ``construct-subnet`` (what was removed) and ``cost`` = ``{"before", "after"}`` (group-sparse vs slim, each ``params`` and ``macs``).
"""

from __future__ import annotations

from typing import Any

from asgnas.ir import Model
from asgnas.passes.base import Pass, PassContext, register_pass
from asgnas.passes.cost import total_cost
from asgnas.passes.dce import eliminate_dead_code
from asgnas.passes.groups import group_is_zero


def construct_subnet(model: Model) -> dict[str, Any]:
    """Remove the zero groups of ``model`` in place; returns what was removed and the cost before/after."""
    from asgnas.passes.erase_subnet import construct_erased, select_erasable
    from asgnas.passes.erasing import analyze_erasing
    from asgnas.passes.gates import check_gates, fold_gates
    from asgnas.passes.prune_subnet import construct_pruned
    from asgnas.passes.pruning import analyze_pruning

    check_gates(model)  # a gate neither 0 nor 1 fails before anything is rewritten
    before = total_cost(model)
    erasing = analyze_erasing(model)
    zero = [g.id for g in erasing.removable() if group_is_zero(model, g)]
    # zero structures that are not valid together: erase a valid subset, the rest stay (they contribute zero)
    zero_structures, kept_zero = select_erasable(erasing, zero)
    erased = construct_erased(model, erasing, set(zero_structures)) if zero_structures else {}
    model.analyses.clear()
    # training-only gates (train{gates=true}): the erased ones went with their structures, the kept ones are 1
    gates = fold_gates(model)

    pruning = analyze_pruning(model)
    zero_channels = {g.id for g in pruning.groups if g.removable and group_is_zero(model, g)}
    pruned = construct_pruned(model, pruning, zero_channels) if zero_channels else {}
    model.analyses.clear()

    eliminate_dead_code(model.graph)
    for value in model.graph.values.values():  # shapes change with the channel counts: infer afresh
        if value.producer is not None and not model.graph.is_output(value):
            value.shape = None
    after = total_cost(model)  # re-infers the shapes (runtime fallback where static inference cannot follow)
    return {
        "erased_structures": len(zero_structures),
        "zero_structures_kept": len(kept_zero),
        "pruned_channel_groups": len(zero_channels),
        "erase": erased,
        "prune": pruned,
        "gates": gates,
        "cost": {"before": before, "after": after},
    }


@register_pass
class ConstructSubnetPass(Pass):
    name = "construct-subnet"
    summary = "remove every exactly-zero group (erase structures, prune channels) and emit the slim model"
    preserves = frozenset()

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        result = construct_subnet(model)
        ctx.results["cost"] = result["cost"]
        validation = ctx.validation  # published by train: its held-out data, and whose report gets the figure
        trained = ctx.results.get(validation.report_key) if validation is not None else None
        if trained is not None:
            from asgnas.runtime import onnx_accuracy

            trained["val_accuracy_slim"] = onnx_accuracy(model, validation.x, validation.y, output=validation.output,
                                                         log=None if ctx.quiet else ctx.log)
        return result
