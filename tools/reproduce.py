"""The paper-style table, chosen on validation and reported on test: full baseline, the paper's recipe, a random
valid selection and ours, for each super-network, over seeds.

    PYTHONPATH=. python tools/reproduce.py [--nets demosupnet,stackedunets,darts,superresnet,regnet] [--seeds 0,1,2]
                              [--selection-seed 0] [--test-seed 0] [--data digits|npz:PATH] [--size tiny|paper]
                              [--epochs 20] [--lr 0.05] [--device cpu|cuda] [--round-to by-cost]
                              [--out result.json] [--merge a.json,b.json]

Protocol (``tools/evidence.py`` has the splits and the selection rule):
1. Data: a test split is held out once (``--test-seed``; digits 20%) and never used for a choice; the rest is split
   per seed into train (digits 60%) and validation (20%).
2. Selection, on ``--selection-seed`` only: the full baseline (the ``train`` pass with target 0: the same epochs,
   cosine lr and data, no group is ever selected, so every step is the base SGD) and every recipe of the net's grid
   (``GRIDS``: K, channel target, cost weight, gates) are trained on train and measured on validation; the chosen
   recipe is the largest params + MACs reduction whose validation accuracy is within 1 point of the baseline's.
3. Test, on every seed: the full baseline, the paper's recipe (saliency order, no cost weight, no gates, the chosen
   K), a random valid selection of the same K (``train{selection=random}``: a seeded random order, still checked by
   the validity oracle) and ours (the chosen recipe), each trained on that seed's train split with the same budget;
   the sub-networks are constructed and verified in onnxruntime against their trained model; accuracy is measured
   in onnxruntime on the test split; latency (one thread, batch 1 and ``--latency-batch``, full and slim
   interleaved) of each sub-network against the exported super-network.
``--out`` keeps everything as JSON (written after each net); ``--merge`` prints the tables of several such files
(runs split over processes, e.g. one per net).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from asgnas.bridge.export import export_torch_model
from asgnas.bridge.model_io import input_specs
from asgnas.bridge.selection_costs import ROUND_TO_BY_COST, parse_round_to_by_cost
from asgnas.cli import _register_all_passes
from asgnas.data import load_dataset
from asgnas.ir import Model, load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.runtime import median_run_seconds, model_feeds, onnx_accuracy, session
from asgnas.zoo import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence import make_splits, select_candidate  # noqa: E402  (tools/ is not a package)


@dataclass(frozen=True)
class Recipe:
    """What H2SPG is asked for: ``target`` structures (count >= 1 or fraction), ``prune_target`` channel groups
    (train ``kind=both,prune-target``; -1: structures only), cost-aware selection weight (ours; 0 = the paper's
    saliency order), gated parameter-free branches (ours), the order (``saliency`` or the ``random`` ablation), and
    what the cost weight counts (train ``cost``: ``params-macs`` or the measured ``latency``, ``LATENCY_PASS``)."""

    target: float
    prune_target: float = -1.0
    cost_weight: float = 0.0
    gates: bool = False
    selection: str = "saliency"
    cost: str = "params-macs"

    @property
    def label(self) -> str:
        k = f"K={self.target:g}" + (f"+{self.prune_target:g} channels" if self.prune_target >= 0 else "")
        extras = [f"W={self.cost_weight:g}"] * (self.cost_weight > 0) + ["gates"] * self.gates
        extras += [f"cost={self.cost}"] * (self.cost != "params-macs")
        return " ".join([k, *extras, *(["random order"] if self.selection == "random" else [])])

    def train_kind(self, default: str) -> str:
        """train's ``kind``: ``both`` where the recipe has a channel target, else ``default``."""
        return "both" if self.prune_target >= 0 else default

    def papers(self) -> "Recipe":
        """The paper's recipe at the same K: saliency order, no cost weight, no gates."""
        return Recipe(self.target, self.prune_target)

    def randomized(self) -> "Recipe":
        return replace(self.papers(), selection="random")


#: Per-net candidates, chosen among on validation (small: the CPU has 2 cores). K counts structures (>= 1) or is
#: a fraction; the earlier tables' recipes (docs/BENCHMARKS.md, issue 6) are in each grid, with W = 0.25 where
#: channel groups are ranked (issue 14's one cost scale: W = 1 and 2 there, tuned on min-max scaling, now cut deep).
GRIDS: dict[str, list[Recipe]] = {
    "demosupnet": [Recipe(1), Recipe(1, cost_weight=1.0), Recipe(2), Recipe(2, cost_weight=1.0)],
    "stackedunets": [Recipe(1, 0.35, cost_weight=0.25), Recipe(1, 0.35), Recipe(2, cost_weight=1.0),
                     Recipe(0, 0.3, cost_weight=0.25)],
    "superresnet": [Recipe(3), Recipe(3, cost_weight=1.0), Recipe(5), Recipe(5, cost_weight=1.0)],
    "regnet": [Recipe(2), Recipe(2, cost_weight=1.0), Recipe(3), Recipe(3, cost_weight=1.0)],
    "darts": [Recipe(0.4, cost_weight=1.0, gates=True), Recipe(0.4, gates=True), Recipe(0.4, cost_weight=1.0)],
}
#: DARTS' un-weighted sums of 7 candidates per edge diverge at lr 0.05 (first-epoch losses of ~40): its baseline
#: and every recipe train at 0.02 (a stability choice, the same for every row)
NET_LR = {"darts": 0.02}
ACC_TOLERANCE = 0.01  # the selection rule's "within 1 point of the baseline"
#: the latency table ``cost=latency`` ranks by: measured where ``latencies`` measures (CPU, one thread, batch 1)
LATENCY_PASS = "latency{device=cpu,batch=1,threads=1}"


class NetRun:
    """One net's trainings, cached per (seed, recipe) so a run the table needs twice is trained once (the
    selection seed's baseline and chosen recipe are also its test rows)."""

    def __init__(self, net: str, args: argparse.Namespace, workdir: Path, keep_slims: bool = False) -> None:
        self.net, self.args, self.workdir = net, args, workdir
        self.lr = NET_LR.get(net, args.lr)
        self._runs: dict[tuple[int, Recipe | None], dict[str, Any]] = {}
        # each run's slim model, kept in memory when asked (bench_cost times the chosen ones side by side later)
        self._slims: dict[tuple[int, Recipe], Model] | None = {} if keep_slims else None
        self._seeds: dict[int, tuple[Path, Path, Any, Any]] = {}

    def _seed_files(self, seed: int) -> tuple[Path, Path, Any, Any]:
        """The exported super-network (seeded init), the train npz, and the fitted validation / test arrays."""
        if seed not in self._seeds:
            torch.manual_seed(seed)
            digits_at_paper_width = self.args.data == "digits" and self.args.size == "paper"
            kwargs = {"in_channels": 1, "input_size": 8} if digits_at_paper_width else {}
            net = build(self.net, self.args.size, **kwargs)
            folder = self.workdir / f"{self.net}_{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "supernet.onnx"
            export_torch_model(net, net.example_input(1), path)
            train_npz, test_npz = make_splits(self.args.data, seed, self.args.test_seed).write(folder)
            shape = input_specs(load_model(path))[0].shape
            val = load_dataset(f"npz:{train_npz}", shape)  # fitted exactly as the train pass fits them
            test = load_dataset(f"npz:{test_npz}", shape)
            self._seeds[seed] = (path, train_npz, (val.x_val, val.y_val), (test.x_val, test.y_val))
        return self._seeds[seed]

    def full_path(self, seed: int) -> str:
        """The seed's exported super-network (the full model the slim ones are timed against)."""
        return str(self._seed_files(seed)[0])

    def slim_model(self, seed: int, recipe: Recipe) -> Model:
        """The slim model ``result(seed, recipe)`` constructed (trained first if needed; needs ``keep_slims``)."""
        if self._slims is None:
            raise ValueError("NetRun(keep_slims=True) keeps the slim models")
        self.result(seed, recipe)
        return self._slims[seed, recipe]

    def result(self, seed: int, recipe: Recipe | None) -> dict[str, Any]:
        """Train (``None``: the full baseline) and measure; cached."""
        key = (seed, recipe)
        if key not in self._runs:
            start = time.perf_counter()
            self._runs[key] = self._train(seed, recipe)
            r = self._runs[key]
            print(f"{self.net} seed {seed} {recipe.label if recipe else 'baseline'}: val {r['acc_val']:.3f} "
                  f"test {r['acc_test']:.3f} params {r['params_kept']:.2f} MACs {r['macs_kept']:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        return self._runs[key]

    def _train(self, seed: int, recipe: Recipe | None) -> dict[str, Any]:
        args = self.args
        path, train_npz, val, test = self._seed_files(seed)
        r = recipe or Recipe(0)
        kind = r.train_kind(args.kind)
        round_to = args.round_to if kind in ("prune", "both") else 1  # erasing only: no channel counts to round
        spec = (f"train{{optimizer=h2spg,data=npz:{train_npz},epochs={args.epochs},seed={seed},device={args.device},"
                f"lr={self.lr},quiet=true,target-sparsity={r.target},cost-weight={r.cost_weight},"
                f"warmup-fraction={args.warmup_fraction},hard-zero-fraction={args.hard_zero_fraction},kind={kind},"
                f"prune-target={r.prune_target},round-to={round_to},gates={str(r.gates).lower()},"
                f"selection={r.selection},cost={r.cost}}}")
        if r.cost == "latency":
            spec = f"{LATENCY_PASS},{spec}"
        tail = ",cost" if recipe is None else ",construct-subnet,verify{rtol=1e-3}"
        model = load_model(path)
        report = PassManager(parse_pipeline("untie-aliases,search-space{groups=false}," + spec + tail)).run(
            model, PassContext(quiet=True))
        out = {"acc_val": onnx_accuracy(model, *val), "acc_test": onnx_accuracy(model, *test),
               "train_seconds": report["train"]["seconds"]}
        if recipe is None:
            cost = report["cost"]
            return {**out, "params": cost["params"], "macs": cost["macs"], "params_kept": 1.0, "macs_kept": 1.0}
        full, slim = self.result(seed, None), report["cost"]["after"]
        if self._slims is not None:
            self._slims[seed, recipe] = model
        return {**out, "params": slim["params"], "macs": slim["macs"], "zero_groups": report["train"]["zero_groups"],
                "params_kept": slim["params"] / full["params"], "macs_kept": slim["macs"] / full["macs"],
                "erased": report["construct-subnet"]["erased_structures"],
                "removable": report["search_space"]["summary"]["num_removable_erase_groups"],
                "gates": report["train"]["gates"], "verify_max_abs_diff": report["verify"]["max_abs_diff"],
                **latencies(load_model(path), model, 1), **latencies(load_model(path), model, args.latency_batch)}


def run_net(net: str, args: argparse.Namespace, workdir: Path,
            save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Selection (or the recipe ``--chosen`` names), then the test rows seed by seed; ``save`` gets the net's
    result after the selection and after every seed, so a long run can be read (and split) while it goes."""
    runs = NetRun(net, args, workdir)
    grid = GRIDS[net]
    result: dict[str, Any] = {"net": net, "lr": runs.lr, "selection_seed": args.selection_seed, "rows": []}
    chosen_label = dict(item.split("=", 1) for item in filter(None, args.chosen.split(","))).get(net)
    if chosen_label is None:
        baseline = runs.result(args.selection_seed, None)
        candidates = [{"recipe": r.label, **runs.result(args.selection_seed, r)} for r in grid]
        chosen = grid[select_candidate(candidates, baseline["acc_val"], ACC_TOLERANCE)]
        result.update(baseline_val_acc=baseline["acc_val"], candidates=candidates)
    else:
        by_label = {r.label: r for r in grid}
        if chosen_label not in by_label:
            raise SystemExit(f"--chosen {net}={chosen_label}: not in its grid ({', '.join(by_label)})")
        chosen = by_label[chosen_label]
    result["chosen"] = chosen.label
    save(result)
    for seed in (int(s) for s in args.seeds.split(",")):
        result["rows"].append({"seed": seed, "role": "baseline", "recipe": "full, no sparsity",
                               **runs.result(seed, None)})
        for role, recipe in (("paper", chosen.papers()), ("random", chosen.randomized()), ("ours", chosen)):
            result["rows"].append({"seed": seed, "role": role, "recipe": recipe.label, **asdict(recipe),
                                   **runs.result(seed, recipe)})
        save(result)
    return result


def merge_nets(nets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per net from runs split over processes (by net or by seed): the selection from the run that made
    it, the rows of every run (first one per seed and role). The first entry of a net sets its recipe: a later one
    that chose another (an earlier run, redone) is left out, with a note."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in nets:
        into = merged.setdefault(entry["net"], {**entry, "rows": []})
        if entry["chosen"] != into["chosen"]:
            print(f"merge: left out a {entry['net']} run that chose {entry['chosen']} (first: {into['chosen']})",
                  file=sys.stderr)
            continue
        if "candidates" in entry and "candidates" not in into:
            into.update(candidates=entry["candidates"], baseline_val_acc=entry["baseline_val_acc"])
        seen = {(r["seed"], r["role"]) for r in into["rows"]}
        into["rows"] += [r for r in entry["rows"] if (r["seed"], r["role"]) not in seen]
    return list(merged.values())


def interleaved_ms(models: list[Model], batch: int, rounds: int = 7, repeat: int = 20) -> list[float]:
    """onnxruntime CPU latency (one thread: no worker threads to spin) of each model at ``batch``, interleaved round
    by round so all see the same machine load; medians over the rounds of per-round medians (ms)."""
    sessions = [session(m, device="cpu", threads=1) for m in models]
    feeds = [model_feeds(m, seed=0, symbolic_dim=batch) for m in models]
    per: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, (sess, feed) in enumerate(zip(sessions, feeds)):
            per[i].append(median_run_seconds(sess, feed, repeat))
    return [1e3 * statistics.median(t) for t in per]


def latencies(full: Model, slim: Model, batch: int) -> dict[str, float]:
    """:func:`interleaved_ms` of the full and the slim model, by key."""
    full_ms, slim_ms = interleaved_ms([full, slim], batch)
    return {f"latency_full_ms_b{batch}": full_ms, f"latency_slim_ms_b{batch}": slim_ms}


def _stat(values: list[float], fmt: str) -> str:
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {spread:{fmt.lstrip('+')}}"


ROLE_NAMES = {"paper": "paper: H2SPG, saliency order", "random": "ablation: random valid order",
              "ours": "ours (chosen on validation)"}


def summarize(nets: list[dict[str, Any]], latency_batch: int) -> str:
    """Test table (mean ± std over seeds), saliency vs random, and the validation choice per net."""
    lines = ["| net | row | recipe | params kept | MACs kept | test acc | delta vs baseline (points) | "
             f"latency / MACs speed-up b1 | b{latency_batch} | erased |", "|" + "---|" * 10]
    gains = {}
    for result in nets:
        net, rows = result["net"], result["rows"]
        base = {r["seed"]: r["acc_test"] for r in rows if r["role"] == "baseline"}
        if not base:  # a run still in its selection
            continue
        lines.append(f"| {net} | full baseline, no sparsity | - | 1.00 | 1.00 | "
                     f"{_stat([100 * a for a in base.values()], '.1f')} | - | - | - | - |")
        deltas = {}
        for role in ("paper", "random", "ours"):
            rs = [r for r in rows if r["role"] == role]
            if not rs:
                continue
            deltas[role] = [100 * (r["acc_test"] - base[r["seed"]]) for r in rs]
            macs_full = rows[0]["macs"]  # the same super-network on every seed
            lines.append(
                f"| {net} | {ROLE_NAMES[role]} | {rs[0]['recipe']}{_same_as_paper(role, rs[0])} | "
                f"{_stat([r['params_kept'] for r in rs], '.2f')} | "
                f"{_stat([r['macs_kept'] for r in rs], '.2f')} | {_stat([100 * r['acc_test'] for r in rs], '.1f')} | "
                f"{_stat(deltas[role], '+.1f')} | {_stat([_speedup(r, 1, macs_full) for r in rs], '.2f')} | "
                f"{_stat([_speedup(r, latency_batch, macs_full) for r in rs], '.2f')} | "
                f"{statistics.mean(r['erased'] for r in rs):.1f}/{rs[0]['removable']}"
                f"{' + %d gated' % rs[0]['gates'] if rs[0].get('gates') else ''} |")
        if "paper" in deltas and "random" in deltas:
            gains[net] = statistics.mean(deltas["paper"]) - statistics.mean(deltas["random"])
    if gains:
        lines += ["", "Saliency (paper's recipe) minus random valid order, mean test delta over the seeds, points: "
                  + ", ".join(f"{net} {gain:+.1f}" for net, gain in gains.items())
                  + f"; mean over nets {statistics.mean(gains.values()):+.1f}: saliency "
                  + ("beats" if statistics.mean(gains.values()) > 0 else "does not beat")
                  + f" random on average ({sum(g > 0 for g in gains.values())} of {len(gains)} nets)."]
    lines += ["", "| net | candidate (selection seed) | val acc | delta vs baseline val | params kept | MACs kept | "
              "chosen |", "|" + "---|" * 7]
    for result in nets:
        for c in result.get("candidates", []):
            lines.append(f"| {result['net']} | {c['recipe']} | {100 * c['acc_val']:.1f} | "
                         f"{100 * (c['acc_val'] - result['baseline_val_acc']):+.1f} | {c['params_kept']:.2f} | "
                         f"{c['macs_kept']:.2f} | {'yes' if c['recipe'] == result['chosen'] else ''} |")
    return "\n".join(lines)


def _same_as_paper(role: str, row: dict) -> str:
    return " (= the paper's recipe)" if role == "ours" and not row["cost_weight"] and not row["gates"] else ""


def _speedup(row: dict, batch: int, macs_full: int) -> float:
    """Latency speed-up over MACs speed-up (1: the MACs cut turns fully into time)."""
    return (row[f"latency_full_ms_b{batch}"] / row[f"latency_slim_ms_b{batch}"]) / (macs_full / row["macs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="demosupnet,stackedunets,darts,superresnet,regnet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--selection-seed", type=int, default=0, help="the seed whose validation split picks recipes")
    parser.add_argument("--test-seed", type=int, default=0, help="the seed that holds out the test split (fixed)")
    parser.add_argument("--data", default="digits", help="digits or npz:PATH (see tools/evidence.py)")
    parser.add_argument("--size", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05, help="learning rate (cosine; DARTS: 0.02, see NET_LR)")
    parser.add_argument("--kind", default="auto", choices=("auto", "erase", "prune", "both"),
                        help="train's kind for recipes without a channel target")
    parser.add_argument("--round-to", type=parse_round_to_by_cost, default=ROUND_TO_BY_COST,
                        help="keep a multiple of this many channels per channel space (train's round-to; by-cost: "
                        "auto for cost=latency recipes, else 1)")
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--hard-zero-fraction", type=float, default=0.5)
    parser.add_argument("--latency-batch", type=int, default=64, help="second latency batch (batch 1 always)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the tiny nets run fastest single-threaded on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chosen", default="",
                        help="net=RECIPE,...: skip the selection and use this recipe of the net's grid (as a run's "
                             "'chosen' names it), e.g. to run some seeds in another process")
    parser.add_argument("--out", default="")
    parser.add_argument("--merge", default="", help="comma-separated --out files of earlier runs: print their tables")
    args = parser.parse_args()
    if args.merge:
        nets = [n for path in args.merge.split(",") for n in json.loads(Path(path).read_text())["nets"]]
        print(summarize(merge_nets(nets), args.latency_batch))
        return
    unknown = set(args.nets.split(",")) - set(GRIDS)
    if unknown:
        parser.error(f"no recipe grid for {sorted(unknown)} (GRIDS has {sorted(GRIDS)})")
    torch.set_num_threads(args.threads)
    _register_all_passes()
    nets: list[dict[str, Any]] = []

    def save(current: dict[str, Any]) -> None:
        if args.out:
            Path(args.out).write_text(json.dumps({"args": vars(args), "nets": [*nets, current]}, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets.split(","):
            nets.append(run_net(net, args, Path(tmp), save))
    print(summarize([n for n in nets if n["rows"]], args.latency_batch))


if __name__ == "__main__":
    main()
