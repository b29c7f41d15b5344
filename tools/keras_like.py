"""A Keras-style CNN as tf2onnx exports it, and digits in its NHWC layout: the benchmark of "models from any
exporter train" (tf2onnx itself is not installable here; this onnx.helper graph mimics its export pattern).

    python tools/keras_like.py OUT_DIR            # writes OUT_DIR/keras.onnx and OUT_DIR/digits.npz
    asgnas-opt OUT_DIR/keras.onnx --passes "search-space,train{data=npz:OUT_DIR/digits.npz,epochs=20,\
target-sparsity=2},construct-subnet,verify" -o OUT_DIR/slim.onnx --report OUT_DIR/r.json
    python tools/keras_like.py OUT_DIR --evaluate OUT_DIR/slim.onnx   # accuracy on the held-out test images

The graph: NHWC input [N, 16, 16, 3], a leading Transpose to NCHW, Pad before every Conv (Keras "same" padding
as tf2onnx emits it), BatchNorm folded to Mul + Add, Relu, residual blocks (Add), AveragePool, a Transpose back
to NHWC and Reshape (Keras Flatten), two Dense layers as MatMul + Add, and a Softmax head.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _Builder:
    """Collects nodes and seeded initializers; names follow tf2onnx's ``model/layer/op`` style."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv_bn_relu(self, x: str, cin: int, cout: int, prefix: str, relu: bool = True) -> str:
        x = self.node("Pad", [x, self.const(f"{prefix}/pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))],
                      f"{prefix}/Pad")
        w = (self.rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        x = self.node("Conv", [x, self.const(f"{prefix}/kernel", w), self.const(f"{prefix}/bias",
                      np.zeros(cout, np.float32))], f"{prefix}/Conv2D", kernel_shape=[3, 3])
        gamma = (1.0 + 0.1 * self.rng.standard_normal((1, cout, 1, 1))).astype(np.float32)
        x = self.node("Mul", [x, self.const(f"{prefix}/bn/mul", gamma)], f"{prefix}/bn/Mul")
        x = self.node("Add", [x, self.const(f"{prefix}/bn/add", np.zeros((1, cout, 1, 1), np.float32))],
                      f"{prefix}/bn/Add")
        return self.node("Relu", [x], f"{prefix}/Relu") if relu else x

    def dense(self, x: str, cin: int, cout: int, prefix: str) -> str:
        w = (self.rng.standard_normal((cin, cout)) * np.sqrt(2.0 / cin)).astype(np.float32)
        x = self.node("MatMul", [x, self.const(f"{prefix}/kernel", w)], f"{prefix}/MatMul")
        return self.node("Add", [x, self.const(f"{prefix}/bias", np.zeros(cout, np.float32))], f"{prefix}/BiasAdd")


def keras_like_cnn(blocks: int = 3, width: int = 16, classes: int = 10, side: int = 16,
                   seed: int = 0) -> onnx.ModelProto:
    """The tf2onnx-style CNN (see the module docstring): input ``input_1`` [N, side, side, 3], output ``dense_1``
    (Softmax probabilities)."""
    b = _Builder(seed)
    x = b.node("Transpose", ["input_1"], "model/conv2d/Conv2D__6", perm=[0, 3, 1, 2])
    x = b.conv_bn_relu(x, 3, width, "model/stem")
    for i in range(blocks):
        y = b.conv_bn_relu(x, width, width, f"model/block{i}/a")
        y = b.conv_bn_relu(y, width, width, f"model/block{i}/b", relu=False)
        x = b.node("Relu", [b.node("Add", [x, y], f"model/block{i}/add")], f"model/block{i}/out")
    pooled = side // 4
    x = b.node("AveragePool", [x], "model/pool/AvgPool", kernel_shape=[4, 4], strides=[4, 4])
    x = b.node("Transpose", [x], "model/pool/AvgPool__20", perm=[0, 2, 3, 1])
    flat = pooled * pooled * width
    x = b.node("Reshape", [x, b.const("model/flatten/Const", np.array([-1, flat], np.int64))],
               "model/flatten/Reshape")
    x = b.node("Relu", [b.dense(x, flat, 32, "model/dense")], "model/dense/Relu")
    x = b.dense(x, 32, classes, "model/dense_1")
    b.nodes.append(helper.make_node("Softmax", [x], ["dense_1"], name="model/dense_1/Softmax", axis=-1))
    graph = helper.make_graph(
        b.nodes, "tf2onnx",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__10", side, side, 3])],
        [helper.make_tensor_value_info("dense_1", TensorProto.FLOAT, ["unk__11", classes])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def digits_nhwc(side: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn digits as a Keras user would feed them: scaled to [0, 1], resized to side x side, 3 channels,
    NHWC; split 60/20/20 into train (``x``, ``y``), validation (``x_val``) and test (``x_test``)."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy((digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8))
    images = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
    x = images.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).contiguous().numpy()
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = n_test = len(x) // 5
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return {"x": x[train], "y": y[train], "x_val": x[val], "y_val": y[val], "x_test": x[test], "y_test": y[test]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--evaluate", help="print this model's accuracy on OUT_DIR/digits.npz's test images")
    args = parser.parse_args()
    if args.evaluate:
        from asgnas.ir import load_model
        from asgnas.runtime import onnx_accuracy

        with np.load(args.out_dir / "digits.npz") as data:
            accuracy = onnx_accuracy(load_model(args.evaluate), data["x_test"], data["y_test"])
        print(f"{args.evaluate}: test accuracy {accuracy:.4f}")
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(keras_like_cnn(), str(args.out_dir / "keras.onnx"))
    np.savez(args.out_dir / "digits.npz", **digits_nhwc())
    print(f"wrote {args.out_dir / 'keras.onnx'} and {args.out_dir / 'digits.npz'}")


if __name__ == "__main__":
    main()
