"""The step schedule of H2SPG / DHSPG, derived from the training budget (``total_steps``) or given explicitly.

From a budget of N optimizer steps: warm-up (the selection step) at ``warmup_fraction`` of N (1/5, spec 3.5),
the forced-zero safeguard T_end at ``hard_zero_fraction`` of N (1/2, ours: forcing at 3/4 left the sub-network
only the low-lr tail to recover, docs/BENCHMARKS.md), projection and adaptive penalty from the selection step
on, a group-lasso strength that can shrink a typical group to zero between the two (:func:`budget_lambda`) and
the half-space threshold ``BUDGET_EPSILON``.  Without a budget the caller's ``warmup_steps`` is the schedule and
the DHSPG code defaults apply (lambda per variant, epsilon 0, no forced step unless ``hard_zero_step``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .param_groups import ParamGroup

__all__ = ["BUDGET_EPSILON", "DEFAULT_HARD_ZERO_FRACTION", "DEFAULT_WARMUP_FRACTION", "MISSING_SCHEDULE",
           "SparseSchedule", "budget_lambda", "resolve_schedule"]

DEFAULT_WARMUP_FRACTION = 0.2
DEFAULT_HARD_ZERO_FRACTION = 0.5
#: project a group once a step would shrink it by 10% or more: it is then close to zero (HSPG's epsilon)
BUDGET_EPSILON = 0.9
MISSING_SCHEDULE = ("pass total_steps=<number of optimizer steps you will run> (or an explicit warmup_steps, "
                    "with hard_zero_step for the forced-zero step)")


@dataclass(frozen=True)
class SparseSchedule:
    """Resolved schedule; ``total_steps`` is ``None`` for an explicit one, ``lmbda`` ``None`` for the variant's
    default, ``hard_zero_step`` ``None`` for no forced step."""

    total_steps: Optional[int]
    warmup_steps: int
    hard_zero_step: Optional[int]
    projection_start: int
    penalty_start: int
    lmbda: Optional[float]
    epsilon: float


def resolve_schedule(
    groups: Sequence[ParamGroup],
    lr: float,
    *,
    total_steps: Optional[int],
    warmup_steps: Optional[int],
    hard_zero_step: Optional[int],
    projection_start: Optional[int],
    penalty_start: Optional[int],
    lmbda: Optional[float],
    epsilon: Optional[float],
    warmup_fraction: Optional[float],
    hard_zero_fraction: Optional[float],
) -> SparseSchedule:
    """Explicit values win over the ones derived from ``total_steps``; see the module docstring."""
    if total_steps is None:
        if warmup_steps is None:
            raise ValueError(MISSING_SCHEDULE)
        if warmup_fraction is not None or hard_zero_fraction is not None:
            raise ValueError("warmup_fraction and hard_zero_fraction need total_steps")
        return _with_window(None, warmup_steps, hard_zero_step, projection_start, penalty_start, lmbda,
                            0.0 if epsilon is None else epsilon)
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    total = int(total_steps)
    wf = DEFAULT_WARMUP_FRACTION if warmup_fraction is None else float(warmup_fraction)
    hf = DEFAULT_HARD_ZERO_FRACTION if hard_zero_fraction is None else float(hard_zero_fraction)
    if not 0.0 <= wf < hf <= 1.0:
        raise ValueError(f"need 0 <= warmup_fraction < hard_zero_fraction <= 1, got {wf} and {hf}")
    warmup = max(1, int(total * wf)) if warmup_steps is None else warmup_steps
    hard = max(warmup + 1, int(total * hf)) if hard_zero_step is None else hard_zero_step
    if lmbda is None:
        lmbda = budget_lambda(groups, lr, total, warmup, hard)
    return _with_window(total, warmup, hard, projection_start, penalty_start, lmbda,
                        BUDGET_EPSILON if epsilon is None else epsilon)


def _with_window(total: Optional[int], warmup: int, hard: Optional[int], projection_start: Optional[int],
                 penalty_start: Optional[int], lmbda: Optional[float], epsilon: float) -> SparseSchedule:
    if warmup < 0:
        raise ValueError("warmup_steps must be >= 0")
    # penalty/projection cannot start before the redundant set exists
    return SparseSchedule(total, int(warmup), None if hard is None else int(hard),
                          max(warmup, warmup if projection_start is None else projection_start),
                          max(warmup, warmup if penalty_start is None else penalty_start),
                          None if lmbda is None else float(lmbda), float(epsilon))


def budget_lambda(groups: Sequence[ParamGroup], lr: float, total_steps: int, warmup_steps: int,
                  hard_zero_step: int) -> float:
    """Group-lasso strength that can shrink a typical group to zero within the hybrid phase.

    A group-lasso step shrinks a group's norm by about lr * lambda; over the hybrid phase (warm-up to the forced
    zeros, under a cosine decay of lr over ``total_steps``, the train loop's, whose mean scale there it uses) that
    must reach the mean removable-group norm, or only the safeguard would zero groups (abruptly, costing
    accuracy). With a constant lr the groups only get there sooner. The DHSPG defaults (1e-3) assume hundreds of
    epochs.
    """
    with torch.no_grad():
        norms = [
            math.sqrt(sum(float((s.param.detach() if s.indices is None else
                                 s.param.detach().index_select(s.axis, torch.as_tensor(list(s.indices),
                                                                                       device=s.param.device)))
                                .pow(2).sum()) for s in g.slices))
            for g in groups if g.removable and g.slices
        ]
    if not norms:
        return 1e-3
    span = range(warmup_steps, hard_zero_step)
    mean_scale = sum(0.5 * (1 + math.cos(math.pi * t / total_steps)) for t in span) / max(len(span), 1)
    return 3.0 * float(np.mean(norms)) / max(lr * mean_scale * max(len(span), 1), 1e-12)
