"""Translate analysis groups (ONNX initializer slices) into optimizer groups (torch parameter slices).

``asgnas.passes.groups.TensorSlice(initializer, axis, indices)`` -> ``asgnas.optim.param_groups.ParamSlice(param,
axis, indices)``. The initializer -> parameter map comes from ``OnnxModule.param_for_initializer`` (training the
IR itself) or from ``params_by_initializer(module, param_map)`` (training the user's torch module exported by
``export_torch_model``); the layouts agree because both keep the initializer's shape.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from asgnas.errors import AsgnasError
from asgnas.optim.param_groups import ParamGroup, ParamSlice
from asgnas.ir import Model
from asgnas.passes.groups import Group


def params_by_initializer(module: nn.Module, param_map: Mapping[str, str]) -> dict[str, nn.Parameter]:
    """Initializer name -> the torch parameter behind it, from an export's ``param_map`` (torch name -> init)."""
    params = dict(module.named_parameters(remove_duplicate=False))
    out: dict[str, nn.Parameter] = {}
    for torch_name, init in param_map.items():
        if torch_name not in params:
            raise AsgnasError(f"param_map names {torch_name!r}, which the module does not have")
        out.setdefault(init, params[torch_name])
    return out


def to_param_groups(
    groups: list[Group],
    params: Mapping[str, nn.Parameter],
    *,
    strict: bool = True,
    costs: Mapping[int, float] | None = None,
    families: bool = False,
) -> list[ParamGroup]:
    """One ``ParamGroup`` per ``Group`` (same id and removable flag), slices resolved to parameters; ``families``:
    each kind fills a quota of its own, so it is its own ``ParamGroup.family``.

    ``costs`` (group id -> saving, e.g. from :func:`erase_costs`) fills ``ParamGroup.cost`` for cost-aware
    selection; groups it does not name keep ``None`` (their share of the grouped elements stands in).

    ``strict``: an initializer without a parameter (a frozen constant, a folded tensor) is an error; otherwise
    its slices are dropped and the group becomes non-removable (it could never be all zero). Axis and indices
    are checked against the parameter's shape.
    """
    out: list[ParamGroup] = []
    for group in groups:
        slices: list[ParamSlice] = []
        dropped = False
        for piece in group.params:
            param = params.get(piece.initializer)
            if param is None:
                if strict:
                    raise AsgnasError(f"group {group.id}: initializer {piece.initializer!r} has no torch parameter")
                dropped = True
                continue
            axis = piece.axis + param.dim() if piece.axis < 0 else piece.axis
            if piece.indices is None:
                slices.append(ParamSlice(param, axis if 0 <= axis < max(param.dim(), 1) else 0, None))
                continue
            if not 0 <= axis < param.dim():
                raise AsgnasError(f"group {group.id}: axis {piece.axis} out of range for {piece.initializer!r} "
                                  f"of shape {tuple(param.shape)}")
            size = param.shape[axis]
            indices = [int(i) for i in piece.indices]
            if any(not 0 <= i < size for i in indices):
                raise AsgnasError(f"group {group.id}: index out of range [0, {size}) on axis {axis} of "
                                  f"{piece.initializer!r}")
            slices.append(ParamSlice(param, axis, indices))
        removable = group.removable and bool(slices) and not dropped  # a partial group cannot reach zero
        out.append(ParamGroup(group.id, slices, removable, None if costs is None else costs.get(group.id),
                              family=group.kind if families else ""))
    return out


def erase_costs(model: Model, groups: list[Group], oracle: Any) -> dict[int, float]:
    """What erasing each removable erase group alone saves: 0.5 * (its share of the model's params) + 0.5 *
    (its share of the MACs), counting everything that goes with it (the structure, the columns it feeds, the
    dead code it leaves; the oracle's ``removed_segments``). Params and MACs weigh the same because the quality
    targets ask for both."""
    from asgnas.passes.cost import node_costs
    from asgnas.passes.shape_infer import ensure_shapes

    ensure_shapes(model)
    per_node = node_costs(model)
    total_params = max(sum(c["params"] for c in per_node.values()), 1)
    total_macs = max(sum(c["macs"] for c in per_node.values()), 1)
    segments = oracle.analysis.graph.by_id()
    out: dict[int, float] = {}
    for group in groups:
        if group.kind != "erase" or not group.removable:
            continue
        nodes = {n for sid in oracle.removed_segments([group.id]) for n in segments[sid].nodes}
        # the group's own count adds the consumer columns it takes away (not a segment of their own)
        params = max(sum(per_node[n]["params"] for n in nodes if n in per_node), group.num_params)
        macs = max(sum(per_node[n]["macs"] for n in nodes if n in per_node), group.macs)
        out[group.id] = 0.5 * params / total_params + 0.5 * macs / total_macs
    return out


def removal_costs(model: Model, groups: list[Group], oracle: Any) -> dict[int, float]:
    """:func:`erase_costs` for the erase groups plus, for each removable channel group, its own share of the
    params and MACs in the same unit (0.5 each), so that both kinds rank on one scale (train ``kind=both``)."""
    from asgnas.passes.cost import node_costs

    out = erase_costs(model, groups, oracle)
    per_node = node_costs(model)
    total_params = max(sum(c["params"] for c in per_node.values()), 1)
    total_macs = max(sum(c["macs"] for c in per_node.values()), 1)
    for group in groups:
        if group.kind == "prune" and group.removable:
            out[group.id] = 0.5 * group.num_params / total_params + 0.5 * group.macs / total_macs
    return out
