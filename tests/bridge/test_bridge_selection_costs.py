"""Cost models of cost-aware selection (``train{cost=...}``, ``ASGNAS.h2spg(cost=...)``): params and MACs, or the
latency analysis' measured savings, through one code path for both front ends. The latency table here is a fake
with the fields of ``asgnas.passes.latency.LatencyModel`` (total_ms, group_saving_ms), injected into
``model.analyses["latency"]`` or returned by a stand-in ``analyze_latency``."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from asgnas.api import ASGNAS
from asgnas.bridge.mapping import removal_costs
from asgnas.bridge.selection_costs import ROUND_TO_BY_COST, latency_costs, round_to_for_cost, selection_costs
from asgnas.cli import _register_all_passes
from asgnas.errors import AsgnasError
from asgnas.ir import load_model
from asgnas.passes import PassContext, PassManager, latency, parse_pipeline
from asgnas.passes.hierarchy import build_oracle
from asgnas.passes.search_space import analyze_search_space


@dataclass
class FakeLatency:
    total_ms: float
    group_saving_ms: dict[int, float]


@pytest.fixture(scope="module")
def stackedunets(supernet_onnx):
    return supernet_onnx("stackedunets")


def _erase_groups(model):
    return [g for g in analyze_search_space(model).groups if g.kind == "erase"]


def _inverted_table(model, groups) -> FakeLatency:
    """Savings in the reverse order of the params/MACs costs, so the two cost models pick different groups."""
    costs = removal_costs(model, groups, build_oracle(model, groups))
    ranked = sorted(costs, key=costs.get)  # cheapest by params/MACs first ...
    return FakeLatency(10.0, {gid: 4.0 - 0.5 * rank for rank, gid in enumerate(ranked)})  # ... saves the most time


def _fake_measure(monkeypatch, table: FakeLatency) -> list:
    calls = []

    def analyze_latency(model, space=None, *, device="cpu", batch=1, threads=0, cache=""):
        calls.append(model)
        return table

    monkeypatch.setattr(latency, "analyze_latency", analyze_latency)
    return calls


def test_latency_costs_are_shares_of_the_measured_time(stackedunets, monkeypatch):
    model = load_model(stackedunets)
    groups = _erase_groups(model)
    ids = [g.id for g in groups if g.removable]
    savings = {gid: 0.5 * i for i, gid in enumerate(ids)}
    savings[ids[-1]] = -0.2  # a measured slowdown counts as no saving
    model.analyses["latency"] = FakeLatency(8.0, savings)
    calls = _fake_measure(monkeypatch, FakeLatency(1.0, {}))
    costs = selection_costs(model, groups, None, "latency")
    assert calls == []  # the stored analysis serves
    assert costs == {**{gid: 0.5 * i / 8.0 for i, gid in enumerate(ids[:-1])}, ids[-1]: 0.0}


def test_latency_is_measured_when_missing_or_stale(stackedunets, monkeypatch):
    model = load_model(stackedunets)
    groups = _erase_groups(model)
    ids = [g.id for g in groups if g.removable]
    fresh = FakeLatency(2.0, {gid: 1.0 for gid in ids})
    calls = _fake_measure(monkeypatch, fresh)
    model.analyses["latency"] = FakeLatency(2.0, {ids[0]: 1.0})  # measured on another search space
    assert latency_costs(model, groups) == {gid: 0.5 for gid in ids}
    assert calls == [model] and model.analyses["latency"] is fresh
    del model.analyses["latency"]
    _fake_measure(monkeypatch, FakeLatency(2.0, {ids[0]: 1.0}))
    with pytest.raises(AsgnasError, match=r"latency: no measured saving for removable group\(s\)"):
        latency_costs(model, groups)


def test_unknown_cost_model_is_one_clear_line(stackedunets):
    model = load_model(stackedunets)
    with pytest.raises(AsgnasError, match="unknown cost model 'flops' \\(use one of params-macs, latency\\)"):
        selection_costs(model, _erase_groups(model), None, "flops")
    _register_all_passes()
    with pytest.raises(AsgnasError, match=r"option 'cost' must be one of params-macs\|latency, got 'flops'"):
        parse_pipeline("train{cost=flops}")


def _api_selection(path, workdir, cost: str) -> list[int]:
    torch.manual_seed(0)
    nas = ASGNAS.from_onnx(path, workdir=workdir)
    nas.ir.analyses["latency"] = _inverted_table(nas.ir, nas.groups("erase"))
    data = nas.dataset("digits")
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=2, warmup_steps=1, hard_zero_step=3, cost_weight=100.0,
                          cost=cost)
    x, y = torch.from_numpy(data.x_train[:32]), torch.from_numpy(data.y_train[:32])
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(nas.model(x), y).backward()
        optimizer.step()
    return sorted(optimizer.redundant_group_ids)


def test_api_and_train_pass_pick_the_same_groups_by_latency(stackedunets, monkeypatch, tmp_path):
    model = load_model(stackedunets)
    groups = _erase_groups(model)
    table = _inverted_table(model, groups)
    oracle = build_oracle(model, groups)
    expected = sorted([gid for gid in sorted(table.group_saving_ms, key=table.group_saving_ms.get, reverse=True)
                       if oracle.try_remove(gid)][:2])
    _fake_measure(monkeypatch, table)  # the train pass measures it (its search space is fresh)
    _register_all_passes()
    report = PassManager(parse_pipeline(
        "train{epochs=1,target-sparsity=2,quiet=true,device=cpu,cost-weight=100,cost=latency}")).run(
        load_model(stackedunets), PassContext(quiet=True))
    assert report["train"]["cost"] == "latency"
    assert report["train"]["redundant_groups"] == expected
    assert _api_selection(stackedunets, tmp_path / "api", "latency") == expected
    assert _api_selection(stackedunets, tmp_path / "api2", "params-macs") != expected


def test_train_pass_ranks_by_the_measured_latency(stackedunets, tmp_path):
    """With the real latency pass (its cache makes the table the test reads the one training reads)."""
    model = load_model(stackedunets)
    groups = _erase_groups(model)
    savings = latency.analyze_latency(model, cache=str(tmp_path)).group_saving_ms
    oracle = build_oracle(model, groups)
    expected = sorted([gid for gid in sorted((g.id for g in groups if g.removable), key=savings.get, reverse=True)
                       if oracle.try_remove(gid)][:2])
    _register_all_passes()
    report = PassManager(parse_pipeline(
        f"search-space{{groups=false}},latency{{cache={tmp_path}}},train{{epochs=1,target-sparsity=2,quiet=true,"
        f"device=cpu,cost-weight=10000,cost=latency}}")).run(load_model(stackedunets), PassContext(quiet=True))
    assert report["train"]["redundant_groups"] == expected


def test_cost_latency_without_a_cost_weight_says_it_does_nothing_and_measures_nothing(stackedunets, monkeypatch,
                                                                                       capsys):
    def no_measuring(*args, **kwargs):
        raise AssertionError("latency measured although the cost term is off")

    monkeypatch.setattr(latency, "analyze_latency", no_measuring)
    _register_all_passes()
    model = load_model(stackedunets)
    report = PassManager(parse_pipeline("train{epochs=1,target-sparsity=1,quiet=true,device=cpu,cost=latency}")).run(
        model, PassContext(quiet=True))
    assert report["train"]["cost"] == "latency" and report["train"]["cost_weight"] == 0.0
    out = capsys.readouterr().out
    assert "cost=latency ranks nothing without h2spg's cost-weight > 0" in out
    assert "round-to" not in out  # by-cost, the default, is no request to round structures
    assert "latency" not in model.analyses


@pytest.mark.parametrize("cost, rounding", [("latency", "auto"), ("params-macs", 1)])
def test_round_to_follows_the_cost_model_in_both_front_ends(stackedunets, tmp_path, monkeypatch, cost, rounding):
    import asgnas.bridge.train_pass as train_pass

    asked = []

    def resolve_round_to(model, value, space=None):
        asked.append(value)
        return 1

    monkeypatch.setattr(latency, "resolve_round_to", resolve_round_to)  # the API imports it where used
    monkeypatch.setattr(train_pass, "resolve_round_to", resolve_round_to)
    _register_all_passes()
    report = PassManager(parse_pipeline(f"train{{epochs=1,kind=both,target-sparsity=1,quiet=true,device=cpu,"
                                        f"cost={cost}}}")).run(load_model(stackedunets), PassContext(quiet=True))
    nas = ASGNAS.from_onnx(stackedunets, workdir=tmp_path)
    nas.h2spg(target_group_sparsity=1, warmup_steps=1, kind="both", cost=cost)
    assert report["train"]["round_to"] == rounding
    assert asked == [rounding, rounding]  # the train pass's, then the API's
    # DHSPG ranks by saliency alone: its default rounds nothing in either front end
    PassManager(parse_pipeline(f"train{{optimizer=dhspg,epochs=1,target-sparsity=0.3,quiet=true,device=cpu,"
                               f"cost={cost}}}")).run(load_model(stackedunets), PassContext(quiet=True))
    nas.dhspg(target_group_sparsity=0.3, warmup_steps=1)
    assert asked[2:] == [1, 1]


def test_a_bad_rounding_is_one_clear_error_in_the_api(stackedunets, tmp_path):
    nas = ASGNAS.from_onnx(stackedunets, workdir=tmp_path)
    for bad in ("by_cost", 0, True):
        with pytest.raises(ValueError, match=f"round_to must be an int >= 1, 'auto' or 'by-cost', got {bad!r}"):
            nas.h2spg(target_group_sparsity=1, warmup_steps=1, kind="both", round_to=bad)
    with pytest.raises(ValueError, match="round_to must be an int >= 1"):
        nas.dhspg(target_group_sparsity=0.5, warmup_steps=1, round_to="fast")
    with pytest.raises(AsgnasError, match="unknown cost model 'flops'"):
        round_to_for_cost(ROUND_TO_BY_COST, "flops")


def test_api_refuses_an_unknown_cost_model_or_kind_even_without_a_cost_weight(stackedunets, tmp_path):
    nas = ASGNAS.from_onnx(stackedunets, workdir=tmp_path)
    with pytest.raises(ValueError, match="cost must be one of params-macs, latency, got 'macs'"):
        nas.h2spg(warmup_steps=1, cost="macs")
    with pytest.raises(ValueError, match="kind must be 'erase', 'prune' or 'both', got 'channels'"):
        nas.dhspg(warmup_steps=1, kind="channels")
    assert {g.kind for g in nas.groups("both")} == {"erase", "prune"}
