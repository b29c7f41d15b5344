"""Channel spaces follow layout Transposes: a network exported the jax2onnx way (NHWC, each Conv between
Transposes, BatchNorm as a per-channel Mul + Add on the last axis) gets the search space of its torch (NCHW) twin,
and every group the analysis calls removable is built -- alone and together -- into a slim model that passes
onnx.checker and that onnxruntime shows equal, whatever the value_info declares."""

from __future__ import annotations

import json
from collections import Counter

import onnx
import pytest

from asgnas.cli import main
from tests.passes.nhwc_twins import concat_twin, resnet_twin


def _space(model: str, tmp_path) -> dict:
    report = tmp_path / "space.json"
    assert main([model, "--passes", "search-space", "--report", str(report), "-q"]) == 0
    return json.loads(report.read_text())["search_space"]


def _shape(space: dict) -> tuple:
    """What must match between twins: the counts, each group's kind, removability and place in the hierarchy,
    and how many groups each channel space holds."""
    summary = {k: v for k, v in space["summary"].items() if k != "removable_param_fraction"}
    groups = sorted((g["kind"], g["removable"], len(g["parents"]), len(g["children"])) for g in space["groups"])
    per_space = sorted(Counter(g["space"] for g in space["groups"] if g["kind"] == "prune").values())
    return summary, groups, per_space


@pytest.mark.parametrize("variant", [
    {}, {"const_shape": [1, 1, 1, 8]}, {"residual_nchw": True}, {"preact": True, "residual_nchw": True},
])
def test_nhwc_twin_has_the_search_space_of_the_nchw_twin(tmp_path, variant):
    nchw = _space(resnet_twin(tmp_path / "nchw.onnx", nhwc=False, preact=variant.get("preact", False)), tmp_path)
    nhwc = _space(resnet_twin(tmp_path / "nhwc.onnx", nhwc=True, **variant), tmp_path)
    assert nhwc["summary"]["num_channel_spaces"] == 3
    assert _shape(nhwc) == _shape(nchw)


def test_tf2onnx_twin_has_the_search_space_of_the_torch_twin(tmp_path, capsys):
    """One Transpose at the input, then NCHW: BatchNorm folded to Mul + Add with [C, 1, 1] constants."""
    torch_like = _space(resnet_twin(tmp_path / "nchw.onnx", nhwc=False), tmp_path)
    model = resnet_twin(tmp_path / "tf.onnx", nhwc=False, tf2onnx=True)
    assert _shape(_space(model, tmp_path)) == _shape(torch_like)
    _build(model, "zero-groups{fraction=1.0,kind=both}", tmp_path / "slim.onnx", capsys)


def _build(model: str, zero: str, out, capsys) -> onnx.ModelProto:
    report = out.with_suffix(".json")
    status = main([model, "--passes", f"search-space,{zero},construct-subnet,verify", "-o", str(out),
                   "--report", str(report), "-q"])
    assert status == 0, (zero, capsys.readouterr().err)
    result = json.loads(report.read_text())
    assert result["verify"]["ok"] and result["verify"]["max_abs_diff"] < 1e-4
    slim = onnx.load(str(out))
    onnx.checker.check_model(slim, full_check=True)
    assert result["cost"]["after"]["params"] < result["cost"]["before"]["params"]
    return slim


def _build_each_alone(model: str, group_ids: list[int], tmp_path, capsys) -> dict[int, onnx.ModelProto]:
    slims = {}
    for gid in group_ids:
        ids = tmp_path / f"ids{gid}.json"
        ids.write_text(json.dumps([gid]))
        slims[gid] = _build(model, f"zero-groups{{ids={ids}}}", tmp_path / f"slim{gid}.onnx", capsys)
    return slims


def test_every_removable_group_of_the_nhwc_twin_is_built_alone(tmp_path, capsys):
    model = resnet_twin(tmp_path / "m.onnx", nhwc=True, const_shape=[1, 1, 1, 8])
    removable = [g["id"] for g in _space(model, tmp_path)["groups"] if g["removable"]]
    assert len(removable) == 26  # 24 channels in 3 spaces, 2 residual blocks
    _build_each_alone(model, removable, tmp_path, capsys)


@pytest.mark.parametrize("annotations", ["none", "shapeless", "batch1", "joints", "shortcut", "result"])
def test_residual_add_between_transposes_builds_what_is_removable_whatever_its_value_info(tmp_path, capsys,
                                                                                         annotations):
    """jax2onnx's pattern: the residual Add in NCHW between Transposes, one joint feeding the next, under value_info
    that is missing or does not match the data. A declared batch of 1 where the input's symbolic batch flows is
    replaced by the inferred shape (one warning naming the values), so every variant gets the search space of the
    unannotated model; each structure called removable is built alone and together."""
    plain = _space(resnet_twin(tmp_path / "plain.onnx", nhwc=True, preact=True, residual_nchw=True), tmp_path)
    capsys.readouterr()
    model = resnet_twin(tmp_path / "m.onnx", nhwc=True, preact=True, residual_nchw=True, annotations=annotations)
    space = _space(model, tmp_path)
    warned = [line for line in capsys.readouterr().err.splitlines() if "contradict" in line]
    wrong = {i.name for i in onnx.load(model).graph.value_info if i.type.tensor_type.shape.dim[:1]
             and i.type.tensor_type.shape.dim[0].dim_value == 1}
    assert len(warned) == (1 if wrong else 0)
    if wrong:
        named = warned[0].split("from its inputs for ")[1].split(";")[0].split(" and ")[0].split(", ")
        assert set(named) <= wrong
    assert _shape(space) == _shape(plain)
    assert space["summary"]["num_channel_spaces"] == 3
    removable = [g["id"] for g in space["groups"] if g["kind"] == "erase" and g["removable"]]
    assert len(removable) == 2
    _build_each_alone(model, removable, tmp_path, capsys)
    slim = _build(model, "zero-groups{fraction=1.0,kind=both}", tmp_path / "slim.onnx", capsys)
    assert len([n for n in slim.graph.node if n.op_type == "Conv"]) == 1  # both blocks went


def test_concat_of_nhwc_branches_is_an_erase_joint_through_the_transposes(tmp_path, capsys):
    """The concatenation (on the last axis) reaches the next conv through a Transpose: the channels it drops move
    to axis 1 there, and the conv loses the right input columns."""
    nchw = _space(concat_twin(tmp_path / "nchw.onnx", nhwc=False), tmp_path)
    model = concat_twin(tmp_path / "nhwc.onnx", nhwc=True)
    nhwc = _space(model, tmp_path)
    assert _shape(nhwc) == _shape(nchw)
    branches = [g["id"] for g in nhwc["groups"] if g["kind"] == "erase" and g["removable"]]
    assert len(branches) == 2
    for slim in _build_each_alone(model, branches, tmp_path, capsys).values():
        weights = {t.name: list(t.dims) for t in slim.graph.initializer}
        assert weights["mix.w"] == [4, 4, 3, 3]  # the branch's 4 columns went
    _build(model, "zero-groups{fraction=1.0,kind=both}", tmp_path / "slim.onnx", capsys)
