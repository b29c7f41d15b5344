"""Test models in other frameworks' export patterns, built with onnx.helper (torch's exporter makes the zoo in
``models.py``; these mimic what tf2onnx and Caffe2 emit). The Keras/tf2onnx CNN lives in ``tools/keras_like.py``
(the benchmark uses it too); here: a Caffe2-style head and a two-input token model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def caffe2_style(activation: str = "Softmax", width: int = 8, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """Caffe2-era export (opset 9), input ``data`` [1, 1, 8, 8] NCHW with batch 1 declared (Caffe2 exports a
    fixed batch), three parallel 3x3 conv branches joined by ``Sum``, then a head ending in ``activation``:
    ``"Softmax"``: a fully connected layer as an 8x8 Conv to classes, Softmax over axis 1 of [N, C, 1, 1];
    ``"LogSoftmax"``: Flatten, Gemm, LogSoftmax, then an Identity to the output (a renamed blob)."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["data", "conv1_w", "conv1_b"], ["conv1"], name="conv1", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1")]
    inits = [_init("conv1_w", _he(rng, (width, 1, 3, 3), 9)), _init("conv1_b", np.zeros(width, np.float32))]
    branches = []
    for b in range(3):
        nodes.append(helper.make_node("Conv", ["relu1", f"b{b}_w", f"b{b}_b"], [f"b{b}"], name=f"b{b}",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        inits += [_init(f"b{b}_w", _he(rng, (width, width, 3, 3), 9 * width)),
                  _init(f"b{b}_b", np.zeros(width, np.float32))]
        branches.append(f"b{b}")
    nodes += [helper.make_node("Sum", branches, ["sum"], name="sum"),
              helper.make_node("Relu", ["sum"], ["relu2"], name="relu2")]
    if activation == "Softmax":
        nodes += [helper.make_node("Conv", ["relu2", "cls_w", "cls_b"], ["cls"], name="cls", kernel_shape=[8, 8]),
                  helper.make_node("Softmax", ["cls"], ["prob"], name="prob", axis=1)]
        inits += [_init("cls_w", _he(rng, (classes, width, 8, 8), width * 64)),
                  _init("cls_b", np.zeros(classes, np.float32))]
        out_shape = [1, classes, 1, 1]
    else:
        nodes += [helper.make_node("Flatten", ["relu2"], ["flat"], name="flat"),
                  helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], name="fc", transB=1),
                  helper.make_node("LogSoftmax", ["fc"], ["logprob"], name="logprob", axis=1),
                  helper.make_node("Identity", ["logprob"], ["prob"], name="prob")]
        inits += [_init("fc_w", _he(rng, (classes, width * 64), width * 64)),
                  _init("fc_b", np.zeros(classes, np.float32))]
        out_shape = [1, classes]
    graph = helper.make_graph(nodes, "caffe2", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="onnx-caffe2")
    model.ir_version = 4
    onnx.checker.check_model(model)
    return model


def token_model(vocab: int = 21, dim: int = 16, tokens: int = 6, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Two integer inputs, ``input_ids`` and ``attention_mask`` (int64 [N, tokens]): a Gather embedding, the mask
    cast and multiplied in, masked mean over tokens, a residual MLP block (MatMul+Add, Relu, MatMul+Add, Add) and
    a MatMul+Add head with raw logits ``logits`` plus a second output ``pooled`` (so ``output=`` must pick)."""
    rng = np.random.default_rng(seed)
    inits = [_init("embed", (0.5 * rng.standard_normal((vocab, dim))).astype(np.float32)),
             _init("axes_last", np.array([2], np.int64)), _init("axes_tok", np.array([1], np.int64)),
             _init("w1", _he(rng, (dim, dim), dim)), _init("b1", np.zeros(dim, np.float32)),
             _init("w2", _he(rng, (dim, dim), dim)), _init("b2", np.zeros(dim, np.float32)),
             _init("w_head", _he(rng, (dim, classes), dim)), _init("b_head", np.zeros(classes, np.float32)),
             _init("eps", np.array(1e-6, np.float32))]
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["emb"], name="embedding"),
             helper.make_node("Cast", ["attention_mask"], ["maskf"], name="mask_cast", to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "axes_last"], ["mask3"], name="mask_unsqueeze"),
             helper.make_node("Mul", ["emb", "mask3"], ["masked"], name="mask_mul"),
             helper.make_node("ReduceSum", ["masked", "axes_tok"], ["summed"], name="sum_tokens", keepdims=0),
             helper.make_node("ReduceSum", ["maskf", "axes_tok"], ["count"], name="count_tokens", keepdims=1),
             helper.make_node("Add", ["count", "eps"], ["count_eps"], name="count_eps"),
             helper.make_node("Div", ["summed", "count_eps"], ["pooled"], name="mean"),
             helper.make_node("MatMul", ["pooled", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
             helper.make_node("Relu", ["h1b"], ["h1r"], name="fc1_relu"),
             helper.make_node("MatMul", ["h1r", "w2"], ["h2"], name="fc2"),
             helper.make_node("Add", ["h2", "b2"], ["h2b"], name="fc2_bias"),
             helper.make_node("Add", ["pooled", "h2b"], ["res"], name="residual"),
             helper.make_node("MatMul", ["res", "w_head"], ["head"], name="head"),
             helper.make_node("Add", ["head", "b_head"], ["logits"], name="head_bias")]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", tokens])
            for n in ("input_ids", "attention_mask")]
    outs = [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", dim]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])]
    model = helper.make_model(helper.make_graph(nodes, "tokens", ints, outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def token_data(n: int = 600, vocab: int = 21, tokens: int = 6, classes: int = 4,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Class c's sentences use tokens 5c..5c+4, padded with token ``vocab - 1`` where the mask is 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    ids = 5 * y[:, None] + rng.integers(0, 5, (n, tokens))
    lengths = rng.integers(2, tokens + 1, n)
    mask = (np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, vocab - 1).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "y": y.astype(np.int64)}
