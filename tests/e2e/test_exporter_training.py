"""The train pass on models in other exporters' patterns (tf2onnx's NHWC + Softmax, Caffe2's Softmax/LogSoftmax
heads, two integer inputs), its verdict and divergence stop, and the preprocessing it records."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from asgnas.bridge.model_io import image_layout, logits_head, pick_output
from asgnas.cli import main
from asgnas.data import fit_to_layout, load_dataset
from asgnas.ir import lift, lower
from asgnas.passes.construct_subnet import construct_subnet
from tests.exporter_models import caffe2_style, token_data, token_model
from tools.keras_like import keras_like_cnn


def _digits_npz(path, layout: str = "NCHW", n_train: int = 500, n_val: int = 200):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    if layout == "NHWC":
        x = np.ascontiguousarray(np.repeat(x, 3, axis=1).transpose(0, 2, 3, 1))
    y = digits.target.astype(np.int64)
    np.savez(path, x=x[:n_train], y=y[:n_train], x_val=x[n_train:n_train + n_val], y_val=y[n_train:n_train + n_val])
    return path


def _run(model: onnx.ModelProto, tmp_path, train_options: str, capsys=None):
    src, out, report = tmp_path / "in.onnx", tmp_path / "slim.onnx", tmp_path / "r.json"
    onnx.save(model, str(src))
    status = main([str(src), "--passes", f"search-space,train{{quiet=true,{train_options}}},construct-subnet,verify",
                   "-o", str(out), "--report", str(report), "-q"])
    return status, out, json.loads(report.read_text())


def _small_keras() -> onnx.ModelProto:
    return keras_like_cnn(blocks=2, width=8, side=8)


# --- what the pass reads from the graph -----------------------------------------------------------------------


def test_layout_is_read_from_the_leading_transpose_or_the_declared_shape():
    assert image_layout(lift(_small_keras())) == "NHWC"
    assert image_layout(lift(caffe2_style())) == "NCHW"

    def declared(shape):
        node = helper.make_node("Relu", ["x"], ["y"])
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        return lift(helper.make_model(graph))

    assert image_layout(declared(["N", 16, 16, 3])) == "NHWC"
    assert image_layout(declared(["N", 3, 16, 16])) == "NCHW"
    assert image_layout(declared(["N", 3, 3, 3])) == "NCHW"  # ambiguous without the Transpose: channel-first


@pytest.mark.parametrize("build, logits, activation", [
    (_small_keras, "model/dense_1/BiasAdd", "Softmax"),
    (lambda: caffe2_style("Softmax"), "cls", "Softmax"),
    (lambda: caffe2_style("LogSoftmax"), "fc", "LogSoftmax"),  # through the trailing Identity
    (token_model, "pooled", None),  # raw output: the loss reads it as is
])
def test_loss_reads_the_value_before_a_softmax_head(build, logits, activation):
    model = lift(build())
    head = logits_head(model, pick_output(model, ""))
    assert (head.logits, head.activation) == (logits, activation)


def test_digits_are_fitted_to_an_nhwc_input_and_the_preprocessing_recorded():
    nchw = load_dataset("digits", (3, 8, 8))
    nhwc = load_dataset("digits", (8, 8, 3), layout="NHWC")
    assert nhwc.x_train.shape[1:] == (8, 8, 3)
    np.testing.assert_array_equal(nhwc.x_train, nchw.x_train.transpose(0, 2, 3, 1))
    steps = nhwc.preprocessing
    assert steps["layout"] == "NHWC" and steps["channels"] == "1 -> 3 repeated" and steps["resize"] is None
    raw = load_dataset("digits", (1, 8, 8)).x_train  # standardized with the recorded constants
    assert abs(float(raw.mean())) < 0.05 and steps["mean"] == pytest.approx(0.3053, abs=1e-3)
    assert steps["std"] == pytest.approx(0.3760, abs=1e-3)


def test_npz_in_the_model_layout_is_used_as_is(tmp_path):
    path = _digits_npz(tmp_path / "d.npz", layout="NHWC")
    data = load_dataset(f"npz:{path}", (8, 8, 3), layout="NHWC")
    with np.load(path) as arrays:
        np.testing.assert_array_equal(data.x_train, arrays["x"])
    assert data.preprocessing["resize"] is None and data.preprocessing["channels"] is None


def test_channel_last_npz_is_transposed_not_reshaped(tmp_path):
    """[N, H, W, C] images (Keras' datasets) for an NCHW model, or of another size for an NHWC one."""
    path = _digits_npz(tmp_path / "d.npz", layout="NHWC")  # [N, 8, 8, 3]
    with np.load(path) as arrays:
        channel_first = arrays["x"].transpose(0, 3, 1, 2)
    nchw = load_dataset(f"npz:{path}", (3, 8, 8))
    np.testing.assert_array_equal(nchw.x_train, channel_first)
    assert nchw.preprocessing["source_layout"] == "NHWC" and nchw.preprocessing["resize"] is None
    larger = load_dataset(f"npz:{path}", (16, 16, 3), layout="NHWC")
    assert larger.preprocessing["resize"] == "8x8 -> 16x16 bilinear" and larger.preprocessing["channels"] is None
    np.testing.assert_array_equal(larger.x_train, fit_to_layout(nchw.x_train, (16, 16, 3), "NHWC")[0])


def test_metadata_props_survive_lifting_copying_and_construction():
    proto = token_model()
    helper.set_model_props(proto, {"asgnas.preprocessing": '{"layout": "NCHW"}'})
    model = lift(proto).copy()
    for name in ("w1", "w2"):  # zero the residual MLP: construct-subnet erases it
        model.graph.values[name].const.array = np.zeros_like(model.graph.values[name].const.array)
    construct_subnet(model)
    assert {p.key: p.value for p in lower(model).metadata_props} == {"asgnas.preprocessing": '{"layout": "NCHW"}'}


# --- training end to end -----------------------------------------------------------------------------------


def test_keras_like_nhwc_cnn_learns_on_digits_and_keeps_its_softmax(tmp_path):
    status, out, report = _run(_small_keras(), tmp_path, "data=digits,epochs=3,target-sparsity=1")
    trained = report["train"]
    losses = [e["loss"] for e in trained["epochs"]]
    assert status == 0 and trained["verdict"] == "ok" and trained["verdict_reasons"] == []
    assert losses[-1] < 0.6 * losses[0]
    assert trained["val_accuracy_full"] > 0.6 > trained["chance_accuracy"] + 0.3
    assert trained["loss_on"] == {"value": "model/dense_1/BiasAdd", "after": "Softmax"}
    assert report["verify"]["ok"] and report["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    slim = onnx.load(str(out))
    assert slim.graph.node[-1].op_type == "Softmax"
    recorded = json.loads({p.key: p.value for p in slim.metadata_props}["asgnas.preprocessing"])
    assert recorded == trained["preprocessing"]
    assert recorded["layout"] == "NHWC" and recorded["channels"] == "1 -> 3 repeated"
    assert recorded["mean"] == pytest.approx(0.3053, abs=1e-3)


@pytest.mark.parametrize("activation", ["Softmax", "LogSoftmax"])
def test_caffe2_heads_train_on_their_logits(tmp_path, activation):
    data = _digits_npz(tmp_path / "d.npz")
    status, out, report = _run(caffe2_style(activation), tmp_path, f"data=npz:{data},epochs=3")
    trained = report["train"]
    assert status == 0 and trained["verdict"] == "ok"
    assert trained["val_accuracy_full"] > 0.4 and trained["val_accuracy_slim"] == trained["val_accuracy_full"]
    assert trained["loss_on"]["after"] == activation
    assert onnx.load(str(out)).graph.node[-1].op_type == ("Softmax" if activation == "Softmax" else "Identity")


def test_two_integer_inputs_train_from_named_npz_arrays(tmp_path):
    np.savez(tmp_path / "tokens.npz", **token_data())
    status, out, report = _run(token_model(), tmp_path,
                               f"data=npz:{tmp_path / 'tokens.npz'},output=logits,epochs=3,target-sparsity=1")
    trained = report["train"]
    assert status == 0 and trained["output"] == "logits" and trained["verdict"] == "ok"
    assert trained["val_accuracy_full"] > 0.8 and trained["val_accuracy_slim"] == trained["val_accuracy_full"]
    assert trained["preprocessing"]["inputs"] == ["input_ids", "attention_mask"]
    assert report["verify"]["ok"] and report["construct-subnet"]["erased_structures"] == 1


def test_named_npz_missing_an_input_array_fails_with_one_line(tmp_path, capsys):
    arrays = token_data()
    del arrays["attention_mask"]
    np.savez(tmp_path / "tokens.npz", **arrays)
    status, _, _ = _run(token_model(), tmp_path, f"data=npz:{tmp_path / 'tokens.npz'},output=logits")
    err = capsys.readouterr().err
    assert status == 2 and "missing arrays attention_mask" in err and len(err.strip().splitlines()) == 1


def test_unknown_output_name_fails_with_one_line(tmp_path, capsys):
    np.savez(tmp_path / "tokens.npz", **token_data())
    status, _, _ = _run(token_model(), tmp_path, f"data=npz:{tmp_path / 'tokens.npz'},output=probs")
    assert status == 2 and "output=probs is not a graph output (outputs: pooled, logits)" in capsys.readouterr().err


# --- training that says when it failed ---------------------------------------------------------------------------


def test_nan_loss_stops_training_with_exit_1_and_writes_no_model(tmp_path, capsys):
    data = _digits_npz(tmp_path / "d.npz")  # NaN in the data itself is bad input (exit 2, tests/cli)
    src, out, report = tmp_path / "in.onnx", tmp_path / "slim.onnx", tmp_path / "r.json"
    onnx.save(caffe2_style("LogSoftmax"), str(src))
    status = main([str(src), "--passes", f"search-space,train{{quiet=true,data=npz:{data},epochs=2,batch-size=500,"
                   "lr=1e30},construct-subnet,verify", "-o", str(out), "--report", str(report), "-q"])
    err = capsys.readouterr().err.strip()
    assert status == 1 and not out.exists(), err
    assert len(err.splitlines()) == 1 and "training diverged: loss" in err
    assert "try a lower lr (now 1e+30)" in err
    passes = json.loads(report.read_text())["passes"]
    assert [p["name"] for p in passes] == ["search-space", "train"] and "diverged" in passes[-1]["error"]


def test_training_that_does_not_learn_exits_1_with_the_verdict_and_the_model_written(tmp_path, capsys):
    np.savez(tmp_path / "tokens.npz", **token_data())
    status, out, report = _run(token_model(), tmp_path,
                               f"data=npz:{tmp_path / 'tokens.npz'},output=logits,epochs=2,lr=0,target-sparsity=1")
    trained = report["train"]
    assert status == 1 and out.exists() and report["verify"]["ok"]
    assert trained["verdict"] == "not learning"
    assert trained["verdict_reasons"][0].startswith("validation accuracy ")
    err = capsys.readouterr().err.strip()
    assert err.startswith("asgnas-opt: train: not learning: validation accuracy") and len(err.splitlines()) == 1


def test_verdict_thresholds():
    from asgnas.bridge.verdict import chance_accuracy, learning_verdict

    assert chance_accuracy(np.array([0, 0, 0, 1]), 10) == 0.75  # the majority class beats 1/classes
    assert chance_accuracy(np.arange(10), 10) == 0.1
    falling, flat = [{"loss": 2.3}, {"loss": 1.0}], [{"loss": 2.3}, {"loss": 2.29}]
    assert learning_verdict(falling, 0.9, 0.1) == {"verdict": "ok", "reasons": [], "chance_accuracy": 0.1}
    found = learning_verdict(flat, 0.14, 0.1)
    assert found["verdict"] == "not learning" and len(found["reasons"]) == 2
    assert "the loss did not fall (2.3000 in epoch 1, 2.2900 in epoch 2)" in found["reasons"][1]
    assert learning_verdict(flat[:1], 0.9, 0.1)["verdict"] == "ok"  # one epoch: only the accuracy is judged


# --- the Python API on the same models ------------------------------------------------------------------------


@pytest.mark.parametrize("build", [_small_keras, lambda: caffe2_style("Softmax")])
def test_api_from_onnx_gives_the_logits_of_a_softmax_head_and_data_in_the_model_layout(tmp_path, build):
    """``ASGNAS.from_onnx``'s model returns [N, classes] logits (what cross_entropy needs, what the train pass
    trains); ``nas.dataset`` fits the data as the train pass does (NHWC for the Keras-style input)."""
    import torch

    from asgnas import ASGNAS
    from asgnas.runtime import session

    onnx.save(build(), str(tmp_path / "m.onnx"))
    nas = ASGNAS.from_onnx(tmp_path / "m.onnx", workdir=tmp_path)
    data = nas.dataset("digits")
    sample_shape = tuple(d.dim_value for d in onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type
                         .shape.dim[1:])
    assert data.x_train.shape[1:] == sample_shape and data.preprocessing["mean"] == pytest.approx(0.3053, abs=1e-3)
    x = data.x_val[:1]  # the Caffe2-style graph declares batch 1
    nas.model.eval()
    with torch.no_grad():
        logits = nas.model(torch.from_numpy(x))
    sess = session(str(tmp_path / "m.onnx"))
    probabilities = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(1, -1)
    assert logits.shape == (1, 10) and not np.allclose(logits.sum(-1).numpy(), 1.0)
    np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), probabilities, atol=1e-5)


def test_api_from_onnx_output_picks_the_trained_output_and_dataset_reads_named_inputs(tmp_path):
    import torch

    from asgnas import ASGNAS

    onnx.save(token_model(), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "tokens.npz", **token_data())
    nas = ASGNAS.from_onnx(tmp_path / "m.onnx", workdir=tmp_path, output="logits")
    data = nas.dataset(f"npz:{tmp_path / 'tokens.npz'}")
    assert list(data.x_train.arrays) == ["input_ids", "attention_mask"]
    assert data.x_train.arrays["input_ids"].dtype == np.int64
    with torch.no_grad():
        logits = nas.model(**{name: torch.from_numpy(a) for name, a in data.x_val[:3].arrays.items()})
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 4)


def test_api_slim_model_records_the_preprocessing_of_its_dataset(tmp_path):
    """One path for every front end: the API's slim model carries ``asgnas.preprocessing`` like the train pass's."""
    import json

    from asgnas import ASGNAS
    from asgnas.bridge.train_pass import PREPROCESSING_KEY

    onnx.save(_small_keras(), str(tmp_path / "m.onnx"))
    nas = ASGNAS.from_onnx(tmp_path / "m.onnx", workdir=tmp_path)
    data = nas.dataset("digits")
    result = nas.construct_subnet(tmp_path / "out")
    for path in (result["full_onnx"], result["subnet_onnx"]):
        props = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert json.loads(props[PREPROCESSING_KEY]) == json.loads(json.dumps(data.preprocessing, sort_keys=True))
    assert data.preprocessing["mean"] == pytest.approx(0.3053, abs=1e-3)
