"""One optimizer, one schedule, every front end: ``ASGNAS.h2spg`` and the train pass build H2SPG through the same
function, derive the schedule from the budget alone, and the half-space projection (not the forced step) zeroes
the chosen groups."""

from __future__ import annotations

import json
import math

import pytest
import torch

from asgnas import ASGNAS
from asgnas.bridge.model_io import input_specs
from asgnas.bridge.training import train
from asgnas.cli import main
from asgnas.data import load_dataset

EPOCHS = 1  # 23 steps of 64 digits, the shortest budget: the projection window is 7 steps (4 to 11)


@pytest.fixture(scope="module")
def demo_onnx(supernet_onnx):
    return supernet_onnx("demosupnet")


def _train_pass(path, tmp_path) -> dict:
    report = tmp_path / "r.json"
    assert main([str(path), "--passes", f"search-space{{groups=false}},train{{data=digits,epochs={EPOCHS},quiet=true}}",
                 "--report", str(report), "-q"]) == 0
    return json.loads(report.read_text())["train"]


def _api(path, tmp_path):
    """The API on the same file, data, seed and budget, trained by the library's own loop."""
    nas = ASGNAS.from_onnx(path, workdir=tmp_path)
    data = load_dataset("digits", input_specs(nas.ir)[0].shape, 10, seed=0)
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=0.5, total_steps=EPOCHS * math.ceil(len(data.x_train) / 64))
    train(nas.model, optimizer, data, epochs=EPOCHS, batch_size=64, device=torch.device("cpu"), seed=0, log=None)
    return optimizer


def _projection_did_the_work(metrics: dict) -> None:
    k = metrics["target_count"]
    assert k >= 2 and metrics["num_zero_groups"] == k
    assert metrics["projected_groups"] + metrics["forced_zero_groups"] == k
    assert metrics["projected_groups"] >= 0.8 * k  # zeroed by projection before the forced step


def test_api_and_train_pass_choose_the_same_groups_by_projection(demo_onnx, tmp_path):
    trained = _train_pass(demo_onnx, tmp_path)
    optimizer = _api(demo_onnx, tmp_path)
    assert trained["schedule"] == {"total_steps": optimizer.total_steps, "warmup_steps": optimizer.warmup_steps,
                                   "hard_zero_step": optimizer.hard_zero_step} == {
        "total_steps": 23, "warmup_steps": 4, "hard_zero_step": 11}
    assert sorted(optimizer.redundant_group_ids) == trained["redundant_groups"]
    assert sorted(optimizer.zero_group_ids) == trained["zero_groups"]
    _projection_did_the_work(trained["metrics"])
    _projection_did_the_work(optimizer.metrics())


def test_api_without_a_budget_says_what_to_pass(demo_onnx, tmp_path):
    nas = ASGNAS.from_onnx(demo_onnx, workdir=tmp_path)
    for build in (nas.h2spg, nas.dhspg):
        with pytest.raises(ValueError, match=r"pass total_steps=<number of optimizer steps you will run>") as err:
            build(lr=0.05, target_group_sparsity=0.5)
        assert "\n" not in str(err.value)


def test_api_explicit_values_override_the_budget(demo_onnx, tmp_path):
    nas = ASGNAS.from_onnx(demo_onnx, workdir=tmp_path)
    optimizer = nas.dhspg(total_steps=100, warmup_steps=7, lmbda=0.25, epsilon=0.5, momentum=0.0)
    assert (optimizer.warmup_steps, optimizer.hard_zero_step, optimizer.lmbda, optimizer.epsilon) == (7, 50, 0.25, 0.5)
    assert optimizer.param_groups[0]["momentum"] == 0.0
    derived = nas.h2spg(total_steps=100, warmup_fraction=0.1, hard_zero_fraction=0.8)
    assert (derived.warmup_steps, derived.hard_zero_step, derived.epsilon) == (10, 80, 0.9)
    assert derived.param_groups[0]["momentum"] == 0.9  # the train pass's default
