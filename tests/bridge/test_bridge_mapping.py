"""``to_param_groups``: analysis groups (initializer slices) -> optimizer groups (torch parameter slices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from asgnas import AsgnasError
from asgnas.bridge import OnnxModule, export_torch_model, params_by_initializer, to_param_groups
from asgnas.bridge.export import PARAM_MAP_KEY
from asgnas.ir import load_model
from asgnas.optim.param_groups import GroupLayout, ParamGroup, ParamSlice
from asgnas.passes.groups import Group, TensorSlice, group_is_zero
from models import ZOO


def _channel_groups() -> list[Group]:
    """Hand-made channel groups of ``conv_bn_relu``'s first conv-BN pair plus one whole-tensor group."""
    groups = []
    for gid, channel in enumerate((1, 5)):
        groups.append(Group(gid, "prune", ["conv"], [
            TensorSlice("body.0.0.weight", 0, [channel]),
            TensorSlice("body.0.1.weight", 0, [channel]),
            TensorSlice("body.0.1.bias", 0, [channel]),
        ]))
    groups.append(Group(2, "erase", ["out"], [TensorSlice("out.weight"), TensorSlice("out.bias")], removable=False))
    return groups


def test_groups_map_to_the_executor_parameters(onnx_path) -> None:
    model = load_model(onnx_path("conv_bn_relu", "legacy"))
    module = OnnxModule(model)
    params = module.param_for_initializer
    groups = to_param_groups(_channel_groups(), params)
    assert [g.id for g in groups] == [0, 1, 2]
    assert [g.removable for g in groups] == [True, True, False]
    assert all(isinstance(g, ParamGroup) and all(isinstance(s, ParamSlice) for s in g.slices) for g in groups)
    first = groups[0].slices[0]
    assert first.param is params["body.0.0.weight"] and first.axis == 0 and list(first.indices) == [1]
    assert groups[2].slices[0].indices is None
    GroupLayout(groups, list(module.parameters()))  # the optimizer accepts them

    # zero a group through its torch slices, write back: the IR sees the same group as zero
    with torch.no_grad():
        for piece in groups[1].slices:
            piece.param.index_fill_(piece.axis, torch.tensor(piece.indices), 0.0)
    module.write_back()
    source = _channel_groups()
    assert group_is_zero(model, source[1]) and not group_is_zero(model, source[0])


def test_groups_map_to_a_user_torch_module(tmp_path: Path) -> None:
    case = ZOO["conv_bn_relu"]
    module = case.build()
    model = export_torch_model(module, case.inputs(), tmp_path / "m.onnx")
    params = params_by_initializer(module, model.analyses[PARAM_MAP_KEY])
    groups = to_param_groups(_channel_groups(), params)
    assert groups[0].slices[0].param is module.body[0][0].weight
    assert groups[0].slices[2].param is module.body[0][1].bias
    assert groups[2].slices[0].param is module.out.weight


def test_missing_initializer_is_an_error_or_dropped() -> None:
    params = {"w": torch.nn.Parameter(torch.zeros(4, 3))}
    groups = [Group(7, "prune", [], [TensorSlice("w", 0, [0]), TensorSlice("frozen", 0, [0])])]
    with pytest.raises(AsgnasError, match="frozen"):
        to_param_groups(groups, params)
    loose = to_param_groups(groups, params, strict=False)
    assert len(loose[0].slices) == 1 and loose[0].removable is False


def test_out_of_range_slices_are_rejected() -> None:
    params = {"w": torch.nn.Parameter(torch.zeros(4, 3))}
    with pytest.raises(AsgnasError, match="index"):
        to_param_groups([Group(0, "prune", [], [TensorSlice("w", 1, [3])])], params)
    with pytest.raises(AsgnasError, match="axis"):
        to_param_groups([Group(0, "prune", [], [TensorSlice("w", 2, [0])])], params)
    negative = to_param_groups([Group(0, "prune", [], [TensorSlice("w", -1, [2])])], params)
    assert negative[0].slices[0].axis == 1


def test_analysis_groups_map_strictly(onnx_path) -> None:
    """Every slice the erasing analysis emits for a zoo model names a trainable parameter of the executor."""
    import asgnas.passes.erasing as erasing
    model = load_model(onnx_path("demo_supnet", "legacy"))
    groups = erasing.analyze_erasing(model).groups
    assert groups
    module = OnnxModule(model)
    param_groups = to_param_groups(groups, module.param_for_initializer)
    assert [g.id for g in param_groups] == [g.id for g in groups]
    for source, mapped in zip(groups, param_groups):
        for piece, ps in zip(source.params, mapped.slices):
            assert ps.param is module.param_for_initializer[piece.initializer]
            assert tuple(ps.param.shape) == tuple(model.graph.values[piece.initializer].const.shape)
