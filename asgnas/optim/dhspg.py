"""DHSPG: dual half-space projected gradient (OTOv2 pruning mode, PAPER_SPEC section 3.6).

Same engine as H2SPG (:mod:`asgnas.optim.hybrid`), but the redundant set is the global top-K of the saliency
score at the partition step (``warmup_steps``) with no validity check, and K is exact (no tolerance).
By default (``score_momentum=0``) the score is the one of the partition step only, as in OTOv2; a positive
value averages it over the warm-up like H2SPG.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

from .groups import ParamGroup
from .hybrid import HybridSparseOptimizer
from .scores import ScoreFn

__all__ = ["DHSPG"]


class DHSPG(HybridSparseOptimizer):
    """Dual half-space projected gradient; arguments as :class:`asgnas.optim.H2SPG` minus the oracle."""

    def __init__(
        self,
        params: Iterable[Any],
        groups: Sequence[ParamGroup],
        lr: float,
        target_group_sparsity: float | int = 0.5,
        variant: str = "sgd",
        momentum: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: Optional[int] = None,
        score_momentum: float = 0.0,
        lmbda: Optional[float] = None,
        lmbda_amplify: Optional[float] = None,
        hat_lmbda_coeff: Optional[float] = None,
        epsilon: Optional[float] = None,
        projection_start: Optional[int] = None,
        penalty_start: Optional[int] = None,
        hard_zero_step: Optional[int] = None,
        score_normalization: str = "count",
        score_fn: Optional[ScoreFn] = None,
        selection_filter: Optional[Callable[[list[int]], Sequence[int]]] = None,
        total_steps: Optional[int] = None,
        warmup_fraction: Optional[float] = None,
        hard_zero_fraction: Optional[float] = None,
        steady_shrink: Optional[bool] = None,
    ) -> None:
        super().__init__(
            params, groups, lr, target_group_sparsity=target_group_sparsity, variant=variant, momentum=momentum,
            nesterov=nesterov, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
            score_momentum=score_momentum, lmbda=lmbda, lmbda_amplify=lmbda_amplify,
            hat_lmbda_coeff=hat_lmbda_coeff, epsilon=epsilon, projection_start=projection_start,
            penalty_start=penalty_start, hard_zero_step=hard_zero_step, score_normalization=score_normalization,
            score_fn=score_fn, selection_filter=selection_filter,
            total_steps=total_steps, warmup_fraction=warmup_fraction, hard_zero_fraction=hard_zero_fraction,
            steady_shrink=steady_shrink,
        )

    def _select_groups(self, order: list[int], k: int) -> list[int]:
        return list(order[:k])
