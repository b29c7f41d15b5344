"""Costs of the removal structures for cost-aware selection, and the train pass's ``cost-weight`` and per-kind
target (``kind=both``, ``prune-target``) options."""

from __future__ import annotations

import pytest
import torch

# the six erase structures of the tiny StackedUnets (seed 0), sorted, as measured when pinned (0.5 * params / 12770
# + 0.5 * MACs / 218608 of each structure and what goes with it): a change here is a change of the cost model
STACKEDUNETS_ERASE_COSTS = [0.048513, 0.072624, 0.287828, 0.338171, 0.468556, 0.525395]

from asgnas.bridge.mapping import erase_costs, removal_costs, to_param_groups
from asgnas.cli import _register_all_passes
from asgnas.errors import AsgnasError
from asgnas.ir import load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.passes.cost import total_cost
from asgnas.passes.hierarchy import build_oracle
from asgnas.passes.search_space import analyze_search_space


@pytest.fixture(scope="module")
def stackedunets(supernet_onnx):
    return supernet_onnx("stackedunets")


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
    assert sorted(costs.values()) == pytest.approx(STACKEDUNETS_ERASE_COSTS, abs=1e-6)
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
    # the costliest structure (0.525) and the costliest one valid beside it (0.338, not its 0.469 twin)
    assert sorted(costs[g] for g in expected) == pytest.approx([0.338171, 0.525395], abs=1e-6)
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


def test_removal_costs_put_channels_on_the_structures_scale(stackedunets):
    model = load_model(stackedunets)
    groups = analyze_search_space(model).groups
    oracle = build_oracle(model, groups)
    costs = removal_costs(model, groups, oracle)
    erase = [g for g in groups if g.kind == "erase"]
    assert {k: v for k, v in costs.items() if k in {g.id for g in erase}} == erase_costs(model, erase, oracle)
    assert sorted(costs[g.id] for g in erase if g.removable) == pytest.approx(STACKEDUNETS_ERASE_COSTS, abs=1e-6)
    totals = total_cost(model)
    channels = [g for g in groups if g.kind == "prune" and g.removable]
    assert channels and all(
        costs[g.id] == pytest.approx(0.5 * g.num_params / totals["params"] + 0.5 * g.macs / totals["macs"])
        for g in channels)
    assert all(0 < costs[g.id] < 1 for g in channels)


def test_train_pass_per_kind_targets(stackedunets):
    _register_all_passes()
    model = load_model(stackedunets)
    space = analyze_search_space(load_model(stackedunets))
    kind_of = {g.id: g.kind for g in space.groups}
    n_channels = sum(g.removable for g in space.groups if g.kind == "prune")
    report = PassManager(parse_pipeline(
        "search-space{groups=false},train{epochs=1,kind=both,target-sparsity=1,prune-target=0.25,quiet=true,"
        "device=cpu,cost-weight=1},construct-subnet,verify")).run(model, PassContext(quiet=True))
    chosen = report["train"]["redundant_groups"]
    # K = 1 structure + a quarter of the channel groups, not a quarter of all groups
    assert sum(kind_of[g] == "erase" for g in chosen) == 1
    assert sum(kind_of[g] == "prune" for g in chosen) == int(0.25 * n_channels + 0.5)
    assert set(chosen) <= set(report["train"]["zero_groups"]) and report["verify"]["ok"]
    assert report["cost"]["after"]["macs"] < report["cost"]["before"]["macs"]
    with pytest.raises(AsgnasError, match="kind=both"):
        PassManager(parse_pipeline("train{epochs=1,prune-target=0.2}")).run(
            load_model(stackedunets), PassContext(quiet=True))
    with pytest.raises(AsgnasError, match="exceeds"):
        PassManager(parse_pipeline(f"train{{epochs=1,kind=both,prune-target={n_channels + 1}}}")).run(
            load_model(stackedunets), PassContext(quiet=True))


def test_kind_quota_oracle_caps_each_kind_and_defers_to_validity():
    from asgnas.bridge.training import KindQuotaOracle

    class Oracle:  # refuses group 3; records what it committed
        def __init__(self) -> None:
            self.committed: list[int] = []

        def reset(self) -> None:
            self.committed = []

        def try_remove(self, gid: int) -> bool:
            if gid == 3:
                return False
            self.committed.append(gid)
            return True

    inner = Oracle()
    quota = KindQuotaOracle(inner, {1: "erase", 2: "erase", 3: "prune", 4: "prune", 5: "prune"},
                            {"erase": 1, "prune": 1})
    assert [quota.try_remove(g) for g in (1, 2, 3, 4, 5)] == [True, False, False, True, False]
    assert inner.committed == [1, 4]
    quota.reset()
    assert inner.committed == [] and quota.try_remove(2) and quota.try_remove(5)


def test_kinds_with_quotas_of_their_own_are_their_own_families(stackedunets):
    """Under prune-target each kind fills its own quota, so saliency is scaled per kind; in one ranking
    (no quotas) structures and channels share one scale, as at weight 0."""
    from asgnas.bridge.training import KindQuotaOracle, build_optimizer

    from asgnas.bridge.executor.module import OnnxModule

    model = load_model(stackedunets)
    groups = analyze_search_space(model).groups
    params = OnnxModule(model).param_for_initializer
    oracle = build_oracle(model, groups)
    kinds = {g.id: g.kind for g in groups}

    def families(with_oracle) -> set[tuple[str, str]]:
        opt = build_optimizer("h2spg", list(params.values()), groups, params, lr=0.1, target=2, total_steps=10,
                              oracle=with_oracle, costs={}, cost_weight=1.0)
        return {(kinds[g.id], g.family) for g in opt.layout.groups}

    assert families(KindQuotaOracle(oracle, kinds, {"erase": 1, "prune": 1})) == {("erase", "erase"),
                                                                                ("prune", "prune")}
    assert families(oracle) == {("erase", ""), ("prune", "")}
