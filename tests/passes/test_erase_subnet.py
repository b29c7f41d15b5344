"""Sub-network construction, erasing side (spec 4): exact, smaller, interface kept."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_erasing_support import (  # noqa: E402
    dynamo_available,
    export_module,
    load,
    random_valid_subset,
    zoo_onnx,
)

from asgnas.errors import AsgnasError  # noqa: E402
from asgnas.ir import Model, lower  # noqa: E402
from asgnas.passes import PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.erase_subnet import construct_erased  # noqa: E402
from asgnas.passes.erasing import analyze_erasing  # noqa: E402
from asgnas.passes.groups import group_is_zero, zero_group  # noqa: E402
from asgnas.passes.hierarchy import HierarchyOracle  # noqa: E402
from asgnas.passes.verify import compare_models  # noqa: E402

EXPORTERS = ["legacy"] + (["dynamo"] if dynamo_available() else [])


def _interface(model: Model) -> list[tuple[str, int, tuple]]:
    proto = lower(model)
    return [(v.name, v.type.tensor_type.elem_type, tuple(d.dim_value or d.dim_param for d in
                                                          v.type.tensor_type.shape.dim))
            for v in [*proto.graph.input, *proto.graph.output]]


def _zero_construct_compare(model: Model, ids: list[int]) -> dict:
    """Zero the groups, construct, and check: exact vs the zeroed model, checker, interface, strictly smaller."""
    analysis = analyze_erasing(model)
    by_id = analysis.by_id()
    for gid in ids:
        zero_group(model, by_id[gid])
    zeroed = model.copy()
    interface = _interface(model)
    result = construct_erased(model, analysis, ids)
    onnx.checker.check_model(lower(model), full_check=True)
    assert _interface(model) == interface
    diff = compare_models(model, zeroed)
    assert diff["max_rel_diff"] <= 1e-4, diff
    assert result["params_after"] < result["params_before"]
    assert result["macs_after"] < result["macs_before"]
    return result


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_stacked_unets_paper_subnetwork(exporter: str) -> None:
    """Spec 2.7: erasing {72..75}, {13,14,15,19}, {50,51,52,56}, {63..66,70} deletes the whole right U-Net."""
    model = load(zoo_onnx("stackedunets", exporter))
    analysis = analyze_erasing(model)
    owner = {}
    for group in analysis.removable():
        convs = sorted(int(m.group(1)) for p in group.params if (m := re.match(r"conv(\d+)\.", p.initializer)))
        owner[convs[0]] = group.id
    choice = [owner[73], owner[14], owner[50], owner[63]]
    result = _zero_construct_compare(model, choice)
    initializers = {v.name for v in model.graph.values.values() if v.is_initializer}
    right = {f"conv{i}" for i in (39, 42, 43, 45, 48, 49, 50, 51, 52, 63, 64, 73)}
    assert not {name.split(".")[0] for name in initializers} & (right | {"conv14", "conv15"})
    left = {f"conv{i}" for i in (0, 3, 5, 7, 11, 12, 26, 27, 36)}
    assert left <= {name.split(".")[0] for name in initializers}
    ops = [n.op_type for n in model.graph]
    assert ops.count("Add") == 2  # add25 and add34 stay; add20 and add76 are bypassed
    assert ops.count("Resize") == 2  # up24 and up33
    # conv12 feeds up24 directly; bn38 (conv36's output path) feeds the pooling directly
    up24 = next(n for n in model.graph if n.op_type == "Resize" and n.inputs[0].producer.op_type == "Conv")
    assert up24.inputs[0].producer.inputs[1].name == "conv12.weight"
    pool = next(n for n in model.graph if n.op_type in ("GlobalAveragePool", "ReduceMean"))
    assert pool.inputs[0].producer.op_type in ("BatchNormalization", "Relu")
    assert result["bypassed"] and result["nodes_before"] - result["nodes_after"] >= 30, result


CASES = [(n, e) for n in ("stackedunets", "demosupnet", "superresnet", "regnet") for e in EXPORTERS]
CASES.append(("darts_cells", "legacy"))


@pytest.mark.parametrize("name,exporter", CASES)
def test_random_valid_subsets_construct_exactly(name: str, exporter: str) -> None:
    path = zoo_onnx(name, exporter)
    rng = np.random.default_rng(hash((name, exporter)) % 2**32)
    base = analyze_erasing(load(path))
    oracle = HierarchyOracle(base)
    ids = [g.id for g in base.removable()]
    for _ in range(2):
        subset = random_valid_subset(oracle, ids, rng)
        _zero_construct_compare(load(path), subset)


@pytest.mark.parametrize("case", ["concat", "nested_concat", "split_concat", "resnet_basic", "two_inputs",
                                  "convtranspose_in", "mlp_residual", "hand_attention"])
def test_test_zoo_cases_construct_exactly(onnx_path, case: str) -> None:
    """The shared zoo's Concat variants (BN after the Concat, nested Concats, Slice/Split) and residual nets."""
    path = onnx_path(case, "legacy")
    base = analyze_erasing(load(path))
    oracle = HierarchyOracle(base)
    ids = [g.id for g in base.removable()]
    assert ids
    rng = np.random.default_rng(0)
    for _ in range(2):
        subset = random_valid_subset(oracle, ids, rng)
        if subset:
            _zero_construct_compare(load(path), subset)


def test_concat_operand_erasure_slices_bn_and_stem_columns(onnx_path) -> None:
    model = load(onnx_path("concat", "legacy"))
    analysis = analyze_erasing(model)
    branch_b = next(g for g in analysis.removable() if "branch_b" in g.nodes[0])
    result = _zero_construct_compare(model, [branch_b.id])
    values = model.graph.values
    assert values["bn.weight"].const.shape == (8,) and values["bn.running_var"].const.shape == (8,)
    assert values["conv.weight"].const.shape == (16, 8, 3, 3)  # 24 -> 8 input columns
    assert not any(n.op_type == "Concat" for n in model.graph)  # one operand left: bypassed
    assert "/conv/Conv" in result["sliced"] and "/bn/BatchNormalization" in result["sliced"]


def test_demosupnet_concat_columns() -> None:
    model = load(zoo_onnx("demosupnet", "legacy"))
    analysis = analyze_erasing(model)
    conv2 = next(g for g in analysis.removable() if g.params[0].initializer.startswith("conv2."))
    _zero_construct_compare(model, [conv2.id])
    w = model.graph.values["conv6.0.weight"].const.array
    assert w.shape[1] == 2 * 8  # the first of three 8-channel column blocks went
    (concat,) = [n for n in model.graph if n.op_type == "Concat"]
    assert len(concat.inputs) == 2


def test_output_produced_by_a_joint_keeps_its_name() -> None:
    class Res(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.branch = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                                              torch.nn.BatchNorm2d(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            return h + self.branch(h)

    model = load(export_module(Res(), torch.randn(1, 3, 6, 6), "res_out"))
    analysis = analyze_erasing(model)
    (branch,) = analysis.removable()
    _zero_construct_compare(model, [branch.id])
    assert [v.name for v in model.graph.outputs] == ["output"]
    assert model.graph.outputs[0].producer.op_type == "Identity"


def test_invalid_sets_are_rejected_before_any_change() -> None:
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    nodes = len(model.graph)
    with pytest.raises(AsgnasError, match="not valid"):
        construct_erased(model, analysis, [g.id for g in analysis.removable()])
    with pytest.raises(AsgnasError, match="not valid"):
        construct_erased(model, analysis, [next(g.id for g in analysis.groups if not g.removable)])
    with pytest.raises(AsgnasError, match="not an erase group"):
        construct_erased(model, analysis, [999])
    assert len(model.graph) == nodes


def test_erase_subnet_pass_erases_the_zero_structures() -> None:
    model = load(zoo_onnx("superresnet", "legacy"))
    analysis = analyze_erasing(model)
    tails = [g for g in analysis.removable() if ".tail." in g.params[0].initializer]
    for group in tails[1:]:
        zero_group(model, group)
    zeroed = model.copy()
    report = PassManager(parse_pipeline("erasing-groups,erase-subnet")).run(model)
    result = report["erase-subnet"]
    assert sorted(result["erased_groups"]) == sorted(g.id for g in tails[1:])
    assert result["params_after"] < result["params_before"] and not result["skipped"]
    assert compare_models(model, zeroed)["max_rel_diff"] <= 1e-4
    assert all(not group_is_zero(model, g) for g in analyze_erasing(model).removable())
    # nothing zero: a no-op
    again = PassManager(parse_pipeline("erase-subnet")).run(model)["erase-subnet"]
    assert again["erased_groups"] == [] and again["zero_groups"] == []


def test_erase_subnet_skips_what_cannot_go_together() -> None:
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    for group in analysis.removable():
        zero_group(model, group)
    result = PassManager(parse_pipeline("erase-subnet")).run(model)["erase-subnet"]
    assert result["skipped"] and result["erased_groups"]
    with pytest.raises(AsgnasError, match="not erasable together"):
        fresh = load(zoo_onnx("stackedunets", "legacy"))
        for group in analyze_erasing(fresh).removable():
            zero_group(fresh, group)
        PassManager(parse_pipeline("erase-subnet{strict=true}")).run(fresh)


def test_sub_keeps_its_semantics() -> None:
    """x - branch(x): the right operand is erasable (x - 0 == x); a branch on the left is not."""

    class SubNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.right = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4))
            self.left = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4))
            self.head = torch.nn.Conv2d(4, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x))
            return self.head(self.left(h) - self.right(h))

    model = load(export_module(SubNet(), torch.randn(1, 3, 6, 6), "sub_net"))
    analysis = analyze_erasing(model)
    groups = {g.params[0].initializer.split(".")[0]: g for g in analysis.groups}
    assert groups["right"].removable
    assert not groups["left"].removable and "Sub" in groups["left"].reason
    _zero_construct_compare(model, [groups["right"].id])
    assert not any(n.op_type == "Sub" for n in model.graph)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_concat_flatten_linear_with_dynamic_batch(exporter: str) -> None:
    """Concat -> BN -> Flatten -> Linear: an erased operand drops a block of H*W columns per channel."""

    class CatHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.a = torch.nn.Sequential(torch.nn.Conv2d(4, 2, 3, padding=1), torch.nn.BatchNorm2d(2))
            self.b = torch.nn.Sequential(torch.nn.Conv2d(4, 3, 1), torch.nn.ReLU())
            self.bn = torch.nn.BatchNorm2d(9)
            self.fc = torch.nn.Linear(9 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.stem(x))
            c = torch.cat([self.a(h), self.b(h), h], dim=1)
            return self.fc(torch.flatten(torch.nn.functional.max_pool2d(self.bn(c), 2), 1))

    path = export_module(CatHead(), torch.randn(1, 3, 4, 4), "cat_head", exporter, dynamic_batch=True)
    model = load(path)
    analysis = analyze_erasing(model)
    groups = {g.params[0].initializer.split(".")[0]: g for g in analysis.removable()}
    assert set(groups) == {"a", "b"}
    positions = [p.indices for p in groups["b"].params if p.indices is not None]
    assert positions == [[2, 3, 4], [2, 3, 4]]  # its BN scale/bias slices (Z3)
    _zero_construct_compare(model, [groups["b"].id])
    fc = next(v for v in model.graph.values.values() if v.is_initializer and v.const.shape[0] == 5
              and len(v.const.shape) == 2)
    assert fc.const.shape[1] == 6 * 4  # 9 -> 6 channels, 4 columns each
