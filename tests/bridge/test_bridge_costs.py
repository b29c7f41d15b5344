"""Costs of the removal structures for cost-aware selection, and the train pass's ``cost-weight`` option."""

from __future__ import annotations

import pytest
import torch

from asgnas.bridge.export import export_torch_model
from asgnas.bridge.mapping import erase_costs, to_param_groups
from asgnas.cli import _register_all_passes
from asgnas.errors import AsgnasError
from asgnas.ir import load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.passes.cost import total_cost
from asgnas.passes.hierarchy import build_oracle
from asgnas.passes.search_space import analyze_search_space
from asgnas.zoo import build


@pytest.fixture(scope="module")
def stackedunets(tmp_path_factory):
    torch.manual_seed(0)
    net = build("stackedunets", "tiny")
    path = tmp_path_factory.mktemp("costs") / "stackedunets.onnx"
    export_torch_model(net, net.example_input(1), path)
    return path


def test_erase_costs_count_what_goes_with_the_structure(stackedunets):
    model = load_model(stackedunets)
    groups = [g for g in analyze_search_space(model).groups if g.kind == "erase"]
    costs = erase_costs(model, groups, build_oracle(model, groups))
    totals = total_cost(model)
    removable = [g for g in groups if g.removable]
    assert removable and set(costs) == {g.id for g in removable}
    for g in removable:
        own = 0.5 * g.num_params / totals["params"] + 0.5 * g.macs / totals["macs"]
        assert own - 1e-12 <= costs[g.id] <= 1.0
    # the full-resolution decoder structures cost more MACs than the low-resolution ones (the reason for the option)
    assert max(costs.values()) > 5 * min(costs.values())
    params = {init: torch.nn.Parameter(torch.zeros(1)) for g in groups for init in {p.initializer for p in g.params}}
    mapped = to_param_groups(groups, params, strict=False, costs=costs)
    assert [m.cost for m in mapped] == [costs.get(g.id) for g in groups]


def _train(path, cost_weight: float) -> dict:
    _register_all_passes()
    model = load_model(path)
    return PassManager(parse_pipeline(
        f"search-space{{groups=false}},train{{epochs=1,target-sparsity=2,quiet=true,device=cpu,"
        f"cost-weight={cost_weight}}},construct-subnet,verify")).run(model, PassContext(quiet=True))


def test_train_pass_cost_weight_erases_the_costly_structures(stackedunets):
    model = load_model(stackedunets)
    groups = [g for g in analyze_search_space(model).groups if g.kind == "erase"]
    oracle = build_oracle(model, groups)
    costs = erase_costs(model, groups, oracle)
    # a weight this large lets the cost alone order them; the two top-level decoder structures cannot both go
    # (the output would starve), so the expected pick is the oracle's greedy walk in cost order
    expected = [gid for gid in sorted(costs, key=costs.get, reverse=True) if oracle.try_remove(gid)][:2]
    assert len(expected) == 2 and not oracle.is_valid(sorted(costs, key=costs.get)[-2:])
    report = _train(stackedunets, 20.0)
    assert report["train"]["cost_weight"] == 20.0
    assert report["train"]["redundant_groups"] == sorted(expected)
    assert report["train"]["metrics"]["num_zero_groups"] == 2 and report["verify"]["ok"]
    paper = _train(stackedunets, 0.0)  # the paper's saliency order removes far fewer MACs here
    assert report["cost"]["after"]["macs"] < paper["cost"]["after"]["macs"]


def test_train_pass_schedule_fractions(stackedunets):
    _register_all_passes()
    model = load_model(stackedunets)
    report = PassManager(parse_pipeline(
        "search-space{groups=false},train{epochs=1,target-sparsity=1,quiet=true,device=cpu,warmup-fraction=0.1,"
        "hard-zero-fraction=0.6}")).run(model, PassContext(quiet=True))
    schedule = report["train"]["schedule"]
    assert schedule["warmup_steps"] == int(0.1 * schedule["total_steps"])
    assert schedule["hard_zero_step"] == int(0.6 * schedule["total_steps"])
    assert report["train"]["metrics"]["num_zero_groups"] == 1
    with pytest.raises(AsgnasError, match="warmup-fraction"):
        PassManager(parse_pipeline("train{epochs=1,warmup-fraction=0.6,hard-zero-fraction=0.5}")).run(
            load_model(stackedunets), PassContext(quiet=True))
