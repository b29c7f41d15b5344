"""asgnas-opt as a newcomer drives it: small torch models, README pipelines, and bad input that must end in one line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from asgnas.cli import _write_json_atomically, main
from asgnas.passes import PASS_REGISTRY
from tests.models import DigitsResCNN

REPO = Path(__file__).resolve().parents[2]


def _export(path: Path, *, symbolic_batch: bool = False) -> Path:
    torch.manual_seed(0)
    net = DigitsResCNN().eval()
    dynamic = {"x": {0: "N"}, "y": {0: "N"}} if symbolic_batch else None
    torch.onnx.export(net, torch.randn(2, 1, 8, 8), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes=dynamic, opset_version=17, dynamo=False)
    return path


@pytest.fixture
def cnn(tmp_path: Path) -> Path:
    return _export(tmp_path / "cnn.onnx")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("symbolic_batch", [False, True], ids=["fixed-batch", "symbolic-batch"])
def test_readme_sanity_pipeline(tmp_path, symbolic_batch, capsys):
    model = _export(tmp_path / "m.onnx", symbolic_batch=symbolic_batch)
    before = model.read_bytes()
    out, report = tmp_path / "slim.onnx", tmp_path / "r.json"
    assert main([str(model), "--passes", "search-space,zero-groups{fraction=0.5,seed=0},construct-subnet,verify",
                 "-o", str(out), "--report", str(report), "-q"]) == 0
    assert model.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    data = json.loads(report.read_text())
    assert data["verify"]["ok"] and data["cost"]["after"]["params"] < data["cost"]["before"]["params"]


def test_unregistered_custom_op_fails_in_verify_with_one_line(cnn, tmp_path, capsys):
    proto = onnx.load(str(cnn))
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "MyRelu", "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    custom = tmp_path / "custom.onnx"
    onnx.save(proto, str(custom))
    assert main([str(custom), "--passes", "verify"]) == 2
    line = _one_line(capsys)
    assert f"file {custom}" in line and "pass verify" in line
    assert f"node {relu.name}" in line and "op MyRelu" in line and "onnxruntime" in line


def test_output_into_missing_directory_is_refused_before_running(cnn, tmp_path, capsys):
    out = tmp_path / "no" / "such" / "slim.onnx"
    assert main([str(cnn), "--passes", "dce", "-o", str(out)]) == 2
    line = _one_line(capsys)
    assert "no such directory" in line and str(out.parent) in line
    assert not (tmp_path / "no").exists()


def test_report_into_missing_directory_is_refused(cnn, tmp_path, capsys):
    report = tmp_path / "missing" / "r.json"
    assert main([str(cnn), "--passes", "dce", "--report", str(report)]) == 2
    assert "no such directory" in _one_line(capsys)
    assert not report.parent.exists()


def test_output_under_a_file_is_one_line(cnn, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert main([str(cnn), "--passes", "dce", "-o", str(blocker / "slim.onnx")]) == 2
    assert "not a directory" in _one_line(capsys)


def test_write_failure_is_one_line(cnn, tmp_path, capsys, monkeypatch):
    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("asgnas.ir.save_model", disk_full)
    out = tmp_path / "slim.onnx"
    assert main([str(cnn), "--passes", "dce", "-o", str(out)]) == 2
    line = _one_line(capsys)
    assert f"file {out}" in line and "No space left on device" in line


def test_directory_as_model_says_so(tmp_path, capsys):
    assert main([str(tmp_path), "--passes", "cost"]) == 2
    assert "is a directory" in _one_line(capsys)


def test_report_is_strict_json(tmp_path):
    path = tmp_path / "r.json"
    _write_json_atomically({"train": {"lambda_mean": math.nan, "ok": 1.0, "inf": [math.inf]}}, path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data == {"train": {"lambda_mean": None, "ok": 1.0, "inf": [None]}}


def test_internal_error_is_one_line_naming_the_pass(cnn, capsys, monkeypatch):
    def broken(self, model, ctx):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(PASS_REGISTRY["dce"], "run", broken)
    assert main([str(cnn), "--passes", "cost,dce"]) == 3
    line = _one_line(capsys)
    assert "internal error" in line and "pass dce" in line and "ZeroDivisionError" in line


def test_closed_stdout_pipe_is_no_traceback_and_output_still_written(cnn, tmp_path):
    out = tmp_path / "slim.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "asgnas.cli", str(cnn), "--passes", "shape-infer,dce",
                             "--print-ir-after-all", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()  # like `| head -0`: the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_draw_groups_readme_example_without_graphviz(cnn, tmp_path, capsys, monkeypatch):
    """README's `draw-groups{out=groups.dot,format=dot}` needs no Graphviz."""
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` program on PATH
    dot = tmp_path / "groups.dot"
    assert main([str(cnn), "--passes", f"search-space,draw-groups{{out={dot},format=dot}}", "-q"]) == 0
    assert dot.read_text().startswith("digraph")


def test_draw_groups_dot_out_without_graphviz(cnn, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main([str(cnn), "--passes", f"search-space,draw-groups{{out={tmp_path / 'g.dot'}}}", "-q"]) == 0


def test_api_on_torch_module_and_onnx_file(cnn, tmp_path):
    from asgnas import ASGNAS

    torch.manual_seed(0)
    net = DigitsResCNN()
    nas = ASGNAS(net, torch.randn(1, 1, 8, 8))
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=0.5, warmup_steps=2, hard_zero_step=6)
    for _ in range(8):
        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    summary = nas.construct_subnet(tmp_path / "out")
    assert summary["params_after"] < summary["params_before"] and summary["max_abs_diff"] < 1e-4
    for name in ("full_onnx", "subnet_onnx"):
        onnx.checker.check_model(onnx.load(summary[name]), full_check=True)
    # the exported file has the torch module's space: 2 prunable channel spaces, one erasable block
    assert ASGNAS.from_onnx(str(cnn)).search_space.summary() == {
        "num_prune_groups": 26, "num_erase_groups": 3, "num_removable_prune_groups": 16,
        "num_removable_erase_groups": 1, "num_channel_spaces": 2}
    assert np.isfinite(summary["group_sparsity"])
    # the one erasable block goes (target 0.5 of 1), and the 8 channel groups inside it are zero with it
    assert summary["erased_structures"] == 1 and summary["group_sparsity"] == 9 / 17


def _with_external_data(cnn: Path, folder: Path) -> Path:
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(onnx.load(str(cnn)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


@pytest.mark.parametrize("target", ["-o weights.bin", "--report weights.bin", "--report m.onnx",
                                    "-o out.onnx --report out.onnx"],
                         ids=["output-on-input-data", "report-on-input-data", "report-on-input", "report-on-output"])
def test_outputs_never_clobber_the_input_or_each_other(cnn, tmp_path, capsys, target):
    model = _with_external_data(cnn, tmp_path / "in")
    before = {p.name: p.read_bytes() for p in model.parent.iterdir()}
    args = [str(model), "--passes", "dce"]
    for flag, name in zip(target.split()[::2], target.split()[1::2]):
        args += [flag, str(model.parent / name)]
    assert main(args) == 2
    assert "refusing to overwrite" in _one_line(capsys)
    assert {p.name: p.read_bytes() for p in model.parent.iterdir()} == before


def test_npz_with_mismatched_lengths_is_bad_input(cnn, tmp_path, capsys):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((10, 64), np.float32), y=np.zeros(9, np.int64))
    assert main([str(cnn), "--passes", f"train{{data=npz:{data},epochs=1,quiet=true}}", "-q"]) == 2
    line = _one_line(capsys)
    assert "10 samples" in line and "9 labels" in line and str(data) in line


def test_verify_reference_with_other_inputs_is_bad_input(cnn, tmp_path, capsys):
    other = tmp_path / "mlp.onnx"
    torch.onnx.export(nn.Linear(64, 10), torch.randn(2, 64), str(other), input_names=["x"], dynamo=False)
    assert main([str(cnn), "--passes", f"verify{{reference={other}}}"]) == 2


def test_train_target_above_removable_count_is_bad_input(cnn, capsys):
    assert main([str(cnn), "--passes", "train{target-sparsity=50,epochs=1,quiet=true}", "-q"]) == 2
    assert "exceeds the" in _one_line(capsys)


def test_fixed_batch_export_is_rebatched_for_training(tmp_path):
    """torch exports at the dummy's batch (often 1); a batch-agnostic graph trains at batch-size anyway."""
    model = _export(tmp_path / "m.onnx", symbolic_batch=False)
    assert onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim[0].dim_value > 0
    report = tmp_path / "r.json"
    status = main([str(model), "--passes", "train{epochs=1,batch-size=32,quiet=true}", "--report", str(report), "-q"])
    assert status in (0, 1)  # 1: train's verdict may find one epoch learnt nothing; the point here is the batch
    assert json.loads(report.read_text())["train"]["batch_size"] == 32


def test_verify_without_inputs_is_bad_input(cnn, capsys):
    assert main([str(cnn), "--passes", "verify{seeds=0}"]) == 2


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    from asgnas.data import load_dataset
    from asgnas.errors import AsgnasError

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if `pip install asgnas` without [data]
    with pytest.raises(AsgnasError, match=r"scikit-learn.*asgnas\[data\]"):
        load_dataset("digits", (1, 8, 8))


@pytest.mark.parametrize("flag", ["-o", "--report"])
def test_output_naming_a_directory_is_refused_before_running(cnn, tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setattr(PASS_REGISTRY["dce"], "run", lambda *_: pytest.fail("a pass ran"))
    assert main([str(cnn), "--passes", "dce", flag, str(tmp_path)]) == 2
    assert "is a directory" in _one_line(capsys)


def test_fixed_batch_baked_into_the_graph_trains_at_that_batch(tmp_path, capsys):
    class BakedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.conv(x)).reshape(4, -1))  # the batch is a constant of the graph

    path, report = tmp_path / "baked.onnx", tmp_path / "r.json"
    torch.onnx.export(BakedBatch().eval(), torch.randn(4, 1, 8, 8), str(path), input_names=["x"], dynamo=False)
    assert main([str(path), "--passes", "train{optimizer=dhspg,epochs=1,batch-size=32,quiet=true}",
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["train"]["batch_size"] == 4
    assert "fixed batch 4" in capsys.readouterr().out
