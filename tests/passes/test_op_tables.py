"""The operator tables agree: an op that can carry a removable channel group can also be trained, costed and
zero-checked.

The sets are read off the tables themselves (``CHANNEL_RULES``, the executor's ``BUILDERS``, ``MAC_RULES``,
``zeros.UNARY``, ``OP_TABLE``); the only hand-written lists are the exceptions below, each with its reason, and
each compared for equality so that a stale exception fails too.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import asgnas.bridge.executor  # noqa: F401  (importing the package registers every builder)
from asgnas.bridge.executor.registry import BUILDERS
from asgnas.ir import lift
from asgnas.passes.cost import MAC_RULES, ensure_shapes, node_costs
from asgnas.passes.erasing.ops import OP_TABLE
from asgnas.passes.pruning import analyze_pruning
from asgnas.passes.pruning.rules import CHANNEL_RULES
from asgnas.passes.pruning.zeros import UNARY

#: ops the analysis refuses (``carries_channels=False``: every output axis pinned) and the executor cannot run:
#: their values are random, so a trained model could never be checked equal to onnxruntime's
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}

#: channel-carrying ops whose output value for a removed channel is not a known constant (``zero=None``), so
#: nothing downstream may assume it: safe, only less prunable after them
ZERO_UNKNOWN = {
    "ArgMax", "ArgMin",  # an index: which position wins depends on the kept channels' values
    "LayerNormalization",  # normalizes over the channel axis too: a removed channel's output depends on the rest
    "Mod",  # Mod(x, 0) for a removed divisor channel is undefined in ONNX
    "Constant",  # no input: its channels are sliced like an initializer's, there is no f(removed input)
}

#: channel-carrying ops absent from the erasing table: erasing treats them by other means
NOT_IN_OP_TABLE = {"Constant"}  # erasing's dataflow folds Constant outputs like initializers

CARRIERS = {op for op, rule in CHANNEL_RULES.items() if rule.carries_channels}
REFUSED = set(CHANNEL_RULES) - CARRIERS


def test_channel_carriers_run_in_the_executor() -> None:
    assert CARRIERS - set(BUILDERS) == set()
    assert set(CHANNEL_RULES) - set(BUILDERS) == RANDOM_OPS


def test_random_ops_are_refused_by_the_analysis() -> None:
    assert RANDOM_OPS <= REFUSED


def test_channel_ops_are_costed() -> None:
    assert set(CHANNEL_RULES) - set(MAC_RULES) == set()
    # and no cost rule names an op nothing else knows
    assert set(MAC_RULES) - set(CHANNEL_RULES) - set(BUILDERS) == set()


def test_channel_carriers_have_zero_rules() -> None:
    assert {op for op in CARRIERS if CHANNEL_RULES[op].zero is None} == ZERO_UNKNOWN


def test_unary_zero_functions_belong_to_executable_channel_ops() -> None:
    assert set(UNARY) - CARRIERS == set()
    assert set(UNARY) - set(BUILDERS) == set()


def test_channel_carriers_are_known_to_erasing() -> None:
    assert CARRIERS - set(OP_TABLE) == NOT_IN_OP_TABLE


@pytest.mark.parametrize("op", sorted(op for op in REFUSED if op.endswith("Like")))
def test_shaped_like_ops_pin_their_input(op: str) -> None:
    """Gemm -> op: the op's output has the Gemm's shape but is no slice of it, so the Gemm's channels stay."""
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["c"], name="gemm", transB=1),
             helper.make_node(op, ["c"], ["y"], name="like")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    analysis = analyze_pruning(lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    assert len(analysis.groups) == 4
    assert analysis.removable() == []
    assert all(g.reason.startswith(f"like ({op})") for g in analysis.groups)


def test_newly_executable_ops_train_and_construct(tmp_path) -> None:
    """Conv -> Shrink -> LpPool -> Conv -> RMSNormalization -> GlobalAveragePool -> Gemm: prune groups run through every
    one of them; train zeroes some and construct-subnet removes them, verified equal in onnxruntime."""
    from asgnas.cli import main

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> object:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Shrink", ["c1"], ["s"], name="shrink", lambd=0.1, bias=0.05),
        helper.make_node("LpPool", ["s"], ["p"], name="lp_pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("RMSNormalization", ["c2", "scale"], ["n"], name="rms", axis=-1),
        helper.make_node("GlobalAveragePool", ["n"], ["g"], name="global_pool"),  # no GlobalLpPool-22 in ort
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="head", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [init("w1", 8, 2, 3, 3), init("b1", 8), init("w2", 8, 8, 1, 1), init("b2", 8), init("scale", 3),
         init("w3", 3, 8), init("b3", 3)])
    path, out, report_path = tmp_path / "net.onnx", tmp_path / "slim.onnx", tmp_path / "r.json"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=11), str(path))
    status = main([str(path), "--passes", "train{data=synthetic,epochs=6,kind=prune,optimizer=dhspg,"
                   "target-sparsity=0.25,quiet=true},construct-subnet,verify", "-o", str(out),
                   "--report", str(report_path), "-q"])
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["train"]["metrics"]["num_zero_groups"] == 4  # 25% of the 16 channel groups
    assert report["verify"]["ok"]
    assert report["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    dims = {t.name: list(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert dims["w1"][0] + dims["w2"][0] == 16 - 4  # the 4 zeroed channels are gone, from either Conv
    assert dims["w2"][1] == dims["w1"][0] and dims["w3"][1] == dims["w2"][0] and dims["scale"] == [3]


@pytest.mark.parametrize("op, attrs, macs", [("ReduceMax", {}, 24), ("ArgMax", {"axis": 1}, 24),
                                             ("Hardmax", {"axis": 1}, 24), ("EyeLike", {}, 0)])
def test_cost_of_ops_once_left_to_the_default_rule(op: str, attrs: dict, macs: int) -> None:
    """x[4, 6]: reductions read every input element (the default counted their 1 or 4 outputs); generators
    compute nothing from their input's values."""
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="n", **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ensure_shapes(model)
    assert node_costs(model).get("n", {"macs": 0})["macs"] == macs
