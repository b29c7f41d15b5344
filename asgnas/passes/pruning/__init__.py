"""``pruning-groups``: partition every prunable channel into zero-invariant groups (OTOv2/v3 ZIGs, pruning side).

Reads: the IR (fills missing shapes first: static inference, then the onnxruntime fallback). Writes:
``model.analyses["pruning_groups"]`` = ``PruningAnalysis`` (``result.py``): ``groups`` (``Group(kind="prune")``,
ids 0..n-1: one per channel, GroupNorm group, or attention head), ``spaces`` and what construction needs; report
key ``pruning-groups`` = summary counts + compact groups.

How it works (one-job modules):
- ``rules.py``: ``CHANNEL_RULES``, one entry per op type (a view of ``passes/op_registry.py``): how channels
  flow through it (same indexing, offsets, factorisation) plus, by reference, its zero rule and its construction
  rewrite; the analyze functions live by op family in ``rules_elementwise.py``, ``rules_norm.py`` (normalizations,
  softmax, reductions), ``rules_conv.py`` (stems, pooling, Resize), ``rules_shape.py`` (data movement), with
  their shared helpers in ``rules_common.py``;
- ``zeros.py``: what a removed channel holds after each op (f(0): Sigmoid 0.5, Mul by 0 is 0, ...), and the
  ``ZeroCtx`` these functions read;
- ``rewrites.py``: what construction updates on a node whose channel counts change, and its ``RewriteCtx``;
- ``attrs.py``: reading parameters that may be attributes or folded inputs (axes, pads, slice bounds);
- ``builder.py``: the relation vocabulary the rules write (axis keys, ``same``/``link``/``product``/``pin``,
  parameter roles, stems, consumers) and the reshape factorisation;
- ``shapes.py``: folding of shape computations, tracking which axes each computed size depends on;
- ``analysis.py``: spaces (union-find over axes), units (union-find over channels), the zero pass, groups;
- ``result.py``: what it hands on (``PruningAnalysis``, ``Space``, ``Fold``), apart so the rules never import
  the driver.
Construction is ``asgnas/passes/prune_subnet.py`` (``construct_pruned``, pass ``prune-subnet``).

Guarantees (each has a test): an unknown op or an unhandled attribute pins everything it touches, with a reason
naming node and op; channels reaching graph inputs/outputs are pinned; a removed channel must be exactly zero
wherever it is summed into something that stays, or a constant folded into the consumer's bias (Sigmoid,
Softplus, ... before an unpadded conv or a Linear), otherwise its space is pinned; normalisations over the
channel axis (LayerNorm, RMSNorm patterns via ReduceMean, Softmax) pin it; GroupNorm prunes whole groups;
shared weights (one initializer read twice, or through Identity) merge the groups that slice them.
"""

from __future__ import annotations

from typing import Any

from asgnas.ir import Model
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager, register_analysis
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.pruning.analysis import ANALYSIS_KEY, Fold, PruningAnalysis, Space, analyze_pruning
from asgnas.passes.pruning.rules import CHANNEL_RULES, OpRule


@register_pass
class PruningGroupsPass(Pass):
    name = "pruning-groups"
    summary = "find the channel groups (zero-invariant groups) of every prunable channel space"
    options = (Option("groups", bool, True, "list every group in the report (false: summary only)"),)
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        analysis = analyze_pruning(model)
        AnalysisManager(model).store(ANALYSIS_KEY, analysis)
        result = analysis.to_json(compact=True)
        if not self.config["groups"]:
            result.pop("groups")
            result.pop("spaces")
        return result


register_analysis(ANALYSIS_KEY, lambda model, analyses: analyze_pruning(model))

__all__ = ["ANALYSIS_KEY", "CHANNEL_RULES", "Fold", "OpRule", "PruningAnalysis", "Space", "analyze_pruning"]
