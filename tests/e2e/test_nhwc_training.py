"""``train`` end to end on the jax2onnx-style NHWC twin (Transposes around every Conv, BatchNorm as Mul + Add on the
last axis): it trains like its tf2onnx twin (one Transpose at the input, then NCHW, the same Mul + Add) on the same
data, and the slim model it constructs verifies."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from asgnas.cli import main
from tests.passes.nhwc_twins import CLASSES, resnet_twin

PIPELINE = ("search-space,train{{data=npz:{data},epochs=3,target-sparsity=1,batch-size=32,lr=0.05,quiet=true}},"
            "construct-subnet,verify")


def _clusters(path, size: int = 6) -> str:
    """Gaussian clusters, one per class, whose channel means differ (what survives the global pooling), in the
    NHWC layout both twins read."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(CLASSES, 3, 1, 1)) + 0.5 * rng.normal(size=(CLASSES, 3, size, size))
    y = rng.integers(0, CLASSES, 160)
    x = (centers[y] + 0.5 * rng.normal(size=(160, 3, size, size))).astype(np.float32).transpose(0, 2, 3, 1)
    np.savez(path, x=x[:128], y=y[:128], x_val=x[128:], y_val=y[128:])
    return str(path)


def _train(tmp_path, style: str) -> tuple[dict, onnx.ModelProto]:
    model = resnet_twin(tmp_path / f"{style}.onnx", nhwc=style == "jax2onnx", tf2onnx=style == "tf2onnx")
    data = _clusters(tmp_path / "data.npz")
    out, report = tmp_path / f"{style}.slim.onnx", tmp_path / f"{style}.json"
    assert main([model, "--passes", PIPELINE.format(data=data), "-o", str(out), "--report", str(report), "-q"]) == 0
    return json.loads(report.read_text()), onnx.load(str(out))


def test_the_nhwc_twin_trains_like_the_tf2onnx_twin_and_its_slim_model_verifies(tmp_path):
    nhwc, slim = _train(tmp_path, "jax2onnx")
    nchw, _ = _train(tmp_path, "tf2onnx")
    assert nhwc["train"]["metrics"]["num_zero_groups"] == 1  # one residual block erased
    for ours, theirs in zip(nhwc["train"]["epochs"], nchw["train"]["epochs"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-3)  # the same function on the same samples
        assert ours["train_accuracy"] == theirs["train_accuracy"]
    assert nhwc["verify"]["ok"] and nhwc["verify"]["reference"] == "group-sparse"
    assert nhwc["cost"]["after"] == nchw["cost"]["after"]
    assert nhwc["cost"]["after"]["params"] < nhwc["cost"]["before"]["params"]
    assert nhwc["train"]["verdict"] == "ok"  # it learnt (above chance)
    assert len([n for n in slim.graph.node if n.op_type == "Conv"]) == 3  # stem + the kept block's two convs
    onnx.checker.check_model(slim, full_check=True)
