"""What removing each group saves, for cost-aware selection: the one entry point of the train pass
(``train{cost=...}``) and of ``ASGNAS.h2spg(cost=...)``, so both front ends rank the same groups the same way.

``params-macs`` (the default): :func:`asgnas.bridge.mapping.removal_costs`, the group's share of the model's params
and MACs. ``latency``: the group's measured saving on the target runtime as a share of the model's latency, from the
``latency`` analysis (``model.analyses["latency"]``, a ``LatencyModel`` with ``total_ms`` and ``group_saving_ms``);
when it is missing, or was measured on another search space, it is measured here with the latency pass's defaults
(CPU, batch 1); run ``latency{...}`` earlier in the pipeline to choose the target.

The cost model also sets the default rounding of channel spaces (``round-to=by-cost``, :func:`round_to_for_cost`):
minimizing latency means keeping the widths the latency model measured fastest.
"""

from __future__ import annotations

from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.groups import Group
from asgnas.passes.latency import LATENCY_KEY, parse_round_to

#: the cost models cost-aware selection accepts (train option ``cost``, ``ASGNAS.h2spg(cost=...)``)
COST_MODELS = ("params-macs", "latency")
#: ``round-to``'s default where a cost model is chosen: ``auto`` under ``cost=latency``, else 1
ROUND_TO_BY_COST = "by-cost"

__all__ = ["COST_MODELS", "ROUND_TO_BY_COST", "latency_costs", "parse_round_to_by_cost", "round_to_for_cost",
           "selection_costs"]


def parse_round_to_by_cost(text: str) -> int | str:
    """``train{round-to=...}``: ``by-cost``, ``auto`` or an int."""
    return text if text == ROUND_TO_BY_COST else parse_round_to(text)


parse_round_to_by_cost.__name__ = f"an int, 'auto' or '{ROUND_TO_BY_COST}'"  # named in Option's error message


def round_to_for_cost(round_to: int | str, cost: str) -> int | str:
    """The rounding ``round_to`` means under cost model ``cost``: ``by-cost`` is ``auto`` (the widths the latency
    model measured fastest) when selection minimizes latency, since a channel space cut below the runtime's blocked
    layout width costs reorders no per-group saving shows (docs/BENCHMARKS.md), and 1 (no rounding) otherwise."""
    if cost not in COST_MODELS:
        raise AsgnasError(f"unknown cost model '{cost}' (use one of {', '.join(COST_MODELS)})")
    if round_to != ROUND_TO_BY_COST:
        return round_to
    return "auto" if cost == "latency" else 1


def selection_costs(model: Model, groups: list[Group], oracle: Any, cost: str) -> dict[int, float]:
    """Group id -> saving as a fraction of the model's total, for every removable group, under cost model ``cost``."""
    if cost == "params-macs":
        from asgnas.bridge.mapping import removal_costs

        return removal_costs(model, groups, oracle)
    if cost == "latency":
        return latency_costs(model, groups)
    raise AsgnasError(f"unknown cost model '{cost}' (use one of {', '.join(COST_MODELS)})")


def latency_costs(model: Model, groups: list[Group]) -> dict[int, float]:
    """Each removable group's latency saving / the model's latency; a measured slowdown or noise below zero counts
    as no saving (costs are non-negative)."""
    ids = [g.id for g in groups if g.removable]
    table = model.analyses.get(LATENCY_KEY)
    if table is None or any(i not in table.group_saving_ms for i in ids):  # missing, or of another search space
        analyses = AnalysisManager(model)
        analyses.forget(LATENCY_KEY)
        table = analyses.get(LATENCY_KEY)
    missing = [i for i in ids if i not in table.group_saving_ms]
    if missing:
        raise AsgnasError(f"latency: no measured saving for removable group(s) {missing[:10]}")
    if not table.total_ms > 0:
        raise AsgnasError(f"latency: the model's measured time is {table.total_ms} ms (must be > 0)")
    return {i: max(float(table.group_saving_ms[i]), 0.0) / table.total_ms for i in ids}
