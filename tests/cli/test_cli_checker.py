"""Every model asgnas-opt writes passes onnx.checker for its own IR version, or fails it no worse than its input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main
from asgnas.errors import AsgnasError
from asgnas.ir.validate import InvalidModelWritten, check_written


def _ir3_model(path, *, ir_version: int = 3, extra_conv_attr: dict | None = None):
    """Caffe2-era style: IR 3, opset 9, every initializer also a graph input; a Reshape whose constant shape
    names the channel count, so pruning the first Conv makes construct-subnet create a new shape initializer."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], **(extra_conv_attr or {})),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Reshape", ["r1", "shape"], ["s1"]),
        helper.make_node("Conv", ["s1", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


def _initializers_are_inputs(proto: onnx.ModelProto) -> bool:
    inputs = {i.name for i in proto.graph.input}
    return all(t.name in inputs for t in proto.graph.initializer)


def test_ir3_construct_without_verify_writes_a_valid_model(tmp_path, capsys):
    src, out = _ir3_model(tmp_path / "m.onnx"), tmp_path / "slim.onnx"
    assert main([str(src), "--passes", "search-space,zero-groups{fraction=0.5,seed=0},construct-subnet",
                 "-o", str(out)]) == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert written.ir_version == 3 and _initializers_are_inputs(written)
    new_shape = [t for t in written.graph.initializer if t.data_type == TensorProto.INT64]
    assert len(new_shape) == 1 and new_shape[0].name != "shape"  # the rewrite made a shape of its own
    assert "shape" not in {i.name for i in written.graph.input}  # a removed initializer is no longer declared
    assert capsys.readouterr().err == ""


def test_dce_on_a_graph_without_outputs(tmp_path):
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 2])], [], initializer=[weight])
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3), str(src))
    assert main([str(src), "--passes", "dce", "-o", str(out)]) == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert len(written.graph.node) == 0 and len(written.graph.initializer) == 0
    assert [i.name for i in written.graph.input] == ["x"]


def test_ir_version_0_is_written_at_the_lowest_version_its_opsets_allow(tmp_path, capsys):
    src, out = _ir3_model(tmp_path / "m.onnx", ir_version=0), tmp_path / "o.onnx"
    assert main([str(src), "--passes", "search-space,dce", "-o", str(out)]) == 0
    written = onnx.load(str(out))
    onnx.checker.check_model(written)
    assert written.ir_version == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asgnas-opt: warning:") and "ir_version is not set" in err[0]


def test_input_failing_the_checker_is_written_no_worse_with_one_warning(tmp_path, capsys):
    src = _ir3_model(tmp_path / "m.onnx", extra_conv_attr={"not_an_attribute": 1})
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(str(src))
    out = tmp_path / "o.onnx"
    assert main([str(src), "--passes", "dce", "-o", str(out)]) == 0
    with pytest.raises(onnx.checker.ValidationError, match="not_an_attribute"):
        onnx.checker.check_model(str(out))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "input fails the ONNX checker" in err[0]


def test_result_failing_where_the_input_passed_is_our_bug(tmp_path):
    src = _ir3_model(tmp_path / "m.onnx")
    bad = _ir3_model(tmp_path / "bad.onnx", extra_conv_attr={"not_an_attribute": 1})
    with pytest.raises(InvalidModelWritten, match="not_an_attribute"):
        check_written(bad, str(src))
    with pytest.raises(InvalidModelWritten):
        check_written(bad, None)  # no input to compare with (an in-memory model): the failure is ours


def test_result_failing_differently_from_a_failing_input_is_refused(tmp_path):
    src = _ir3_model(tmp_path / "m.onnx", ir_version=0)
    bad = _ir3_model(tmp_path / "bad.onnx", extra_conv_attr={"not_an_attribute": 1})
    with pytest.raises(AsgnasError, match="input already failed it"):
        check_written(bad, str(src))
