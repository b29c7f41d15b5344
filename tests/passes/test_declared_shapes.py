"""Declared shapes (value_info) that contradict what the graph computes from its inputs lose to inference, with one
warning naming the values; declarations that fill what inference cannot stay; the written model passes the checker."""

from __future__ import annotations

import warnings

import onnx
import pytest
from onnx import TensorProto, helper

from asgnas.cli import main
from asgnas.errors import AsgnasWarning
from asgnas.ir import lift
from asgnas.passes.shape_infer import ensure_shapes, holes


def _conv_relu(declared: dict[str, list | None]) -> onnx.ModelProto:
    """x [N, 3, 8, 8] -> Conv (4 channels) -> c -> Relu -> y, with ``declared`` value_info (name: dims)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("ReduceMean", ["r"], ["y"], axes=[2, 3], keepdims=0, name="pool")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight],
        value_info=[helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in declared.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _ensure(proto: onnx.ModelProto) -> tuple[object, bool, list[str]]:
    model = lift(proto)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        changed = ensure_shapes(model)
    return model, changed, [str(w.message) for w in caught if issubclass(w.category, AsgnasWarning)]


def test_a_declared_batch_of_one_loses_to_the_input_batch_even_without_holes():
    proto = _conv_relu({"c": [1, 4, 8, 8], "r": [1, 4, 8, 8]})
    onnx.checker.check_model(proto, full_check=True)  # even the full check takes a declared 1 for a symbolic batch
    model, changed, warned = _ensure(proto)
    assert changed is True
    assert model.graph.values["c"].shape == model.graph.values["r"].shape == ("N", 4, 8, 8)
    assert len(warned) == 1 and warned[0].endswith("from its inputs for c, r; the inferred ones are used")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ensure_shapes(model) is False  # checked once: nothing runs or warns again
    assert not caught


@pytest.mark.parametrize("declared,expected", [
    ({"c": [1, 4, 8, 8]}, ("N", 4, 8, 8)),  # a hole elsewhere (r): the same check on the way to inference
    ({"c": [1, 4, 8], "r": ["N", 4, 8, 8]}, ("N", 4, 8, 8)),  # a wrong rank
    ({"c": ["N", 5, 8, 8], "r": ["N", 4, 8, 8]}, ("N", 4, 8, 8)),  # a wrong channel count
])
def test_contradicting_declarations_are_replaced_with_one_warning(declared, expected):
    model, changed, warned = _ensure(_conv_relu(declared))
    assert changed is True and not holes(model)
    assert model.graph.values["c"].shape == expected
    assert len(warned) == 1 and "from its inputs for c;" in warned[0]


def test_a_symbol_named_otherwise_is_renamed_silently():
    model, _, warned = _ensure(_conv_relu({"c": ["batch", 4, 8, 8], "r": ["batch", 4, 8, 8]}))
    assert model.graph.values["c"].shape == ("N", 4, 8, 8)
    assert not warned


def test_a_declaration_inference_cannot_make_stays():
    """Reshape to a shape computed through float arithmetic: static inference knows nothing of ``y``, so its
    declaration stands (no runtime run needed) and ``z`` is inferred from it."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["sf", "factors"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["new_shape"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["x", "new_shape"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [helper.make_tensor("factors", TensorProto.FLOAT, [3], [1.0, 0.5, 2.0])],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6])])
    model, changed, warned = _ensure(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert changed is True and not warned
    assert model.graph.values["y"].shape == model.graph.values["z"].shape == ("N", 2, 6)


def test_the_written_model_declares_the_inferred_shapes_and_passes_the_checker(tmp_path, capsys):
    source, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(_conv_relu({"c": [1, 4, 8, 8], "r": [1, 4, 8, 8]}), source)
    assert main([str(source), "--passes", "shape-infer", "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("contradict") == 1 and "for c, r;" in err
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    declared = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                for i in written.graph.value_info}
    assert declared["c"] == declared["r"] == ["N", 4, 8, 8]
