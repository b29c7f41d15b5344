"""Construction of pruned models: zero random channel groups, remove them, and prove the slim model equal.

The oracle is OTO's sanity check, made strict: the zeroed model and the constructed model run in onnxruntime on
the same seeded inputs (``compare_models``: ``onnx.checker`` full check first) and must agree to 1e-4 of the
output scale; parameters and MACs must drop whenever something was removed.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_pruning_groups import (  # noqa: E402
    REFERENCE_NETS,
    ZOO_CASES,
    export_module,
    init_groups,
    onnx_model,
    rand,
    reference_onnx,  # noqa: F401  (fixture)
    rms_norm_nodes,
    t,
    vi,
)

from asgnas.errors import AsgnasError  # noqa: E402
from asgnas.ir import Model, load_model, lower  # noqa: E402
from asgnas.passes import PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.cost import total_cost  # noqa: E402
from asgnas.passes.groups import group_is_zero, zero_group  # noqa: E402
from asgnas.passes.prune_subnet import PruneSubnetPass, construct_pruned  # noqa: E402
from asgnas.passes.pruning import analyze_pruning  # noqa: E402
from asgnas.passes.shape_infer import ensure_shapes, holes  # noqa: E402
from asgnas.passes.verify import compare_models  # noqa: E402

RTOL = 1e-4


def prune_and_check(model: Model, ids: set[int] | None = None, *, fraction: float = 0.5, seed: int = 0) -> dict:
    """Zero ``ids`` (default: a seeded random ``fraction`` of the removable groups), construct, compare."""
    analysis = analyze_pruning(model)
    removable = [g.id for g in analysis.groups if g.removable]
    if ids is None:
        ids = set(random.Random(seed).sample(removable, round(fraction * len(removable))))
    for gid in ids:
        zero_group(model, analysis.groups[gid])
        assert group_is_zero(model, analysis.groups[gid])
    zeroed = model.copy()
    before = total_cost(zeroed)
    result = construct_pruned(model, analysis, ids)
    onnx.checker.check_model(lower(model), full_check=True)
    diff = compare_models(model, zeroed)
    assert diff["max_rel_diff"] <= RTOL, diff
    after = total_cost(model)
    if result["removed_groups"]:
        assert after["params"] < before["params"]
        assert after["macs"] < before["macs"]
    else:
        assert (after["params"], after["macs"]) == (before["params"], before["macs"])
    result["before"], result["after"] = before, after
    return result


# ==================================================================================================
# the zoo


@pytest.mark.parametrize("name,exporter", ZOO_CASES)
def test_zoo_random_subsets_construct_exactly(onnx_path, name: str, exporter: str) -> None:
    path = onnx_path(name, exporter)
    for seed in (0, 1):
        prune_and_check(load_model(path), seed=seed)
    # everything removable at once: spaces that would end empty keep one (zero) group
    model = load_model(path)
    removable = {g.id for g in analyze_pruning(model.copy()).removable()}
    result = prune_and_check(model, fraction=1.0)
    kept = result["kept_to_avoid_empty"]
    assert len(set(kept)) == len(kept) and set(kept) <= removable
    assert bool(kept) == bool(removable)  # all zero would empty every prunable space
    assert result["removed_groups"] == len(removable) - len(kept)


def test_every_space_keeps_a_channel(onnx_path) -> None:
    model = load_model(onnx_path("resnet_basic", "legacy"))
    analysis = analyze_pruning(model)
    result = prune_and_check(model, {g.id for g in analysis.removable()})
    # one group kept in each of the 4 prunable spaces (stem/residual, 2 block-internal, layer2 residual)
    assert len(result["kept_to_avoid_empty"]) == 4
    assert result["removed_groups"] == len(analysis.removable()) - 4
    for value in model.graph.values.values():
        if value.const is not None:
            assert all(d > 0 for d in value.const.shape)


def test_not_removable_ids_are_skipped(onnx_path) -> None:
    model = load_model(onnx_path("two_outputs", "legacy"))
    analysis = analyze_pruning(model)
    pinned = next(g.id for g in analysis.groups if not g.removable)
    result = construct_pruned(model, analysis, {pinned})
    assert result["removed_groups"] == 0 and result["skipped_not_removable"] == [pinned]
    with pytest.raises(AsgnasError):
        construct_pruned(load_model(onnx_path("two_outputs", "legacy")), analysis, set())


def test_prune_subnet_pass(onnx_path) -> None:
    model = load_model(onnx_path("concat", "dynamo"))
    analysis = analyze_pruning(model)
    chosen = [g for g in analysis.removable()][::3]
    for group in chosen:
        zero_group(model, group)
    zeroed = model.copy()
    report = PassManager([PruneSubnetPass()]).run(model)["prune-subnet"]
    assert report["removed_groups"] == len(chosen)
    assert report["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    assert compare_models(model, zeroed)["max_rel_diff"] <= RTOL


def test_prune_subnet_without_cost_leaves_the_shapes_to_its_caller(onnx_path) -> None:
    model = load_model(onnx_path("concat", "dynamo"))
    analysis = analyze_pruning(model)
    for group in analysis.removable()[::3]:
        zero_group(model, group)
    with_cost = model.copy()
    report = PassManager(parse_pipeline("prune-subnet{cost=false}")).run(model)["prune-subnet"]
    assert "cost" not in report and report["removed_groups"] > 0
    assert holes(model)  # stale shapes dropped, not re-inferred
    reference = PassManager(parse_pipeline("prune-subnet")).run(with_cost)["prune-subnet"]
    ensure_shapes(model)
    assert {n: v.shape for n, v in model.graph.values.items()} == \
        {n: v.shape for n, v in with_cost.graph.values.items()}
    assert total_cost(model) == reference["cost"]["after"]


def test_shape_computations_are_rewritten(onnx_path) -> None:
    # legacy exports compute Reshape targets and Slice bounds from Shape at runtime (dynamic batch here)
    for name in ("channel_shuffle", "split_concat", "group_conv_slice", "groupnorm"):
        model = load_model(onnx_path(name, "legacy"))
        result = prune_and_check(model, seed=3)
        assert result["removed_groups"] > 0


def test_grouped_conv_keeps_equal_groups(onnx_path) -> None:
    model = load_model(onnx_path("group_conv_slice", "dynamo"))
    prune_and_check(model, seed=0)
    for node in model.graph:
        if node.op_type == "Conv" and node.attr("group", 1) > 1:
            weight = node.inputs[1].const.array
            assert node.attr("group") == 4
            assert node.inputs[0].shape[1] == 4 * weight.shape[1]


def test_depthwise_stays_depthwise(onnx_path) -> None:
    model = load_model(onnx_path("inverted_residual", "legacy"))
    prune_and_check(model, seed=0)
    depthwise = [n for n in model.graph if n.op_type == "Conv" and n.attr("group", 1) > 1]
    assert depthwise
    for node in depthwise:
        assert node.attr("group") == node.inputs[0].shape[1] == node.inputs[1].const.shape[0]


# ==================================================================================================
# reference architectures


@pytest.mark.parametrize("name", sorted(REFERENCE_NETS))
def test_reference_nets_construct_exactly(reference_onnx, name: str) -> None:  # noqa: F811
    prune_and_check(load_model(reference_onnx(name)), seed=0)


# ==================================================================================================
# removed channels that are not zero: folded into the consumer's bias


class _ConvSigmoidConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)  # no bias: construction creates one
        self.c3 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(F.relu(self.c2(torch.sigmoid(self.c1(x)))))


class _TokenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16, bias=False)  # 3-d input: a bare MatMul, construction adds an Add
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.softplus(self.fc1(x)))))


class _VectorMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)  # Gemm: folded into C
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.hardsigmoid(self.fc1(x)))))


class _ConvFlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc(torch.flatten(torch.sigmoid(self.bn(self.c1(x))), 1))))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("factory,shape,first", [
    (_ConvSigmoidConv, (1, 3, 8, 8), "c1.weight"),
    (_TokenMLP, (1, 4, 16), "fc1.bias"),
    (_VectorMLP, (1, 16), "fc1.bias"),
    (_ConvFlattenLinear, (1, 3, 8, 8), "c1.weight"),
])
def test_nonzero_channels_fold_into_biases(tmp_path, factory, shape, first: str, exporter: str) -> None:
    model = load_model(export_module(factory, shape, tmp_path / f"{factory.__name__}.onnx", exporter))
    analysis = analyze_pruning(model)
    groups = init_groups(analysis, first)
    assert groups and all(g.removable for g in groups), {g.reason for g in groups}
    assert analysis.folds
    result = prune_and_check(model, {g.id for g in groups[::2]})
    assert result["folded_biases"] >= 1


# ==================================================================================================
# hand-built corner cases


def test_groupnormalization_op_construction() -> None:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("GroupNormalization", ["a", "gs", "gb"], ["n"], num_groups=4, epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("gs", rand(8) + 1), t("gb", rand(8, seed=2)),
             t("w2", rand(4, 8, 1, 1, seed=1))]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits, opset=21)
    analysis = analyze_pruning(model)
    prune_and_check(model, {analysis.removable()[1].id})
    gn = next(n for n in model.graph if n.op_type == "GroupNormalization")
    assert gn.attr("num_groups") == 3 and gn.inputs[1].const.shape == (6,)


def test_resize_and_pooling_construction() -> None:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Add", ["u", "r"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("scales", [1, 1, 2, 2]), t("w2", rand(4, 8, 1, 1))]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    analysis = analyze_pruning(model)
    assert len(analysis.removable()) == 8
    prune_and_check(model, seed=0)


def test_resize_with_sizes_is_rewritten() -> None:
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["a", "", "", "sizes"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("w2", rand(4, 8, 1, 1)),
             numpy_helper.from_array(np.array([1, 8, 16, 16], np.int64), "sizes")]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits, opset=13)
    prune_and_check(model, seed=1)


def test_shared_weight_construction() -> None:
    """One initializer read by two convs (a real share) stays tied: its rows and columns go together."""
    w = rand(8, 8, 3, 3)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "wo"], ["y"])]
    inits = [t("w0", rand(8, 3, 3, 3, seed=2)), t("b0", rand(8, seed=5)), t("w", w), t("wo", rand(4, 8, 1, 1))]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    result = prune_and_check(model, seed=0)
    assert result["removed_groups"] == 4
    assert model.graph.values["w"].const.shape == (4, 4, 3, 3)


def test_refused_op_leaves_its_channels(tmp_path) -> None:
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["a"], ["d"], blocksize=2),
             helper.make_node("Conv", ["d", "w2", "b2"], ["e"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["e"], ["r"]),
             helper.make_node("Conv", ["r", "w3"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("w2", rand(6, 2, 3, 3)), t("b2", rand(6)), t("w3", rand(4, 6, 1, 1))]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    analysis = analyze_pruning(model)
    assert not any(g.removable for g in init_groups(analysis, "w1"))
    result = prune_and_check(model, {g.id for g in analysis.removable()})
    assert model.graph.values["w1"].const.shape[0] == 8
    assert result["removed_groups"] == 5 and len(result["kept_to_avoid_empty"]) == 1


class _TokenMixer(nn.Module):
    """MLP-Mixer style: a Linear over the token axis passes the conv channels through as a batch axis."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.tok1 = nn.Linear(16, 12, bias=bias)
        self.tok2 = nn.Linear(12, 16, bias=bias)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = F.relu(self.c1(x)).reshape(b, 8, 16)
        h = self.tok2(F.gelu(self.tok1(h)))
        return self.c2(h.reshape(b, 8, 4, 4))


@pytest.mark.parametrize("bias", [True, False])
def test_channels_passed_through_a_linear(tmp_path, bias: bool) -> None:
    path = export_module(lambda: _TokenMixer(bias), (1, 3, 4, 4), tmp_path / f"mixer{bias}.onnx", "dynamo")
    model = load_model(path)
    analysis = analyze_pruning(model)
    channels = init_groups(analysis, "c1.weight")
    # with a bias, a removed channel leaves the token Linear as its bias row: not zero, refused;
    # without one it stays exactly zero through both token Linears
    assert len(channels) == 8 and all(g.removable != bias for g in channels)
    tokens = init_groups(analysis, "tok1.weight") or [g for g in analysis.removable() if g not in channels]
    assert any(g.removable for g in tokens)
    prune_and_check(model, seed=0)


def test_expand_target_is_rewritten() -> None:
    # a per-channel statistic broadcast back with an explicit target shape, added to the features
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("ReduceMean", ["a"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Expand", ["m", "target"], ["e"]),
             helper.make_node("Add", ["a", "e"], ["s"]),
             helper.make_node("Conv", ["s", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("w2", rand(4, 8, 1, 1)),
             numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "target")]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    assert len(analyze_pruning(model).removable()) == 8
    prune_and_check(model, seed=0)
    expand = next(n for n in model.graph if n.op_type == "Expand")
    assert expand.inputs[1].const.array[1] == 4


def test_rmsnorm_over_channels_is_exact() -> None:
    norm, norm_inits = rms_norm_nodes()
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]), *norm,
             helper.make_node("Conv", ["b", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("w2", rand(4, 8, 1, 1, seed=1)), *norm_inits]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits)
    result = prune_and_check(model, seed=0)
    assert result["removed_groups"] == 4
    assert any(n.op_type == "Mul" and n.name == "rms_mean_rescale" for n in model.graph)


def test_rmsnormalization_op_over_other_axes_is_exact() -> None:
    """The opset-23 op normalizing over H, W only: a removed (zero) channel stays zero, the rest is untouched."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("RMSNormalization", ["a", "scale"], ["n"], axis=2),
             helper.make_node("Conv", ["n", "w2"], ["y"])]
    inits = [t("w1", rand(8, 3, 3, 3)), t("b1", rand(8)), t("scale", rand(8, 8, seed=2) + 1),
             t("w2", rand(4, 8, 1, 1, seed=1))]
    model = onnx_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", None)], inits, opset=23)
    assert len(analyze_pruning(model).removable()) == 8
    result = prune_and_check(model, seed=0)
    assert result["removed_groups"] == 4
    norm = next(n for n in model.graph if n.op_type == "RMSNormalization")
    assert norm.outputs[0].shape == (1, 4, 8, 8)
