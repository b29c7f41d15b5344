"""What the hybrid engine reports (mixed into it): selected and zero group ids, scores, group norms and the
``metrics()`` progress dict."""
from __future__ import annotations

from typing import Any, Optional

import torch

from .entry import SLOT

__all__ = ["EngineReport"]


class EngineReport:
    """Read-only views of :class:`asgnas.optim.hybrid.HybridSparseOptimizer`'s state."""

    @property
    def redundant_group_ids(self) -> list[int]:
        """Caller ids of the selected redundant groups (empty before selection)."""
        gs = self._gstate()
        return [self.layout.ids[i] for i in torch.nonzero(gs["redundant"]).flatten().tolist()]

    @property
    def zero_group_ids(self) -> list[int]:
        """Caller ids of the redundant groups this optimizer has set to zero so far."""
        gs = self._gstate()
        return [self.layout.ids[i] for i in torch.nonzero(gs["zero"]).flatten().tolist()]

    @property
    def scores(self) -> Optional[torch.Tensor]:
        """Current saliency scores (compact group order; NaN for non-removable groups)."""
        s = self._gstate()["scores"]
        return None if s is None else s.detach().clone()

    @torch.no_grad()
    def group_norms(self) -> torch.Tensor:
        """L2 norm of every group's current values (compact group order); one pass over grouped tensors."""
        acc = torch.zeros(self.layout.n_groups, device=self._home, dtype=self._acc_dtype)
        for e in self._entries:
            if e.binding is None:
                continue
            p = e.param
            if e.mode == SLOT:
                q = p.view(p.shape[0], -1) if e.rows else p
                v = p.pow(2) if p.dim() == 1 else torch.linalg.vector_norm(q, dim=e.other_dims).square()
            else:
                v = torch.linalg.vector_norm(p).square().reshape(1)
            v = v.reshape(-1).to(self._home, self._acc_dtype)
            acc.index_add_(0, e.mgids, v.index_select(0, torch.from_numpy(e.binding.mem_slot).to(self._home)))
        return acc.sqrt()

    def _phase(self, gs: dict[str, Any]) -> str:
        if not gs["selected"]:
            return "warmup"
        forced_done = self.hard_zero_step is not None and gs["step"] >= self.hard_zero_step
        return "tail" if forced_done else "hybrid"

    def metrics(self) -> dict[str, Any]:
        """Progress report (costs one read pass over the grouped tensors).

        Keys: ``step`` (completed steps), ``phase`` ('warmup' | 'hybrid' | 'tail': after the forced-zero step, the
        redundant groups held at zero while the rest train), ``variant``, ``num_groups``,
        ``num_removable``, ``target_count`` (K), ``num_redundant`` (selected), ``selection_shortfall``,
        ``selection_filtered_out`` (selected groups the ``selection_filter`` gave back),
        ``num_zero_groups`` / ``group_sparsity`` (removable groups that are exactly zero now, measured),
        ``num_redundant_zero``, ``redundant_norm_sum``, ``important_norm_sum`` (all non-redundant groups),
        ``forced_zero_groups``, ``projected_groups``, ``target_reached``, ``lambda_mean`` (last step, active
        redundant groups), ``score_steps``.
        """
        gs = self._gstate()
        norms = self.group_norms()
        rem = self._removable_dev
        red = gs["redundant"].to(self._home)
        is_zero = norms == 0
        n_rem = self.layout.n_removable
        n_zero = int((is_zero & rem).sum())
        n_red_zero = int((is_zero & red).sum())
        lam, lam_mask = self._last.get("lambda"), self._last.get("lambda_mask")
        lam = None if lam is None else lam[lam_mask]
        return {
            "step": gs["step"],
            "phase": self._phase(gs),
            "variant": self.variant,
            "num_groups": self.layout.n_groups,
            "num_removable": n_rem,
            "target_count": self.target_count,
            "num_redundant": int(gs["redundant"].sum()),
            "selection_shortfall": gs["shortfall"],
            "selection_filtered_out": gs.get("filtered_out", 0),
            "num_zero_groups": n_zero,
            "group_sparsity": n_zero / n_rem if n_rem else 0.0,
            "num_redundant_zero": n_red_zero,
            "redundant_norm_sum": float(norms[red].sum()),
            "important_norm_sum": float(norms[~red].sum()),
            "forced_zero_groups": gs["forced"],
            "projected_groups": gs["projected"],
            "target_reached": bool(gs["selected"]) and n_red_zero == int(gs["redundant"].sum()),
            "lambda_mean": float(lam.mean()) if lam is not None and lam.numel() else float("nan"),
            "score_steps": gs["score_steps"],
        }
