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
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
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
                                      "train{round-to=-8}", "train{round-to=fast}",
                                      "zero-groups{round-to=by-cost}"])
def test_bad_options_exit_2(tmp_path, capsys, pipeline):
    path = _tiny(tmp_path / "tiny.onnx")
    assert main([path, "--passes", pipeline]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "option" in err[0], err


@pytest.mark.parametrize("options", ["optimizer=dhspg,round-to=auto",
                                     "optimizer=h2spg,kind=prune,cost=latency,cost-weight=1"])  # by-cost: auto
def test_train_round_to_auto_keeps_the_measured_multiple(tmp_path, options):
    model = load_model(_tiny(tmp_path / "tiny.onnx", width=24, size=8))
    _run(model, f"search-space,latency{{cache={tmp_path}}}")
    space = model.analyses["search_space"]
    model.analyses["latency"].preferred_multiple = {"s0": 8, "s1": 8}  # pinned: the measured blocks vary
    report = _run(model, f"train{{{options},data=synthetic,epochs=2,target-sparsity=0.6,quiet=true,curve=none}}")
    assert report["train"]["round_to"] == "auto"
    kept = {sid: sum(not group_is_zero(model, g) for g in space.groups if g.kind == "prune" and g.space == sid)
            for sid in ("s0", "s1")}
    assert all(width % 8 == 0 for width in kept.values()), kept
    assert min(kept.values()) < 24  # channels went


def test_tables_cover_the_consumers_input_columns(tmp_path):
    model = load_model(_tiny(tmp_path / "tiny.onnx"))
    _run(model, f"search-space,latency{{cache={tmp_path / 'cache'},threads=1}}")
    result = model.analyses["latency"]
    # conv1's channels narrow conv2's input (weight axis 1) and the skip path's conv3 output / fc input
    axes = {axis for sid in result.space_axes for axis in result.space_axes[sid]}
    assert ("conv1", 0) in axes and ("conv2", 1) in axes and ("conv2", 0) in axes and ("conv3", 1) in axes


def test_the_executors_time_per_node_is_a_fixed_cost():
    result = latency_module.LatencyModel(total_ms=14.0, group_saving_ms={}, preferred_multiple={}, provider="cpu",
                                         batch=1, threads=0, node_ms={"a": 6.0, "b": 4.0}, node_overhead_ms=1.0)
    # 2 ms fixed (1 per node); the other 12 scale with the kernels (10 ms profiled)
    assert result.predict_from_ratios({"a": 0.5}) == pytest.approx(2.0 + 12.0 * 7.0 / 10.0)
    assert result.predict_from_ratios({"b": 0.0}) == pytest.approx(1.0 + 12.0 * 6.0 / 10.0)  # b's share is saved
    assert latency_measure.node_overhead_ms("cpu", 1, nodes=8) < 0.5  # a few microseconds a node


def test_a_width_that_runs_slower_than_twice_its_size_is_no_block():
    # a grouped conv below 16 channels per group leaves the blocked kernel: only the full per-group width is liked
    times = {8: 0.13, 12: 0.15, 14: 0.16, 15: 0.16, 16: 0.07}
    assert latency_measure._block(times, 16, 8, [1, 2, 4]) == 16
    padded = {16: 0.5, 24: 1.0, 28: 1.0, 30: 1.0, 31: 1.0, 32: 1.0}  # every width above 16 runs as 32
    assert latency_measure._block(padded, 32, 16, [1, 2, 4, 8]) == 16
    linear = {16: 0.5, 24: 0.75, 28: 0.88, 30: 0.94, 31: 0.97, 32: 1.0}
    assert latency_measure._block(linear, 32, 16, [1, 2, 4, 8]) == 1


def test_grouped_convs_count_their_blocks_per_group():
    sig = latency_measure.Signature("Conv", (1, 512, 8, 8), (512, 16, 3, 3), (("group", 32),), False, False)
    assert latency_measure.per_group_unit(sig, 0) == 32 and latency_measure.per_group_unit(sig, 1) == 1
    depthwise = latency_measure.Signature("Conv", (1, 64, 8, 8), (64, 1, 3, 3), (("group", 64),), False, True)
    assert latency_measure.per_group_unit(depthwise, 0) == 1
    # a block of 16 channels per group (512 channels) is 16 channel groups of one channel per group; a plain
    # conv's block of 16 is one channel group of 32 channels
    assert latency_module._in_groups(512, 32) == 16 and latency_module._in_groups(16, 32) == 1
    assert latency_module._in_groups(16, 1) == 16


@pytest.mark.parametrize("threads", [1, 2])
def test_block_probes_run_at_the_passs_threads(monkeypatch, threads):
    """The width a kernel likes depends on how it splits its channel blocks over threads: the probes and the
    table are timed at the pass's threads, and the probes at batch 1."""
    calls = []

    def fake_time(proto, feeds, device, run_threads):
        calls.append((feeds["x"].shape[0], run_threads))
        return float(proto.graph.initializer[0].dims[0])  # time linear in the output width

    monkeypatch.setattr(latency_measure, "time_ms", fake_time)
    sig = latency_measure.Signature("Conv", (4, 64, 8, 8), (64, 64, 3, 3), (), False, False)
    table, count = latency_measure.measure_table(sig, 0, "cpu", threads, None)
    assert count == len(calls) and {t for _, t in calls} == {threads}
    assert {b for b, _ in calls} == {1, 4}  # probes at batch 1, the table at the pass's batch
    assert table.block == 1 and table.widths[-1] == 64  # a linear kernel has no block
    assert not table.narrowing_slows


@pytest.mark.parametrize("narrow_ms, slows", [(3.0, True), (1.1, False)])
def test_a_kernel_clearly_slower_below_its_widest_probe_is_flagged(monkeypatch, narrow_ms, slows):
    """onnxruntime's grouped conv leaves its blocked kernel below 16 channels per group (2.3x slower at 8): the
    probes below the widest one run slower, which the table, interpolating between liked widths, cannot show."""
    monkeypatch.setattr(latency_measure, "time_ms",
                        lambda proto, feeds, device, threads: 1.0 if proto.graph.initializer[0].dims[0] == 64
                        else narrow_ms)
    sig = latency_measure.Signature("Conv", (1, 64, 8, 8), (64, 64, 3, 3), (), False, False)
    table = latency_measure.measure_table(sig, 0, "cpu", 1, None)[0]
    assert table.narrowing_slows is slows
    assert latency_measure.WidthTable(**table.to_json()).narrowing_slows is slows  # survives the disk cache


def test_the_blocked_layouts_width_is_found_in_the_optimized_graph():
    block = latency_measure.layout_block("cpu", 1)
    assert block in (1, 2, 4, 8, 16, 32, 64)

    def reorders(width: int) -> int:
        return latency_measure._reorders_in_chain(width, "cpu", 1)

    assert reorders(block) == reorders(64)  # at the block the chain stays blocked, as at full width
    if block > 1:  # on a CPU with onnxruntime's NCHWc transform (AVX2: 8, AVX-512: 16)
        assert reorders(block // 2) > reorders(64)


def test_spaces_as_wide_as_the_layout_block_keep_multiples_of_it():
    conv = latency_measure.Signature("Conv", (1, 16, 8, 8), (8, 16, 3, 3), (), False, False)
    narrow = latency_measure.Signature("Conv", (1, 4, 8, 8), (4, 4, 3, 3), (), False, False)
    gemm = latency_measure.Signature("Gemm", (1, 16), (10, 16), (("transB", 1),), False, False)
    layout = {"node_sig": {"a": conv, "b": narrow, "fc": gemm},
              "unit_channels": {("s", "a", 0): 1, ("s", "a", 1): 1, ("s", "b", 0): 1, ("s", "fc", 1): 1}}
    assert latency_module._layout_multiples("s", [("a", 0), ("a", 1)], layout, 8) == [8, 8]
    assert latency_module._layout_multiples("s", [("b", 0), ("fc", 1)], layout, 8) == []  # narrower; not a conv


@pytest.mark.parametrize("style", ["tf2onnx", "jax2onnx"])
def test_round_to_auto_on_nhwc_exports_keeps_layout_multiples_and_builds(tmp_path, style):
    """NHWC inputs with layout Transposes (tf2onnx, jax2onnx): the latency pass times the model, every channel space
    a conv slices gets a multiple of the blocked layout's width, and the rounded slim model verifies."""
    from asgnas.passes.verify import compare_models
    from tests.passes.nhwc_twins import resnet_twin

    path = resnet_twin(tmp_path / f"{style}.onnx", nhwc=style == "jax2onnx", tf2onnx=style == "tf2onnx",
                       channels=32)
    model = load_model(path)
    report = _run(model, f"search-space,latency{{cache={tmp_path / 'cache'},threads=1}}")["latency"]
    latency, space = model.analyses["latency"], model.analyses["search_space"]
    block = latency_measure.layout_block("cpu", 1)
    conv_spaces = {sid for sid, axes in latency.space_axes.items() if any(n.startswith("Conv") for n, _ in axes)}
    assert report["total_ms"] > 0 and len(conv_spaces) == 3  # the stem's and each block's inner space
    assert all(latency.preferred_multiple[sid] % block == 0 for sid in conv_spaces)
    # pinned to the layout width (the probed blocks vary from run to run; 32 would keep these 32-wide spaces whole)
    latency.preferred_multiple.update({sid: max(block, 2) for sid in conv_spaces})
    zeroed = set(_run(model, "zero-groups{fraction=0.6,seed=0,kind=prune,round-to=auto}")["zero-groups"]["zeroed"])
    for sid in conv_spaces:
        kept = latency.space_size[sid] - sum(g.id in zeroed for g in space.groups if g.space == sid)
        assert kept % latency.preferred_multiple[sid] == 0 and kept > 0, (sid, kept)
    sparse = model.copy()
    built = construct_subnet(model)
    assert built["cost"]["after"]["macs"] < built["cost"]["before"]["macs"]
    assert compare_models(model, sparse, seeds=1)["max_rel_diff"] < 1e-4


def _one_space(size: int, scaled_nodes: list[str]) -> latency_module.LatencyModel:
    """A space of ``size`` channel groups over a 4 ms ReLU (scaled with the space when listed) and a 6 ms conv."""
    return latency_module.LatencyModel(total_ms=10.0, group_saving_ms={}, preferred_multiple={}, provider="cpu",
                                       batch=1, threads=1, node_ms={"relu": 4.0, "conv": 6.0},
                                       space_size={"s": size}, space_nodes={"s": scaled_nodes})


def test_a_space_no_wider_than_its_kernels_block_is_cut_where_its_other_nodes_save_time():
    # 8 channels on a kernel padded to 8: the ReLU still halves at 4 kept, so multiples of 4
    assert latency_module._cutting_multiple(_one_space(8, ["relu"]), "s", block=8, floor=1) == 4
    assert latency_module._cutting_multiple(_one_space(8, ["relu"]), "s", block=16, floor=1) == 4
    # nothing but the padded kernel: cutting saves nothing, so the space keeps the block (is not cut)
    assert latency_module._cutting_multiple(_one_space(8, []), "s", block=8, floor=1) == 8
    # the layout width is a floor: below it the blocked chain breaks into reorders the prediction does not see
    assert latency_module._cutting_multiple(_one_space(8, ["relu"]), "s", block=8, floor=8) == 8
    # a space wider than the block keeps the block
    assert latency_module._cutting_multiple(_one_space(24, ["relu"]), "s", block=8, floor=1) == 8


def test_a_kernel_that_slows_when_narrowed_keeps_its_space_whole():
    result = _one_space(8, ["relu"])
    result.node_tables = {"conv": ("sig", (8, 8))}
    result.space_axes = {"s": [("conv", 0)]}
    result.tables = {"sig": {0: latency_measure.WidthTable(full=8, widths=[8], ms=[6.0], block=8,
                                                           narrowing_slows=True)}}
    # the table (one width) predicts the conv unchanged and the ReLU halved, but the kernel was measured slower
    assert result.predict_ms({"s": 4}) < result.total_ms
    assert latency_module._cutting_multiple(result, "s", block=8, floor=1) == 8
    result.tables["sig"][0].narrowing_slows = False
    assert latency_module._cutting_multiple(result, "s", block=8, floor=1) == 4
