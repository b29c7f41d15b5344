"""The ``latency`` pass: measured whole-model and per-structure times, per-width tables, the disk cache, its
predictions, and ``round-to=auto`` (per channel space, the multiple the tables found)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import asgnas.passes.latency as latency_module
import asgnas.passes.latency_measure as latency_measure
from asgnas.bridge.training import channel_rounding
from asgnas.cli import main
from asgnas.ir import load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.passes.construct_subnet import construct_subnet
from asgnas.passes.groups import Group, group_is_zero, round_kept_channels
from asgnas.runtime import latency_ms


def _tiny(path, width: int = 24, size: int = 16) -> str:
    """conv1 -> relu -> [conv2 -> relu -> conv3] + skip -> pool -> fc: one erasable block, two channel spaces."""
    rng = np.random.default_rng(0)
    shapes = {"w1": (width, 3, 3, 3), "b1": (width,), "w2": (width, width, 3, 3), "b2": (width,),
              "w3": (width, width, 1, 1), "b3": (width,), "fc": (5, width), "fcb": (5,)}
    inits = [numpy_helper.from_array(0.3 * rng.standard_normal(s).astype(np.float32), n) for n, s in shapes.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "r1"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return str(path)


def _run(model, pipeline: str) -> dict:
    return PassManager(parse_pipeline(pipeline)).run(model, PassContext(quiet=True))


def test_latency_measures_every_removable_group_then_hits_the_cache(tmp_path, monkeypatch):
    path = _tiny(tmp_path / "tiny.onnx")
    model = load_model(path)
    report = _run(model, f"search-space,latency{{cache={tmp_path / 'cache'},threads=1}}")["latency"]
    result = model.analyses["latency"]
    space = model.analyses["search_space"]
    assert report["total_ms"] > 0 and result.total_ms == pytest.approx(report["total_ms"], abs=1e-3)
    assert report["measured"] > 0 and report["cached"] is False
    removable = {g.id for g in space.removable()}
    assert set(result.group_saving_ms) == removable
    block = next(g for g in space.removable("erase") if "conv2" in g.nodes)
    assert result.group_saving_ms[block.id] > 0  # two convs go with it
    assert report["per_structure_ms"][str(block.id)] > 0
    assert any(s["per_channel_ms"] > 0 for s in report["channel_spaces"].values())
    assert all(m in (1, 2, 4, 8, 16, 32) for m in result.preferred_multiple.values())
    assert len(list((tmp_path / "cache").glob("latency-*-cpu-b1-t1.json"))) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured although cached")

    monkeypatch.setattr(latency_module, "profile_model", no_measuring)
    monkeypatch.setattr(latency_measure, "time_ms", no_measuring)
    again = load_model(path)
    second = _run(again, f"search-space,latency{{cache={tmp_path / 'cache'},threads=1}}")["latency"]
    assert second["cached"] is True and second["measured"] == 0
    assert second["total_ms"] == report["total_ms"]
    assert again.analyses["latency"].group_saving_ms == pytest.approx(result.group_saving_ms)


def test_predictions_follow_the_measurements(tmp_path):
    path = _tiny(tmp_path / "tiny.onnx", width=32, size=32)
    model = load_model(path)
    _run(model, f"search-space,latency{{cache={tmp_path},threads=1}},zero-groups{{fraction=0.5,kind=prune}}")
    result = model.analyses["latency"]
    measured_full = latency_ms(load_model(path), threads=1)
    assert result.predict_ms(load_model(path)) == pytest.approx(result.total_ms)
    assert measured_full / 4 < result.predict_ms(load_model(path)) < measured_full * 4
    halved = result.predict_ms({sid: size // 2 for sid, size in result.space_size.items()})
    assert halved < result.total_ms
    construct_subnet(model)
    slim = result.predict_ms(model)
    assert slim < result.total_ms
    measured_slim = latency_ms(model, threads=1)
    assert measured_slim / 4 < slim < measured_slim * 4  # loose: the machine may be shared


def test_round_to_auto_keeps_the_measured_multiple_per_space(tmp_path):
    model = load_model(_tiny(tmp_path / "tiny.onnx", width=24))
    _run(model, f"search-space,latency{{cache={tmp_path}}}")
    space = model.analyses["search_space"]
    model.analyses["latency"].preferred_multiple = {"s0": 8, "s1": 16}  # pinned: the measured blocks vary
    zeroed = set(_run(model, "zero-groups{fraction=0.6,kind=prune,round-to=auto}")["zero-groups"]["zeroed"])
    for sid, multiple in {"s0": 8, "s1": 16}.items():
        members = [g for g in space.groups if g.kind == "prune" and g.space == sid]
        kept = len(members) - sum(g.id in zeroed for g in members)
        assert kept % multiple == 0 or kept == len(members), (sid, kept)
        assert kept < len(members)  # 60% of 24 asks for 10-ish zeroed: rounding keeps 16 (s0) or 16 (s1)


def test_round_to_accepts_a_mapping_and_an_int():
    groups = [Group(i, "prune", [], [], space="a" if i < 10 else "b") for i in range(20)]
    chosen = groups[:7] + groups[10:17]  # 3 kept in each
    kept = {g.id for g in round_kept_channels(groups, chosen, {"a": 4})}
    assert kept == {g.id for g in groups[:6] + groups[10:17]}  # a keeps 4; b (not named) keeps 3
    assert len(round_kept_channels(groups, chosen, 2)) == 12
    assert channel_rounding(groups, 1) is None
    assert sorted(channel_rounding(groups, {"a": 4, "b": 4})([g.id for g in chosen])) == \
        [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]


@pytest.mark.parametrize("pipeline", ["latency{batch=0}", "latency{device=tpu}", "latency{threads=-1}",
                                      "zero-groups{round-to=fast}", "zero-groups{round-to=0}",
                                      "train{round-to=-8}"])
def test_bad_options_exit_2(tmp_path, capsys, pipeline):
    path = _tiny(tmp_path / "tiny.onnx")
    assert main([path, "--passes", pipeline]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "option" in err[0], err


def test_train_round_to_auto_keeps_the_measured_multiple(tmp_path):
    model = load_model(_tiny(tmp_path / "tiny.onnx", width=24, size=8))
    _run(model, f"search-space,latency{{cache={tmp_path}}}")
    space = model.analyses["search_space"]
    model.analyses["latency"].preferred_multiple = {"s0": 8, "s1": 8}  # pinned: the measured blocks vary
    report = _run(model, "train{optimizer=dhspg,data=synthetic,epochs=2,target-sparsity=0.6,round-to=auto,"
                         "quiet=true,curve=none}")
    assert report["train"]["round_to"] == "auto"
    kept = {sid: sum(not group_is_zero(model, g) for g in space.groups if g.kind == "prune" and g.space == sid)
            for sid in ("s0", "s1")}
    assert all(width % 8 == 0 for width in kept.values()), kept
    assert min(kept.values()) < 24  # channels went
