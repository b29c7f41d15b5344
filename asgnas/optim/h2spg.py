"""H2SPG: hierarchical half-space projected gradient (ASGNAS / OTOv3, PAPER_SPEC section 3.1).

Warm-up with the base optimizer while an EMA of the saliency score is kept; at step ``warmup_steps`` a greedy
top-down pass over the removable groups (most redundant first) asks the validity oracle whether the group
can be erased together with those already chosen, and stops at K; afterwards the hybrid phase of
:mod:`asgnas.optim.hybrid` drives exactly the chosen groups to zero.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

from .groups import ParamGroup, ValidityOracle
from .hybrid import HybridSparseOptimizer
from .scores import ScoreFn

__all__ = ["H2SPG", "greedy_valid_selection"]


def greedy_valid_selection(order: Sequence[int], ids: Sequence[int], k: int,
                           oracle: Optional[ValidityOracle]) -> list[int]:
    """Walk ``order`` (compact group indices, most redundant first) and keep each group the oracle accepts,
    until ``k`` are kept.  The oracle is reset first and left holding exactly the kept groups.
    Without an oracle this is plain top-k."""
    if oracle is None:
        return list(order[:k])
    oracle.reset()
    chosen: list[int] = []
    for gi in order:
        if len(chosen) >= k:
            break
        if oracle.try_remove(ids[gi]):
            chosen.append(gi)
    return chosen


class H2SPG(HybridSparseOptimizer):
    """Hierarchical half-space projected gradient.

    Args (beyond torch's usual ``params``/``lr``):
        groups: all zero-invariant groups; non-removable ones are trained but never projected.
        target_group_sparsity: float in [0, 1] = fraction of removable groups, int = exact count K.
        variant: base optimizer, ``"sgd"`` (with ``momentum``/``nesterov``), ``"adam"`` (L2 weight decay)
            or ``"adamw"`` (decoupled weight decay).
        total_steps: the training budget N, the number of optimizer steps the caller will run.  It sets every
            step count left out (see :mod:`asgnas.optim.schedule`): ``warmup_steps`` = 1/5 of N (or
            ``warmup_fraction``), ``hard_zero_step`` = 1/2 of N (or ``hard_zero_fraction``), projection and penalty
            from the selection step on, ``lmbda`` from the initial group norms so that the projection (not the
            safeguard) zeroes the chosen groups, and ``epsilon`` 0.9.
        warmup_steps: T_w, number of warm-up steps; the search runs during step number T_w (0-based).
            The schedule is either ``total_steps`` or, without it, an explicit ``warmup_steps`` (optionally with
            ``hard_zero_step``, ``projection_start``, ``penalty_start``; then ``lmbda`` and ``epsilon`` default to
            the DHSPG code's values below and nothing is forced unless ``hard_zero_step`` is given).  With neither,
            construction raises ``ValueError`` saying what to pass.
        score_momentum: omega of the score EMA (the EMA starts at the first score, includes step T_w).
        lmbda, lmbda_amplify, hat_lmbda_coeff: group-lasso base value, amplifier and cap factor; ``None``
            picks the DHSPG defaults (SGD 1e-3/2/10, Adam(W) 1e-2/20/1e3), except ``lmbda`` with ``total_steps``
            (derived from the budget, :func:`asgnas.optim.schedule.budget_lambda`).
        epsilon: half-space threshold in [0, 1); ``None``: 0.9 with ``total_steps``, else 0.
        projection_start, penalty_start: first step of projection / of the adaptive lambda (default and
            minimum: ``warmup_steps``; before ``penalty_start`` redundant groups get the fixed ``lmbda``).
        hard_zero_step: safeguard T_end.  Without ``total_steps``, ``None`` never forces.  During the step that
            completes step number ``hard_zero_step`` (i.e. when ``metrics()['step']`` becomes ``hard_zero_step``)
            every redundant group still non-zero is set to zero, so exactly K groups are zero from then on
            (``metrics()['forced_zero_groups']``; those the projection zeroed are ``projected_groups``);
            :meth:`force_zero_redundant` does the same on demand.
        warmup_fraction, hard_zero_fraction: with ``total_steps``, the shares of it that give ``warmup_steps``
            and ``hard_zero_step`` (defaults 0.2 and 0.5, need 0 <= warmup < hard_zero <= 1).
        validity_oracle: optional :class:`ValidityOracle`; without one the selection is plain top-K.
        score_normalization: ``"count"`` (|x|/n, DHSPG) or ``"sqrt"`` (|x|/sqrt(n)) for the magnitude term.
        score_fn: optional replacement of the default saliency score (see :mod:`asgnas.optim.scores`).
        cost_weight: 0 (default) ranks by saliency alone, as the paper; > 0 ranks by
            :func:`asgnas.optim.scores.cost_aware_key` (saliency plus ``cost_weight`` times the group's
            ``ParamGroup.cost``, both min-max scaled), so that costly structures go first among comparably
            redundant ones. The validity oracle is consulted either way and K stays exact.
        selection_filter: optional callable given the selected group ids (most redundant first) and returning
            the subset to zero, e.g. ``asgnas.bridge.training.channel_rounding`` so that every channel space
            keeps a multiple of a kernel's block size; what it gives back is ``metrics()['selection_filtered_out']``
            (K is then an upper bound).

    If the oracle rejects so many candidates that K cannot be reached, fewer groups are selected, a
    ``RuntimeWarning`` is issued and ``metrics()['selection_shortfall']`` reports the gap.
    """

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
        score_momentum: float = 0.9,
        lmbda: Optional[float] = None,
        lmbda_amplify: Optional[float] = None,
        hat_lmbda_coeff: Optional[float] = None,
        epsilon: Optional[float] = None,
        projection_start: Optional[int] = None,
        penalty_start: Optional[int] = None,
        hard_zero_step: Optional[int] = None,
        validity_oracle: Optional[ValidityOracle] = None,
        score_normalization: str = "count",
        score_fn: Optional[ScoreFn] = None,
        cost_weight: float = 0.0,
        selection_filter: Optional[Callable[[list[int]], Sequence[int]]] = None,
        total_steps: Optional[int] = None,
        warmup_fraction: Optional[float] = None,
        hard_zero_fraction: Optional[float] = None,
        steady_shrink: Optional[bool] = None,
    ) -> None:
        self.validity_oracle = validity_oracle
        super().__init__(
            params, groups, lr, target_group_sparsity=target_group_sparsity, variant=variant, momentum=momentum,
            nesterov=nesterov, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
            score_momentum=score_momentum, lmbda=lmbda, lmbda_amplify=lmbda_amplify,
            hat_lmbda_coeff=hat_lmbda_coeff, epsilon=epsilon, projection_start=projection_start,
            penalty_start=penalty_start, hard_zero_step=hard_zero_step, score_normalization=score_normalization,
            score_fn=score_fn, cost_weight=cost_weight, selection_filter=selection_filter,
            total_steps=total_steps, warmup_fraction=warmup_fraction, hard_zero_fraction=hard_zero_fraction,
            steady_shrink=steady_shrink,
        )

    def _select_groups(self, order: list[int], k: int) -> list[int]:
        return greedy_valid_selection(order, self.layout.ids, k, self.validity_oracle)

    def _on_selection_overridden(self, chosen: list[int]) -> None:
        # Keep the oracle consistent with the set actually used (rank 0's, or the filtered one).
        oracle = self.validity_oracle
        if oracle is None:
            return
        oracle.reset()
        rejected = [self.layout.ids[gi] for gi in chosen if not oracle.try_remove(self.layout.ids[gi])]
        if rejected:
            warnings.warn(f"H2SPG: this rank's validity oracle rejects groups {rejected} chosen on rank 0",
                          RuntimeWarning, stacklevel=4)
