"""Selection orders beside the paper's saliency score.

``random_score(seed)``: a seeded random order of the removable groups, the same at every step, so H2SPG's
greedy walk still asks the validity oracle about every candidate and zeroes exactly K valid groups, just not the
most redundant ones. It is the ablation baseline that shows what the saliency score buys (train
``selection=random``, the "random" row of ``tools/reproduce.py``).
"""

from __future__ import annotations

import torch

from asgnas.optim.scores import ScoreFn


def random_score(seed: int) -> ScoreFn:
    """A score function (see :mod:`asgnas.optim.scores`) that ignores the statistics and returns one fixed,
    seeded random score per group, so the score average H2SPG keeps over the warm-up is that same order."""
    cache: dict[int, torch.Tensor] = {}

    def score(xx: torch.Tensor, xd: torch.Tensor, dd: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        n = xx.numel()
        if n not in cache:
            cache[n] = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return cache[n].to(device=xx.device, dtype=xx.dtype)

    return score
