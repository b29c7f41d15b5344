"""The paper-style table: each super-network, full vs H2SPG sub-network (params, MACs, accuracy, latency).

    python tools/reproduce.py [--nets demosupnet,stackedunets,darts,superresnet,regnet] [--seeds 0,1,2]
                              [--data digits|npz:PATH] [--size tiny|paper] [--epochs 20] [--device cpu|cuda]
                              [--target 0.5] [--targets net=K,...] [--cost-weight 1.0] [--hard-zero-fraction 0.5]
                              [--kind auto|erase|prune|both] [--prune-targets net=F,...] [--round-to 1]
                              [--gates darts] [--lr 0.05] [--net-lr darts=0.02]
                              [--out rows.json] [--merge a.json,b.json]

For every (net, seed): export the super-network, train it twice with the same budget through the ``train`` pass:
once with no target (the full super-network baseline) and once with H2SPG at the net's target; construct the
sub-network, verify it in onnxruntime against the trained model, and measure onnxruntime CPU latency (one thread,
batch 1 and ``--latency-batch``, full and slim interleaved). Prints mean and spread over the seeds; ``--out`` keeps
the raw rows as JSON, ``--merge`` prints the table of rows from runs split over several processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from asgnas.bridge.export import export_torch_model
from asgnas.cli import _register_all_passes
from asgnas.data import load_dataset
from asgnas.ir import Model, load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.runtime import median_run_seconds, model_feeds, onnx_accuracy, session
from asgnas.zoo import build


def run_one(net_name: str, size: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    torch.manual_seed(seed)
    kwargs = {"in_channels": 1, "input_size": 8} if args.data == "digits" and size == "paper" else {}
    net = build(net_name, size, **kwargs)
    path = workdir / f"{net_name}_{seed}.onnx"
    export_torch_model(net, net.example_input(1), path)
    prune_target = per_net(net_name, args.prune_targets, -1.0)
    lr = per_net(net_name, args.net_lr, args.lr)
    kind = "both" if prune_target >= 0 else args.kind  # a net with a channel target also prunes
    round_to = args.round_to if kind in ("prune", "both") else 1  # erasing only: no channel counts to round

    def train(target: float, prune_target: float = -1.0, gates: bool = False) -> str:
        return (f"train{{optimizer=h2spg,data={args.data},epochs={args.epochs},seed={seed},device={args.device},"
                f"lr={lr},quiet=true,target-sparsity={target},cost-weight={args.cost_weight},"
                f"warmup-fraction={args.warmup_fraction},hard-zero-fraction={args.hard_zero_fraction},"
                f"kind={kind},prune-target={prune_target},round-to={round_to},gates={str(gates).lower()}}}")

    full_model = load_model(path)
    full_cost = PassManager(parse_pipeline("untie-aliases,search-space{groups=false}," + train(0) + ",cost")).run(
        full_model, PassContext(quiet=True))["cost"]  # the super-network as exported (no gates)
    data = load_dataset(args.data, tuple(net.example_input(1).shape[1:]), seed=seed)  # the same split as train's
    baseline_acc = onnx_accuracy(full_model, data.x_val, data.y_val)

    model = load_model(path)
    report = PassManager(parse_pipeline(
        "untie-aliases,search-space{groups=false}," + train(per_net(net_name, args.targets, args.target),
                                                      prune_target, net_name in args.gates.split(","))
        + ",construct-subnet,verify{rtol=1e-3}")).run(model, PassContext(quiet=True))
    cost = report["cost"]
    return {
        "net": net_name, "seed": seed,
        "params_full": full_cost["params"], "params_slim": cost["after"]["params"],
        "macs_full": full_cost["macs"], "macs_slim": cost["after"]["macs"],
        "acc_baseline": baseline_acc, "acc_trained_full": report["train"]["val_accuracy_full"],
        "acc_slim": report["train"]["val_accuracy_slim"],
        **latencies(load_model(path), model, 1),
        **latencies(load_model(path), model, 1),
        **latencies(load_model(path), model, args.latency_batch),
        "erased": report["construct-subnet"]["erased_structures"],
        "removable": report["search_space"]["summary"]["num_removable_erase_groups"],
        "gates": report["train"]["gates"],
        "verify_max_abs_diff": report["verify"]["max_abs_diff"],
    }


def per_net(net: str, targets: str, default: float) -> float:
    """``net=V,...`` (``--targets``, ``--prune-targets``, ``--net-lr``) overrides the default per net (the paper
    also picks K and the training recipe per experiment)."""
    for item in filter(None, targets.split(",")):
        name, value = item.split("=")
        if name == net:
            return float(value)
    return default


def latencies(full: Model, slim: Model, batch: int, rounds: int = 7, repeat: int = 20) -> dict[str, float]:
    """onnxruntime CPU latency (one thread) of full and slim at ``batch``, interleaved round by round so both see
    the same machine load; medians over the rounds of per-round medians."""
    sessions = [session(m, device="cpu", threads=1) for m in (full, slim)]
    feeds = model_feeds(full, seed=0, symbolic_dim=batch)
    per = [[], []]
    for _ in range(rounds):
        for i, sess in enumerate(sessions):
            per[i].append(median_run_seconds(sess, feeds, repeat))
    return {f"latency_full_ms_b{batch}": 1e3 * statistics.median(per[0]),
            f"latency_slim_ms_b{batch}": 1e3 * statistics.median(per[1])}


def summarize(rows: list[dict], latency_batch: int) -> str:
    def stat(values: list[float], fmt: str) -> str:
        mean = statistics.mean(values)
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{mean:{fmt}} ± {spread:{fmt.lstrip('+')}}"

    def speedup_ratio(r: dict, batch: int) -> float:  # latency speed-up / MACs speed-up; target >= 0.9
        return (r[f"latency_full_ms_b{batch}"] / r[f"latency_slim_ms_b{batch}"]) / (r["macs_full"] / r["macs_slim"])

    lines = ["| net | params full -> slim (kept) | MACs full -> slim (kept) | acc baseline | acc slim | "
             f"delta | latency / MACs speed-up, b1 | b{latency_batch} | erased |", "|" + "---|" * 9]
    for net in dict.fromkeys(r["net"] for r in rows):
        rs = [r for r in rows if r["net"] == net]
        p_keep = [r["params_slim"] / r["params_full"] for r in rs]
        m_keep = [r["macs_slim"] / r["macs_full"] for r in rs]
        lines.append(
            f"| {net} | {rs[0]['params_full']:,} -> {statistics.mean(r['params_slim'] for r in rs):,.0f} "
            f"({stat(p_keep, '.2f')}) | {rs[0]['macs_full']:,} -> {statistics.mean(r['macs_slim'] for r in rs):,.0f} "
            f"({stat(m_keep, '.2f')}) | {stat([100 * r['acc_baseline'] for r in rs], '.1f')} | "
            f"{stat([100 * r['acc_slim'] for r in rs], '.1f')} | "
            f"{stat([100 * (r['acc_slim'] - r['acc_baseline']) for r in rs], '+.1f')} | "
            f"{stat([speedup_ratio(r, 1) for r in rs], '.2f')} | "
            f"{stat([speedup_ratio(r, latency_batch) for r in rs], '.2f')} | "
            f"{statistics.mean(r['erased'] for r in rs):.1f}/{rs[0]['removable']}"
            f"{' + %d gated' % rs[0]['gates'] if rs[0].get('gates') else ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="demosupnet,stackedunets,darts,superresnet,regnet")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--size", default="tiny", choices=("tiny", "paper"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    # DARTS' un-weighted sums of 7 candidates per edge train unstably at 0.05 (losses of 40 in the first epoch)
    parser.add_argument("--net-lr", default="darts=0.02", help="per-net learning rates (net=LR,...), overriding --lr")
    parser.add_argument("--target", type=float, default=0.5)
    # per-net K (the paper also picks K per experiment): the fewest structures whose erasure cuts >= 40% of the
    # params and MACs under cost-aware selection (measured in docs/BENCHMARKS.md)
    parser.add_argument("--targets", default="demosupnet=1,stackedunets=1,superresnet=3,regnet=3,darts=0.4",
                        help="per-net structure targets (count >= 1 or fraction), overriding --target")
    parser.add_argument("--cost-weight", type=float, default=1.0)
    parser.add_argument("--kind", default="auto", choices=("auto", "erase", "prune", "both"),
                        help="groups H2SPG sparsifies (train's kind; both: structures and channels in one run)")
    # StackedUnets' MACs sit in its full-resolution convs: erasing a whole U-Net costs accuracy, so it erases one
    # structure and prunes 35% of its channels (measured in docs/BENCHMARKS.md)
    parser.add_argument("--prune-targets", default="stackedunets=0.35",
                        help="per-net channel-group targets (net=F,...): a named net trains with kind=both, "
                             "--targets counting its structures and F its channel groups; others use --kind")
    parser.add_argument("--round-to", type=int, default=1,
                        help="keep a multiple of this many channels per channel space (train's round-to)")
    # DARTS edges hold pools and skips: gated, they are candidates too (issue 6 item 5, measured in BENCHMARKS)
    parser.add_argument("--gates", default="darts",
                        help="nets (comma-separated, or 'none') whose sub-network training gates parameter-free "
                             "branches (train's gates=true), so pools and skips are erasable too; K then counts "
                             "the gated branches as well; the baseline is the same either way")
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--hard-zero-fraction", type=float, default=0.5)
    parser.add_argument("--latency-batch", type=int, default=64, help="second latency batch (batch 1 always)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the tiny nets run fastest single-threaded on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="")
    parser.add_argument("--merge", default="", help="comma-separated --out files of earlier runs: print their table")
    args = parser.parse_args()
    if args.merge:  # runs split over processes (one per net or seed) are summarised together
        rows = [row for path in args.merge.split(",") for row in json.loads(Path(path).read_text())]
        print(summarize(rows, args.latency_batch))
        return
    torch.set_num_threads(args.threads)
    _register_all_passes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in args.nets.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                start = time.perf_counter()
                row = run_one(net, args.size, seed, args, Path(tmp))
                rows.append(row)
                print(f"{net} seed {seed}: acc baseline {row['acc_baseline']:.3f} slim {row['acc_slim']:.3f}, "
                      f"params {row['params_slim']}/{row['params_full']}, MACs {row['macs_slim']}/{row['macs_full']} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    print(summarize(rows, args.latency_batch))


if __name__ == "__main__":
    main()
