"""The analyses untie the legacy exporter's Identity aliases themselves; a weight really shared stays tied."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from asgnas.ir import lift
from asgnas.passes.search_space import analyze_search_space


def _three_convs(alias: bool) -> onnx.ModelProto:
    """conv1 and conv2 have equal (zero) biases: read through ``Identity(b1)`` as the legacy exporter writes
    de-duplicated tensors (``alias``), or as one initializer both read (a real share)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w3"),
    ]
    bias2 = "b2" if alias else "b1"
    nodes = [helper.make_node("Identity", ["b1"], ["b2"])] if alias else []
    nodes += [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", bias2], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_search_space_alone_unties_exporter_aliases():
    model = lift(_three_convs(alias=True))
    space = analyze_search_space(model)
    assert len(space.removable()) == 16  # conv1's 8 channels and conv2's 8, each its own space
    assert len({g.space for g in space.removable()}) == 2
    assert not [n for n in model.graph if n.op_type == "Identity"]
    assert model.graph.values["b2"].is_initializer and model.graph.values["b2"].const.array is not \
        model.graph.values["b1"].const.array


def test_a_really_shared_initializer_stays_tied():
    model = lift(_three_convs(alias=False))
    space = analyze_search_space(model)
    assert len(space.removable()) == 8  # the shared bias couples conv1's and conv2's channels into one space
    assert len({g.space for g in space.removable()}) == 1
    assert {n.name for n in model.graph.values["b1"].consumers} == {"Conv_0", "Conv_2"}
