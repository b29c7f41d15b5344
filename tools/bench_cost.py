"""Benchmark (issue 14): cost-aware selection ranking by measured latency vs by params and MACs, at the same budget.

    PYTHONPATH=. python tools/bench_cost.py [--nets demosupnet,stackedunets,darts,superresnet,regnet] [--seeds 0,1,2]
                              [--cost-weight W] [--epochs 20] [--size tiny] [--latency-batch 64] [--out r.json]

For each super-network and seed, the same recipe (the first cost-aware recipe without gates of
``tools/reproduce.py``'s ``GRIDS``: its K and channel target; ``--cost-weight`` overrides its W; gating rebuilds the
search space after the latency pass, so gated recipes are left out) is trained twice, once with
``train{cost=params-macs}`` and once with ``train{cost=latency}`` (after ``reproduce.LATENCY_PASS``: CPU, one
thread, batch 1), on ``tools/evidence.py``'s train split, constructed and verified; both slim models are timed in
onnxruntime (one thread, batch 1 and ``--latency-batch``, interleaved with the full model) and scored on the held-out
test split. Target: ``cost=latency`` is faster at batch 1 (mean over seeds) on >= 4 of the 5 nets, with held-out
accuracy within 1 point of ``cost=params-macs``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import ACC_TOLERANCE, GRIDS, NetRun, Recipe  # noqa: E402  (tools/ is not a package)

from asgnas.cli import _register_all_passes  # noqa: E402

COSTS = ("params-macs", "latency")


def recipe_for(net: str, cost_weight: float | None) -> Recipe:
    """The net's first cost-aware recipe without gates (the budget both cost models get)."""
    recipe = next(r for r in GRIDS[net] if r.cost_weight > 0 and not r.gates)
    return recipe if cost_weight is None else replace(recipe, cost_weight=cost_weight)


def run_net(net: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs = NetRun(net, args, workdir)
    recipe = recipe_for(net, args.cost_weight)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for cost in COSTS:
            rows.append({"seed": seed, "cost": cost, **runs.result(seed, replace(recipe, cost=cost))})
    return {"net": net, "recipe": recipe.label, "rows": rows}


def _mean(rows: list[dict[str, Any]], cost: str, key: str) -> float:
    return statistics.mean(r[key] for r in rows if r["cost"] == cost)


def summarize(nets: list[dict[str, Any]], latency_batch: int) -> str:
    lines = [f"| net | recipe | MACs kept (params-macs / latency) | test acc | slim ms b1 | slim ms b{latency_batch} "
             "| latency faster b1, acc within 1 pt |", "|---|---|---|---|---|---|---|"]
    wins = 0
    for entry in nets:
        rows = entry["rows"]
        pair = {key: [_mean(rows, cost, key) for cost in COSTS]
                for key in ("macs_kept", "acc_test", "latency_slim_ms_b1", f"latency_slim_ms_b{latency_batch}")}
        win = (pair["latency_slim_ms_b1"][1] < pair["latency_slim_ms_b1"][0]
               and pair["acc_test"][1] >= pair["acc_test"][0] - ACC_TOLERANCE)
        wins += win
        cells = [f"{a:.{d}f} / {b:.{d}f}" for (a, b), d in zip(pair.values(), (2, 3, 4, 4))]
        lines.append(f"| {entry['net']} | {entry['recipe']} | " + " | ".join(cells) + f" | {'yes' if win else 'no'} |")
    lines.append(f"\ncost=latency faster at batch 1 within 1 point on {wins} of {len(nets)} nets (target: >= 4 of 5)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="demosupnet,stackedunets,darts,superresnet,regnet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cost-weight", type=float, default=None, help="W for both rows (default: the recipe's)")
    parser.add_argument("--test-seed", type=int, default=0, help="the seed that holds out the test split (fixed)")
    parser.add_argument("--data", default="digits", help="digits or npz:PATH (see tools/evidence.py)")
    parser.add_argument("--size", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (DARTS: reproduce.NET_LR)")
    parser.add_argument("--kind", default="auto", choices=("auto", "erase", "prune", "both"),
                        help="train's kind for recipes without a channel target")
    parser.add_argument("--round-to", type=int, default=1)
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--hard-zero-fraction", type=float, default=0.5)
    parser.add_argument("--latency-batch", type=int, default=64, help="second latency batch (batch 1 always)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    unknown = set(args.nets.split(",")) - set(GRIDS)
    if unknown:
        parser.error(f"no recipe for {sorted(unknown)} (reproduce.GRIDS has {sorted(GRIDS)})")
    torch.set_num_threads(args.threads)
    _register_all_passes()
    nets: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets.split(","):
            nets.append(run_net(net, args, Path(tmp)))
            if args.out:
                Path(args.out).write_text(json.dumps({"args": vars(args), "nets": nets}, indent=1))
    print(summarize(nets, args.latency_batch))


if __name__ == "__main__":
    main()
