"""The analysis manager: a pass's ``requires`` is computed once and reused while passes preserve it; a rewrite
preserves nothing unless it says so; analysis passes preserve all; train's validation data reaches construct-subnet
as a typed ``ValidationData``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import asgnas.passes.search_space as search_space_module
from asgnas.ir import Model, lift
from asgnas.passes import PASS_REGISTRY, Pass, PassContext, PassManager, parse_pipeline
from asgnas.passes.analysis_manager import ALL_ANALYSES, ANALYSIS_REGISTRY, AnalysisManager, register_analysis
from asgnas.passes.base import ValidationData
from asgnas.passes.erasing import ANALYSIS_KEY as ERASING_KEY
from asgnas.passes.gates import fold_gates, gate_branches
from asgnas.passes.groups import group_is_zero
from asgnas.passes.hierarchy import HIERARCHY_KEY
from asgnas.passes.prune_subnet import construct_pruned
from asgnas.passes.pruning import ANALYSIS_KEY as PRUNING_KEY
from asgnas.passes.search_space import SEARCH_SPACE_KEY


def _mlp(zero_hidden: int = 0) -> Model:
    """x[N,4] -> Gemm(8) -> Relu -> Gemm(3) -> y; the first ``zero_hidden`` hidden units are exactly zero."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 4)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    w1[:zero_hidden], b1[:zero_hidden] = 0.0, 0.0
    w2 = rng.standard_normal((3, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1)],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")],
    )
    return lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


class _Counted:
    """A registered analysis ``counted`` that counts how often it is computed."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, model: Model, analyses: AnalysisManager) -> int:
        self.calls += 1
        return self.calls


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    monkeypatch.setattr("asgnas.passes.analysis_manager.ANALYSIS_REGISTRY", dict(ANALYSIS_REGISTRY))
    compute = _Counted()
    register_analysis("counted", compute)
    register_analysis("built_on_counted", lambda model, analyses: analyses.get("counted") * 10,
                      requires=("counted",))
    return compute


class _Reader(Pass):
    """An analysis pass that requires ``counted`` and records what it found cached when it ran."""

    name = "test-reader"
    summary = "reads counted"
    requires = ("counted",)
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        return {"seen": model.analyses["counted"]}


class _Rewrite(Pass):
    """A rewrite that declares nothing: the default preserves no analysis."""

    name = "test-rewrite"
    summary = "changes nothing, declares nothing"

    def run(self, model: Model, ctx: PassContext) -> None:
        return None


class _KeepsCounted(_Rewrite):
    name = "test-keeps-counted"
    preserves = frozenset({"counted"})


def _seen(report: dict[str, Any]) -> list[int]:
    return [entry["test-reader"]["seen"] for entry in report["passes"] if entry["name"] == "test-reader"]


def test_requires_is_computed_once_and_reused_by_passes_that_preserve_it(counted):
    model = _mlp()
    report = PassManager([_Reader(), _Reader(), _KeepsCounted(), _Reader()]).run(model)
    assert _seen(report) == [1, 1, 1]
    assert counted.calls == 1 and model.analyses["counted"] == 1


def test_a_rewrite_that_preserves_nothing_invalidates(counted):
    model = _mlp()
    report = PassManager([_Reader(), _Rewrite(), _Reader()]).run(model)
    assert _seen(report) == [1, 2]  # recomputed after the rewrite
    assert counted.calls == 2


def test_the_default_preserves_nothing_not_even_unregistered_results(counted):
    assert Pass.preserves == frozenset() and _Rewrite.preserves == frozenset()
    model = _mlp()
    model.analyses["param_map"] = {"fc1.weight": "w1"}  # stored by other means (the exporter)
    AnalysisManager(model).get("built_on_counted")
    PassManager([_Rewrite()]).run(model)
    assert model.analyses == {}


def test_an_analysis_pass_preserves_all(counted):
    model = _mlp()
    model.analyses["param_map"] = {"fc1.weight": "w1"}
    PassManager([_Reader()]).run(model)
    assert model.analyses == {"counted": 1, "param_map": {"fc1.weight": "w1"}}
    analysis_passes = ("search-space", "pruning-groups", "erasing-groups", "hierarchy", "cost", "shape-infer",
                       "verify", "zero-groups", "draw-groups")
    assert all(PASS_REGISTRY[name].preserves is ALL_ANALYSES for name in analysis_passes)
    rewrites = ("construct-subnet", "erase-subnet", "prune-subnet", "dce", "untie-aliases", "gate-branches",
                "fold-gates")
    assert all(PASS_REGISTRY[name].preserves == frozenset() for name in rewrites)


def test_an_analysis_built_on_a_dropped_one_goes_with_it(counted):
    model = _mlp()
    analyses = AnalysisManager(model)
    assert analyses.get("built_on_counted") == 10 and counted.calls == 1  # its requirement was computed first
    analyses.invalidate(frozenset({"built_on_counted"}))  # preserved, but built on what was not
    assert model.analyses == {}
    assert analyses.get("built_on_counted") == 20 and counted.calls == 2


def test_unknown_analysis_is_a_lookup_error():
    with pytest.raises(LookupError, match="no analysis registered as 'nope'"):
        AnalysisManager(_mlp()).get("nope")


def test_the_search_space_is_computed_once_across_zero_groups_runs(monkeypatch):
    calls = []
    real = search_space_module.analyze_search_space

    def counting(model: Model):
        calls.append(1)
        return real(model)

    monkeypatch.setattr(search_space_module, "analyze_search_space", counting)
    model = _mlp()
    PassManager(parse_pipeline("zero-groups{fraction=0},hierarchy,zero-groups{fraction=0}")).run(model)
    assert len(calls) == 1
    assert {SEARCH_SPACE_KEY, PRUNING_KEY, ERASING_KEY, HIERARCHY_KEY} <= set(model.analyses)
    PassManager(parse_pipeline("dce,zero-groups{fraction=0}")).run(model)
    assert len(calls) == 2  # dce preserves nothing


def test_forgetting_the_erasing_analysis_drops_what_is_built_on_it():
    model = _mlp()
    analyses = AnalysisManager(model)
    space = analyses.get(SEARCH_SPACE_KEY)
    assert analyses.get(PRUNING_KEY).groups[0] is space.groups[0]  # stored with the search space, not recomputed
    prune = [g.id for g in space.groups if g.kind == "prune"]
    erase = [g.id for g in space.groups if g.kind == "erase"]
    assert prune == list(range(len(prune))) and erase and min(erase) == len(prune)  # pruning first
    analyses.forget(ERASING_KEY)
    assert set(model.analyses) == {PRUNING_KEY}  # hierarchy requires it, the search space stores it


def test_forgetting_an_analysis_not_cached_still_drops_what_was_built_on_it(counted):
    model = _mlp()
    analyses = AnalysisManager(model)
    analyses.get("built_on_counted")
    del model.analyses["counted"]  # e.g. a caller that passed its own copy around
    analyses.forget("counted")
    assert model.analyses == {}


def test_store_caches_a_result_and_keeps_what_is_beside_it(counted):
    model = _mlp()
    analyses = AnalysisManager(model)
    assert analyses.get("built_on_counted") == 10
    analyses.store("param_map", {"fc1.weight": "w1"})
    assert model.analyses == {"counted": 1, "built_on_counted": 10, "param_map": {"fc1.weight": "w1"}}
    analyses.store("counted", 7)  # e.g. an analysis pass run afresh with its options
    assert analyses.get("counted") == 7 and analyses.get("built_on_counted") == 10 and counted.calls == 1


def test_construct_pruned_forgets_the_pruning_analysis_and_what_stores_it():
    model = _mlp(zero_hidden=2)
    analyses = AnalysisManager(model)
    analyses.get(SEARCH_SPACE_KEY)
    pruning = analyses.cached(PRUNING_KEY)
    zero = {g.id for g in pruning.groups if g.removable and group_is_zero(model, g)}
    assert len(zero) == 2
    result = construct_pruned(model, pruning, zero)
    assert result["removed_group_ids"] == sorted(zero)
    assert model.graph.values["w1"].const.shape == (6, 4) and model.graph.values["w2"].const.shape == (3, 6)
    # the channel relations describe the graph before the cut; the search space stores them, so it goes too
    assert set(model.analyses) == {ERASING_KEY, HIERARCHY_KEY}


def test_gate_branches_and_fold_gates_drop_every_analysis():
    model = _mlp()
    analyses = AnalysisManager(model)
    analyses.get(SEARCH_SPACE_KEY)
    analyses.store("param_map", {"fc1.weight": "w1"})
    assert gate_branches(model) == []  # nothing to gate: no IR change, still every analysis goes
    assert model.analyses == {}
    analyses.get(SEARCH_SPACE_KEY)
    assert fold_gates(model) == {"folded": 0, "zero_kept": 0}  # nothing folded: the analyses stay
    assert set(model.analyses) == {SEARCH_SPACE_KEY, PRUNING_KEY, ERASING_KEY, HIERARCHY_KEY}


def test_a_result_whose_requirement_went_missing_is_recomputed_with_what_was_built_on_it(counted):
    model = _mlp()
    analyses = AnalysisManager(model)
    assert analyses.get("built_on_counted") == 10
    del model.analyses["counted"]  # popped by hand, not forgotten (its dependent is stale now)
    assert analyses.get("built_on_counted") == 20 and counted.calls == 2  # not the stale 10
    analyses.get("built_on_counted")
    del model.analyses["counted"]
    assert analyses.get("counted") == 3  # recomputing a requirement drops the result built on the old one
    assert "built_on_counted" not in model.analyses
    assert analyses.get("built_on_counted") == 30 and counted.calls == 3


def test_hierarchy_pass_gets_its_required_erasing_analysis_from_the_manager():
    model = _mlp()
    erasing = AnalysisManager(model).get(ERASING_KEY)
    PassManager(parse_pipeline("hierarchy")).run(model)
    assert model.analyses[ERASING_KEY] is erasing  # reused, not recomputed
    assert model.analyses[HIERARCHY_KEY].analysis is erasing


class _PublishesValidation(Pass):
    """Stands in for ``train``: publishes its held-out data and a report that receives the slim accuracy."""

    name = "test-trainer"
    summary = "publishes validation data"
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        x = np.random.default_rng(1).standard_normal((20, 4)).astype(np.float32)
        y = np.zeros(20, dtype=np.int64)
        ctx.validation = ValidationData(x, y, output="y", report_key=self.report_key)
        return {"epochs": 0}


def test_construct_subnet_measures_the_slim_model_on_published_validation_data():
    model = _mlp(zero_hidden=3)
    x = np.random.default_rng(1).standard_normal((20, 4)).astype(np.float32)
    from asgnas.runtime import onnx_accuracy

    expected = onnx_accuracy(_mlp(zero_hidden=3), x, np.zeros(20, dtype=np.int64), output="y")
    report = PassManager([_PublishesValidation(), *parse_pipeline("construct-subnet")]).run(model)
    assert report["construct-subnet"]["pruned_channel_groups"] == 3
    assert report["test-trainer"]["val_accuracy_slim"] == pytest.approx(expected, abs=1e-9)
    assert 0.0 < expected < 1.0  # the figure discriminates: some samples right, some wrong


def test_construct_subnet_without_validation_data_adds_no_accuracy():
    report = PassManager(parse_pipeline("construct-subnet")).run(_mlp(zero_hidden=3))
    assert report["construct-subnet"]["pruned_channel_groups"] == 3
    assert not any("val_accuracy_slim" in v for v in report.values() if isinstance(v, dict))


def test_an_error_inside_construct_subnet_names_construct_subnet_and_its_failing_part(monkeypatch):
    from asgnas.errors import AsgnasError
    from asgnas.passes.erase_subnet import EraseSubnetPass

    def fails(self, model: Model, ctx: PassContext) -> None:
        raise AsgnasError("cannot erase: stand-in", node="fc1", op="Gemm")

    monkeypatch.setattr(EraseSubnetPass, "run", fails)
    with pytest.raises(AsgnasError) as caught:
        PassManager(parse_pipeline("construct-subnet")).run(_mlp(zero_hidden=3))
    assert caught.value.pass_name == "construct-subnet (erase-subnet)"
    assert "pass construct-subnet (erase-subnet)" in str(caught.value) and "node fc1" in str(caught.value)
