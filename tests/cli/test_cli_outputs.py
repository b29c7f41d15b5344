"""What asgnas-opt writes: the report never lands on a file the model writes, SIGTERM leaves no temporary files,
and the external-data refusal does not tell whether a file outside the model's folder exists."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main


def _model(path) -> str:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializer=[numpy_helper.from_array(np.ones((64, 64), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("report_name", ["o.onnx", "o.onnx.data"])
def test_report_may_not_be_a_file_the_model_writes(tmp_path, capsys, report_name):
    model, out, report = _model(tmp_path / "m.onnx"), tmp_path / "o.onnx", tmp_path / report_name
    status = main([model, "--passes", "dce", "-o", str(out), "--report", str(report), "--external-data", "yes"])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report names a file that -o writes" in err[0]
    assert not out.exists() and not report.exists()


def test_sigterm_during_a_write_leaves_no_temporary_files(tmp_path):
    """The signal arrives while the model sits in its temporary folder (just before the checker would run)."""
    model, out = _model(tmp_path / "m.onnx"), tmp_path / "o.onnx"
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        import asgnas.ir.io as io
        def check_then_die(path, source):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        io.check_written = check_then_die
        from asgnas.cli import main
        sys.exit(main([{model!r}, "--passes", "dce", "-o", {str(out)!r}, "--external-data", "yes"]))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 143 and run.stderr.strip() == "asgnas-opt: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no output, no hidden temporary folder


@pytest.mark.parametrize("outside_exists", [False, True])
def test_external_data_outside_the_folder_gives_one_message(tmp_path, capsys, outside_exists):
    folder = tmp_path / "models"
    folder.mkdir()
    outside = tmp_path / "secret.bin"
    if outside_exists:
        outside.write_bytes(b"\0" * 64 * 64 * 4)
    proto = onnx.load(_model(folder / "m.onnx"))
    weight = proto.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    onnx.save(proto, str(folder / "m.onnx"))
    assert main([str(folder / "m.onnx"), "--passes", "dce"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("external data location '../secret.bin' (tensor w) is not a file inside the model's folder")


def test_side_files_are_written_atomically(tmp_path):
    from asgnas.ir.io import write_text_atomically

    target = tmp_path / "r.train.svg"
    write_text_atomically(target, "<svg/>")
    assert target.read_text() == "<svg/>"
    with pytest.raises(TypeError):
        write_text_atomically(target, b"not text")  # fails mid-write: the old file stays, no temporary is left
    assert target.read_text() == "<svg/>" and sorted(p.name for p in tmp_path.iterdir()) == ["r.train.svg"]
