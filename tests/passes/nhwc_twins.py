"""A small ResNet-like network built three ways with onnx.helper: as torch exports it (NCHW, BatchNormalization) and as
jax2onnx does (NHWC input, every Conv wrapped in Transposes NHWC->NCHW->NHWC, BatchNorm folded into a per-channel
Mul+Add on the last axis, the residual Add and the head in NHWC), and as tf2onnx does (NHWC input, one Transpose
to NCHW). Same weights, same function."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
CLASSES = 4


def _weights(channels: int, classes: int, in_channels: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"stem": (channels, in_channels), "b1a": (channels, channels), "b1b": (channels, channels),
              "b2a": (channels, channels), "b2b": (channels, channels)}
    weights = {}
    for name, (cout, cin) in shapes.items():
        weights[f"{name}.w"] = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        weights[f"{name}.scale"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        weights[f"{name}.bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    weights["fc.w"] = (rng.standard_normal((channels, classes)) * np.sqrt(1 / channels)).astype(np.float32)
    weights["fc.b"] = np.zeros(classes, np.float32)
    return weights


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"v{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{len(self.nodes)}", **attrs))
        return out

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name


def _conv_bn(g: _Graph, x: str, name: str, weights: dict, style: str, shape: list[int] | None) -> str:
    """Conv + BatchNorm as ``style`` ("torch", "tf2onnx", "jax2onnx") writes them."""
    w = g.const(f"{name}.w", weights[f"{name}.w"])
    scale, bias = weights[f"{name}.scale"], weights[f"{name}.bias"]
    if style == "torch":
        mean, var = np.zeros_like(scale), np.ones_like(scale) - 1e-5
        y = g.node("Conv", [x, w], pads=[1, 1, 1, 1])
        return g.node("BatchNormalization", [y, g.const(f"{name}.scale", scale), g.const(f"{name}.bias", bias),
                                             g.const(f"{name}.mean", mean), g.const(f"{name}.var", var)])
    if style == "tf2onnx":  # NCHW body, BatchNorm folded to [C, 1, 1] constants
        y, bshape = g.node("Conv", [x, w], pads=[1, 1, 1, 1]), [-1, 1, 1]
    else:  # jax2onnx: NHWC between convs, BatchNorm on the last axis
        y = g.node("Transpose", [g.node("Conv", [g.node("Transpose", [x], perm=TO_NCHW), w], pads=[1, 1, 1, 1])],
                   perm=TO_NHWC)
        bshape = shape or [-1]
    y = g.node("Mul", [y, g.const(f"{name}.scale", scale.reshape(bshape))])
    return g.node("Add", [y, g.const(f"{name}.bias", bias.reshape(bshape))])


def resnet_twin(path, nhwc: bool, channels: int = 8, size: int = 6, batch: int | str = "N",
                const_shape: list[int] | None = None, residual_nchw: bool = False,
                annotations: str = "none", preact: bool = False, classes: int = CLASSES, tf2onnx: bool = False) -> str:
    """Stem, two residual blocks, global mean, linear head; ``nhwc``: as jax2onnx writes it, ``tf2onnx``: an NHWC
    input, one Transpose to NCHW and BatchNorm as Mul + Add, else as torch writes it. jax2onnx only:
    ``const_shape`` is the Mul/Add constants' shape ([C] by default, e.g. [1, 1, 1, C]); ``residual_nchw`` adds the
    residual between Transposes to NCHW and back. ``preact``: no Relu after the residual Adds, so one joint feeds
    the next; ``annotations``: value_info that is missing or does not match the data (see ``_annotate``)."""
    style = "jax2onnx" if nhwc else "tf2onnx" if tf2onnx else "torch"
    weights = _weights(channels, classes)
    g = _Graph()
    x = g.node("Transpose", ["x"], perm=TO_NCHW) if tf2onnx else "x"
    h = g.node("Relu", [_conv_bn(g, x, "stem", weights, style, const_shape)])
    for block in ("b1", "b2"):
        y = g.node("Relu", [_conv_bn(g, h, f"{block}a", weights, style, const_shape)])
        y = _conv_bn(g, y, f"{block}b", weights, style, const_shape)
        if nhwc and residual_nchw:
            joint = g.node("Add", [g.node("Transpose", [y], perm=TO_NCHW), g.node("Transpose", [h], perm=TO_NCHW)])
            h = g.node("Transpose", [joint], perm=TO_NHWC)
        else:
            h = g.node("Add", [y, h])
        if not preact:
            h = g.node("Relu", [h])
    spatial = [1, 2] if nhwc else [2, 3]
    pooled = g.node("ReduceMean", [h], axes=spatial, keepdims=0)
    g.node("Add", [g.node("MatMul", [pooled, g.const("fc.w", weights["fc.w"])]), g.const("fc.b", weights["fc.b"])])
    g.nodes[-1].output[0] = "y"
    in_shape = [batch, 3, size, size] if style == "torch" else [batch, size, size, 3]
    graph = helper.make_graph(g.nodes, "twin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    _annotate(model, annotations)
    onnx.save(model, str(path))
    return str(path)


def _annotate(model: onnx.ModelProto, kind: str) -> None:
    """Value_info that does not match the data (the input's batch is symbolic): ``"batch1"`` declares every
    intermediate 4-d value with batch 1, ``"joints"`` only the residual Adds' operands and results, ``"shortcut"``
    only their shortcut operands, ``"result"`` only their results; ``"shapeless"`` declares every intermediate
    value with its element type and no shape."""
    if kind == "none":
        return
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    residual = [n for n in model.graph.node
                if n.op_type == "Add" and not any(i.startswith(("stem", "b1", "b2", "fc")) for i in n.input)]
    chosen = {"joints": {name for n in residual for name in (*n.input, n.output[0])},
              "shortcut": {n.input[1] for n in residual}, "result": {n.output[0] for n in residual}}.get(kind)
    for info in inferred:
        dims = info.type.tensor_type.shape.dim
        if kind == "shapeless":
            model.graph.value_info.append(helper.make_tensor_value_info(info.name, TensorProto.FLOAT, None))
        elif len(dims) == 4 and (kind == "batch1" or info.name in chosen):
            dims[0].Clear()
            dims[0].dim_value = 1
            model.graph.value_info.append(info)


def concat_twin(path, nhwc: bool, channels: int = 4, size: int = 6, classes: int = CLASSES) -> str:
    """An Inception-like cell: stem, two conv branches concatenated on the channel axis (the last one in NHWC),
    a conv reading the concatenation, global mean, linear head."""
    style = "jax2onnx" if nhwc else "torch"
    weights = _weights(channels, classes)
    weights["mix.w"] = weights.pop("b2a.w").repeat(2, axis=1)  # reads both branches
    weights["mix.scale"], weights["mix.bias"] = weights.pop("b2a.scale"), weights.pop("b2a.bias")
    g = _Graph()
    h = g.node("Relu", [_conv_bn(g, "x", "stem", weights, style, None)])
    branches = [g.node("Relu", [_conv_bn(g, h, name, weights, style, None)]) for name in ("b1a", "b1b")]
    joined = g.node("Concat", branches, axis=3 if nhwc else 1)
    h = g.node("Relu", [_conv_bn(g, joined, "mix", weights, style, None)])
    pooled = g.node("ReduceMean", [h], axes=[1, 2] if nhwc else [2, 3], keepdims=0)
    g.node("Add", [g.node("MatMul", [pooled, g.const("fc.w", weights["fc.w"])]), g.const("fc.b", weights["fc.b"])])
    g.nodes[-1].output[0] = "y"
    in_shape = ["N", size, size, 3] if nhwc else ["N", 3, size, size]
    graph = helper.make_graph(g.nodes, "cell", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
                              initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return str(path)
