"""``tools/bench_cost.py``'s rules: the same accuracy budget for both cost models, and a verdict that one disturbed
timing or an identical choice cannot turn into a win."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import bench_cost  # noqa: E402


def _row(seed: int, cost: str, ms: float, same: bool, acc: float = 0.97) -> dict:
    return {"seed": seed, "cost": cost, "cost_weight": 1.0, "within_budget": True, "same_subnetwork": same,
            "macs_kept": 0.5, "acc_test": acc, "side_by_side_slim_ms_b1": ms, "side_by_side_slim_ms_b64": 10 * ms}


def test_the_largest_weight_within_the_budget_is_kept():
    tried = [(0.0, {"acc_val": 0.97}), (1.0, {"acc_val": 0.965}), (3.0, {"acc_val": 0.95})]
    weight, _, within = bench_cost.choose_weight(tried, baseline_val=0.97)
    assert (weight, within) == (1.0, True)  # 3 is 2 points below the baseline
    weight, _, within = bench_cost.choose_weight(tried, baseline_val=0.99)
    assert (weight, within) == (0.0, False)  # none within: the smallest


def test_identical_choices_and_one_disturbed_seed_do_not_win():
    # seed 0: the same sub-network timed 30% apart (a disturbed timing); seeds 1 and 2: 1% apart
    rows = [_row(0, "params-macs", 0.10, True), _row(0, "latency", 0.07, True),
            _row(1, "params-macs", 0.10, False), _row(1, "latency", 0.099, False),
            _row(2, "params-macs", 0.10, False), _row(2, "latency", 0.101, False)]
    assert bench_cost.seed_ratios(rows) == pytest.approx([1.0, 0.99, 1.01])
    table = bench_cost.summarize([{"net": "n", "recipe": "K=1 W=1", "rows": rows}], 64)
    assert "| no |" in table and "on 0 of 1 nets" in table


def test_a_faster_choice_at_the_same_accuracy_wins_and_a_worse_one_does_not():
    rows = [r for s in (0, 1, 2) for r in (_row(s, "params-macs", 0.10, False), _row(s, "latency", 0.08, False))]
    assert "on 1 of 1 nets" in bench_cost.summarize([{"net": "n", "recipe": "K=1", "rows": rows}], 64)
    worse = [dict(r, acc_test=0.95) if r["cost"] == "latency" else r for r in rows]  # 2 points below
    assert "on 0 of 1 nets" in bench_cost.summarize([{"net": "n", "recipe": "K=1", "rows": worse}], 64)
