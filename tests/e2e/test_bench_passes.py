"""``tools/bench_passes.py``: the before/after timing tool times the right passes and computes its ratios."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "bench_passes.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_passes", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_time_model_times_each_stage_of_a_zoo_net(bench, supernet_onnx):
    times = bench.time_model(str(supernet_onnx("demosupnet")), train=False)
    assert set(times) == {"load", "search-space", "load + search-space", "construct-subnet"}
    assert all(seconds > 0 for seconds in times.values())
    assert times["load + search-space"] == times["load"] + times["search-space"]


def test_pass_seconds_sums_the_passes_after_the_named_one(bench, supernet_onnx):
    from asgnas.ir import load_model

    entries = [{"name": "search-space", "seconds": 0.5}, {"name": "zero-groups", "seconds": 0.25},
               {"name": "construct-subnet", "seconds": 2.0}]
    assert bench.seconds_after(entries, "zero-groups") == 2.0
    assert bench.seconds_after(entries, "search-space") == 2.25
    assert bench.seconds_after(entries, "construct-subnet") == 2.0  # the last one: its own
    pipeline = "search-space,zero-groups{fraction=0.5,seed=0,kind=both},construct-subnet"
    assert bench.pass_seconds(load_model(str(supernet_onnx("demosupnet"))), pipeline, "zero-groups") > 0


def test_table_reports_the_best_run_per_tree_and_the_ratio_to_the_first(bench):
    runs = {"/a/before": [{"m": {"load": 2.0}}, {"m": {"load": 1.0}}],
            "/b/after": [{"m": {"load": 1.5}}, {"m": {"load": 3.0}}]}
    lines = bench.table(["/a/before", "/b/after"], runs, ["m"]).splitlines()
    assert lines[0] == "| model | stage | before s (best) | after s (best) | after / before |"
    assert lines[2:] == ["| m | load | 1.000 | 1.500 | 1.50 |"]  # stages no run measured are left out


def test_the_tool_runs_a_tree_in_its_own_process(tmp_path):
    out = tmp_path / "times.json"
    subprocess.run([sys.executable, str(TOOL), "--trees", str(ROOT), "--repeat", "1", "--models", "chain-100",
                    "--json", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["trees"] == [str(ROOT)]
    (run,) = result["runs"][str(ROOT)]
    assert set(run["chain-100"]) == {"load", "search-space", "load + search-space", "construct-subnet"}
