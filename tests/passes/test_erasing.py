"""``erasing-groups``: side-chain folding, segment graph, removal structures (spec 2.1-2.4, 2.7)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_erasing_support import dynamo_available, load, zoo_onnx  # noqa: E402

from asgnas.ir import lift  # noqa: E402
from asgnas.passes import PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.cost import node_costs  # noqa: E402
from asgnas.passes.erasing import ANALYSIS_KEY, OP_TABLE, analyze_erasing  # noqa: E402

EXPORTERS = ["legacy"] + (["dynamo"] if dynamo_available() else [])

# spec 2.7, identified by the convolutions each structure owns (node names differ between exporters; the
# dynamo exporter folds the BNs into these convs, so the conv parameters are what both exports share)
STACKED_UNETS_STRUCTURES = {
    frozenset({"conv36"}): "{35,36,37,38} -> add76",
    frozenset({"conv73"}): "{72..75} -> add76",
    frozenset({"conv14", "conv15"}): "{13,14,15,19} -> add20",
    frozenset({"conv26", "conv27"}): "{26..29,33} -> add34",
    frozenset({"conv50", "conv51", "conv52"}): "{50,51,52,56} -> add57",
    frozenset({"conv63", "conv64"}): "{63..66,70} -> add71",
}
STACKED_UNETS_NOT_REMOVABLE = [
    {"conv0", "conv3"}, {"conv5", "conv7"}, {"conv11", "conv12"}, {"conv39"}, {"conv42", "conv43"},
    {"conv45", "conv48", "conv49"}, {"linear82"},
]


def _convs(group) -> frozenset[str]:
    return frozenset(
        m.group(1) for p in group.params if (m := re.match(r"((?:conv|linear)\d+)\.", p.initializer))
    )


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_stacked_unets_segment_graph_matches_spec(exporter: str) -> None:
    model = load(zoo_onnx("stackedunets", exporter))
    analysis = analyze_erasing(model)
    segments = analysis.graph.segments
    # Spec 2.7 says "21 segments + input", but its own enumeration lists 6 structures + 7 non-removable
    # parameterised segments + 9 parameter-free ones (adds 20/25/34/57/62/71/76, resizes 24/61) = 22.
    assert len(segments) == 22
    assert sum(s.kind == "joint" for s in segments) == 7  # the seven Adds
    assert all(len(s.nodes) == 1 and s.op == "Add" for s in segments if s.kind == "joint")
    param_free = [s for s in segments if s.group is None]
    assert sorted(s.op for s in param_free) == ["Add"] * 7 + ["Resize"] * 2
    assert len(analysis.groups) == 13
    removable = {_convs(g): g for g in analysis.removable()}
    assert set(removable) == set(STACKED_UNETS_STRUCTURES)
    not_removable = [set(_convs(g)) for g in analysis.groups if not g.removable]
    assert sorted(map(sorted, not_removable)) == sorted(map(sorted, STACKED_UNETS_NOT_REMOVABLE))
    # every removal structure feeds exactly one Add joint
    for group in analysis.removable():
        seg = analysis.segment_of(group)
        assert len(seg.consumers) == 1 and segments[seg.consumers[0]].op == "Add"


def test_stacked_unets_structures_op_sequences() -> None:
    """The legacy export keeps BN nodes: the structures are exactly the spec's vertex runs."""
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    ops = {n.name: n.op_type for n in model.graph}
    sequences = {STACKED_UNETS_STRUCTURES[_convs(g)]: [ops[n] for n in g.nodes] for g in analysis.removable()}
    assert sequences == {
        "{35,36,37,38} -> add76": ["Relu", "Conv", "Relu", "BatchNormalization"],
        "{72..75} -> add76": ["Relu", "Conv", "Relu", "BatchNormalization"],
        "{13,14,15,19} -> add20": ["MaxPool", "Conv", "Conv", "Resize"],
        "{26..29,33} -> add34": ["Conv", "Conv", "BatchNormalization", "Relu", "Resize"],
        "{50,51,52,56} -> add57": ["Conv", "Conv", "Conv", "Resize"],
        "{63..66,70} -> add71": ["Conv", "Conv", "BatchNormalization", "Relu", "Resize"],
    }
    reasons = {frozenset(_convs(g)): g.reason for g in analysis.groups if not g.removable}
    assert "MaxPool" in reasons[frozenset({"conv0", "conv3"})]  # multi-consumer vertex ends the segment
    assert "graph output" in reasons[frozenset({"linear82"})]  # Z5


def test_side_chains_are_folded_never_joints() -> None:
    """Resize scales come from Constant, Constant -> Concat chains: none is a vertex, no Concat is a joint."""
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    ops = {n.name: n.op_type for n in model.graph}
    in_segments = {n for s in analysis.graph.segments for n in s.nodes}
    side = [n for n in ops if n not in in_segments]
    assert sorted({ops[n] for n in side}) == ["Concat", "Constant"]
    assert analysis.summary()["folded_side_nodes"] == len(side) == 18
    assert not analysis.graph.concat_plans and not analysis.graph.concat_failures


def test_groups_hold_every_variable_and_costs() -> None:
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    costs = node_costs(model)
    values = model.graph.values
    for group in analysis.groups:
        names = {p.initializer for p in group.params}
        for node_name in group.nodes:
            node = model.graph.node_by_name(node_name)
            trainable = {1, 2} if node.op_type in ("Conv", "BatchNormalization", "Gemm") else set()
            for slot in trainable:
                assert node.inputs[slot].name in names  # weights, biases, BN scale and bias
        owned = {v.name for n in group.nodes for v in model.graph.node_by_name(n).inputs[1:]
                 if v is not None and v.is_initializer}
        assert group.num_params == sum(values[name].const.size for name in owned)
        assert group.macs == sum(costs.get(n, {}).get("macs", 0) for n in group.nodes)
        assert group.kind == "erase" and group.space.startswith("s")


def test_demosupnet_concat_structures_and_bridge() -> None:
    model = load(zoo_onnx("demosupnet", "legacy"))
    analysis = analyze_erasing(model)
    by_conv = {next(iter(sorted(_prefixes(g)))): g for g in analysis.groups}
    assert by_conv["conv2"].removable and by_conv["conv3"].removable  # Concat operands
    assert by_conv["conv6"].removable and by_conv["conv8"].removable  # Add operands
    assert not by_conv["conv7"].removable and "conv8" in by_conv["conv7"].reason  # the bridge
    assert not by_conv["conv1"].removable
    (plan,) = analysis.graph.concat_plans.values()
    assert [t.node for t in plan.touches] == ["/conv6/conv6.0/Conv"] and plan.touches[0].role == "stem"
    # erasing conv2 removes its input columns of conv6 too: counted with the group
    w = model.graph.values["conv6.0.weight"].const.array
    conv2_own = sum(model.graph.values[p.initializer].const.size for p in by_conv["conv2"].params) + 2 * 8
    assert by_conv["conv2"].num_params == conv2_own + w.size // 3


def _prefixes(group) -> set[str]:
    return {p.initializer.split(".")[0] for p in group.params}


def test_concat_then_batchnorm_gives_auxiliary_slices(onnx_path) -> None:
    """Z3: a BN after the Concat turns zero channels into beta; its slices join the operand's group."""
    model = load(onnx_path("concat", "legacy"))
    analysis = analyze_erasing(model)
    aux = {g.nodes[0]: [(p.initializer, p.indices) for p in g.params if p.indices is not None]
           for g in analysis.removable()}
    branch_a = next(v for k, v in aux.items() if "branch_a" in k)
    branch_b = next(v for k, v in aux.items() if "branch_b" in k)
    assert branch_a == [("bn.weight", list(range(8))), ("bn.bias", list(range(8)))]
    assert branch_b == [("bn.weight", list(range(8, 24))), ("bn.bias", list(range(8, 24)))]


@pytest.mark.parametrize(
    "exporter", [e if e == "legacy" else pytest.param(e, marks=pytest.mark.slow) for e in EXPORTERS]
)
def test_darts_mixed_edges(exporter: str) -> None:
    """Every parameterised candidate op of a mixed edge is a structure; pools and skips are not groups."""
    model = load(zoo_onnx("darts_cells", exporter))
    analysis = analyze_erasing(model)
    removable = analysis.removable()
    edge_ops: dict[str, set[str]] = {}
    for group in removable:
        match = re.search(r"(cell\d)\.edges\.(\d+)\.ops\.(\d+)", " ".join(p.initializer for p in group.params))
        assert match, group.params
        edge_ops.setdefault(f"{match.group(1)}.{match.group(2)}", set()).add(match.group(3))
    # 2 cells x 5 edges; ops 3..6 are sep/dil convs; op 2 (skip) is a FactorizedReduce on stride-2 edges only
    assert len(edge_ops) == 10
    for edge, ops in edge_ops.items():
        expected = {"3", "4", "5", "6"} | ({"2"} if edge in {"cell2.0", "cell2.1", "cell2.2", "cell2.3"} else set())
        assert ops == expected, edge
    assert not any("ops.0" in p.initializer or "ops.1" in p.initializer for g in analysis.groups for p in g.params)
    # the cell outputs are Concat joints whose channels go to the next cell's 1x1 preprocessing conv / the head
    assert len(analysis.graph.concat_plans) == 2


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_residual_branches_and_kernels_are_structures(exporter: str) -> None:
    model = load(zoo_onnx("superresnet", exporter))
    analysis = analyze_erasing(model)
    # tiny: 3 blocks x (3 kernel branches + residual tail) + 1 projection shortcut, all feeding Adds
    kinds: dict[str, int] = {}
    for group in analysis.removable():
        name = group.params[0].initializer
        kind = "branch" if ".branches." in name else "tail" if ".tail." in name else "shortcut"
        kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds == {"branch": 9, "tail": 3, "shortcut": 1}


def test_unknown_op_is_conservative() -> None:
    """An op the tables do not know is a boundary: not removable, nor are its producers; reasons name it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), n)
             for n in ("w1", "w2", "w3")]
    inits.append(numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "mystery_w"))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a"),
        helper.make_node("Conv", ["x", "w2"], ["b"], name="conv_b"),
        helper.make_node("Frobnicate", ["b", "mystery_w"], ["c"], name="mystery", domain="my.ops"),
        helper.make_node("Add", ["a", "c"], ["d"], name="join"),
        helper.make_node("Conv", ["d", "w3"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    model = lift(proto)
    for v in model.graph.values.values():
        if v.producer is not None:
            v.shape, v.dtype = (1, 2, 4, 4), TensorProto.FLOAT
    analysis = analyze_erasing(model)
    by_node = {g.nodes[0]: g for g in analysis.groups}
    assert by_node["conv_a"].removable  # feeds the Add, zero-invariant
    assert not by_node["conv_b"].removable and "mystery" in by_node["conv_b"].reason
    assert "unknown op" in by_node["conv_b"].reason
    mystery = by_node["mystery"]
    assert not mystery.removable and "Frobnicate" in mystery.reason and "mystery" in mystery.reason
    seg = analysis.segment_of(mystery)
    assert seg.kind == "unknown" and seg.nodes == ["mystery"]


def _tiny_graph(nodes, inits, outputs=("y",)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", [x], outs, inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _init(name: str, shape: tuple[int, ...], seed: int = 0) -> onnx.TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def test_mul_sigmoid_shape_reader_and_tying() -> None:
    """Z2 (Mul is no joint; shape readers block), Z1 (Sigmoid after the last parameterised op), Z4 (tying)."""
    nodes = [
        # branch 1 -> Mul: not an erase-joint
        helper.make_node("Conv", ["x", "w_mul"], ["m1"], name="conv_mul"),
        helper.make_node("Mul", ["m1", "x"], ["m2"], name="gate"),
        # branch 2 ends in Sigmoid: zeroing the conv leaves 0.5
        helper.make_node("Conv", ["x", "w_sig"], ["s1"], name="conv_sig"),
        helper.make_node("Sigmoid", ["s1"], ["s2"], name="sig"),
        # branch 3: its shape is read to reshape the trunk
        helper.make_node("Conv", ["x", "w_shape"], ["h1"], name="conv_shape"),
        helper.make_node("Shape", ["h1"], ["h_shape"], name="shape"),
        # branches 4/5 share one weight; branch 5 has its own BN after the shared conv
        helper.make_node("Conv", ["x", "w_tied"], ["t1"], name="conv_tied_a"),
        helper.make_node("Conv", ["x", "w_tied"], ["t2"], name="conv_tied_b"),
        helper.make_node("BatchNormalization", ["t2", "g", "b", "m", "v"], ["t3"], name="bn_tied_b"),
        helper.make_node("Add", ["m2", "s2"], ["a1"], name="add1"),
        helper.make_node("Add", ["a1", "h1"], ["a2"], name="add2"),
        helper.make_node("Add", ["a2", "t1"], ["a3"], name="add3"),
        helper.make_node("Add", ["a3", "t3"], ["a4"], name="add4"),
        helper.make_node("Reshape", ["a4", "h_shape"], ["y"], name="reshape"),
    ]
    inits = [_init(n, (2, 2, 1, 1), i) for i, n in enumerate(["w_mul", "w_sig", "w_shape", "w_tied"])]
    inits += [_init(n, (2,), 9 + i) for i, n in enumerate("gbm")]
    inits.append(numpy_helper.from_array(np.ones(2, np.float32), "v"))
    analysis = analyze_erasing(lift(_tiny_graph(nodes, inits)))
    by_node = {g.nodes[0]: g for g in analysis.groups}
    assert "gate" in by_node["conv_mul"].reason and "not an erase-joint" in by_node["conv_mul"].reason
    assert "not zero-invariant" in by_node["conv_sig"].reason and "sig" in by_node["conv_sig"].reason
    assert "shape" in by_node["conv_shape"].reason and "reshape" in by_node["conv_shape"].reason
    # Z4: the conv reading only the tied weight owns nothing to zero: no group, and the summary says why
    assert "conv_tied_a" not in by_node
    (shared,) = analysis.summary()["shared_only"]
    assert "w_tied" in shared["reason"] and "conv_tied_b" in shared["reason"]
    tied_b = by_node["conv_tied_b"]  # zero-invariant through its own BN: removable, the tied weight stays out
    assert tied_b.removable and {p.initializer for p in tied_b.params} == {"g", "b"}


def test_op_table_is_data() -> None:
    assert OP_TABLE["Add"].joint == "sum" and OP_TABLE["Sub"].joint == "sub" and OP_TABLE["Concat"].joint
    assert not OP_TABLE["Mul"].joint and OP_TABLE["Mul"].absorbing == (0, 1)
    assert OP_TABLE["Relu"].zp and not OP_TABLE["Sigmoid"].zp and OP_TABLE["Shape"].shape_only


def test_pass_runs_in_a_pipeline_and_reports() -> None:
    model = load(zoo_onnx("stackedunets", "legacy"))
    report = PassManager(parse_pipeline("erasing-groups")).run(model)
    summary = report["erasing-groups"]
    assert summary["num_segments"] == 22 and summary["num_removable"] == 6 and summary["num_erase_groups"] == 13
    assert len(summary["not_removable"]) == 7 and all(r["reason"] for r in summary["not_removable"])
    assert model.analyses[ANALYSIS_KEY].graph.segments[0].id == "s0"
    assert model.analyses[ANALYSIS_KEY].to_json()["groups"]
