"""Lift -> lower round trips: bit-identical onnxruntime outputs, stable names, external data, opsets, subgraphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from asgnas.errors import AsgnasError
from asgnas.ir import CycleError, format_model, lift, load_model, lower, save_model
from asgnas.passes.dce import eliminate_dead_code
from tests.models import ZOO, case_names, ort_run, seeded_inputs

CASES = [(name, "legacy") for name in sorted(ZOO)] + [(name, "dynamo") for name in case_names(all_of={"dynamo_ok"})]


@pytest.mark.parametrize("name,exporter", CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_unchanged_model_round_trips_bit_identically(onnx_path, tmp_path, name, exporter):
    source = onnx_path(name, exporter)
    original = onnx.load(str(source))
    model = load_model(source)
    out = save_model(model, tmp_path / "rt.onnx")

    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    # names are how users and reports refer to things: all of them survive
    assert [n.name for n in written.graph.node if n.name] == [n.name for n in original.graph.node if n.name]
    assert {t.name for t in written.graph.initializer} == {t.name for t in original.graph.initializer}
    assert [i.name for i in written.graph.input] == [i.name for i in original.graph.input]
    assert [o.name for o in written.graph.output] == [o.name for o in original.graph.output]
    opsets = [{(o.domain, o.version) for o in m.opset_import} for m in (written, original)]
    assert opsets[0] == opsets[1]

    feeds = seeded_inputs(source, seed=3)
    for expected, actual in zip(ort_run(source, feeds), ort_run(out, feeds)):
        assert np.array_equal(expected, actual)


def test_producer_and_consumer_maps(onnx_path):
    model = load_model(onnx_path("resnet_basic", "legacy"))
    graph = model.graph
    for node in graph:
        for index, value in enumerate(node.inputs):
            if value is not None:
                assert (node, index) in value.uses
        for value in node.outputs:
            assert value.producer is node
    adds = [n for n in graph if n.op_type == "Add"]
    assert adds and all(len(n.inputs) == 2 for n in adds)
    # a residual block's input feeds both the branch and the skip path
    assert any(len(v.consumers) >= 2 for v in graph.values.values() if v.producer is not None)


def test_symbolic_batch_dim_is_kept(onnx_path):
    dynamic = [n for n in sorted(ZOO) if "dynamic_batch" in ZOO[n].tags]
    assert dynamic
    model = load_model(onnx_path(dynamic[0], "legacy"))
    assert isinstance(model.graph.inputs[0].shape[0], str)
    written = lower(model)
    assert written.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_constants_are_numpy(onnx_path):
    model = load_model(onnx_path("conv_bn_relu", "legacy"))
    inits = model.graph.initializers()
    assert inits and all(isinstance(v.const_array(), np.ndarray) for v in inits)
    assert all(v.const_array().shape == v.shape for v in inits)


def test_external_data_round_trip(onnx_path, tmp_path):
    source = onnx_path("conv_bn_relu", "legacy")
    model = load_model(source)
    out = save_model(model, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data").stat().st_size > 0
    reloaded = load_model(out)
    feeds = seeded_inputs(source, seed=1)
    for expected, actual in zip(ort_run(source, feeds), ort_run(save_model(reloaded, tmp_path / "back.onnx"), feeds)):
        assert np.array_equal(expected, actual)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(AsgnasError, match="missing external data"):
        load_model(out)


def _export_at_opset(path, opset: int) -> None:
    import torch

    case = ZOO["resnet_basic"]
    with torch.no_grad():
        torch.onnx.export(case.build().eval(), case.inputs(), str(path), dynamo=False,
                          do_constant_folding=False, opset_version=opset)


@pytest.mark.parametrize("opset", [11, 13, 17, onnx.defs.onnx_opset_version()])
def test_opsets_round_trip(tmp_path, opset):
    src = tmp_path / "src.onnx"
    if opset <= 17:
        _export_at_opset(src, opset)
    else:  # newer than torch exports: convert upwards
        _export_at_opset(tmp_path / "base.onnx", 17)
        onnx.save(onnx.version_converter.convert_version(onnx.load(str(tmp_path / "base.onnx")), opset), str(src))
    model = load_model(src)
    assert model.opset == opset
    out = save_model(model, tmp_path / "rt.onnx")
    feeds = seeded_inputs(src, seed=0)
    for expected, actual in zip(ort_run(src, feeds), ort_run(out, feeds)):
        assert np.array_equal(expected, actual)


def _if_model() -> onnx.ModelProto:
    """y = If(cond) then relu(x) + w else x * 2: both branches capture outer values ``h`` and ``w``."""
    then_graph = helper.make_graph(
        [helper.make_node("Add", ["h", "w"], ["t_out"])], "then",
        [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 3])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Mul", ["h", "two"], ["e_out"])], "else",
        [], [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="relu"),
        helper.make_node("Relu", ["x"], ["dead"], name="dead_relu"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [2, 3], np.arange(6, dtype=np.float32))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subgraphs_are_opaque_and_their_captures_kept(tmp_path):
    proto = _if_model()
    model = lift(proto)
    if_node = model.graph.node_by_name("if")
    assert {v.name for v in if_node.implicit_inputs} == {"h", "w"}
    removed, _ = eliminate_dead_code(model.graph)
    assert removed == 1 and model.graph.node_by_name("relu") is not None  # captured producer survives
    assert "w" in model.graph.values  # captured initializer survives
    out = save_model(model, tmp_path / "if.onnx")
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert written.graph.node[-1].attribute[0].g == proto.graph.node[-1].attribute[0].g
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        assert np.array_equal(ort_run(proto, feeds)[0], ort_run(out, feeds)[0])
    assert "<subgraph>" in format_model(model)


def test_edits_keep_use_lists_consistent():
    model = lift(_if_model())
    graph = model.graph
    relu = graph.node_by_name("dead_relu")
    x = graph.values["x"]
    extra = graph.add_node("Neg", [relu.outputs[0]], 1, name="neg")
    assert (extra, 0) in relu.outputs[0].uses
    graph.replace_all_uses_with(relu.outputs[0], x)
    assert (extra, 0) in x.uses and not relu.outputs[0].uses
    graph.remove_node(extra)
    assert all(user is not extra for user, _ in x.uses)
    order = graph.toposort()
    assert order.index(graph.node_by_name("relu")) < order.index(graph.node_by_name("if"))


def test_toposort_reorders_out_of_order_nodes_and_reports_cycles():
    graph = lift(_if_model()).graph
    relu = graph.node_by_name("relu")
    late = graph.add_node("Neg", [graph.values["x"]], 1, name="late")
    relu.set_input(0, late.outputs[0])  # relu now reads a node inserted after it
    order = graph.toposort()
    assert order.index(late) < order.index(relu)
    assert sorted(n.name for n in order) == sorted(n.name for n in graph)
    late.set_input(0, relu.outputs[0])  # late <-> relu: a cycle
    with pytest.raises(CycleError, match="cycle"):
        graph.toposort()


def test_external_data_inside_a_subgraph_is_read(tmp_path):
    """A tensor of an If branch stored externally is read too (no top-level tensor uses external data)."""
    proto = _if_model()
    two = next(a.g for a in proto.graph.node[2].attribute if a.name == "else_branch").initializer[0]
    two.CopyFrom(onnx.numpy_helper.from_array(np.full((2, 3), 2.0, np.float32), "two"))
    del proto.graph.initializer[:]
    w = onnx.numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w")
    proto.graph.node.insert(0, helper.make_node("Constant", [], ["w"], value=w))
    onnx.save_model(proto, str(tmp_path / "sub.onnx"), save_as_external_data=True, location="sub.data",
                    size_threshold=0, convert_attribute=False)
    saved = onnx.load(str(tmp_path / "sub.onnx"), load_external_data=False)
    branch = next(a.g for a in saved.graph.node[3].attribute if a.name == "else_branch")
    assert onnx.external_data_helper.uses_external_data(branch.initializer[0])
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in saved.graph.initializer)
    model = load_model(tmp_path / "sub.onnx")
    (tmp_path / "sub.data").unlink()  # everything must be in memory now
    branch = model.graph.node_by_name("if").attr("else_branch").g
    assert not onnx.external_data_helper.uses_external_data(branch.initializer[0])
    x = np.ones((2, 3), np.float32)
    out = save_model(model, tmp_path / "back.onnx", external_data=False)
    assert np.array_equal(ort_run(out, {"x": x, "cond": np.array(False)})[0], x * 2)
