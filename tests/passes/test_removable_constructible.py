"""Removable means constructible: every structure the analysis calls removable is built, alone and together,
into a slim model verify proves equal; a bypass that needs an Expand to a shape that is not static is refused
by the analysis, not by the construction."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main


def _conv_plus_pooled_branch(path, shape) -> str:
    """y = relu(relu(conv(x)) + conv1x1(gap(x))): the pooled branch [N, 8, 1, 1] broadcasts over H, W."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Conv", ["p", "w2"], ["q"]),
        helper.make_node("Add", ["r1", "q"], ["s"], name="join"),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _erase_groups(model, tmp_path) -> list[dict]:
    report = tmp_path / "space.json"
    assert main([model, "--passes", "search-space", "--report", str(report), "-q"]) == 0
    return [g for g in json.loads(report.read_text())["search_space"]["groups"] if g["kind"] == "erase"]


@pytest.mark.parametrize("shape", [["N", 8, "H", "W"], [2, 8, 6, 6], ["N", 8, 6, 6]])
def test_every_removable_structure_is_built_alone_and_together(tmp_path, capsys, shape):
    model = _conv_plus_pooled_branch(tmp_path / "m.onnx", shape)
    groups = _erase_groups(model, tmp_path)
    conv_branch = next(g for g in groups if "Conv_0" in g["nodes"])
    if "H" in shape:  # erased, it would leave the pooled branch [N, 8, 1, 1] to be expanded along H and W
        assert not conv_branch["removable"] and "not static" in conv_branch["reason"]
    else:  # static H and W: the joint becomes an Expand along them (the batch passes through, known or not)
        assert conv_branch["removable"]
    removable = [g["id"] for g in groups if g["removable"]]
    assert removable
    for n, ids in enumerate([[i] for i in removable]):
        ids_file = tmp_path / f"ids{n}.json"
        ids_file.write_text(json.dumps(ids))
        status = main([model, "--passes", f"search-space,zero-groups{{ids={ids_file}}},construct-subnet,verify",
                       "-o", str(tmp_path / f"slim{n}.onnx"), "-q"])
        assert status == 0, (ids, capsys.readouterr().err)
        slim = onnx.load(str(tmp_path / f"slim{n}.onnx"))
        erased = {name for g in groups if g["id"] in ids for name in g["nodes"]}
        assert not erased & {node.name for node in slim.graph.node}
        if conv_branch["id"] in ids:  # Expand to [1, 1, 6, 6]: only the dims the pooled branch broadcasts along
            target = next(t for t in slim.graph.initializer if t.name == "join_shape")
            assert numpy_helper.to_array(target).tolist() == [1, 1, 6, 6]
    # together: every removable group the validity oracle lets go at once, channels included
    status = main([model, "--passes", "search-space,zero-groups{fraction=1.0,kind=both},construct-subnet,verify", "-q"])
    assert status == 0, capsys.readouterr().err


def _two_convs_and_a_pooled_branch(path) -> str:
    """y = relu(sum(relu(conv(x)), relu(conv(x)), conv1x1(gap(x)))) over [N, 8, H, W], the Caffe2-style Sum."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (8, 8, 3, 3)), ("w2", (8, 8, 3, 3)), ("w3", (8, 8, 1, 1)))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["x", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Conv", ["p", "w3"], ["q"]),
        helper.make_node("Sum", ["r1", "r2", "q"], ["s"], name="join"), helper.make_node("Relu", ["s"], ["y"]),
    ]
    shape = ["N", 8, "H", "W"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_structures_removable_alone_but_not_buildable_together_are_an_invalid_set(tmp_path, capsys):
    """Each conv branch alone leaves a Sum of two; both together would leave the pooled branch alone, to be
    expanded along the symbolic H and W: the validity oracle refuses that set, so neither zero-groups nor
    training picks it, and any valid set is built."""
    model = _two_convs_and_a_pooled_branch(tmp_path / "m.onnx")
    groups = _erase_groups(model, tmp_path)
    convs = [g["id"] for g in groups if g["nodes"][0] in ("Conv_0", "Conv_2")]
    assert len(convs) == 2 and all(g["removable"] for g in groups if g["id"] in convs)
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps(convs))
    status = main([model, "--passes", f"search-space,zero-groups{{ids={ids}}},construct-subnet", "-q"])
    line = capsys.readouterr().err.strip()
    assert status == 2 and "invalid network: bypassing joint join to q needs an Expand along dims that are not " \
                             "static (node join, op Sum)" in line, line
    for gid in convs:
        ids.write_text(json.dumps([gid]))
        assert main([model, "--passes", f"search-space,zero-groups{{ids={ids}}},construct-subnet,verify", "-q"]) == 0
    assert main([model, "--passes", "search-space,zero-groups{fraction=1.0},construct-subnet,verify", "-q"]) == 0


def test_expand_target_broadcasts_along_a_dim_of_unknown_size() -> None:
    """When the kept operand is broadcast somewhere, its unknown dims may be 1 at run time too: the Expand takes the
    output's dim there (a no-op when the operand already has it), and an output dim that is not static leaves the
    bypass unbuildable. (A kept operand broadcast nowhere keeps its unknown dims: they count as equal.)"""
    from asgnas.ir import Value
    from asgnas.passes.erasing.bypass import bypass_problem, expand_target

    out = Value("out", shape=(2, 8, 6, 6))
    assert expand_target(out, Value("keep", shape=(2, None, 6, 6))) == [1, 8, 1, 1]
    assert expand_target(out, Value("keep", shape=(8, 1, 1))) == [2, 1, 6, 6]
    symbolic = Value("out", shape=("N", 8, 6, 6))
    assert bypass_problem(symbolic, Value("keep", shape=(None, 8, 1, 1))).endswith("not static")
    assert bypass_problem(symbolic, Value("keep", shape=("N", 8, 1, 1))) == ""  # target [1, 1, 6, 6]
    assert bypass_problem(symbolic, Value("keep", shape=(None, 8, 6, 6))) == ""  # nothing to broadcast
