"""``erasing-groups``: the erase-mode search space (ASGNAS/OTOv3 GeZIGs) of a model.

Reads: the IR (shapes are inferred first when missing; nothing is rewritten). Writes:
``model.analyses["erasing_groups"]`` = ``ErasingAnalysis`` (the segment graph, one ``Group(kind="erase")`` per
segment owning trainable variables with ``removable``/``reason``, the Concat channel plans); report key
``erasing-groups`` = its summary.

Steps (spec 2.1-2.4): classify data flow vs constant/shape side chains (``dataflow``), build the segment graph
(``segments``: joints singleton, a multi-consumer vertex ends its segment inclusively, a joint consumer
exclusively, non-erase-joint multi-input ops are boundaries), then check each parameterised segment for Z1-Z5
(``structures``). Op knowledge lives in the data tables of ``ops``. Linear in nodes + edges.

Group ids start at ``id_offset`` (default: after the largest channel-group id of an analysis already in
``model.analyses``, i.e. when the pruning analysis ran first, else 0); ``Group.space`` is the segment id and
``Group.segment`` its index, which is how the oracle and the construction find a group's segment, so a later
renumbering of ids is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asgnas.ir import Model
from asgnas.ir.model import gc_paused
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager, register_analysis
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.cost import node_costs
from asgnas.passes.erasing.channels import ChannelPlan, trace_channels
from asgnas.passes.erasing.dataflow import DataFlow
from asgnas.passes.erasing.ops import OP_TABLE, OpInfo, op_info
from asgnas.passes.erasing.segments import Segment, SegmentGraph, build_segment_graph
from asgnas.passes.erasing.structures import build_groups
from asgnas.passes.groups import Group
from asgnas.passes.shape_infer import ensure_shapes
from asgnas.passes.untie_aliases import untie_before_analysis

ANALYSIS_KEY = "erasing_groups"


@dataclass
class ErasingAnalysis:
    """What the hierarchy pass, the construction and the optimizer read (names only: no IR references)."""

    graph: SegmentGraph
    groups: list[Group]
    num_data_nodes: int
    num_side_nodes: int  # folded constant/shape side-chain nodes
    total_params: int
    total_macs: int

    def by_id(self) -> dict[int, Group]:
        return {g.id: g for g in self.groups}

    def removable(self) -> list[Group]:
        return [g for g in self.groups if g.removable]

    def segment_of(self, group: Group) -> Segment:
        return self.graph.segments[group.segment]

    def summary(self) -> dict[str, Any]:
        removable = self.removable()
        kinds: dict[str, int] = {}
        for seg in self.graph.segments:
            kinds[seg.kind] = kinds.get(seg.kind, 0) + 1
        return {
            "num_segments": len(self.graph.segments),
            "segments_by_kind": kinds,
            "num_data_nodes": self.num_data_nodes,
            "folded_side_nodes": self.num_side_nodes,
            "num_erase_groups": len(self.groups),
            "num_removable": len(removable),
            "removable_params": sum(g.num_params for g in removable),
            "removable_param_fraction": (
                sum(g.num_params for g in removable) / self.total_params if self.total_params else 0.0
            ),
            "removable": [
                {"id": g.id, "segment": g.space, "nodes": [g.nodes[0], g.nodes[-1]], "num_params": g.num_params,
                 "macs": g.macs}
                for g in removable
            ],
            "not_removable": [{"id": g.id, "segment": g.space, "reason": g.reason} for g in self.groups
                              if not g.removable],
            "shared_only": [{"segment": s.id, "reason": s.note} for s in self.graph.segments if s.note],
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.graph.to_json(), "groups": [g.to_json() for g in self.groups]}


def _auto_offset(model: Model) -> int:
    """One past the largest channel-group id of any analysis already stored (the pruning analysis)."""
    ids = [
        g.id
        for result in model.analyses.values()
        for g in (getattr(result, "groups", None) or ())
        if getattr(g, "kind", None) == "prune"
    ]
    return max(ids) + 1 if ids else 0


def analyze_erasing(model: Model, id_offset: int | None = None,
                    costs: dict[str, dict[str, int]] | None = None) -> ErasingAnalysis:
    """Run the analysis (no IR change beyond filling missing shapes) and return it. ``costs``: ``node_costs`` of
    the model's current shapes when the caller has them (recomputed anyway if shapes had to be filled)."""
    with gc_paused():  # many small acyclic objects: the cyclic GC would only rescan them
        return _analyze_erasing(model, id_offset, costs)


def _analyze_erasing(model: Model, id_offset: int | None,
                     costs: dict[str, dict[str, int]] | None) -> ErasingAnalysis:
    untied = untie_before_analysis(model)  # exporter aliases would tie unrelated structures together
    # costs afresh when shapes were missing (they count as 1), untying added copies (parameters of their readers)
    if ensure_shapes(model) or untied or costs is None:
        costs = node_costs(model)
    flow = DataFlow(model.graph)
    sg = build_segment_graph(flow)
    offset = _auto_offset(model) if id_offset is None or id_offset < 0 else id_offset
    groups = build_groups(flow, sg, costs, offset)
    return ErasingAnalysis(
        graph=sg,
        groups=groups,
        num_data_nodes=len(flow.data_nodes),
        num_side_nodes=len(flow.side_nodes),
        total_params=sum(c["params"] for c in costs.values()),
        total_macs=sum(c["macs"] for c in costs.values()),
    )


@register_pass
class ErasingGroupsPass(Pass):
    name = "erasing-groups"
    summary = "find the erase-mode search space: segment graph and minimal removal structures (GeZIGs)"
    options = (Option("id-offset", int, -1, "first group id (-1: after the pruning groups' ids, else 0)"),)
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        analysis = analyze_erasing(model, self.config["id-offset"])
        AnalysisManager(model).store(ANALYSIS_KEY, analysis)  # afresh: its id-offset may differ
        return analysis.summary()


# ids follow a cached pruning analysis's channel ids (``_auto_offset``); ``search_space`` orders the two itself
register_analysis(ANALYSIS_KEY, lambda model, analyses: analyze_erasing(model))

__all__ = [
    "ANALYSIS_KEY",
    "OP_TABLE",
    "ChannelPlan",
    "DataFlow",
    "ErasingAnalysis",
    "ErasingGroupsPass",
    "OpInfo",
    "Segment",
    "SegmentGraph",
    "analyze_erasing",
    "op_info",
    "trace_channels",
]
