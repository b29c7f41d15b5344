"""Selection of the redundant groups at the end of warm-up (mixed into the hybrid engine): rank by saliency
(optionally cost-aware), let the subclass choose (H2SPG: greedy with a validity oracle; DHSPG: top-K), adopt
rank 0's choice under torch.distributed, apply the caller's ``selection_filter``."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from .scores import cost_aware_key

__all__ = ["GroupSelection"]


class GroupSelection:
    """Selection steps of :class:`asgnas.optim.hybrid.HybridSparseOptimizer` (reads its layout, scores and
    options; ``_refresh`` re-plans the passes once the redundant set is known)."""

    def _select_groups(self, order: list[int], k: int) -> list[int]:
        """Choose up to k compact group indices from ``order`` (most redundant first)."""
        raise NotImplementedError

    def _sync_selection(self, chosen: list[int]) -> list[int]:
        """Under torch.distributed every rank adopts rank 0's choice (public API only)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return chosen
        box: list[Any] = [chosen if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        theirs = [int(i) for i in box[0]]
        if theirs != chosen:
            self._on_selection_overridden(theirs)
        return theirs

    def _on_selection_overridden(self, chosen: list[int]) -> None:
        """Hook: the selection is not the walk's own (rank 0's differed, or the selection filter trimmed it);
        H2SPG re-syncs its oracle."""

    def _select(self, gs: dict[str, Any]) -> None:
        rem_idx = torch.nonzero(self.layout.removable).flatten().tolist()
        k = self.target_count
        if gs["scores"] is None:
            scores = np.zeros(len(rem_idx))
        else:
            scores = gs["scores"].detach().to("cpu", torch.float64).numpy()[rem_idx]
        scores = np.where(np.isnan(scores), -np.inf, scores)
        families = np.array([self.layout.groups[i].family for i in rem_idx])
        scores = cost_aware_key(scores, self._costs[rem_idx], self.cost_weight, families)
        # stable sort: equal scores keep the caller's group order, identical on every rank
        order = [rem_idx[i] for i in np.argsort(-scores, kind="stable")]
        chosen = self._select_groups(order, k) if k > 0 else []
        chosen = self._sync_selection(chosen)
        shortfall = k - len(chosen)
        if shortfall > 0:
            warnings.warn(
                f"{type(self).__name__}: only {len(chosen)} of the {k} requested groups could be selected "
                f"without breaking validity; training continues with {len(chosen)}",
                RuntimeWarning,
                stacklevel=3,
            )
        selected = len(chosen)
        if self.selection_filter is not None and chosen:
            chosen = self._apply_selection_filter(chosen)
        red = torch.zeros(self.layout.n_groups, dtype=torch.bool)
        if chosen:
            red[torch.tensor(chosen, dtype=torch.long)] = True
        gs["redundant"] = red
        gs["selected"] = True
        gs["shortfall"] = shortfall
        gs["filtered_out"] = selected - len(chosen)
        self._refresh()

    def _apply_selection_filter(self, chosen: list[int]) -> list[int]:
        """The caller's ``selection_filter`` sees group ids (most redundant first) and returns the ones to keep,
        a subset (e.g. so that kept channel counts are multiples of a block size); the oracle follows it."""
        ids = self.layout.ids
        keep = {int(i) for i in self.selection_filter([ids[gi] for gi in chosen])}
        unknown = keep - {ids[gi] for gi in chosen}
        if unknown:
            raise ValueError(f"selection_filter returned groups that were not selected: {sorted(unknown)[:10]}")
        kept = [gi for gi in chosen if ids[gi] in keep]
        if len(kept) < len(chosen):
            self._on_selection_overridden(kept)
        return kept
