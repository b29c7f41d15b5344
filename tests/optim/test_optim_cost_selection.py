"""Cost-aware selection (``cost_weight``, ``ParamGroup.cost``): our extension of H2SPG's saliency-only ranking."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from asgnas.optim import H2SPG, ParamGroup, ParamSlice
from asgnas.optim.scores import cost_aware_key
from optim_testlib import BranchNet, batches, is_zero, train


def _flat_score(xx, xd, dd, sizes):
    return torch.ones_like(xx)  # every group equally redundant: only the cost can order them


def _with_costs(groups: list[ParamGroup], costs: dict[int, float]) -> list[ParamGroup]:
    return [replace(g, cost=costs.get(g.id)) for g in groups]


class PathOracle:
    """Groups in ``path`` cannot all go (the last one is the only input->output path)."""

    def __init__(self, path: set[int]) -> None:
        self.path, self.removed, self.calls = path, set(), []

    def reset(self) -> None:
        self.removed = set()

    def try_remove(self, group_id: int) -> bool:
        self.calls.append(group_id)
        if self.path <= self.removed | {group_id}:
            return False
        self.removed.add(group_id)
        return True


def test_equal_saliency_costliest_groups_go_first():
    torch.manual_seed(0)
    model = BranchNet(stages=3, width=2)
    costs = {0: 0.1, 1: 0.2, 10: 0.9, 11: 0.3, 20: 0.8, 21: 0.05}
    groups = _with_costs(model.branch_groups(), costs)
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=2, warmup_steps=2, hard_zero_step=6,
                score_fn=_flat_score, cost_weight=1.0)
    train(model, opt, batches(8))
    assert opt.redundant_group_ids == [10, 20]
    assert sorted(opt.zero_group_ids) == [10, 20] and opt.metrics()["num_zero_groups"] == 2


def test_cost_weight_zero_is_the_saliency_order():
    torch.manual_seed(0)
    model = BranchNet(stages=3, width=2)
    groups = _with_costs(model.branch_groups(), {0: 0.1, 1: 0.2, 10: 0.9, 11: 0.3, 20: 0.8, 21: 0.05})
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=2, warmup_steps=2, hard_zero_step=6,
                score_fn=_flat_score)
    train(model, opt, batches(8))
    assert opt.redundant_group_ids == [0, 1]  # ties keep the caller's order (stable sort)


def test_cost_aware_selection_still_asks_the_oracle_and_meets_k():
    torch.manual_seed(1)
    model = BranchNet(stages=3, width=2)
    # the two costliest groups form stage 1 (ids 10, 11): erasing both would cut the network
    groups = _with_costs(model.branch_groups(), {0: 0.1, 1: 0.2, 10: 0.9, 11: 0.8, 20: 0.3, 21: 0.05})
    oracle = PathOracle({10, 11})
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=3, warmup_steps=2, hard_zero_step=6,
                score_fn=_flat_score, cost_weight=1.0, validity_oracle=oracle)
    train(model, opt, batches(8))
    assert oracle.calls == [10, 11, 20, 1]  # 11 refused, the next costliest taken until K = 3
    assert opt.redundant_group_ids == [1, 10, 20] and oracle.removed == {1, 10, 20}
    assert sorted(g.id for g in groups if is_zero(g)) == [1, 10, 20]


def test_costs_default_to_the_element_count():
    torch.manual_seed(2)
    model = BranchNet(stages=1, width=2, hidden=16)
    extra = torch.nn.Parameter(torch.ones(1000))  # unused by the forward pass; makes group 1 the larger one
    groups = [ParamGroup(0, [ParamSlice(p) for p in model.branches[0][0].parameters()]),
              ParamGroup(1, [ParamSlice(p) for p in model.branches[0][1].parameters()] + [ParamSlice(extra)])]
    opt = H2SPG(list(model.parameters()) + [extra], groups, lr=0.05, target_group_sparsity=1, warmup_steps=1,
                hard_zero_step=3, score_fn=_flat_score, cost_weight=0.5)
    train(model, opt, batches(4))
    assert opt.redundant_group_ids == [1]


def test_saliency_still_counts_against_cost():
    scores = np.array([1.0, 0.0, 0.5])
    costs = np.array([0.0, 1.0, 0.5])  # cost terms log10(1 + c / 1%): 0, 2.004, 1.708
    assert np.argsort(-cost_aware_key(scores, costs, 0.2), kind="stable").tolist() == [0, 2, 1]
    assert np.argsort(-cost_aware_key(scores, costs, 2.0), kind="stable").tolist() == [1, 2, 0]
    assert np.array_equal(cost_aware_key(scores, costs, 0.0), scores)
    key = cost_aware_key(np.array([1.0, -np.inf, 0.0]), np.array([0.0, 5.0, 1.0]), 3.0)
    assert key[1] == -np.inf and key[2] > key[0]  # an unscored group stays last however costly


def test_invalid_cost_options_are_refused():
    model = BranchNet(stages=1, width=2)
    with pytest.raises(ValueError, match="cost_weight"):
        H2SPG(model.parameters(), model.branch_groups(), lr=0.1, cost_weight=-1.0)
    with pytest.raises(ValueError, match="costs"):
        H2SPG(model.parameters(), _with_costs(model.branch_groups(), {0: -0.5}), lr=0.1, cost_weight=1.0)


# costs as fractions of the model (the tiny StackedUnets' removal_costs, rounded): three structures, three channels
STRUCTURES = {0: 0.05, 1: 0.31, 2: 0.52}
CHANNELS = {3: 0.006, 4: 0.011, 5: 0.038}


def _keys(costs: dict[int, float], weight: float, scores: dict[int, float] | None = None) -> dict[int, float]:
    ids = sorted(costs)
    s = np.array([1.0 if scores is None else scores[i] for i in ids])
    return dict(zip(ids, cost_aware_key(s, np.array([costs[i] for i in ids]), weight)))


@pytest.mark.parametrize("weight", [0.1, 1.0, 5.0])
def test_cost_term_is_one_scale_for_every_kind(weight):
    """A group's cost term does not depend on the other candidates: erase-only, prune-only and mixed candidate
    sets rank by cost alike on equal saliency, and the key gap between two groups is the same in each."""
    mixed = _keys({**STRUCTURES, **CHANNELS}, weight)
    for alone in (_keys(STRUCTURES, weight), _keys(CHANNELS, weight)):
        assert sorted(alone, key=alone.get) == sorted(alone, key=mixed.get)
        assert sorted(alone, key=alone.get) == sorted(alone, key={**STRUCTURES, **CHANNELS}.get)
        for a in alone:
            for b in alone:
                assert alone[a] - alone[b] == pytest.approx(mixed[a] - mixed[b])
    # the channel spread keeps its size beside the structures (min-max scaling shrank it ~16x)
    assert mixed[5] - mixed[3] == pytest.approx(weight * (np.log10(4.8) - np.log10(1.6)))


def test_saliency_against_cost_is_the_same_trade_with_and_without_structures():
    """Two channels, one more redundant and one costlier: which goes first does not change when structures join."""
    scores = {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.0, 4: 1.0, 5: 0.0}
    for weight in (0.3, 3.0):
        alone = _keys(CHANNELS, weight, scores)
        mixed = _keys({**STRUCTURES, **CHANNELS}, weight, scores)
        assert (alone[5] > alone[4]) == (mixed[5] > mixed[4])
    assert _keys(CHANNELS, 0.3, scores)[4] > _keys(CHANNELS, 0.3, scores)[5]  # low weight: saliency wins
    assert _keys(CHANNELS, 3.0, scores)[5] > _keys(CHANNELS, 3.0, scores)[4]  # high weight: the cost wins


def test_structures_joining_do_not_reorder_channels():
    """Saliency is scaled within each family: structures whose saliency widens the range (here far above and
    below the channels') leave the channels' order, and their key gaps, as they were alone."""
    ids = sorted({**STRUCTURES, **CHANNELS})
    scores = np.array([3.0, -1.0, 0.5, 0.2, 0.45, 0.1])  # structures 0-2, channels 3-5
    costs = np.array([{**STRUCTURES, **CHANNELS}[i] for i in ids])
    families = np.array(["erase"] * 3 + ["prune"] * 3)
    for weight in (0.3, 1.0, 3.0):
        alone = cost_aware_key(scores[3:], costs[3:], weight)
        mixed = cost_aware_key(scores, costs, weight, families)[3:]
        assert np.argsort(-alone, kind="stable").tolist() == np.argsort(-mixed, kind="stable").tolist()
        assert mixed - mixed[0] == pytest.approx(alone - alone[0])
    # one family for all (the former scaling) squeezes the channels' saliency: at weight 0.3 channel 4 (more
    # redundant) falls behind channel 5 (costlier), which it leads alone
    assert cost_aware_key(scores[3:], costs[3:], 0.3)[1] > cost_aware_key(scores[3:], costs[3:], 0.3)[2]
    assert cost_aware_key(scores, costs, 0.3)[4] < cost_aware_key(scores, costs, 0.3)[5]


def test_selection_scales_saliency_within_each_family(monkeypatch):
    """H2SPG hands the groups' families to the key: the first stage's branches are one family, the rest another."""
    import asgnas.optim.selection as selection

    seen = []

    def recording_key(scores, costs, weight, families=None):
        seen.append(list(families))
        return cost_aware_key(scores, costs, weight, families)

    monkeypatch.setattr(selection, "cost_aware_key", recording_key)
    torch.manual_seed(0)
    model = BranchNet(stages=3, width=2)
    groups = [replace(g, cost=0.1, family="erase" if g.id < 10 else "prune") for g in model.branch_groups()]
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=2, warmup_steps=2, hard_zero_step=6,
                cost_weight=1.0)
    train(model, opt, batches(8))
    assert seen == [["erase", "erase", "prune", "prune", "prune", "prune"]]


def test_a_family_without_spread_sits_in_the_middle():
    # a lone structure beside channel groups is neither the most nor the least redundant of the saliency range
    key = cost_aware_key(np.array([5.0, 0.1, 0.2]), np.zeros(3), 1e-6, np.array(["erase", "prune", "prune"]))
    assert key.tolist() == pytest.approx([0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match="families"):
        cost_aware_key(np.array([1.0, 2.0]), np.zeros(2), 1.0, np.array(["erase"]))


def test_weight_zero_is_the_saliency_order_exactly():
    scores = np.array([0.3, -np.inf, 0.7, 0.3])
    costs = np.array([0.5, 0.9, 0.0, 0.01])
    assert np.array_equal(cost_aware_key(scores, costs, 0.0), scores)
    assert np.argsort(-cost_aware_key(scores, costs, 0.0), kind="stable").tolist() == [2, 0, 3, 1]
