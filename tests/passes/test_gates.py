"""Training-only gates (``asgnas.passes.gates``): parameter-free branches become removal structures, a zero gate
erases its branch, gates at 1 fold away exactly, and ``train{gates=true}`` leaves no gate in the slim model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_erasing_support import DartsTwoCells  # noqa: E402

import asgnas.bridge.train_pass  # noqa: E402,F401  (registers the train pass)
from asgnas.bridge.export import export_torch_model  # noqa: E402
from asgnas.errors import AsgnasError  # noqa: E402
from asgnas.ir import Model, load_model, lower  # noqa: E402
from asgnas.passes import PassContext, PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.construct_subnet import construct_subnet  # noqa: E402
from asgnas.passes.erasing import analyze_erasing  # noqa: E402
from asgnas.passes.gates import fold_gates, gate_branches, gate_initializers, is_gate  # noqa: E402
from asgnas.passes.search_space import analyze_search_space  # noqa: E402
from asgnas.passes.verify import compare_models  # noqa: E402


class BranchNet(nn.Module):
    """A conv branch, a max pool, an average pool and the identity summed: three parameter-free branches."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.max = nn.MaxPool2d(3, 1, 1)
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.conv(x) + self.max(x) + self.avg(x) + x)
        return self.head(y.mean((2, 3)))


def _export(net: nn.Module, path: Path) -> Model:
    torch.manual_seed(0)
    net.eval()
    export_torch_model(net, torch.randn(1, 1, 8, 8), path)
    return load_model(path)


@pytest.fixture(scope="module")
def branchnet_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gates") / "branchnet.onnx"
    _export(BranchNet(), path)
    return path


@pytest.fixture(scope="module")
def darts_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gates") / "darts_cells.onnx"
    _export(DartsTwoCells(), path)
    return path


def _gate_groups(model: Model):
    analysis = analyze_erasing(model)
    return analysis, [g for g in analysis.groups if any(p.initializer.endswith(".asgnas_gate") for p in g.params)]


def test_gate_branches_makes_parameter_free_branches_removal_structures(branchnet_path: Path) -> None:
    model = load_model(branchnet_path)
    before = len(analyze_erasing(model).removable())
    names = gate_branches(model)
    assert len(names) == 3  # max pool, average pool, identity; the conv branch is a structure already
    analysis, gated = _gate_groups(model)
    assert len(analysis.removable()) == before + 3
    nodes = {n.name: n for n in model.graph}
    ops = sorted(tuple(nodes[n].op_type for n in g.nodes) for g in gated)
    assert ops == [("AveragePool", "Mul"), ("MaxPool", "Mul"), ("Mul",)]
    for group in gated:  # each owns exactly its gate
        assert group.removable, group.reason
        assert [p.initializer for p in group.params] == [nodes[group.nodes[-1]].inputs[1].name]
    gates = gate_initializers(model)
    assert all(v.const.array.shape == (1,) and v.const.array[0] == 1.0 and v.const.array.dtype == np.float32
               for v in gates)
    assert gate_branches(model) == []  # idempotent
    assert compare_models(model, load_model(branchnet_path))["max_abs_diff"] == 0.0  # gates at 1: same function
    onnx.checker.check_model(lower(model), full_check=True)


def test_gate_branches_on_darts_cells_gates_every_pool_and_skip(darts_path: Path) -> None:
    model = load_model(darts_path)
    ungated = analyze_erasing(model)
    gate_branches(model)
    analysis, gated = _gate_groups(model)
    nodes = {n.name: n for n in model.graph}
    # normal cell: 5 edges x (max pool, avg pool, identity skip); reduction cell: 4 stride-2 edges x 2 pools
    # (its stride-2 skip is a FactorizedReduce, a structure already) + 1 stride-1 edge x 3
    assert len(gated) == 15 + 11
    assert all(g.removable for g in gated)
    assert len(analysis.removable()) == len(ungated.removable()) + len(gated)
    covered = {n for g in gated for n in g.nodes}
    pool_bns = [n for n in model.graph if n.op_type == "BatchNormalization"
                and n.inputs[0].producer is not None and n.inputs[0].producer.op_type in ("MaxPool", "AveragePool")]
    assert pool_bns and all(bn.name in covered for bn in pool_bns)  # every pool candidate is erasable now
    skips = [g for g in gated if [nodes[n].op_type for n in g.nodes] == ["Mul"]]
    assert len(skips) == 5 + 1
    space = analyze_search_space(model)  # the whole search space (channels too) copes with the gates
    assert not any(p.initializer.endswith(".asgnas_gate") for g in space.groups if g.kind == "prune"
                   for p in g.params)


def test_zero_gate_erases_its_branch(branchnet_path: Path) -> None:
    model = load_model(branchnet_path)
    gate_branches(model)
    maxpool_gate = next(n for n in model.graph if is_gate(n) and n.inputs[0].producer.op_type == "MaxPool")
    maxpool_gate.inputs[1].const.array = np.zeros(1, np.float32)
    zeroed = model.copy()
    count = len(model.graph)
    result = construct_subnet(model)
    assert result["erased_structures"] == 1 and result["gates"] == {"folded": 2, "zero_kept": 0}
    ops = [n.op_type for n in model.graph]
    assert "MaxPool" not in ops and "AveragePool" in ops
    assert len(model.graph) < count - 2  # the pool, its gate, the two other gates and one Add went
    assert not gate_initializers(model) and not any(is_gate(n) for n in model.graph)
    assert compare_models(model, zeroed)["max_abs_diff"] <= 1e-5
    onnx.checker.check_model(lower(model), full_check=True)


def test_fold_gates_at_one_restores_the_ungated_model(darts_path: Path) -> None:
    original = load_model(darts_path)
    model = load_model(darts_path)
    gate_branches(model)
    assert len(model.graph) == len(original.graph) + 26
    result = fold_gates(model)
    assert result == {"folded": 26, "zero_kept": 0}
    assert len(model.graph) == len(original.graph)
    assert not gate_initializers(model)
    assert {v.name for v in model.graph.initializers()} == {v.name for v in original.graph.initializers()}
    assert compare_models(model, original)["max_abs_diff"] <= 1e-6
    onnx.checker.check_model(lower(model), full_check=True)


def test_gate_neither_zero_nor_one_is_an_error(branchnet_path: Path) -> None:
    model = load_model(branchnet_path)
    names = gate_branches(model)
    model.graph.values[names[0]].const.array = np.full(1, 0.5, np.float32)
    count = len(model.graph)
    with pytest.raises(AsgnasError, match="neither 0 nor 1"):
        fold_gates(model)
    with pytest.raises(AsgnasError, match="neither 0 nor 1"):
        construct_subnet(model)
    assert len(model.graph) == count  # checked before anything was rewritten


def test_passes_registered_in_pipelines(branchnet_path: Path) -> None:
    model = load_model(branchnet_path)
    report = PassManager(parse_pipeline("gate-branches,search-space{groups=false},fold-gates,verify")).run(
        model, PassContext(quiet=True))
    assert report["gate-branches"]["gates"] == 3
    assert report["fold-gates"] == {"folded": 3, "zero_kept": 0}
    assert report["verify"]["ok"] and report["verify"]["max_abs_diff"] == 0.0


def test_train_with_gates_leaves_no_gate_in_the_slim_model(branchnet_path: Path) -> None:
    torch.set_num_threads(2)
    model = load_model(branchnet_path)
    ctx = PassContext(quiet=True)
    pipeline = "train{gates=true,epochs=3,data=digits,target-sparsity=2,quiet=true},construct-subnet,verify"
    report = PassManager(parse_pipeline(pipeline)).run(model, ctx)
    trained = report["train"]
    assert trained["gates"] == 3
    assert trained["metrics"]["num_zero_groups"] == trained["metrics"]["target_count"] == 2
    values = sorted(float(v.const.array[0]) for v in gate_initializers(ctx.checkpoints["group-sparse"]))
    assert len(values) == 3 and set(values) <= {0.0, 1.0}  # unselected gates stayed exactly 1
    assert 0.0 in values  # H2SPG chose a parameter-free branch (seeded: the max pool) and zeroed its gate
    assert not gate_initializers(model) and not any(is_gate(n) for n in model.graph)
    assert report["construct-subnet"]["gates"]["zero_kept"] == 0
    assert report["verify"]["ok"] and report["verify"]["reference"] == "group-sparse"
    assert trained["val_accuracy_slim"] == pytest.approx(trained["val_accuracy_full"], abs=0.005)
    onnx.checker.check_model(lower(model), full_check=True)
