"""Benchmark (issue 14): cost-aware selection ranking by measured latency vs by params and MACs, at the same
accuracy budget.

    PYTHONPATH=. python tools/bench_cost.py [--nets demosupnet,stackedunets,darts,superresnet,regnet] [--seeds 0,1,2]
                              [--weight-multiples 0,1,3,10] [--epochs 20] [--size tiny] [--latency-batch 64]
                              [--out r.json]

For each super-network and seed, the budget of the net's first cost-aware recipe without gates in
``tools/reproduce.py``'s ``GRIDS`` (its K structures and channel target; gating rebuilds the search space after the
latency pass, so gated recipes are left out) is trained with ``train{cost=params-macs}`` and with
``train{cost=latency}`` (after ``reproduce.LATENCY_PASS``: CPU, one thread, batch 1) at every cost weight of the
grid (``--weight-multiples`` of the recipe's weight; 0 is the paper's saliency order, one run shared by both cost
models unless the cost sets the rounding), on ``tools/evidence.py``'s train split, constructed and verified. Each
cost model trains as a user gets it: ``round-to`` follows the cost (``by-cost``: ``auto`` under ``cost=latency``),
so where channels are pruned the comparison is of ranking and rounding together. The same accuracy budget for both: each
cost model keeps the largest weight (the most cost-driven selection) whose sub-network's *validation* accuracy is
within 1 point of the full baseline's (none within: the smallest weight). The two chosen slim models are
then timed side by side with the full model (onnxruntime, one thread, batch 1 and ``--latency-batch``, interleaved
round by round) and scored on the held-out test split. Target: ``cost=latency`` is faster at batch 1 on >= 4 of the
5 nets (the median over seeds of its slim time over params-macs', by more than ``TIMING_MARGIN``), held-out
accuracy (mean over seeds) within 1 point of ``cost=params-macs``. Where both cost models chose
the same sub-network in every seed the net is a tie, not a win.
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

from reproduce import ACC_TOLERANCE, GRIDS, NetRun, Recipe, interleaved_ms  # noqa: E402  (tools/ is not a package)

from asgnas.bridge.selection_costs import ROUND_TO_BY_COST, parse_round_to_by_cost  # noqa: E402
from asgnas.cli import _register_all_passes  # noqa: E402
from asgnas.ir import load_model  # noqa: E402

COSTS = ("params-macs", "latency")


def budget_recipe(net: str) -> Recipe:
    """The net's first cost-aware recipe without gates: the K (and channel target) both cost models get."""
    return next(r for r in GRIDS[net] if r.cost_weight > 0 and not r.gates)


def choose_weight(tried: list[tuple[float, dict[str, Any]]], baseline_val: float) -> tuple[float, dict[str, Any], bool]:
    """The largest weight whose validation accuracy is within the budget, and whether any was."""
    within = [(w, r) for w, r in tried if r["acc_val"] >= baseline_val - ACC_TOLERANCE]
    weight, result = within[-1] if within else tried[0]
    return weight, result, bool(within)


def run_net(net: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    runs = NetRun(net, args, workdir, keep_slims=True)
    recipe = budget_recipe(net)
    weights = sorted({recipe.cost_weight * float(m) for m in args.weight_multiples.split(",")})
    rows = []
    channels = recipe.train_kind(args.kind) in ("prune", "both")
    rounding_by_cost = channels and args.round_to == ROUND_TO_BY_COST  # cost=latency rounds to round-to=auto
    for seed in (int(s) for s in args.seeds.split(",")):
        baseline = runs.result(seed, None)
        chosen, recipes = {}, {}
        for cost in COSTS:
            # weight 0 ranks by saliency alone: one run serves both cost models unless the cost sets the rounding
            tried = {w: replace(recipe, cost_weight=w, cost=cost if w > 0 or rounding_by_cost else COSTS[0])
                     for w in weights}
            chosen[cost] = choose_weight([(w, runs.result(seed, r)) for w, r in tried.items()], baseline["acc_val"])
            recipes[cost] = tried[chosen[cost][0]]
        timings: dict[str, dict[str, float]] = {cost: {} for cost in COSTS}
        models = [load_model(runs.full_path(seed)), *(runs.slim_model(seed, recipes[c]) for c in COSTS)]
        for batch in (1, args.latency_batch):
            full_ms, *slim_ms = interleaved_ms(models, batch, rounds=9, repeat=30)
            for cost, ms in zip(COSTS, slim_ms):
                timings[cost].update({f"side_by_side_slim_ms_b{batch}": ms, f"side_by_side_full_ms_b{batch}": full_ms})
        same = chosen[COSTS[0]][1]["zero_groups"] == chosen[COSTS[1]][1]["zero_groups"]
        for cost in COSTS:
            weight, result, within = chosen[cost]
            rows.append({"seed": seed, "cost": cost, "cost_weight": weight, "within_budget": within,
                         "same_subnetwork": same, "baseline_acc_val": baseline["acc_val"], **result, **timings[cost]})
    return {"net": net, "recipe": recipe.label, "weights": weights, "rows": rows}


def _mean(rows: list[dict[str, Any]], cost: str, key: str) -> float:
    return statistics.mean(r[key] for r in rows if r["cost"] == cost)


#: a per-seed latency ratio must beat 1 by this much to count: identical models timed side by side differ by ~1%
TIMING_MARGIN = 0.02


def seed_ratios(rows: list[dict[str, Any]]) -> list[float]:
    """Per seed, cost=latency's slim batch-1 time over cost=params-macs' (1 where both chose the same
    sub-network: the same model, whatever the timing noise says)."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["cost"]] = r
    return [1.0 if pair[COSTS[0]]["same_subnetwork"] else
            pair[COSTS[1]]["side_by_side_slim_ms_b1"] / pair[COSTS[0]]["side_by_side_slim_ms_b1"]
            for _, pair in sorted(by_seed.items())]


def summarize(nets: list[dict[str, Any]], latency_batch: int) -> str:
    lines = [f"| net | budget | W chosen (params-macs / latency) | MACs kept | test acc | slim ms b1 | slim ms "
             f"b{latency_batch} | latency / params-macs b1 per seed | cost=latency faster b1, acc within 1 pt |",
             "|---|---|---|---|---|---|---|---|---|"]
    wins = 0
    for entry in nets:
        rows = entry["rows"]
        pair = {key: [_mean(rows, cost, key) for cost in COSTS]
                for key in ("cost_weight", "macs_kept", "acc_test", "side_by_side_slim_ms_b1",
                            f"side_by_side_slim_ms_b{latency_batch}")}
        ratios = seed_ratios(rows)
        tie = all(r["same_subnetwork"] for r in rows)
        # the median over seeds: one disturbed timing cannot make the verdict
        win = (statistics.median(ratios) < 1.0 - TIMING_MARGIN
               and pair["acc_test"][1] >= pair["acc_test"][0] - ACC_TOLERANCE)
        wins += win
        cells = [f"{a:.{d}f} / {b:.{d}f}" for (a, b), d in zip(pair.values(), (2, 2, 3, 4, 4))]
        cells.append(" ".join(f"{r:.2f}" for r in ratios))
        verdict = "tie (same sub-networks)" if tie else "yes" if win else "no"
        missed = sum(not r["within_budget"] for r in rows)
        verdict += f"; {missed} of {len(rows)} choices over budget" if missed else ""
        lines.append(f"| {entry['net']} | {entry['recipe'].split(' W=')[0]} | " + " | ".join(cells) + f" | {verdict} |")
    lines.append(f"\ncost=latency faster at batch 1 (median over seeds, by > {100 * TIMING_MARGIN:.0f}%) within 1 "
                 f"point on {wins} of {len(nets)} nets (target: >= 4 of 5)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="demosupnet,stackedunets,darts,superresnet,regnet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--weight-multiples", default="0,1,3,10",
                        help="the cost weights each cost model may use, as multiples of the recipe's; each keeps "
                        "the largest within the accuracy budget")
    parser.add_argument("--test-seed", type=int, default=0, help="the seed that holds out the test split (fixed)")
    parser.add_argument("--data", default="digits", help="digits or npz:PATH (see tools/evidence.py)")
    parser.add_argument("--size", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (DARTS: reproduce.NET_LR)")
    parser.add_argument("--kind", default="auto", choices=("auto", "erase", "prune", "both"),
                        help="train's kind for recipes without a channel target")
    parser.add_argument("--round-to", type=parse_round_to_by_cost, default=ROUND_TO_BY_COST,
                        help="train's round-to (by-cost: auto under cost=latency, else 1)")
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--hard-zero-fraction", type=float, default=0.5)
    parser.add_argument("--latency-batch", type=int, default=64, help="second latency batch (batch 1 always)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if any(float(m) < 0 for m in args.weight_multiples.split(",")):
        parser.error("--weight-multiples must be >= 0")
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
