"""The README's one-command NAS job on a user's own torch CNN (BN, residual add, symbolic batch), through the CLI."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from asgnas.cli import main
from tests.models import DigitsResCNN


@pytest.mark.slow
def test_one_command_nas_on_a_user_cnn(tmp_path):
    torch.manual_seed(0)
    model = tmp_path / "cnn.onnx"
    torch.onnx.export(DigitsResCNN().eval(), torch.randn(2, 1, 8, 8), str(model), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)
    before = model.read_bytes()
    out, report_path = tmp_path / "slim.onnx", tmp_path / "r.json"
    status = main([str(model), "--passes",
                   "untie-aliases,search-space,train{optimizer=h2spg,data=digits,epochs=3,lr=0.2,target-sparsity=0.5,"
                   "quiet=true},construct-subnet,verify", "-o", str(out), "--report", str(report_path), "-q"])
    assert status == 0
    assert model.read_bytes() == before
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = json.loads(report_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert report["verify"]["ok"] and report["verify"]["max_abs_diff"] < 1e-4
    assert report["train"]["epochs"][-1]["num_zero_groups"] >= 1
    assert report["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    assert report["train"]["val_accuracy_slim"] == pytest.approx(report["train"]["val_accuracy_full"], abs=1e-6)
