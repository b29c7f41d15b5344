"""The honest-evidence protocol of ``tools/reproduce.py``: train / validation / test splits (``tools/evidence.py``),
the validation-only selection rule, and the random-order ablation (train ``selection=random``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asgnas.bridge.scoring import random_score
from asgnas.cli import main
from asgnas.data import load_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("evidence", ROOT / "tools" / "evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_indices_are_disjoint_seeded_and_sized(evidence):
    train, val, test = evidence.split_indices(1797, seed=0)
    assert (len(train), len(val), len(test)) == (1079, 359, 359)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(1797))  # disjoint, covering
    again = evidence.split_indices(1797, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    train1, val1, test1 = evidence.split_indices(1797, seed=1)
    assert np.array_equal(test1, test)  # the test split does not move with the training seed
    assert not np.array_equal(val1, val) and set(val1.tolist()).isdisjoint(test.tolist())
    assert not np.array_equal(evidence.split_indices(1797, seed=0, test_seed=1)[2], test)


def test_digits_splits_standardized_on_train_and_read_as_is_by_the_train_pass(evidence, tmp_path):
    splits = evidence.make_splits("digits", seed=2)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (1079, 359, 359)
    assert abs(float(splits.x_train.mean())) < 1e-5 and float(splits.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    rows = {r.tobytes() for r in splits.x_test}
    assert not rows & {r.tobytes() for r in splits.x_train} and not rows & {r.tobytes() for r in splits.x_val}
    train_npz, test_npz = splits.write(tmp_path)
    seen = load_dataset(f"npz:{train_npz}", (1, 8, 8))
    assert splits.x_train.shape == (1079, 1, 8, 8)
    assert np.array_equal(seen.x_train, splits.x_train) and np.array_equal(seen.y_val, splits.y_val)
    held_out = load_dataset(f"npz:{test_npz}", (1, 8, 8))
    assert np.array_equal(held_out.x_val, splits.x_test) and np.array_equal(held_out.y_val, splits.y_test)


def test_npz_splits_keep_a_given_test_split_and_cut_the_rest(evidence, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 4)).astype(np.float32), rng.integers(0, 3, 100)
    x_test, y_test = rng.standard_normal((7, 4)).astype(np.float32), rng.integers(0, 3, 7)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    splits = evidence.make_splits(f"npz:{path}", seed=0)
    assert np.array_equal(splits.x_test, x_test) and np.array_equal(splits.y_test, y_test)
    assert (len(splits.x_train), len(splits.x_val)) == (80, 20)  # validation cut from x, no test cut
    np.savez(path, x=x, y=y)
    splits = evidence.make_splits(f"npz:{path}", seed=0)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (60, 20, 20)


@pytest.mark.parametrize("accs, expected", [
    ((0.975, 0.972, 0.990, 0.960), 1),  # within 1 point of 0.98: 0, 1, 2; 1 keeps the least params + MACs
    ((0.95, 0.96, 0.94, 0.90), 1),      # none within 1 point: the most accurate
    ((0.98, 0.98, 0.98, 0.98), 3),      # all within: the smallest model
])
def test_selection_rule_takes_the_smallest_model_within_one_point_of_the_baseline(evidence, accs, expected):
    kept = [(0.6, 0.6), (0.4, 0.5), (0.5, 0.5), (0.2, 0.3)]
    candidates = [{"acc_val": a, "params_kept": p, "macs_kept": m} for a, (p, m) in zip(accs, kept)]
    assert evidence.select_candidate(candidates, baseline_val_acc=0.98) == expected


def test_selection_rule_breaks_size_ties_by_accuracy_then_grid_order(evidence):
    same = {"acc_val": 0.97, "params_kept": 0.5, "macs_kept": 0.5}
    assert evidence.select_candidate([dict(same), dict(same)], 0.97) == 0
    nearly = {"acc_val": 0.975, "params_kept": 0.501, "macs_kept": 0.5}  # within 0.01 of the same size
    assert evidence.select_candidate([dict(same), nearly], 0.97) == 1
    assert evidence.select_candidate([{**same, "acc_val": 0.5}, {**same, "acc_val": 0.5}], 0.97) == 0


def test_random_score_is_one_seeded_order_at_every_step():
    stats = [torch.rand(50, dtype=torch.float64) for _ in range(4)]
    score = random_score(3)
    first, later = score(*stats), score(*(s * 2 for s in stats))
    assert torch.equal(first, later)  # ignores the statistics: the EMA over the warm-up is that same order
    assert torch.equal(random_score(3)(*stats), first)
    assert not torch.equal(random_score(4)(*stats), first)


def test_train_random_selection_zeroes_k_valid_groups(supernet_onnx, tmp_path):
    report_path = tmp_path / "r.json"
    status = main([str(supernet_onnx("demosupnet")), "--passes",
                   "search-space{groups=false},train{epochs=1,target-sparsity=2,selection=random,seed=1,quiet=true},"
                   "construct-subnet,verify", "-o", str(tmp_path / "slim.onnx"), "--report", str(report_path), "-q"])
    assert status == 0
    report = json.loads(report_path.read_text())
    assert report["train"]["selection"] == "random" and len(report["train"]["redundant_groups"]) == 2
    assert report["construct-subnet"]["erased_structures"] >= 2 and report["verify"]["ok"]
