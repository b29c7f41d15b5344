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


def _weight(name, shape):
    return numpy_helper.from_array(np.random.default_rng(0).standard_normal(shape).astype(np.float32), name)


def _conv(x, w, y, **attrs):
    return helper.make_node("Conv", [x, w], [y], pads=[1, 1, 1, 1], **attrs)


def _conv_model(path, x_shape=(1, 3, 8, 8), **attrs) -> str:
    return _save(path, [_conv("x", "w", "y", **attrs)], [_tensor("x", list(x_shape))], [_tensor("y", None)],
                 [_weight("w", (4, 3, 3, 3))])


def _edit_initializer(path, edit) -> str:
    proto = onnx.load(_conv_model(path))
    edit(proto.graph.initializer[0])
    onnx.save(proto, str(path))
    return str(path)


def _non_utf8(path) -> str:
    data = onnx.load(_conv_model(path)).SerializeToString()
    path.write_bytes(data.replace(b"\x12\x01y", b"\x12\x01\xff"))  # the output name "y" becomes byte 0xff
    return str(path)


def _short(tensor):
    tensor.raw_data = tensor.raw_data[:40]


_MALFORMED = {
    "cycle": (lambda p: _save(p, [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                              [_tensor("x", [4])], [_tensor("a", [4])]), "graph has a cycle through node"),
    "duplicate value": (lambda p: _save(p, [helper.make_node("Relu", ["x"], ["a"]),
                                            helper.make_node("Sigmoid", ["x"], ["a"])],
                                        [_tensor("x", [4])], [_tensor("a", [4])]), "value 'a' is defined twice"),
    "duplicate initializer": (lambda p: _save(p, [helper.make_node("Add", ["x", "w"], ["y"])], [_tensor("x", [4])],
                                              [_tensor("y", [4])], [_weight("w", (4,)), _weight("w", (4,))]),
                              "value 'w' is defined twice (as initializer and as initializer)"),
    "duplicate input": (lambda p: _save(p, [helper.make_node("Relu", ["x"], ["y"])],
                                        [_tensor("x", [4]), _tensor("x", [4])], [_tensor("y", [4])]),
                        "value 'x' is defined twice (as input and as input)"),
    "group=0": (lambda p: _conv_model(p, group=0), "op Conv: group=0: must be at least 1"),
    "weight does not fit": (lambda p: _conv_model(p, x_shape=(1, 5, 8, 8)),
                            "op Conv: weight [4, 3, 3, 3] with group=1 does not fit an input of 5 channels"),
    "zero dim": (lambda p: _conv_model(p, x_shape=(1, 3, 0, 8)), "value 'x' declares dims [1, 3, 0, 8]"),
    "huge dims": (lambda p: _conv_model(p, x_shape=(1, 3, 10**9, 10**9)), "more than 2^40 elements"),
    "missing data": (lambda p: _edit_initializer(p, lambda t: t.ClearField("raw_data")), "tensor 'w' has no data"),
    "short data": (lambda p: _edit_initializer(p, _short),
                   "tensor 'w' holds 40 of the 432 bytes its shape needs (dims [4, 3, 3, 3])"),
    "unknown data type": (lambda p: _edit_initializer(p, lambda t: setattr(t, "data_type", 77)),
                          "tensor 'w' has unknown data type 77"),
    "non-UTF-8 name": (_non_utf8, "is not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(_MALFORMED))
def test_malformed_model_is_exit_2_in_one_line(tmp_path, capsys, case):
    build, message = _MALFORMED[case]
    model = build(tmp_path / "m.onnx")
    assert main([model, "--passes", "search-space,verify", "-o", str(tmp_path / "o.onnx")]) == 2
    line = _error_line(capsys)
    assert line.startswith("asgnas-opt: error: file ") and message in line, line
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize("passes", ["dce", "shape-infer"])
def test_short_raw_data_is_refused_at_load_by_any_pipeline(tmp_path, capsys, passes):
    """Passes that never decode the weights still refuse it: the file is checked when it is read."""
    model = _edit_initializer(tmp_path / "m.onnx", _short)
    assert main([model, "--passes", passes, "-o", str(tmp_path / "o.onnx")]) == 2
    line = _error_line(capsys)
    assert line == f"asgnas-opt: error: file {model}: tensor 'w' holds 40 of the 432 bytes its shape needs " \
                   "(dims [4, 3, 3, 3])", line
    assert not (tmp_path / "o.onnx").exists()


def _npz_not_a_zip(path):
    path.write_text("not a zip")


def _npz_object_arrays(path):
    np.savez(path, x=np.array([object()] * 4, dtype=object), y=np.zeros(4, np.int64))


def _npz_nan(path):
    np.savez(path, x=np.full((4, 3, 8, 8), np.nan, np.float32), y=np.zeros(4, np.int64))


@pytest.mark.parametrize("write, message", [
    (_npz_not_a_zip, "not a readable npz of numeric arrays"),
    (_npz_object_arrays, "not a readable npz of numeric arrays"),
    (_npz_nan, "'x' holds NaN or Inf values"),
])
def test_bad_npz_data_is_exit_2_in_one_line(tmp_path, write, message):
    from asgnas.data import load_dataset
    from asgnas.errors import AsgnasError

    data = tmp_path / "d.npz"
    write(data)
    with pytest.raises(AsgnasError, match=message):
        load_dataset(f"npz:{data}", (3, 8, 8))


@pytest.mark.parametrize("write, message", [
    (_npz_not_a_zip, "not a readable npz of numeric arrays"),
    (lambda p: np.savez(p, ids=np.array([object()] * 4, dtype=object), mask=np.ones((4, 6), np.float32),
                        y=np.zeros(4, np.int64)), "not a readable npz of numeric arrays"),
    (lambda p: np.savez(p, ids=np.zeros((4, 6), np.int64), mask=np.full((4, 6), np.nan, np.float32),
                        y=np.zeros(4, np.int64)), "'mask' holds NaN or Inf values"),
])
def test_bad_npz_of_named_inputs_is_bad_input(tmp_path, write, message):
    """The loader of several (or integer) graph inputs refuses what the single-input loader refuses."""
    from asgnas.data import InputSpec, load_dataset
    from asgnas.errors import AsgnasError

    data = tmp_path / "d.npz"
    write(data)
    inputs = [InputSpec("ids", np.dtype(np.int64), (6,)), InputSpec("mask", np.dtype(np.float32), (6,))]
    with pytest.raises(AsgnasError, match=message):
        load_dataset(f"npz:{data}", (6,), inputs=inputs)


@pytest.mark.parametrize("args, message", [
    (["-o", ""], "-o needs a file name, got an empty one"),
    (["--report", ""], "--report needs a file name, got an empty one"),
    (["--passes", "search-space,draw-groups{out=missing/g.dot,format=dot}"], "no such directory"),
])
def test_bad_output_paths_are_exit_2_in_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    model = _conv_model(tmp_path / "m.onnx")
    passes = [] if "--passes" in args else ["--passes", "dce"]
    assert main([model, *passes, *args]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "missing").exists()
