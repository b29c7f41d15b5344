"""Saliency (redundancy) scores for groups; larger score = more redundant (PAPER_SPEC section 3.2).

The default follows DHSPG's partition rule: with x_g the group's variables and d_g the base optimizer's
direction (gradient, momentum buffer or Adam-normalised step),

    c_g = <x_g, d_g> / (|x_g| |d_g|)          cosine of -x_g and -d_g (descent points to the origin)
    a_g = |x_g| / n_g    ("count")  or  |x_g| / sqrt(n_g)  ("sqrt")
    s_g = 0.5 * c_g / |c|_2  +  0.5 * inv_g / |inv|_2,   inv_g = 1 / (a_g + 1e-6)

Everything is computed from per-group sums (|x|^2, <x,d>, |d|^2) so that one batched reduction per
parameter suffices.  A custom score is any callable with the signature of :func:`saliency_score`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

__all__ = ["saliency_score", "cost_aware_key", "ScoreFn"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def saliency_score(
    xx: torch.Tensor,
    xd: torch.Tensor,
    dd: torch.Tensor,
    sizes: torch.Tensor,
    normalization: str = "count",
) -> torch.Tensor:
    """Score every group from its sums ``xx = |x|^2``, ``xd = <x, d>``, ``dd = |d|^2`` and element counts.

    All inputs are 1-D tensors over the scored groups (same device).  Returns a float tensor of the same
    length; ties and degenerate groups (|x| = 0 or |d| = 0) get cosine 0.
    """
    nx = xx.clamp_min(0).sqrt()
    nd = dd.clamp_min(0).sqrt()
    denom = nx * nd
    cos = torch.where(denom > 0, xd / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(xd))
    if normalization == "count":
        avg = nx / sizes
    elif normalization == "sqrt":
        avg = nx / sizes.sqrt()
    else:
        raise ValueError(f"unknown score normalization {normalization!r} (use 'count' or 'sqrt')")
    inv = 1.0 / (avg + 1e-6)
    return 0.5 * _unit(cos) + 0.5 * _unit(inv)


def _unit(v: torch.Tensor) -> torch.Tensor:
    # v == 0 everywhere gives 0 / tiny = 0; avoids a host sync on accelerators
    return v / torch.linalg.vector_norm(v).clamp_min(torch.finfo(v.dtype).tiny)


#: cost (as a fraction of the model's total) at which the cost term turns from linear to logarithmic
COST_KNEE = 0.01


def cost_aware_key(scores: np.ndarray, costs: np.ndarray, cost_weight: float,
                   families: np.ndarray | None = None) -> np.ndarray:
    """Selection key of cost-aware selection (our extension; the paper ranks by saliency alone).

    ``key = (s - min s) / (max s - min s) + cost_weight * log10(1 + c / COST_KNEE)``, where ``c`` is the group's
    cost as a fraction of the whole model's (params and MACs, or latency: ``asgnas.bridge.selection_costs``).
    The saliency term spans [0, 1] over the candidates of the group's family (``families``: sets that fill quotas
    of their own, e.g. structures and channel groups under ``kind=both,prune-target``; one family when None), so
    structures joining the candidates do not rescale the channels' saliency against their cost; a family whose
    candidates all score alike sits at 0.5. The cost term is on one fixed scale that does not depend on which
    groups are candidates, so one ``cost_weight`` means the same for structures alone, channel groups alone or both
    (min-max scaling of the cost let the few huge structures squeeze every channel group into the bottom ~1/16 of
    the range). The scale is linear below the 1% knee (a group that saves nothing gets 0, not minus infinity, so noisy
    zero latency savings are harmless) and logarithmic above it, so a structure holding half the model counts 1.7
    and does not drown the saliency: 0.1% -> 0.04, 1% -> 0.30, 10% -> 1.04, 50% -> 1.71. Weight 1 thus trades the
    whole saliency range for about a tenfold cost above the knee. With weight 0 the key is the saliency itself
    (the paper's order); non-finite scores (groups never scored) stay last.
    """
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    if cost_weight == 0.0 or not finite.any():
        return scores
    families = np.zeros(len(scores), dtype=int) if families is None else np.asarray(families)
    if families.shape != scores.shape:
        raise ValueError(f"families has shape {families.shape}, scores {scores.shape}")
    saliency = np.zeros_like(scores)
    finite_scores = np.where(finite, scores, 0.0)
    for family in np.unique(families):
        member = families == family
        saliency[member] = _minmax(finite_scores, finite & member)[member]
    key = saliency + cost_weight * np.log10(1.0 + np.asarray(costs, np.float64) / COST_KNEE)
    return np.where(finite, key, -np.inf)


def _minmax(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # no spread (one candidate, or equal scores): the middle, so a lone structure is not ranked least redundant
    if not mask.any():
        return np.full_like(v, 0.5)
    lo, hi = v[mask].min(), v[mask].max()
    return (v - lo) / (hi - lo) if hi > lo else np.full_like(v, 0.5)
