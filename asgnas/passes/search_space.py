"""``search-space``: the whole automated search space = ``pruning-groups`` + ``erasing-groups`` + ``hierarchy``.

Reads: the IR (runs the three analyses on it). Writes: ``model.analyses["search_space"]`` = ``SearchSpace``
(channel groups first, ids 0..P-1, then removal structures, ids P..; ids are unique), and report key
``search_space`` = ``{"groups": [...], "summary": {...}}``. Each group has ``id``, ``kind`` (prune|erase),
``nodes``, ``params`` (initializer slices), ``num_params``, ``macs``, ``removable`` + ``reason``, ``parents`` and
``children``. A channel group's parents are the removal structures that contain its producing nodes (erasing the
structure removes the channel too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asgnas.ir import Model
from asgnas.ir.model import gc_paused
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager, register_analysis
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.cost import total_cost
from asgnas.passes.erasing import ANALYSIS_KEY as ERASING_KEY
from asgnas.passes.erasing import analyze_erasing
from asgnas.passes.groups import Group, SearchSpace
from asgnas.passes.hierarchy import HIERARCHY_KEY, build_hierarchy
from asgnas.passes.pruning import ANALYSIS_KEY as PRUNING_KEY
from asgnas.passes.pruning import analyze_pruning

SEARCH_SPACE_KEY = "search_space"


def analyze_search_space(model: Model) -> SearchSpace:
    """Run the analyses (pruning first so erase ids follow the channel ids) and join their groups."""
    with gc_paused():  # the analyses build ~10^5 acyclic objects on large graphs (see ``gc_paused``)
        return _analyze_search_space(model)


def _analyze_search_space(model: Model) -> SearchSpace:
    analyses = AnalysisManager(model)  # the three parts are stored with the space (its registration's ``stores``)
    pruning = analyze_pruning(model)
    analyses.store(PRUNING_KEY, pruning)
    erasing = analyze_erasing(model, costs=pruning.costs)
    analyses.store(ERASING_KEY, erasing)
    analyses.store(HIERARCHY_KEY, build_hierarchy(erasing))
    _link_channels_to_structures(pruning.groups, erasing.groups)
    space = SearchSpace(list(pruning.groups) + list(erasing.groups))
    ids = [g.id for g in space.groups]
    if len(set(ids)) != len(ids):
        raise AssertionError("search space: pruning and erasing group ids overlap")
    analyses.store(SEARCH_SPACE_KEY, space)
    return space


def _link_channels_to_structures(prune_groups: list[Group], erase_groups: list[Group]) -> None:
    """A channel group is a child of every removal structure owning one of its parameter tensors' rows."""
    owner_of: dict[str, list[Group]] = {}
    for structure in erase_groups:
        for piece in structure.params:
            owner_of.setdefault(piece.initializer, []).append(structure)
    for channel in prune_groups:
        parents: dict[int, Group] = {}
        for piece in channel.params:
            for structure in owner_of.get(piece.initializer, ()):
                parents[structure.id] = structure
        for structure in parents.values():
            channel.parents.append(structure.id)
            structure.children.append(channel.id)


def removable_param_fraction(model: Model, space: SearchSpace, total_params: int) -> float:
    """Fraction of float parameters covered by at least one removable group (union of slices, not a sum)."""
    masks: dict[str, np.ndarray] = {}
    values = model.graph.values
    for group in space.removable():
        for piece in group.params:
            value = values.get(piece.initializer)
            if value is None or value.const is None:
                continue
            mask = masks.get(piece.initializer)
            if mask is None:
                mask = masks[piece.initializer] = np.zeros(value.const.shape, dtype=bool)
            if piece.indices is None:
                mask[...] = True
            else:
                index = [slice(None)] * mask.ndim
                index[piece.axis] = piece.indices
                mask[tuple(index)] = True
    covered = sum(int(m.sum()) for m in masks.values())
    return covered / total_params if total_params else 0.0


@register_pass
class SearchSpacePass(Pass):
    name = "search-space"
    summary = "find every removable group: channel groups (pruning), removal structures (erasing), their hierarchy"
    options = (Option("groups", bool, True, "list every group in the report (false: summary only)"),)
    preserves = ALL_ANALYSES

    @property
    def report_key(self) -> str:
        return SEARCH_SPACE_KEY

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        space = analyze_search_space(model)
        summary = {
            **space.summary(),
            "removable_param_fraction": round(removable_param_fraction(model, space, total_cost(model)["params"]), 6),
        }
        result: dict[str, Any] = {"summary": summary}
        if self.config["groups"]:
            result["groups"] = [g.to_json() for g in space.groups]
        return result


# computed with its three parts, afresh (pruning first, so the erase ids follow the channel ids), and stored with them
register_analysis(SEARCH_SPACE_KEY, lambda model, analyses: analyze_search_space(model),
                  stores=(PRUNING_KEY, ERASING_KEY, HIERARCHY_KEY))
