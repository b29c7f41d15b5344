"""The options H2SPG and DHSPG share, declared once: one dataclass, validated at construction.

``H2SPG(params, groups, lr=..., **options)`` / ``DHSPG(...)`` take these as keyword arguments (H2SPG also
``validity_oracle``); an unknown keyword is a ``TypeError``, a bad value a ``ValueError``, as torch's optimizers.

Options (beyond torch's usual ``params``/``lr``; ``groups``: all zero-invariant groups, non-removable ones are
trained but never projected):
    target_group_sparsity: float in [0, 1] = fraction of removable groups, int = exact count K.
    variant: base optimizer, ``"sgd"`` (with ``momentum``/``nesterov``), ``"adam"`` (L2 weight decay)
        or ``"adamw"`` (decoupled weight decay).
    momentum, nesterov, betas, eps, weight_decay: as in torch.optim.SGD / Adam / AdamW (the defaults of a
        param group; momentum and nesterov are SGD's).
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
    score_momentum: omega of the score EMA (the EMA starts at the first score, includes step T_w); default 0.9
        for H2SPG, 0 for DHSPG (the partition step's score alone, as OTOv2).
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
        ``force_zero_redundant()`` does the same on demand.
    warmup_fraction, hard_zero_fraction: with ``total_steps``, the shares of it that give ``warmup_steps``
        and ``hard_zero_step`` (defaults 0.2 and 0.5, need 0 <= warmup < hard_zero <= 1).
    steady_shrink: (ours, default: on with ``total_steps``) a chosen group shrinks by at least lr * lmbda a
        step against the gradient, so the projection, not the forced step, zeroes it
        (:mod:`asgnas.optim.projection`).
    score_normalization: ``"count"`` (|x|/n, DHSPG) or ``"sqrt"`` (|x|/sqrt(n)) for the magnitude term.
    score_fn: optional replacement of the default saliency score (see :mod:`asgnas.optim.scores`).
    cost_weight: (H2SPG only) 0 (default) ranks by saliency alone, as the paper; > 0 ranks by
        :func:`asgnas.optim.scores.cost_aware_key` (saliency plus ``cost_weight`` times the group's
        ``ParamGroup.cost`` on a fixed log scale), so that costly structures go first among comparably
        redundant ones. The validity oracle is consulted either way and K stays exact.
    selection_filter: optional callable given the selected group ids (most redundant first) and returning
        the subset to zero, e.g. ``asgnas.bridge.training.channel_rounding`` so that every channel space
        keeps a multiple of a kernel's block size; what it gives back is ``metrics()['selection_filtered_out']``
        (K is then an upper bound).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .base_step import LAMBDA_DEFAULTS
from .scores import ScoreFn

__all__ = ["SparseOptions"]


@dataclass
class SparseOptions:
    """Every option of the hybrid engine (see the module docstring); checked on construction."""

    lr: float
    target_group_sparsity: float | int = 0.5
    variant: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: Optional[int] = None
    score_momentum: float = 0.9
    lmbda: Optional[float] = None
    lmbda_amplify: Optional[float] = None
    hat_lmbda_coeff: Optional[float] = None
    epsilon: Optional[float] = None
    projection_start: Optional[int] = None
    penalty_start: Optional[int] = None
    hard_zero_step: Optional[int] = None
    score_normalization: str = "count"
    score_fn: Optional[ScoreFn] = None
    cost_weight: float = 0.0
    selection_filter: Optional[Callable[[list[int]], Sequence[int]]] = None
    total_steps: Optional[int] = None
    warmup_fraction: Optional[float] = None
    hard_zero_fraction: Optional[float] = None
    steady_shrink: Optional[bool] = None

    def __post_init__(self) -> None:
        self.variant = self.variant.lower()
        if self.variant not in LAMBDA_DEFAULTS:
            raise ValueError(f"variant must be one of {sorted(LAMBDA_DEFAULTS)}, got {self.variant!r}")
        if self.lr < 0:
            raise ValueError(f"invalid lr {self.lr}")
        if self.nesterov and (self.variant != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs variant='sgd' and momentum > 0")
        if not 0.0 <= self.score_momentum < 1.0:
            raise ValueError("score_momentum must lie in [0, 1)")
        if self.score_normalization not in ("count", "sqrt"):
            raise ValueError("score_normalization must be 'count' or 'sqrt'")
        if not self.cost_weight >= 0.0:
            raise ValueError("cost_weight must be >= 0")

    @classmethod
    def from_keywords(cls, owner: str, lr: float, options: Mapping[str, Any], defaults: Mapping[str, Any],
                      refused: frozenset[str] = frozenset()) -> "SparseOptions":
        """``owner``'s keyword arguments over its ``defaults``; an unknown or ``refused`` keyword is a TypeError
        naming ``owner``, as for a plain signature."""
        known = {f.name for f in dataclasses.fields(cls)} - {"lr"} - refused
        for key in options:
            if key not in known:
                raise TypeError(f"{owner}() got an unexpected keyword argument {key!r}")
        return cls(lr=lr, **{**defaults, **options})
