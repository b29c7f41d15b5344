"""The projection of the hybrid phase (mixed into the hybrid engine): lambda per redundant group (DHSPG's
adaptive rule, ``steady_shrink``), the half-space test ``<x_trial, x> >= epsilon |x|^2`` from group sums, the
forced zeros at ``hard_zero_step``, and the per-slot factors pass 2 multiplies x by."""
from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["HalfSpaceProjection", "group_lambda"]


def group_lambda(XX: torch.Tensor, XD: torch.Tensor, DD: torch.Tensor, nx: torch.Tensor, safe_nx: torch.Tensor,
                 lmbda: float, lmbda_amplify: float, hat_lmbda_coeff: float, steady_shrink: bool,
                 adaptive: bool) -> torch.Tensor:
    """lambda_g per group from its sums |x|^2, <x,d>, |d|^2, its norm ``nx`` and ``safe_nx`` (the norm, 1 where it
    is 0): the fixed ``lmbda`` before ``penalty_start`` (``adaptive`` False), then DHSPG's adaptive rule, lifted by
    ``steady_shrink``."""
    lam = torch.full_like(XX, lmbda)
    if adaptive:
        # DHSPG rule: for <x,d> < 0 keep the step a descent direction of f while shrinking |x|
        neg = XD < 0
        lam_min = -XD / safe_nx
        lam_max = -DD * nx / torch.where(neg, XD, -torch.ones_like(XD))
        lam_ad = (lmbda_amplify * lam_min).clamp(lmbda, lmbda * hat_lmbda_coeff)
        lam_ad = torch.where(lam_ad >= lam_max, 0.5 * (lam_min + lam_max), lam_ad)
        lam = torch.where(neg, lam_ad, lam)
        if steady_shrink:
            # ours (budget mode): however hard the gradient pulls a chosen group outward, it still shrinks by
            # lr * lmbda a step, so it reaches zero by projection within the window that budget_lambda sized,
            # not abruptly at the forced step; DHSPG's descent safeguard would stall it (lambda_max cap)
            lam = torch.maximum(lam, torch.where(neg, lam_min, torch.zeros_like(lam)) + lmbda)
    return lam


class HalfSpaceProjection:
    """Hybrid-phase decisions of :class:`asgnas.optim.hybrid.HybridSparseOptimizer`, vectorised over groups
    (reads its options, stat buffers and scale plans)."""

    def _hybrid_decisions(self, gs: dict[str, Any], t: int, acc: torch.Tensor, accw: Optional[torch.Tensor],
                          uniform: bool) -> torch.Tensor:
        """Adaptive lambda, half-space test and forced zeros, vectorised over groups.

        Returns ``coef`` = lambda_g / |x_g| for groups that stay active (0 elsewhere); marks the newly zero
        groups in the state.
        """
        XX, XD, DD = acc[0], acc[1], acc[2]
        if uniform:
            hp = self._uniform_hp
            XXl, XDl, XXa = hp["lr"] * XX, hp["lr"] * XD, (1.0 - hp["lr"] * hp["wdd"]) * XX
        else:
            XXl, XDl, XXa = accw[0], accw[1], XX - accw[2]
        active = self._active_dev
        nx = XX.clamp_min(0).sqrt()
        pos = nx > 0
        safe_nx = torch.where(pos, nx, torch.ones_like(nx))
        lam = group_lambda(XX, XD, DD, nx, safe_nx, self.lmbda, self.lmbda_amplify, self.hat_lmbda_coeff,
                           self.steady_shrink, adaptive=t >= self.penalty_start)
        coef = torch.where(active & pos, lam / safe_nx, torch.zeros_like(lam))
        project = active & ~pos  # a redundant group that is exactly zero already joins the zero set
        if t >= self.projection_start:
            # <x_trial, x> from group sums, no extra pass over the tensors
            cross = self._overlap_cross(coef, uniform) if self.layout.has_overlap else coef * XXl
            inner = XXa - cross - XDl
            project = project | (active & (inner < self.epsilon * XX))
        forced = torch.zeros_like(project)
        if self.hard_zero_step is not None and t + 1 >= self.hard_zero_step:
            forced = active & ~project
            project = project | forced
        keep_active = active & ~project
        coef = torch.where(keep_active, coef, torch.zeros_like(coef))
        self._last = {"lambda": lam, "lambda_mask": keep_active}

        # the one host sync of a hybrid step: which groups became zero (re-plans the parameter passes)
        newly = torch.nonzero(project).flatten().cpu()
        if newly.numel():
            n_forced = int(forced.sum())
            gs["zero"][newly] = True
            gs["forced"] += n_forced
            gs["projected"] += int(newly.numel()) - n_forced
            self._refresh()
        return coef

    def _overlap_cross(self, coef: torch.Tensor, uniform: bool) -> torch.Tensor:
        """sum over the slots of g of lr * |x_slot|^2 * (sum of lambda_h/|x_h| over the active groups h holding
        the slot): the group-lasso part of <x_trial, x> when groups overlap (penalties of nested groups add)."""
        cross = torch.zeros_like(coef)
        for key, sb in self._stat.items():
            vals = self._vals[key]
            cs = torch.zeros(sb["ncols"], device=self._home, dtype=coef.dtype)
            cs.index_add_(0, sb["mcols"], coef.index_select(0, sb["mgids"]))
            term = cs * vals[0]
            if uniform:
                cross.index_add_(0, sb["mgids"], term.index_select(0, sb["mcols"]), alpha=self._uniform_hp["lr"])
            else:
                for e, hp, _ in self._stat_entries:
                    if e.key == key:
                        cross.index_add_(0, e.mgids, term.index_select(0, e.mcols), alpha=hp["lr"])
        return cross

    def _slot_scales(self, coef: torch.Tensor, hps: dict[int, dict]) -> dict[int, list]:
        """Per-slot factor on x for every redundant-bearing tensor: 1 - lr*wd_dec - lr * (sum of lambda_g/|x_g|
        over the slot's active groups), 0 on zero slots; one gather + one scatter per (device, dtype).  Returns
        each tensor's per-chunk broadcast views of the factors."""
        out: dict[int, list] = {}
        for key, plan in self._scale_plan.items():
            c = coef.to(device=key[0], dtype=key[1])
            s = plan["buf"].zero_()
            s.index_add_(0, plan["mcol"], c.index_select(0, plan["mgid"]))
            ents = plan["entries"]
            hp0 = hps[id(ents[0].group)]
            if len({(hps[id(e.group)]["lr"], hps[id(e.group)]["pre"]) for e in ents}) == 1:
                s.mul_(-hp0["lr"]).add_(hp0["pre"])
            else:
                for e, part in zip(ents, s.split(plan["sizes"])):
                    hp = hps[id(e.group)]
                    part.mul_(-hp["lr"]).add_(hp["pre"])
            if plan["keep"] is not None:
                s.mul_(plan["keep"])
            for e in ents:
                out[id(e)] = e.scaleviews
        return out
