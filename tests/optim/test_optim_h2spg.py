"""H2SPG / DHSPG behaviour: training, exact targets, absorbing zeros, oracle, variants, metrics."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from asgnas.optim import DHSPG, H2SPG, ParamGroup, ParamSlice
from optim_testlib import BranchNet, ConvNet, MatMulMLP, batches, full_loss, group_values, is_zero, train

VARIANTS = [
    ("sgd", dict(lr=0.1)),
    ("sgd-momentum", dict(lr=0.05, momentum=0.9, weight_decay=1e-4)),
    ("sgd-nesterov", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("adam", dict(variant="adam", lr=0.01)),
    ("adamw", dict(variant="adamw", lr=0.01, weight_decay=1e-2)),
]


@pytest.mark.parametrize("name,kw", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_variants_reach_exact_target_and_zeros_stay(name, kw):
    torch.manual_seed(0)
    model = ConvNet()
    groups = model.channel_groups()
    steps, hard = 90, 60
    opt = H2SPG(model.parameters(), groups, target_group_sparsity=0.4, warmup_steps=15, hard_zero_step=hard, **kw)
    k = opt.target_count
    assert k == round(0.4 * len(groups))
    loss0 = full_loss(model)
    seen = {}

    def check(t):
        m = opt.metrics()
        if t + 1 < hard:
            assert m["num_zero_groups"] <= k
        if t + 1 == hard:  # exactly K zero groups by the stated step
            assert m["num_zero_groups"] == k and m["target_reached"]
            seen["zero_ids"] = set(opt.zero_group_ids)
            seen["values"] = {g.id: group_values(g).clone() for g in groups}
        if t + 1 > hard:  # zeros are absorbing; and the count stays exact
            assert m["num_zero_groups"] == k
            for g in groups:
                if g.id in seen["zero_ids"]:
                    assert is_zero(g), f"group {g.id} revived at step {t}"

    train(model, opt, batches(steps), hook=check)
    assert set(opt.zero_group_ids) == set(opt.redundant_group_ids) == seen["zero_ids"]
    assert len(seen["zero_ids"]) == k
    # the optimizer state of zero groups is reset too (nothing left to revive them)
    for g in groups:
        if g.id in seen["zero_ids"]:
            for sl in g.slices:
                for v in opt.state[sl.param].values():
                    if torch.is_tensor(v) and v.shape == sl.param.shape:
                        assert (v.index_select(sl.axis, torch.as_tensor(sl.indices)) == 0).all()
    # important groups keep training and the network still learns
    assert full_loss(model) < 0.6 * loss0


def test_loss_decreases_and_natural_projection():
    """Without the safeguard, the adaptive group lasso + half-space projection zeroes groups by itself."""
    torch.manual_seed(1)
    model = MatMulMLP()
    groups = model.neuron_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.1, momentum=0.9, target_group_sparsity=0.5, warmup_steps=10,
                lmbda=5.0, epsilon=0.5)
    loss0 = full_loss(model)
    train(model, opt, batches(100, seed=3))
    m = opt.metrics()
    assert m["forced_zero_groups"] == 0
    assert m["projected_groups"] == m["num_redundant_zero"] == m["num_zero_groups"] >= 0.8 * opt.target_count
    assert set(opt.zero_group_ids) <= set(opt.redundant_group_ids)
    assert full_loss(model) < 0.2 * loss0


def test_non_removable_groups_never_zeroed():
    torch.manual_seed(2)
    model = MatMulMLP(hidden=16, n_fixed=6)
    # make the fixed neurons look the most redundant (tiny norms), so a wrong selection would pick them
    with torch.no_grad():
        model.w1[:, :6] *= 1e-3
        model.s[:6] = 1e-3
    groups = model.neuron_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.05, momentum=0.9, target_group_sparsity=1.0, warmup_steps=3,
                hard_zero_step=20)
    assert opt.target_count == 10
    train(model, opt, batches(30))
    for g in groups:
        assert is_zero(g) == g.removable
    assert opt.metrics()["group_sparsity"] == 1.0


class ChainOracle:
    """Validity oracle of a toy graph: groups on the same serial path ``path`` cannot all go (no input->output
    path would remain); every committed set is checked against the rule."""

    def __init__(self, path: set[int]) -> None:
        self.path = path
        self.removed: set[int] = set()
        self.calls: list[int] = []

    def reset(self) -> None:
        self.removed = set()

    def try_remove(self, group_id: int) -> bool:
        self.calls.append(group_id)
        cand = self.removed | {group_id}
        if self.path <= cand:
            return False
        self.removed = cand
        return True


def _fixed_score(order: list[int]):
    """A score_fn that ranks removable groups in the given order (first = most redundant)."""
    def fn(xx, xd, dd, sizes):
        s = torch.zeros_like(xx)
        for rank, i in enumerate(order):
            s[i] = float(len(order) - rank)
        return s
    return fn


def test_oracle_is_respected_and_next_best_taken():
    torch.manual_seed(3)
    model = BranchNet(stages=3, width=2)
    groups = model.branch_groups()  # ids 0,1 | 10,11 | 20,21
    # ranking: 10, 11, 0, 20, ... ; removing both 10 and 11 would cut stage 1 completely
    rank = [2, 3, 0, 4, 1, 5]  # compact indices: 2 -> id 10, 3 -> id 11, 0 -> id 0, 4 -> id 20
    oracle = ChainOracle(path={10, 11})
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=3, warmup_steps=2,
                validity_oracle=oracle, score_fn=_fixed_score(rank), hard_zero_step=8)
    train(model, opt, batches(10))
    assert opt.redundant_group_ids == [0, 10, 20]  # 11 rejected, next best (0, then 20) taken
    assert oracle.calls == [10, 11, 0, 20]  # greedy walk stops at K
    assert oracle.removed == {0, 10, 20}  # oracle left holding exactly the selection
    assert set(opt.zero_group_ids) == {0, 10, 20}
    assert not any(is_zero(g) for g in groups if g.id in (1, 11, 21))


def test_infeasible_target_selects_fewer_and_reports():
    torch.manual_seed(4)
    model = BranchNet(stages=2, width=2)
    groups = model.branch_groups()

    class OneOnly:
        def __init__(self):
            self.n = 0

        def reset(self):
            self.n = 0

        def try_remove(self, gid):
            if self.n >= 1:
                return False
            self.n += 1
            return True

    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=3, warmup_steps=1,
                validity_oracle=OneOnly(), hard_zero_step=5)
    with pytest.warns(RuntimeWarning, match="only 1 of the 3"):
        train(model, opt, batches(6))
    m = opt.metrics()
    assert m["num_redundant"] == 1 and m["selection_shortfall"] == 2 and m["num_zero_groups"] == 1


def test_force_zero_redundant_and_metrics():
    torch.manual_seed(5)
    model = ConvNet()
    groups = model.channel_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.05, momentum=0.9, target_group_sparsity=5, warmup_steps=3)
    with pytest.raises(RuntimeError):
        opt.force_zero_redundant()
    train(model, opt, batches(5))
    m = opt.metrics()
    assert m["phase"] == "hybrid" and m["step"] == 5 and m["num_redundant"] == 5 and m["score_steps"] == 4
    assert m["redundant_norm_sum"] > 0 and m["important_norm_sum"] > 0
    n = opt.force_zero_redundant()
    assert n == 5 - m["num_redundant_zero"]
    m = opt.metrics()
    assert m["num_zero_groups"] == 5 and m["redundant_norm_sum"] == 0.0 and m["target_reached"]
    assert m["group_sparsity"] == pytest.approx(5 / len(groups))
    assert opt.force_zero_redundant() == 0
    train(model, opt, batches(3, seed=9))
    assert opt.metrics()["num_zero_groups"] == 5
    expected = {"step", "phase", "variant", "num_groups", "num_removable", "target_count", "num_redundant",
                "selection_shortfall", "num_zero_groups", "group_sparsity", "num_redundant_zero",
                "redundant_norm_sum", "important_norm_sum", "forced_zero_groups", "projected_groups",
                "target_reached", "lambda_mean", "score_steps"}
    assert expected <= set(m)


@pytest.mark.parametrize("name,kw", [
    ("sgd", dict(lr=0.1)),
    ("sgd-wd", dict(lr=0.1, weight_decay=1e-3)),
    ("adam", dict(variant="adam", lr=0.01, weight_decay=1e-3)),
    ("adamw", dict(variant="adamw", lr=0.01, weight_decay=1e-2)),
])
def test_warmup_is_bit_identical_to_torch(name, kw):
    torch.manual_seed(6)
    a = ConvNet()
    b = ConvNet()
    b.load_state_dict(a.state_dict())
    kw = dict(kw)
    variant = kw.pop("variant", "sgd")
    opt = H2SPG(a.parameters(), a.channel_groups(), warmup_steps=100, variant=variant, **kw)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[variant]
    ref = cls(b.parameters(), foreach=False, **kw)
    idx = batches(8)
    train(a, opt, idx)
    train(b, ref, idx)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_warmup_momentum_matches_torch_up_to_rounding():
    """The momentum buffer is updated as one fused g + m*buf (one pass instead of two)."""
    torch.manual_seed(7)
    a = ConvNet()
    b = ConvNet()
    b.load_state_dict(a.state_dict())
    opt = H2SPG(a.parameters(), a.channel_groups(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4,
                warmup_steps=100)
    ref = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    idx = batches(10)
    train(a, opt, idx)
    train(b, ref, idx)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_dhspg_exact_k_without_oracle():
    torch.manual_seed(8)
    model = ConvNet()
    groups = model.channel_groups()
    opt = DHSPG(model.parameters(), groups, lr=0.05, momentum=0.9, target_group_sparsity=0.5, warmup_steps=10,
                hard_zero_step=40)
    assert "validity_oracle" not in DHSPG.__init__.__code__.co_varnames
    loss0 = full_loss(model)
    train(model, opt, batches(50))
    m = opt.metrics()
    assert m["num_zero_groups"] == m["num_redundant"] == opt.target_count == len(groups) // 2
    assert m["score_steps"] == 1  # DHSPG default: the score of the partition step only
    assert full_loss(model) < loss0


def test_groups_across_tensors_axes_and_dtypes():
    """Groups spanning four tensors, axis 1 slices, several groups per tensor, float64, 0-d tensors."""
    torch.manual_seed(9)
    model = MatMulMLP().double()
    scalar = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    groups = model.neuron_groups() + [ParamGroup(999, [ParamSlice(scalar)])]
    opt = H2SPG(list(model.parameters()) + [scalar], groups, lr=0.05, target_group_sparsity=6, warmup_steps=2,
                hard_zero_step=6)
    x, y = (t for t in __import__("optim_testlib").digits())
    for i in batches(8):
        loss = torch.nn.functional.cross_entropy(model(x[i].double()), y[i]) + scalar ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    m = opt.metrics()
    assert m["num_zero_groups"] == 6
    for g in groups:
        if g.id in opt.zero_group_ids:
            assert is_zero(g) and g.removable
        else:
            assert not is_zero(g)


def test_tensors_without_grad_and_ungrouped_tensors():
    torch.manual_seed(10)
    model = ConvNet()
    extra = torch.nn.Parameter(torch.ones(3))  # never receives a gradient
    groups = model.channel_groups() + [ParamGroup(500, [ParamSlice(extra)])]
    opt = H2SPG(list(model.parameters()) + [extra], groups, lr=0.05, momentum=0.9, target_group_sparsity=0.5,
                warmup_steps=2, hard_zero_step=6)
    train(model, opt, batches(8))
    assert opt.metrics()["num_zero_groups"] == opt.target_count
    fc_before = model.fc.weight.detach().clone()
    train(model, opt, batches(2, seed=5))
    assert not torch.equal(fc_before, model.fc.weight)  # ungrouped tensors keep training


def test_group_validation_errors():
    w = torch.nn.Parameter(torch.randn(4, 3))
    other = torch.nn.Parameter(torch.randn(2))
    mk = lambda gs, params=(w,): H2SPG(list(params), gs, lr=0.1)  # noqa: E731
    with pytest.raises(ValueError, match="repeated"):
        mk([ParamGroup(0, [ParamSlice(w, 0, [0, 1]), ParamSlice(w, 0, [1])])])
    with pytest.raises(ValueError, match="repeated"):
        mk([ParamGroup(0, [ParamSlice(w), ParamSlice(w, 0, [1])])])
    with pytest.raises(ValueError, match="axis"):
        mk([ParamGroup(0, [ParamSlice(w, 0, [0])]), ParamGroup(1, [ParamSlice(w, 1, [1])])])
    with pytest.raises(ValueError, match="not among"):
        mk([ParamGroup(0, [ParamSlice(other)])])
    with pytest.raises(ValueError, match="unique"):
        mk([ParamGroup(0, [ParamSlice(w, 0, [0])]), ParamGroup(0, [ParamSlice(w, 0, [1])])])
    with pytest.raises(ValueError, match="out of range"):
        mk([ParamGroup(0, [ParamSlice(w, 0, [4])])])
    with pytest.raises(ValueError, match="exceeds"):
        H2SPG([w], [ParamGroup(0, [ParamSlice(w)])], lr=0.1, target_group_sparsity=2)
    with pytest.raises(ValueError, match="variant"):
        H2SPG([w], [ParamGroup(0, [ParamSlice(w)])], lr=0.1, variant="rmsprop")
    with pytest.raises(ValueError, match="no elements"):
        mk([ParamGroup(0, [])])
    opt = H2SPG([w], [ParamGroup(i, [ParamSlice(w, 0, [i])]) for i in range(4)] + [ParamGroup(9, [], False)],
                lr=0.1, target_group_sparsity=0.5, warmup_steps=0)  # an empty non-removable group is ignored
    assert opt.target_count == 2
    assert H2SPG([w], [ParamGroup(i, [ParamSlice(w, 0, [i])]) for i in range(4)], lr=0.1,
                 target_group_sparsity=0.375, warmup_steps=0).target_count == 2  # 1.5 rounds half up


def test_package_imports_only_torch_and_numpy():
    code = ("import sys, asgnas.optim; bad = [m for m in sys.modules if m == 'onnx' or m.startswith('onnx.') or "
            "m.startswith('onnxruntime') or (m.startswith('asgnas.') and not m.startswith('asgnas.optim') "
            "and m != 'asgnas.errors')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lr_from_param_groups_each_step_and_add_param_group():
    torch.manual_seed(11)
    model = ConvNet()
    opt = H2SPG(model.parameters(), model.channel_groups(), lr=0.05, momentum=0.9, target_group_sparsity=0.5,
                warmup_steps=2, lmbda=1.0)
    train(model, opt, batches(4))
    for g in opt.param_groups:  # what an lr scheduler does
        g["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    train(model, opt, batches(2, seed=1))
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q)  # lr 0: neither the base step nor the group-lasso term moves anything
    extra = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    extra.grad = torch.ones(2)
    opt.step()
    assert torch.allclose(extra.detach(), torch.full((2,), 0.5))


def test_hard_zero_before_search_forces_at_selection():
    torch.manual_seed(12)
    model = BranchNet()
    groups = model.branch_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=2, warmup_steps=3, hard_zero_step=1)
    train(model, opt, batches(4))
    m = opt.metrics()
    assert m["num_zero_groups"] == 2 and m["forced_zero_groups"] == 2 and m["step"] == 4


def test_phase_is_tail_after_the_forced_step():
    torch.manual_seed(5)
    model = ConvNet()
    groups = model.channel_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.05, target_group_sparsity=5, warmup_steps=2, hard_zero_step=4)
    phases: list[str] = []
    train(model, opt, batches(6), hook=lambda t: phases.append(opt.metrics()["phase"]))
    assert phases == ["warmup", "warmup", "hybrid", "tail", "tail", "tail"]
