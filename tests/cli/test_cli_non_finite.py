"""NaN and Inf are errors: verify fails on non-finite outputs of either model; option values must be finite."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main


def _affine(path, scale: float) -> str:
    """y = x * scale: scale NaN or Inf makes every output non-finite."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.full([1], scale, np.float32), "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("bad_side", ["model", "reference"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_verify_fails_on_non_finite_outputs_of_either_model(tmp_path, capsys, bad_side, value):
    clean, broken = _affine(tmp_path / "clean.onnx", 1.0), _affine(tmp_path / "broken.onnx", value)
    model, reference = (broken, clean) if bad_side == "model" else (clean, broken)
    report = tmp_path / "r.json"
    assert main([model, "--passes", f"verify{{reference={reference}}}", "--report", str(report)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"output y of the {bad_side} has 12 NaN/Inf values" in err[0]
    result = json.loads(report.read_text())["verify"]
    assert result["ok"] is False and result["max_abs_diff"] is None  # infinite: standard JSON null
    assert result["outputs"]["y"]["non_finite"] == {bad_side: 12}  # 2 seeds x 6 values


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_option_values_must_be_finite(tmp_path, capsys, text):
    model = _affine(tmp_path / "m.onnx", 1.0)
    assert main([model, "--passes", f"verify{{rtol={text}}}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"option 'rtol' must be a finite number, got '{text}'" in err[0]
