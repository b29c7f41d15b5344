"""Values that are no tensors are opaque to the analyses; every malformed input is exit 2 in one line, and
onnxruntime's own log never reaches the terminal."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _save(path, nodes, inputs, outputs, inits=(), opset=17, **kwargs) -> str:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs), str(path))
    return str(path)


def _tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _sequence_model(path) -> str:
    """conv1 feeds two convs whose outputs go into a sequence; one element and the sequence itself are outputs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (4, 8, 3, 3)), ("w3", (4, 8, 3, 3)))]
    inits.append(numpy_helper.from_array(np.array(1, np.int64), "one"))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["r1", "w3"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("SequenceConstruct", ["a"], ["seq1"]),
        helper.make_node("SequenceInsert", ["seq1", "b"], ["seq"]),
        helper.make_node("SequenceAt", ["seq", "one"], ["y"]),
    ]
    seq_type = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    return _save(path, nodes, [_tensor("x", [1, 3, 8, 8])], [_tensor("y", [1, 4, 8, 8]), seq_type], inits)


def test_sequence_values_are_opaque(tmp_path, capsys):
    model, out, report = _sequence_model(tmp_path / "m.onnx"), tmp_path / "o.onnx", tmp_path / "r.json"
    status = main([model, "--passes", "search-space,zero-groups{fraction=1.0},construct-subnet,verify",
                   "-o", str(out), "--report", str(report)])
    assert status == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    groups = result["search_space"]["groups"]
    removable = [g for g in groups if g["removable"]]
    # only conv1's 8 channels (read by convs alone) go; the channels that flow into the sequence stay
    assert len(removable) == 8 and {g["space"] for g in removable} == {"s0"}
    assert result["verify"]["ok"]
    written = onnx.load(str(out))
    onnx.checker.check_model(written, full_check=True)
    assert written.graph.output[1].type.WhichOneof("value") == "sequence_type"  # kept as declared


def test_onnxruntime_run_error_is_one_line_and_its_log_stays_silent(tmp_path):
    model = _save(tmp_path / "m.onnx", [helper.make_node("Gather", ["x", "i"], ["y"], name="g0")],
                  [_tensor("x", [2, 3])], [_tensor("y", [1, 3])],
                  [numpy_helper.from_array(np.array([5], np.int64), "i")])
    run = subprocess.run([sys.executable, "-m", "asgnas.cli", model, "--passes", "verify"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # no onnxruntime log line before ours
    assert "node g0, op Gather: onnxruntime failed running the model" in lines[0] and "out of data bounds" in lines[0]
