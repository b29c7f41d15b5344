"""Training end to end: the train pass (ONNX -> slim ONNX) and the ASGNAS Python API (torch module and ONNX file)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from asgnas import ASGNAS
from asgnas.cli import main
from asgnas.data import load_dataset
from asgnas.ir import load_model
from asgnas.runtime import onnx_accuracy


@pytest.fixture(scope="module")
def superresnet_onnx(supernet_onnx):
    return supernet_onnx("superresnet")


def test_train_pass_reaches_target_and_constructs_equivalent_slim_model(superresnet_onnx, tmp_path):
    out, report_path = tmp_path / "slim.onnx", tmp_path / "r.json"
    status = main([str(superresnet_onnx), "--passes",
                   "search-space{groups=false},train{epochs=3,target-sparsity=0.5,quiet=true},construct-subnet,verify",
                   "-o", str(out), "--report", str(report_path), "-q"])
    assert status == 0
    report = json.loads(report_path.read_text())
    trained = report["train"]
    removable = report["search_space"]["summary"]["num_removable_erase_groups"]
    from asgnas.optim import resolve_target_count

    assert trained["metrics"]["num_zero_groups"] == trained["metrics"]["target_count"]  # exactly the target
    assert trained["metrics"]["target_count"] == resolve_target_count(0.5, removable)
    assert len(trained["epochs"]) == 3 and trained["epochs"][-1]["loss"] < trained["epochs"][0]["loss"] * 0.99
    assert report["verify"]["ok"] and report["verify"]["reference"] == "group-sparse"
    assert report["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    assert trained["val_accuracy_slim"] == pytest.approx(trained["val_accuracy_full"], abs=0.005)  # same function
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


class _Net(nn.Module):
    """Two parallel conv branches summed, then a residual block: removal structures for H2SPG."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2), nn.BatchNorm2d(8))
        self.c = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.a(x) + self.b(x) + self.c(x))
        return self.head(x.mean((2, 3)))


def _fit(model, optimizer, data, epochs=3):
    loss_fn = nn.CrossEntropyLoss()
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            loss_fn(model(x[i:i + 64]), y[i:i + 64]).backward()
            optimizer.step()


def test_api_torch_module_round_trip(tmp_path):
    torch.manual_seed(0)
    net = _Net()
    nas = ASGNAS(net, torch.randn(1, 1, 8, 8), workdir=tmp_path / "work")
    assert len(nas.search_space.removable("erase")) >= 3
    data = load_dataset("digits", (1, 8, 8))
    steps = 3 * -(-len(data.x_train) // 64)
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=1, warmup_steps=steps // 5, hard_zero_step=steps - 5,
                          momentum=0.9)
    _fit(net, optimizer, data)
    assert optimizer.metrics()["num_zero_groups"] == 1
    summary = nas.construct_subnet(tmp_path / "out")
    assert summary["params_after"] < summary["params_before"] and summary["macs_after"] < summary["macs_before"]
    assert summary["max_abs_diff"] < 1e-4
    full, slim = load_model(summary["full_onnx"]), load_model(summary["subnet_onnx"])
    net.eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(data.x_val)).argmax(-1).numpy()
    assert np.mean(expected == data.y_val) == pytest.approx(onnx_accuracy(full, data.x_val, data.y_val))
    assert onnx_accuracy(slim, data.x_val, data.y_val) == pytest.approx(onnx_accuracy(full, data.x_val, data.y_val))


def test_api_from_onnx_matches_onnxruntime(superresnet_onnx, tmp_path):
    nas = ASGNAS.from_onnx(superresnet_onnx, workdir=tmp_path)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    from asgnas.runtime import session

    sess = session(str(superresnet_onnx))
    expected = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    nas.model.eval()
    with torch.no_grad():
        got = nas.model(torch.from_numpy(x)).numpy()
    assert np.allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("cost_weight", [0.0, 10.0])
def test_api_cost_weight_picks_the_costly_branch_on_a_tie(cost_weight, tmp_path):
    """With equal saliencies, the paper's order keeps the search space's order; cost-aware selection takes the
    5x5 branch (the costliest of the three parallel convs)."""
    torch.manual_seed(0)
    net = _Net()
    nas = ASGNAS(net, torch.randn(1, 1, 8, 8), workdir=tmp_path / "work")
    data = load_dataset("digits", (1, 8, 8))
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=1, warmup_steps=2, hard_zero_step=4, momentum=0.9,
                          cost_weight=cost_weight, score_fn=lambda xx, xd, dd, sizes: torch.ones_like(xx))
    x, y = torch.from_numpy(data.x_train[:64]), torch.from_numpy(data.y_train[:64])
    for _ in range(5):
        optimizer.zero_grad()
        nn.CrossEntropyLoss()(net(x), y).backward()
        optimizer.step()
    by_id = {g.id: g for g in nas.search_space.groups}
    [chosen] = optimizer.redundant_group_ids
    takes_b = any("/b/" in n for n in by_id[chosen].nodes)
    if cost_weight:
        assert takes_b
    else:
        assert chosen == nas.search_space.removable("erase")[0].id and not takes_b
    summary = nas.construct_subnet(tmp_path / "out")
    assert summary["erased_structures"] >= 1 and summary["max_abs_diff"] < 1e-4


def test_train_round_to_gives_slim_convs_whole_blocks_of_channels(superresnet_onnx, tmp_path):
    out, report_path = tmp_path / "slim.onnx", tmp_path / "r.json"
    status = main([str(superresnet_onnx), "--passes",
                   "search-space{groups=false},train{optimizer=dhspg,epochs=4,target-sparsity=0.6,round-to=4,"
                   "quiet=true},construct-subnet,verify", "-o", str(out), "--report", str(report_path), "-q"])
    assert status == 0
    report = json.loads(report_path.read_text())
    metrics = report["train"]["metrics"]
    assert report["train"]["round_to"] == 4 and metrics["selection_filtered_out"] > 0
    assert metrics["num_zero_groups"] == metrics["target_count"] - metrics["selection_filtered_out"]
    full, slim = onnx.load(str(superresnet_onnx)), onnx.load(str(out))

    def conv_widths(model):
        inits = {t.name: t for t in model.graph.initializer}
        return [inits[n.input[1]].dims[0] for n in model.graph.node if n.op_type == "Conv"]

    assert all(w % 4 == 0 for w in conv_widths(full))
    # a space whose every channel is zero keeps one (zero) channel: construction never leaves a space empty
    assert all(w % 4 == 0 or w == 1 for w in conv_widths(slim)) and sum(conv_widths(slim)) < sum(conv_widths(full))
    assert report["verify"]["ok"]


def test_train_round_to_without_channel_groups_says_it_does_nothing(superresnet_onnx, capsys):
    status = main([str(superresnet_onnx), "--passes", "train{epochs=1,target-sparsity=1,round-to=8,quiet=true}"])
    assert status in (0, 1)  # 1: train's verdict may find one epoch learnt nothing; the point here is the message
    assert "round-to=8 has no effect with kind=erase" in capsys.readouterr().out


def test_train_round_to_auto_without_channel_groups_measures_no_latency(superresnet_onnx, capsys, monkeypatch):
    import asgnas.passes.latency as latency

    def no_measuring(*args, **kwargs):
        raise AssertionError("latency measured for a rounding that has no channel groups to round")

    monkeypatch.setattr(latency, "analyze_latency", no_measuring)
    status = main([str(superresnet_onnx), "--passes", "train{epochs=1,target-sparsity=1,round-to=auto,quiet=true}"])
    assert status in (0, 1)  # 1: one epoch may learn nothing; the point is that nothing was measured
    assert "round-to=auto has no effect with kind=erase" in capsys.readouterr().out


def test_api_round_to_auto_over_structures_alone_measures_no_latency(superresnet_onnx, tmp_path, monkeypatch):
    import asgnas.passes.latency as latency

    def no_measuring(*args, **kwargs):
        raise AssertionError("latency measured for a rounding that has no channel groups to round")

    monkeypatch.setattr(latency, "analyze_latency", no_measuring)
    nas = ASGNAS.from_onnx(superresnet_onnx, workdir=tmp_path)
    optimizer = nas.h2spg(target_group_sparsity=1, warmup_steps=1, kind="erase", round_to="auto")
    assert optimizer.metrics()["num_removable"] == len(nas.search_space.removable("erase"))
