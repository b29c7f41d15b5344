"""The onnx-graphsurgeon bridge: a model goes to ``gs.Graph`` and back bit for bit, a graphsurgeon edit comes back
into the IR, and a graph built in graphsurgeon runs asgnas passes and returns to graphsurgeon."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.ir import Model, lift, load_model, lower
from asgnas.ir.graphsurgeon import from_graphsurgeon, to_graphsurgeon
from asgnas.passes import PassManager, parse_pipeline


def _tensor(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def _documented_model(ir_version: int = 8) -> Model:
    """Conv -> Relu -> Add -> ReduceMean, with every field a round trip could lose: node, graph and model doc
    strings, value info, metadata, domain, model version, a symbolic batch."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], doc_string="stem"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Add", ["r", "c"], ["a"], name="add"),
             helper.make_node("ReduceMean", ["a"], ["y"], name="gap", axes=[2, 3], keepdims=0)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if ir_version < 4:  # initializers are graph inputs too
        inputs += [helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              [_tensor("w", 4, 3, 3, 3), _tensor("b", 4, seed=1)], doc_string="graph doc",
                              value_info=[helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 4, 8, 8])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17 if ir_version >= 4 else 8)],
                              producer_name="me", producer_version="1", doc_string="model doc", model_version=3,
                              domain="com.example", ir_version=ir_version)
    helper.set_model_props(proto, {"asgnas.preprocessing": '{"scale": 0.5}'})
    return lift(proto)


def _round_trip(model: Model) -> Model:
    return from_graphsurgeon(to_graphsurgeon(model), like=model)


@pytest.mark.parametrize("ir_version", [3, 8])
def test_unchanged_model_comes_back_bit_exact(ir_version: int) -> None:
    model = _documented_model(ir_version)
    assert lower(_round_trip(model)).SerializeToString() == lower(model).SerializeToString()


def test_exported_network_comes_back_bit_exact(onnx_path) -> None:
    model = load_model(onnx_path("resnet_basic", "legacy"))
    back = lower(_round_trip(model))
    assert back.SerializeToString() == lower(model).SerializeToString()
    assert len(back.graph.initializer) > 10 and all(
        a.raw_data == b.raw_data for a, b in zip(back.graph.initializer, lower(model).graph.initializer))


def test_without_like_only_what_graphsurgeon_cannot_hold_goes() -> None:
    model = _documented_model()
    back = from_graphsurgeon(to_graphsurgeon(model))
    assert back.metadata_props == {} and back.doc_string == "" and back.model_version == 0
    assert back.graph.node_by_name("conv").doc_string == ""
    assert _graph_without_node_docs(back) == _graph_without_node_docs(model)


def _graph_without_node_docs(model: Model) -> bytes:
    graph = lower(model).graph
    for node in graph.node:
        node.ClearField("doc_string")
    return graph.SerializeToString()


def test_graph_is_a_copy_and_edits_come_back() -> None:
    model = _documented_model()
    graph = to_graphsurgeon(model)
    relu = next(n for n in graph.nodes if n.op == "Relu")
    relu.op = "Sigmoid"  # a graphsurgeon script's edit
    assert [n.op_type for n in model.graph] == ["Conv", "Relu", "Add", "ReduceMean"]  # the model is untouched
    back = from_graphsurgeon(graph, like=model)
    assert [n.op_type for n in back.graph] == ["Conv", "Sigmoid", "Add", "ReduceMean"]
    assert back.metadata_props == {"asgnas.preprocessing": '{"scale": 0.5}'}


def test_graph_built_in_graphsurgeon_runs_asgnas_passes_and_goes_back() -> None:
    x = gs.Variable("x", dtype=np.float32, shape=(1, 3, 8, 8))
    y = gs.Variable("y", dtype=np.float32)
    hidden, act = gs.Variable("h", dtype=np.float32), gs.Variable("a", dtype=np.float32)
    rng = np.random.default_rng(0)
    w1 = gs.Constant("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    b1 = gs.Constant("b1", rng.standard_normal(8).astype(np.float32))
    w2 = gs.Constant("w2", rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
    nodes = [gs.Node("Conv", "conv1", {"pads": [1, 1, 1, 1]}, [x, w1, b1], [hidden]),
             gs.Node("Relu", "relu", inputs=[hidden], outputs=[act]),
             gs.Node("Conv", "conv2", inputs=[act, w2], outputs=[y])]
    graph = gs.Graph(nodes, [x], [y], opset=17)

    model = from_graphsurgeon(graph)
    report = PassManager(parse_pipeline(
        "search-space,zero-groups{fraction=0.5,seed=0,kind=prune},construct-subnet,verify")).run(model)
    assert report["verify"]["ok"] and len(report["zero-groups"]["zeroed"]) == 4  # 4 of conv1's 8 channels

    slim = to_graphsurgeon(model)
    shapes = {t.name: t.values.shape for t in slim.tensors().values() if isinstance(t, gs.Constant)}
    assert shapes == {"w1": (4, 3, 3, 3), "b1": (4,), "w2": (4, 4, 1, 1)}
    onnx.checker.check_model(gs.export_onnx(slim), full_check=True)
