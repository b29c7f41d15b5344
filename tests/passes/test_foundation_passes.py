"""shape-infer, cost, dce: hand counts and the behaviour each pass promises."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from asgnas.ir import lift, load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.passes.cost import node_costs, total_cost
from asgnas.passes.shape_infer import ensure_shapes, holes
from tests.models import ort_run


def _export(module: nn.Module, *inputs: torch.Tensor, path) -> onnx.ModelProto:
    with torch.no_grad():
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, do_constant_folding=False, opset_version=17)
    return load_model(path)


class _Heads(nn.Module):
    """q @ k^T and attn @ v: the attention-style MatMuls of two activations."""

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        attn = q @ k.transpose(-1, -2)  # [B,H,T,T]: T*T*D MACs per head
        return attn @ k


@pytest.mark.parametrize(
    "module,inputs,params,macs",
    [
        # conv 3->8 3x3 on 8x8 (pad 1): 8*8*8 outputs * 3*3*3 taps
        (nn.Conv2d(3, 8, 3, padding=1), [(1, 3, 8, 8)], 8 * 27 + 8, 8 * 8 * 8 * 27),
        # depthwise 8 channels 3x3: each output one 3x3 tap
        (nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), [(1, 8, 8, 8)], 8 * 9, 8 * 8 * 8 * 9),
        # group conv 8->16, 4 groups, 1x1: each output reads 2 input channels
        (nn.Conv2d(8, 16, 1, groups=4, bias=False), [(1, 8, 4, 4)], 16 * 2, 16 * 4 * 4 * 2),
        # transposed conv 4->2, k2 s2 on 3x3: every input element scatters 2*2*2
        (nn.ConvTranspose2d(4, 2, 2, stride=2, bias=False), [(1, 4, 3, 3)], 4 * 2 * 4, 4 * 3 * 3 * 2 * 4),
        # linear 16->10 (Gemm): batch 1
        (nn.Linear(16, 10), [(1, 16)], 16 * 10 + 10, 16 * 10),
        # attention MatMuls: [1,2,5,4] @ [1,2,4,5] -> 2*5*5*4, then [1,2,5,5] @ [1,2,5,4] -> 2*5*4*5
        (_Heads(), [(1, 2, 5, 4), (1, 2, 5, 4)], 0, 2 * 5 * 5 * 4 + 2 * 5 * 4 * 5),
    ],
    ids=["conv", "depthwise", "group", "convtranspose", "gemm", "attention"],
)
def test_cost_matches_hand_counts(tmp_path, module, inputs, params, macs):
    torch.manual_seed(0)
    model = _export(module, *[torch.randn(s) for s in inputs], path=tmp_path / "m.onnx")
    cost = total_cost(model)
    assert cost["params"] == params
    heavy_ops = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert sum(c["macs"] for c in node_costs(model).values() if c["op"] in heavy_ops) == macs


def test_cost_counts_norms_pools_and_shared_weights_once(tmp_path):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(self.conv(x))  # weight read twice, counted once
            return nn.functional.max_pool2d(self.bn(y), 2)

    net = Net()
    with torch.no_grad():  # distinct BN tensors: the exporter de-duplicates equal ones behind Identity
        for tensor in (net.bn.weight, net.bn.bias, net.bn.running_mean, net.bn.running_var):
            tensor.copy_(torch.rand(4) + 0.5)
    model = _export(net, torch.randn(1, 4, 4, 4), path=tmp_path / "m.onnx")
    cost = total_cost(model)
    assert cost["params"] == 16 + 4 * 4  # conv weight once + BN gamma, beta, mean, var
    per_node = node_costs(model)
    assert sum(c["macs"] for c in per_node.values() if c["op"] == "Conv") == 2 * 64 * 4
    assert sum(c["macs"] for c in per_node.values() if c["op"] == "BatchNormalization") == 64
    assert sum(c["macs"] for c in per_node.values() if c["op"] == "MaxPool") == 16 * 4


def test_cost_pass_reports_before_and_after(onnx_path):
    model = load_model(onnx_path("conv_bn_relu", "legacy"))
    report = PassManager(parse_pipeline("cost")).run(model)
    cost = report["cost"]
    assert cost["before"] == cost["after"] == {"params": cost["params"], "macs": cost["macs"]}
    assert cost["params"] > 0 and cost["macs"] > 0 and cost["per_node"]


def test_dce_removes_dead_nodes_and_their_initializers(onnx_path):
    model = load_model(onnx_path("conv_bn_relu", "legacy"))
    graph = model.graph
    dead_weight = graph.add_initializer("dead_w", np.ones((3, 3), np.float32))
    dead = graph.add_node("MatMul", [dead_weight, dead_weight], ["dead_out"], name="dead_matmul")
    graph.add_node("Relu", [dead.outputs[0]], ["dead_relu_out"], name="dead_relu")
    before = len(graph)
    report = PassManager(parse_pipeline("dce")).run(model)
    assert report["dce"] == {"removed_nodes": 2, "removed_initializers": 1}
    assert len(graph) == before - 2
    assert "dead_w" not in graph.values and "dead_out" not in graph.values


def _hole_model(factors: tuple[float, float, float] = (1.0, 0.5, 2.0)) -> onnx.ModelProto:
    """Reshape to [N, C, H] * ``factors`` (default [N, C/2, 2*H]): the shape comes through float arithmetic static
    inference cannot follow."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["sf", "factors"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["new_shape"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "new_shape"], ["y"], name="reshape"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [helper.make_tensor("factors", TensorProto.FLOAT, [3], list(factors))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_infer_fills_holes_by_running_the_model():
    model = lift(_hole_model())
    report = PassManager(parse_pipeline("shape-infer")).run(model, PassContext())
    y = model.graph.values["y"]
    assert y.shape == ("N", 2, 6)  # the batch keeps the input's symbol, the rest is static
    assert report["shape-infer"]["filled_by_runtime"] == 2  # y and z
    assert model.graph.values["z"].shape == ("N", 2, 6)
    static_only = lift(_hole_model())
    PassManager(parse_pipeline("shape-infer{fallback=false}")).run(static_only)
    assert None in static_only.graph.values["y"].shape


def test_shape_fallback_names_batch_multiples_like_the_exporters():
    model = lift(_hole_model((2.0, 0.5, 1.0)))  # [2N, 2, 3]
    ensure_shapes(model)
    assert model.graph.values["y"].shape == ("2*N", 2, 3)
    assert not holes(model)


def test_ensure_shapes_infers_only_when_a_shape_is_missing():
    model = lift(_hole_model())
    assert ensure_shapes(model) is True
    shapes = {name: v.shape for name, v in model.graph.values.items()}
    assert ensure_shapes(model) is False  # complete: nothing runs again
    assert {name: v.shape for name, v in model.graph.values.items()} == shapes


def test_shape_infer_afresh_replaces_stale_shapes():
    model = lift(_hole_model())
    ensure_shapes(model)
    model.graph.values["y"].shape = ("N", 99, 99)  # what a rewrite leaves behind
    PassManager(parse_pipeline("shape-infer")).run(model, PassContext())
    assert model.graph.values["y"].shape == ("N", 99, 99)  # complete shapes are kept
    PassManager(parse_pipeline("shape-infer{afresh=true}")).run(model, PassContext())
    assert model.graph.values["y"].shape == ("N", 2, 6)


def test_shape_infer_types_every_value_of_the_zoo(onnx_path):
    model = load_model(onnx_path("hand_attention", "legacy"))
    PassManager(parse_pipeline("shape-infer")).run(model)
    for node in model.graph:
        for value in node.outputs:
            assert value.dtype and value.shape is not None, value.name


def _mod_chain_model() -> onnx.ModelProto:
    """Reshape [2, 12] -> [2, 3, -1] with a target computed as torch's ``unflatten`` export does: the leading dims
    are sliced off the input's shape up to ``(rank - 1) % rank``, through a ``Mod`` onnx does not propagate."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Add", ["rank", "minus_one"], ["dim"]),
        helper.make_node("Mod", ["dim", "rank"], ["end"]),
        helper.make_node("Slice", ["s", "zero", "end"], ["lead"]),
        helper.make_node("Concat", ["lead", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    ints = {"rank": [2], "minus_one": [-1], "zero": [0], "tail": [3, -1]}
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor(name, TensorProto.INT64, [len(v)], v) for name, v in ints.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_infer_folds_constant_chains_onnx_cannot_propagate():
    proto = _mod_chain_model()
    onnx.checker.check_model(proto, full_check=True)
    plain = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    assert not any(v.name == "y" and v.type.tensor_type.HasField("shape") for v in plain.graph.value_info)
    model = lift(proto)
    report = PassManager(parse_pipeline("shape-infer{fallback=false}")).run(model)
    assert model.graph.values["y"].shape == (2, 3, 4)
    assert report["shape-infer"]["with_shape"] == report["shape-infer"]["values"]
    assert [n.op_type for n in model.graph] == [n.op_type for n in proto.graph.node]  # folded in the probe only
    (z,) = ort_run(proto, {"x": np.zeros((2, 12), np.float32)})
    assert z.shape == (2, 3, 4)


def test_shape_infer_folding_keeps_onnx_element_types():
    """numpy's arange of int32 bounds is int64; a folded Range must not retype the indices it feeds (int32)."""
    nodes = [
        helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
        helper.make_node("Gather", ["x", "r"], ["y"], name="gather", axis=0),
    ]
    bounds = [helper.make_tensor(n, TensorProto.INT32, [], [v]) for n, v in (("start", 2), ("limit", 4), ("delta", 1))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], bounds)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    model = lift(proto)
    PassManager(parse_pipeline("shape-infer")).run(model)
    assert model.graph.values["r"].dtype == TensorProto.INT32
    assert model.graph.values["y"].shape == (2, 3)
    assert ort_run(proto, {"x": np.zeros((6, 3), np.float32)})[0].shape == (2, 3)


def test_shape_fallback_gives_no_batch_symbol_to_a_data_dependent_count():
    """NonZero of an all-nonzero [N, 4] input counts 4N elements in both runs: a multiple of the batch by chance of
    the data, not by the graph, so the count stays unknown (and so does what is computed from it)."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["a", "one"], ["pos"]),
             helper.make_node("NonZero", ["pos"], ["idx"]), helper.make_node("Neg", ["idx"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, None)],
                              [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ensure_shapes(model)
    assert model.graph.values["idx"].shape == (2, None)
    assert model.graph.values["out"].shape == (2, None)


def test_ensure_shapes_does_not_rerun_the_model_for_holes_it_cannot_fill(monkeypatch):
    """A data-dependent count stays unknown: later calls (every analysis and cost make one) do not run the model
    again for it until a rewrite or ``forget_shapes``."""
    import asgnas.passes.shape_infer as shape_infer

    nodes = [helper.make_node("NonZero", ["x"], ["idx"]), helper.make_node("Neg", ["idx"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, None)])
    model = lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    runs = []
    real = shape_infer.fill_by_running
    monkeypatch.setattr(shape_infer, "fill_by_running", lambda m, h: runs.append(len(h)) or real(m, h))
    assert ensure_shapes(model) is True and runs == [2]
    assert ensure_shapes(model) is False and runs == [2]
    shape_infer.forget_shapes(model)
    ensure_shapes(model)
    assert runs == [2, 2]
