"""H2SPG: hierarchical half-space projected gradient (ASGNAS / OTOv3, PAPER_SPEC section 3.1).

Warm-up with the base optimizer while an EMA of the saliency score is kept; at step ``warmup_steps`` a greedy
top-down pass over the removable groups (most redundant first) asks the validity oracle whether the group
can be erased together with those already chosen, and stops at K; afterwards the hybrid phase of
:mod:`asgnas.optim.hybrid` drives exactly the chosen groups to zero.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Optional, Sequence

from .param_groups import ParamGroup, ValidityOracle
from .hybrid import HybridSparseOptimizer

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

    ``H2SPG(params, groups, lr=..., validity_oracle=None, **options)``; the options (target sparsity, base
    variant, schedule, lambda, ...) are listed once in :mod:`asgnas.optim.options` (:class:`SparseOptions`).
    ``validity_oracle``: optional :class:`ValidityOracle`; without one the selection is plain top-K.

    If the oracle rejects so many candidates that K cannot be reached, fewer groups are selected, a
    ``RuntimeWarning`` is issued and ``metrics()['selection_shortfall']`` reports the gap.
    """

    def __init__(self, params: Iterable[Any], groups: Sequence[ParamGroup], lr: float, *,
                 validity_oracle: Optional[ValidityOracle] = None, **options: Any) -> None:
        self.validity_oracle = validity_oracle
        super().__init__(params, groups, lr, **options)

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
