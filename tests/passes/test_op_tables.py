"""The operator tables agree: an op that can carry a removable channel group can also be trained, costed and
zero-checked, or the registry (``op_registry.OPS``) says why not.

The sets are read off the tables themselves (``CHANNEL_RULES``, the executor's ``BUILDERS``, ``MAC_RULES``,
``zeros.UNARY``, ``OP_TABLE``) and the registry they are views of. The reasons for every exception live in the
registry (``Channels.refused``, ``OpSpec.why_not``); the op names below repeat them so that adding an exception
is a visible change here too, each compared for equality so that a stale exception fails too.
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
from asgnas.passes.op_registry import OPS, describe_op
from asgnas.passes.pruning import analyze_pruning
from asgnas.passes.pruning.rules import CHANNEL_RULES
from asgnas.passes.pruning.zeros import UNARY

#: ops the analysis refuses (``carries_channels=False``: every output axis pinned) and the executor cannot run
RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike"}

#: channel-carrying ops whose output value for a removed channel is not a known constant (``zero=None``), so
#: nothing downstream may assume it: safe, only less prunable after them
ZERO_UNKNOWN = {"ArgMax", "ArgMin", "LayerNormalization", "Mod", "Constant"}

#: channel-carrying ops absent from the erasing table: erasing treats them by other means
NOT_IN_OP_TABLE = {"Constant"}

#: what a carrier needs besides its channel rule, and how to tell whether it has it
ASPECTS = {
    "zero": lambda op: CHANNEL_RULES[op].zero is not None,
    "erasing": lambda op: op in OP_TABLE,
    "macs": lambda op: op in MAC_RULES,
    "executes": lambda op: op in BUILDERS,
}

CARRIERS = {op for op, rule in CHANNEL_RULES.items() if rule.carries_channels}
REFUSED = set(CHANNEL_RULES) - CARRIERS


def test_registry_says_which_ops_the_executor_runs() -> None:
    assert {op for op, spec in OPS.items() if spec.executes} == set(BUILDERS)


def test_every_table_is_a_view_of_the_registry() -> None:
    assert set(CHANNEL_RULES) == {op for op, spec in OPS.items() if spec.channels is not None}
    assert set(OP_TABLE) == {op for op, spec in OPS.items() if spec.erasing is not None}
    assert set(MAC_RULES) == {op for op, spec in OPS.items() if spec.macs is not None}
    assert CARRIERS == {op for op, spec in OPS.items() if spec.carries_channels}


@pytest.mark.parametrize("op", sorted(CARRIERS))
def test_every_carrier_is_executable_costed_and_zero_checked_or_says_why(op: str) -> None:
    spec = OPS[op]
    missing = {aspect for aspect, has in ASPECTS.items() if not has(op)}
    assert set(spec.why_not) == missing  # a reason for each gap, and no reason for what is there
    assert all(len(reason) > 20 for reason in spec.why_not.values())


def test_refused_ops_say_why() -> None:
    refused = {op: OPS[op].channels.refused for op in REFUSED}
    assert set(refused) == {"Shape", "Size", "ConstantOfShape", "Range", "EyeLike"} | RANDOM_OPS
    assert all(isinstance(reason, str) and len(reason) > 20 for reason in refused.values())
    assert all(OPS[op].why_not == {} for op in REFUSED - RANDOM_OPS)
    assert all(set(OPS[op].why_not) == {"executes"} for op in RANDOM_OPS)


def test_exceptions_are_the_registrys() -> None:
    assert {op for op in CARRIERS if "zero" in OPS[op].why_not} == ZERO_UNKNOWN
    assert {op for op in CARRIERS if "erasing" in OPS[op].why_not} == NOT_IN_OP_TABLE
    assert {op for op, spec in OPS.items() if spec.channels and not spec.executes} == RANDOM_OPS


def test_describe_op_answers_in_one_lookup() -> None:
    conv = describe_op("Conv")
    assert conv["channels"] == {"analyze": "conv", "zero": "channel_stem", "rewrite": "conv", "aligned": True,
                                "refused": None, "carries_channels": True}
    assert conv["erasing"]["channel"] == "stem" and conv["erasing"]["mul_slots"] == (1,)
    assert (conv["macs"], conv["executes"], conv["why_not"]) == ("conv", True, {})
    assert describe_op("ArgMax")["why_not"]["zero"].startswith("an index")
    assert describe_op("Loop")["known"] is False


def test_cli_lists_and_explains_ops(capsys) -> None:
    from asgnas.cli import main

    assert main(["--explain-op", "Sigmoid"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Sigmoid"
    assert lines[1] == "  pruning:  rule analyze_unary, zero unary (f(0) is zeros.py: UNARY['Sigmoid']), aligned=True"
    assert lines[2].split() == ["erasing:", "zp=False"] and lines[4].split() == ["train:", "yes"]
    assert main(["--list-ops"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(OPS)
    assert rows["RandomUniform"] == ["refused", "-", "none", "no"]
    assert rows["Clip"] == ["carries", "zp", "if", "output_elements", "yes"]


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


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_zero_functions_match_onnxruntime(op: str) -> None:
    """The zero rule of an element-wise op is f at a constant: f must be the op onnxruntime runs (default
    attributes), at 0 and at the other constants a removed channel can hold upstream (Sigmoid's 0.5, ...)."""
    import onnxruntime as ort

    attrs = {"to": TensorProto.FLOAT} if op == "Cast" else {}
    node = helper.make_node(op, ["x"], ["y"], name="n", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    points = np.array([0.0, 0.5, -1.25, 2.0, 0.693], np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": points})[0]
    ir_node = lift(proto).graph.nodes[0]
    expected = [UNARY[op](ir_node, float(z)) for z in points]
    known = [i for i, value in enumerate(expected) if value is not None]
    assert len(known) >= 3  # undefined only where ONNX is (Log, Sqrt of a negative; 1/0)
    np.testing.assert_allclose(got[known], np.array([expected[i] for i in known], np.float32), rtol=1e-5,
                               atol=1e-6)
