"""``construct-subnet``: physically remove every group whose parameters are exactly zero.

Reads: the IR's initializer values (a group is removed iff all its slices are exactly zero; the analyses are
re-run on the current model, so any group-sparse model works, not just one this pipeline zeroed). Writes: the
slim IR. A pipeline of registered passes (``CONSTRUCT_PIPELINE``) run by a ``PassManager``:
``erasing-groups`` + ``erase-subnet`` delete the zero structures (joints rewired, Concat consumers sliced),
``fold-gates`` removes the training-only gates of ``train{gates=true}`` that stayed 1 (``asgnas.passes.gates``:
the slim model has none), ``prune-subnet`` slices the zero channels out of the re-analysed result, ``dce``, and
``shape-infer{afresh=true}`` infers the changed shapes once, at the end (the rewrites only drop stale ones).
Report key ``construct-subnet`` (what was removed) and ``cost`` = ``{"before", "after"}`` (group-sparse vs slim,
each ``params`` and ``macs``).
"""

from __future__ import annotations

from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.base import Pass, PassContext, register_pass
from asgnas.passes.cost import total_cost

#: the parts, in order; the erase ids follow the channel ids of a pruning analysis held by the model, as before
CONSTRUCT_PIPELINE = "erasing-groups,erase-subnet,fold-gates,prune-subnet{cost=false},dce,shape-infer{afresh=true}"


def construct_subnet(model: Model) -> dict[str, Any]:
    """Remove the zero groups of ``model`` in place; returns what was removed and the cost before/after."""
    from asgnas.passes.gates import check_gates
    from asgnas.passes.manager import PassManager, parse_pipeline

    check_gates(model)  # a gate neither 0 nor 1 fails before anything is rewritten
    before = total_cost(model)
    # no part reads the pipeline's input model: handing over this one spares the manager a copy
    try:
        parts = PassManager(parse_pipeline(CONSTRUCT_PIPELINE)).run(model, PassContext(input_model=model, quiet=True))
    except AsgnasError as err:  # name the pass the user ran, then its part that failed
        err.pass_name = f"construct-subnet ({err.pass_name})" if err.pass_name else "construct-subnet"
        raise
    erase, pruned = parts["erase-subnet"], parts["prune-subnet"]
    # zero structures that are not valid together: a valid subset went, the rest stay (they contribute zero)
    erased = {k: v for k, v in erase.items() if k not in ("zero_groups", "skipped")} if erase["erased_groups"] else {}
    # every zero channel group was either removed or kept so that its space does not end empty
    zero_channels = len(pruned.get("removed_group_ids", ())) + len(pruned.get("kept_to_avoid_empty", ()))
    return {
        "erased_structures": len(erase["erased_groups"]),
        "zero_structures_kept": len(erase["skipped"]),
        "pruned_channel_groups": zero_channels,
        "erase": erased,
        "prune": pruned if zero_channels else {},
        "gates": parts["fold-gates"],
        "cost": {"before": before, "after": total_cost(model)},
    }


@register_pass
class ConstructSubnetPass(Pass):
    name = "construct-subnet"
    summary = "remove every exactly-zero group (erase structures, prune channels) and emit the slim model"

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
