"""``selection_filter``: the caller trims the selected set (e.g. to hardware-friendly channel counts)."""
from __future__ import annotations

import pytest
import torch

from asgnas.optim import DHSPG, H2SPG
from optim_testlib import ConvNet, batches, is_zero, train


def _keep_multiple_of_4():
    """Trim each conv's chosen channels (ids 0-7: conv1, 8-19: conv2) so that it keeps a multiple of 4."""
    def trim(ids: list[int]) -> list[int]:
        keep = []
        for lo, hi in ((0, 8), (8, 20)):
            mine = [i for i in ids if lo <= i < hi]
            kept = (hi - lo) - len(mine)
            extra = -kept % 4
            keep += mine[:len(mine) - extra]
        return keep
    return trim


@pytest.mark.parametrize("optimizer", [DHSPG, H2SPG])
def test_filter_trims_the_selection_and_only_the_kept_groups_go_to_zero(optimizer):
    torch.manual_seed(0)
    model = ConvNet()  # 8 + 12 channel groups
    groups = model.channel_groups()
    opt = optimizer(model.parameters(), groups, lr=0.05, target_group_sparsity=9, warmup_steps=2, hard_zero_step=6,
                    selection_filter=_keep_multiple_of_4())
    train(model, opt, batches(8))
    zero = sorted(g.id for g in groups if is_zero(g))
    kept_conv1, kept_conv2 = 8 - sum(i < 8 for i in zero), 12 - sum(i >= 8 for i in zero)
    assert kept_conv1 % 4 == 0 and kept_conv2 % 4 == 0
    metrics = opt.metrics()
    assert metrics["num_zero_groups"] == len(zero) == metrics["num_redundant"] == 9 - metrics["selection_filtered_out"]
    assert metrics["selection_filtered_out"] > 0 and metrics["selection_shortfall"] == 0


def test_h2spg_oracle_holds_exactly_the_filtered_set():
    class Recording:
        def __init__(self) -> None:
            self.removed: set[int] = set()

        def reset(self) -> None:
            self.removed = set()

        def try_remove(self, group_id: int) -> bool:
            self.removed.add(group_id)
            return True

    torch.manual_seed(1)
    model = ConvNet()
    oracle = Recording()
    opt = H2SPG(model.parameters(), model.channel_groups(), lr=0.05, target_group_sparsity=9, warmup_steps=2,
                hard_zero_step=6, validity_oracle=oracle, selection_filter=_keep_multiple_of_4())
    train(model, opt, batches(4))
    assert oracle.removed == set(opt.redundant_group_ids) and len(oracle.removed) < 9


def test_filter_may_not_add_groups():
    model = ConvNet()
    opt = DHSPG(model.parameters(), model.channel_groups(), lr=0.05, target_group_sparsity=2, warmup_steps=1,
                selection_filter=lambda ids: ids + [19 if 19 not in ids else 18])
    with pytest.raises(ValueError, match="not selected"):
        train(model, opt, batches(3))
