"""The options H2SPG and DHSPG share (``SparseOptions``): one list, checked keywords, per-optimizer defaults."""
from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import asgnas.optim.options as options_module
from asgnas.optim import DHSPG, H2SPG, LAMBDA_DEFAULTS, ParamGroup, ParamSlice, SparseOptions
from asgnas.optim.base_step import BASE_STEPS


def _problem() -> tuple[list[torch.nn.Parameter], list[ParamGroup]]:
    w = torch.nn.Parameter(torch.ones(4, 3))
    return [w], [ParamGroup(i, [ParamSlice(w, 0, [i])]) for i in range(4)]


def test_every_option_is_documented_once_in_the_options_module() -> None:
    entries = re.findall(r"^    ([a-z_]+(?:, [a-z_]+)*):", options_module.__doc__, flags=re.M)
    documented = [name for entry in entries for name in entry.split(", ")]
    assert sorted(documented) == sorted(f.name for f in dataclasses.fields(SparseOptions) if f.name != "lr")


def test_every_option_passes_through_both_constructors() -> None:
    given = {"target_group_sparsity": 2, "variant": "ADAM", "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01,
             "warmup_steps": 3, "score_momentum": 0.5, "lmbda": 0.2, "lmbda_amplify": 3.0, "hat_lmbda_coeff": 4.0,
             "epsilon": 0.3, "projection_start": 4, "penalty_start": 5, "hard_zero_step": 9,
             "score_normalization": "sqrt", "steady_shrink": True}
    for cls in (H2SPG, DHSPG):
        params, groups = _problem()
        opt = cls(params, groups, lr=0.1, **given)
        assert (opt.variant, opt.target_count, opt.score_momentum, opt.lmbda, opt.lmbda_amplify) == \
            ("adam", 2, 0.5, 0.2, 3.0)
        assert (opt.hat_lmbda_coeff, opt.epsilon, opt.projection_start, opt.penalty_start) == (4.0, 0.3, 4, 5)
        assert (opt.hard_zero_step, opt.score_normalization, opt.steady_shrink) == (9, "sqrt", True)
        assert opt.param_groups[0]["betas"] == (0.8, 0.99) and opt.param_groups[0]["eps"] == 1e-6


def test_unknown_or_refused_keyword_is_a_type_error_naming_the_optimizer() -> None:
    params, groups = _problem()
    with pytest.raises(TypeError, match=r"H2SPG\(\) got an unexpected keyword argument 'momentun'"):
        H2SPG(params, groups, lr=0.1, warmup_steps=1, momentun=0.9)
    with pytest.raises(TypeError, match=r"DHSPG\(\) got an unexpected keyword argument 'cost_weight'"):
        DHSPG(params, groups, lr=0.1, warmup_steps=1, cost_weight=1.0)
    with pytest.raises(TypeError, match="validity_oracle"):
        DHSPG(params, groups, lr=0.1, warmup_steps=1, validity_oracle=None)


def test_score_momentum_defaults_differ_per_optimizer() -> None:
    params, groups = _problem()
    assert H2SPG(params, groups, lr=0.1, warmup_steps=1).score_momentum == 0.9
    assert DHSPG(params, groups, lr=0.1, warmup_steps=1).score_momentum == 0.0
    assert DHSPG(params, groups, lr=0.1, warmup_steps=1, score_momentum=0.7).score_momentum == 0.7


def test_one_base_step_per_variant_with_its_lambda_defaults() -> None:
    assert list(BASE_STEPS) == list(LAMBDA_DEFAULTS) == ["sgd", "adam", "adamw"]
    assert LAMBDA_DEFAULTS["sgd"] == (1e-3, 2.0, 10.0) and LAMBDA_DEFAULTS["adamw"] == (1e-2, 20.0, 1e3)
    assert [s.decoupled_decay for s in BASE_STEPS.values()] == [False, False, True]
    with pytest.raises(ValueError, match="nesterov"):
        SparseOptions(lr=0.1, variant="adam", momentum=0.9, nesterov=True)
