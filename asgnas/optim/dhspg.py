"""DHSPG: dual half-space projected gradient (OTOv2 pruning mode, PAPER_SPEC section 3.6).

Same engine as H2SPG (:mod:`asgnas.optim.hybrid`), but the redundant set is the global top-K of the saliency
score at the partition step (``warmup_steps``) with no validity check, and K is exact (no tolerance).
By default (``score_momentum=0``) the score is the one of the partition step only, as in OTOv2; a positive
value averages it over the warm-up like H2SPG.
"""
from __future__ import annotations

from .hybrid import HybridSparseOptimizer

__all__ = ["DHSPG"]


class DHSPG(HybridSparseOptimizer):
    """Dual half-space projected gradient; arguments as :class:`asgnas.optim.H2SPG` minus the oracle and
    ``cost_weight``, and ``score_momentum`` defaults to 0 (options: :mod:`asgnas.optim.options`)."""

    option_defaults = {"score_momentum": 0.0}  # the partition step's score alone, as OTOv2
    refused_options = frozenset({"cost_weight"})

    def _select_groups(self, order: list[int], k: int) -> list[int]:
        return list(order[:k])
