"""asgnas-opt: pipelines, reports, IR printing, and one clear line + exit 2 for every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest

from asgnas.cli import main
from asgnas.ir import load_model, save_model
from tests.models import ort_run, seeded_inputs


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model_file(onnx_path, tmp_path):
    path = tmp_path / "model.onnx"
    shutil.copy(onnx_path("resnet_basic", "legacy"), path)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # exactly one line, no traceback
    return err[0]


def test_pipeline_writes_model_and_report(model_file, tmp_path, capsys):
    before = _digest(model_file)
    out, report_path = tmp_path / "out.onnx", tmp_path / "r.json"
    status = main([str(model_file), "--passes", "shape-infer,cost,dce,verify{rtol=1e-6}", "-o", str(out),
                   "--report", str(report_path)])
    assert status == 0
    assert _digest(model_file) == before  # the input is never modified
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = json.loads(report_path.read_text())
    assert report["model"] == str(model_file)
    assert [p["name"] for p in report["passes"]] == ["shape-infer", "cost", "dce", "verify"]
    assert all(p["seconds"] >= 0 for p in report["passes"])
    assert report["passes"][1]["cost"]["params"] > 0
    assert report["verify"]["ok"] and report["verify"]["max_abs_diff"] == 0.0
    feeds = seeded_inputs(model_file, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(ort_run(model_file, feeds), ort_run(out, feeds)))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_list_passes(capsys):
    assert main(["--list-passes"]) == 0
    listing = capsys.readouterr().out
    for name in ("shape-infer", "cost", "dce", "verify"):
        assert any(line.startswith(name) for line in listing.splitlines())


def test_print_ir_after_all(model_file, capsys):
    assert main([str(model_file), "--passes", "shape-infer,dce", "--print-ir-after-all", "-q"]) == 0
    out = capsys.readouterr().out
    assert "IR after shape-infer" in out and "IR after dce" in out
    assert "= Conv(" in out and "graph " in out


def test_verify_failure_exits_1_and_still_reports(model_file, tmp_path, capsys):
    tampered = tmp_path / "tampered.onnx"
    model = load_model(model_file)
    weight = next(v for v in model.graph.initializers() if v.const.array.ndim == 4)
    weight.const.array = weight.const.array + 1.0
    save_model(model, tampered)
    report_path = tmp_path / "r.json"
    status = main([str(tampered), "--passes", f"verify{{reference={model_file}}}", "--report", str(report_path)])
    assert status == 1
    assert "outputs differ" in _error_line(capsys)
    report = json.loads(report_path.read_text())
    assert report["verify"]["ok"] is False and report["verify"]["max_abs_diff"] > 0


@pytest.mark.parametrize(
    "make_bad,passes,expected",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "cost", "not a valid ONNX protobuf"),
        (lambda p: p.write_bytes(b"hello, not a model"), "cost", "not a valid ONNX protobuf"),
        (lambda p: p.unlink(), "cost", "no such model file"),
        (None, "no-such-pass", "pass no-such-pass: unknown pass"),
        (None, "verify{rtol=abc}", "option 'rtol' expects float"),
        (None, "verify{nope=1}", "unknown option 'nope'"),
        (None, "cost{", "unbalanced"),
    ],
    ids=["truncated", "not-protobuf", "missing", "unknown-pass", "bad-option-value", "unknown-option", "syntax"],
)
def test_bad_input_one_line_exit_2(model_file, capsys, make_bad, passes, expected):
    if make_bad is not None:
        make_bad(model_file)
    assert main([str(model_file), "--passes", passes]) == 2
    line = _error_line(capsys)
    assert expected in line and line.startswith("asgnas-opt: error:")


def test_missing_external_data(model_file, tmp_path, capsys):
    ext = save_model(load_model(model_file), tmp_path / "ext" / "m.onnx", external_data=True)
    (ext.parent / "m.onnx.data").unlink()
    assert main([str(ext), "--passes", "cost"]) == 2
    line = _error_line(capsys)
    assert "missing external data" in line and "m.onnx.data" in line and str(ext) in line


def test_unknown_op_names_node_and_op(model_file, tmp_path, capsys):
    proto = onnx.load(str(model_file))
    proto.graph.node[1].op_type = "FrobnicateConv"
    bad = tmp_path / "unknown_op.onnx"
    onnx.save(proto, str(bad))
    assert main([str(bad), "--passes", "cost"]) == 2
    line = _error_line(capsys)
    assert f"node {proto.graph.node[1].name}" in line and "op FrobnicateConv" in line and str(bad) in line


def test_refuses_to_overwrite_input(model_file, capsys):
    before = _digest(model_file)
    assert main([str(model_file), "--passes", "dce", "-o", str(model_file)]) == 2
    assert "refusing to overwrite the input model" in _error_line(capsys)
    assert _digest(model_file) == before


def test_console_script_exit_status(model_file):
    proc = subprocess.run([sys.executable, "-m", "asgnas.cli", str(model_file), "--passes", "bogus"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
