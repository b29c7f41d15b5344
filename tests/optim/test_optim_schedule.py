"""The schedule from the training budget (``total_steps``), explicit values over derived ones, and the one-line
error when neither a budget nor an explicit schedule is given."""
from __future__ import annotations

import pytest
import torch

from asgnas.optim import DHSPG, H2SPG, LAMBDA_DEFAULTS, budget_lambda
from asgnas.optim.param_groups import ParamGroup, ParamSlice
from optim_testlib import ConvNet, batches, train


def _convnet() -> ConvNet:
    torch.manual_seed(3)
    return ConvNet()


@pytest.mark.parametrize("cls", [H2SPG, DHSPG])
def test_budget_derives_warmup_lambda_window_forced_step_and_epsilon(cls):
    model = _convnet()
    groups = model.channel_groups()
    opt = cls(model.parameters(), groups, lr=0.05, total_steps=100)
    assert (opt.total_steps, opt.warmup_steps, opt.hard_zero_step) == (100, 20, 50)
    assert (opt.projection_start, opt.penalty_start, opt.epsilon) == (20, 20, 0.9)
    assert opt.lmbda == pytest.approx(budget_lambda(groups, 0.05, 100, 20, 50))
    assert opt.lmbda > 100 * LAMBDA_DEFAULTS["sgd"][0]  # far above the DHSPG default that assumes long training
    fractions = cls(model.parameters(), groups, lr=0.05, total_steps=100, warmup_fraction=0.1,
                    hard_zero_fraction=0.8)
    assert (fractions.warmup_steps, fractions.hard_zero_step) == (10, 80)
    assert fractions.lmbda == pytest.approx(budget_lambda(groups, 0.05, 100, 10, 80))


def test_explicit_values_override_the_budget():
    model = _convnet()
    groups = model.channel_groups()
    opt = H2SPG(model.parameters(), groups, lr=0.05, total_steps=100, warmup_steps=5, hard_zero_step=30, lmbda=0.3,
                epsilon=0.5, projection_start=8, penalty_start=12)
    assert (opt.warmup_steps, opt.hard_zero_step, opt.lmbda, opt.epsilon) == (5, 30, 0.3, 0.5)
    assert (opt.projection_start, opt.penalty_start) == (8, 12)
    partly = H2SPG(model.parameters(), groups, lr=0.05, total_steps=100, warmup_steps=5)
    assert (partly.warmup_steps, partly.hard_zero_step, partly.epsilon) == (5, 50, 0.9)
    assert partly.lmbda == pytest.approx(budget_lambda(groups, 0.05, 100, 5, 50))  # over the window actually used


def test_explicit_schedule_without_budget_keeps_the_dhspg_defaults():
    model = _convnet()
    opt = DHSPG(model.parameters(), model.channel_groups(), lr=0.05, variant="adam", warmup_steps=3)
    assert opt.total_steps is None and opt.hard_zero_step is None  # never forced
    assert (opt.warmup_steps, opt.lmbda, opt.epsilon) == (3, LAMBDA_DEFAULTS["adam"][0], 0.0)


@pytest.mark.parametrize("kwargs", [{}, {"hard_zero_step": 40}, {"lmbda": 0.1, "epsilon": 0.9}])
@pytest.mark.parametrize("cls", [H2SPG, DHSPG])
def test_no_budget_and_no_schedule_is_one_line_saying_what_to_pass(cls, kwargs):
    model = _convnet()
    with pytest.raises(ValueError) as err:
        cls(model.parameters(), model.channel_groups(), lr=0.05, **kwargs)
    assert str(err.value) == ("pass total_steps=<number of optimizer steps you will run> (or an explicit "
                              "warmup_steps, with hard_zero_step for the forced-zero step)")


@pytest.mark.parametrize("kwargs,match", [
    (dict(warmup_steps=3, warmup_fraction=0.1), "need total_steps"),
    (dict(total_steps=0), "total_steps must be >= 1"),
    (dict(total_steps=100, warmup_fraction=0.6, hard_zero_fraction=0.5), "warmup_fraction < hard_zero_fraction"),
    (dict(total_steps=100, epsilon=1.0), "epsilon"),
    (dict(total_steps=100, warmup_steps=-1), "warmup_steps must be >= 0"),
])
def test_bad_schedules_are_refused(kwargs, match):
    model = _convnet()
    with pytest.raises(ValueError, match=match):
        H2SPG(model.parameters(), model.channel_groups(), lr=0.05, **kwargs)


def test_budget_alone_reaches_the_exact_target_by_the_forced_step():
    model = _convnet()
    opt = H2SPG(model.parameters(), model.channel_groups(), lr=0.05, momentum=0.9, target_group_sparsity=0.5,
                total_steps=40)
    zero_at: dict[int, int] = {}
    train(model, opt, batches(40), hook=lambda t: zero_at.setdefault(opt.metrics()["num_zero_groups"], t + 1))
    m = opt.metrics()
    assert m["num_zero_groups"] == m["target_count"] == 10
    assert m["projected_groups"] + m["forced_zero_groups"] == 10
    assert zero_at[10] <= opt.hard_zero_step == 20


@pytest.mark.parametrize("steady, projected, forced", [(None, 1, 0), (False, 0, 1)])
def test_budget_mode_shrinks_a_chosen_group_against_the_gradient(steady, projected, forced):
    """A loss that pulls every weight away from zero: DHSPG's descent safeguard (steady_shrink=False) stalls the
    chosen group until the forced step; the budget default shrinks it to zero by projection well before."""
    weight = torch.nn.Parameter(torch.full((4, 3), 1.0))
    groups = [ParamGroup(r, [ParamSlice(weight, axis=0, indices=[r])]) for r in range(4)]
    opt = H2SPG([weight], groups, lr=0.05, target_group_sparsity=1, total_steps=100, momentum=0.0,
                steady_shrink=steady)
    for _ in range(100):
        opt.zero_grad()
        (-(weight * torch.tensor([[1.0], [2.0], [3.0], [4.0]])).sum()).backward()  # row 0 pulled least
        opt.step()
    metrics = opt.metrics()
    assert (metrics["projected_groups"], metrics["forced_zero_groups"]) == (projected, forced)
    assert int((weight.detach().abs().sum(1) == 0).sum()) == 1
