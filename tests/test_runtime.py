"""``asgnas.runtime``: the onnxruntime sessions every timing and verification goes through."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from asgnas.runtime import session


def _relu_model(path) -> str:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return str(path)


def test_a_session_for_side_by_side_timing_does_not_spin(tmp_path):
    path = _relu_model(tmp_path / "relu.onnx")
    quiet = session(path, device="cpu", threads=2, spin=False).get_session_options()
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = session(path, device="cpu", threads=2).get_session_options()
    with pytest.raises(RuntimeError, match="allow_spinning"):  # onnxruntime's default (spinning) is left alone
        default.get_session_config_entry("session.intra_op.allow_spinning")
