"""Benchmark: onnxruntime CPU latency of the slim model vs the group-sparse full model at 50% group sparsity,
and the latency model's prediction of it.

    python tools/bench_latency.py [--archs resnet18,resnet50,resnext50_32x4d,mobilenet_v2] [--size 224]
                                  [--repeat 10] [--round-to auto] [--cache DIR] [--threads 0] [--stat median|min]
                                  [--zoo demosupnet,stackedunets,darts,superresnet,regnet] [--zoo-epochs 3]

For each architecture (tools/archs.py, random weights, randomized BN): search space, the ``latency`` pass at
batch 1 (timed: the first run measures, later runs read the cache), zero 50% of the channel groups
(``zero-groups{kind=prune,round-to=...}``; ``auto``: the multiples the latency model measured), construct the slim
model (timed), verify it, then time both models in onnxruntime (``--threads``, default all cores, batch 1 and 32,
median of ``--repeat`` turns of two runs each, the sessions taking turns, each as deployed). Reports the
speed-up (full/slim latency) as a fraction of the MACs reduction (full/slim MACs): target >= 0.9; and the slim
latency the latency model (``latency{batch=B}``, measured on the group-sparse model) predicts against the one
measured: target within 10% (``anchored``: the prediction scaled by this run's full-model time over the latency
pass's, which load drift on a shared machine cannot move).
``--zoo``: the zoo super-networks (tiny, digits) after a short H2SPG training (the first recipe of
``tools/reproduce.py``'s grid, ``--zoo-epochs``): the trained group-sparse model against its slim sub-network.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import archs  # noqa: E402

from asgnas.ir import load_model  # noqa: E402
from asgnas.passes import PassContext, PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.construct_subnet import construct_subnet  # noqa: E402
from asgnas.passes.latency import analyze_latency, parse_round_to  # noqa: E402
from asgnas.passes.verify import compare_models  # noqa: E402
from asgnas.runtime import model_feeds, session  # noqa: E402
from reproduce import NET_LR  # noqa: E402


def randomize_bn(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


#: long enough for the previous session's idle worker threads to stop spinning on the cores
_SETTLE_S = 0.05
_TIMED_PER_TURN = 2


def median_latencies(models: list, batch: int, repeat: int, threads: int, stat: str = "median") -> list[float]:
    """Each model's latency as deployed: one session, its worker threads spinning between runs (onnxruntime's
    default). The models take ``repeat`` turns each, so load changes hit all alike: a pause lets the previous
    session's threads stop spinning, one run wakes this session's, then ``_TIMED_PER_TURN`` runs are timed.
    Taking turns run by run would time the other session's spinning (ResNet-18 at batch 1 on 2 cores: 2x); turning
    spinning off would time the threads' wake-up at every operator (ResNet-50's slim model at batch 1 on two
    AVX-512 cores: +10%, the full model +2%; docs/BENCHMARKS.md)."""
    sessions = [session(m, device="cpu", threads=threads) for m in models]
    feeds = [model_feeds(m, seed=0, symbolic_dim=batch) for m in models]
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(repeat):
        for i, (sess, feed) in enumerate(zip(sessions, feeds)):
            time.sleep(_SETTLE_S)
            sess.run(None, feed)
            for _ in range(_TIMED_PER_TURN):
                start = time.perf_counter()
                sess.run(None, feed)
                times[i].append(time.perf_counter() - start)
    return [1e3 * float(np.median(t) if stat == "median" else np.min(t)) for t in times]


def torchvision_pair(name: str, args: argparse.Namespace, tmp: str) -> tuple:
    """(group-sparse model, slim model, search space, MACs reduction, latency pass s, construction s, verify max rel
    diff): 50% of the channel groups zeroed at random, rounded to ``--round-to``."""
    torch.manual_seed(0)
    net = getattr(archs, name)()
    randomize_bn(net)
    path = archs.export(net, torch.randn(1, 3, args.size, args.size), str(Path(tmp) / f"{name}.onnx"))
    model = load_model(path)
    PassManager(parse_pipeline("search-space{groups=false}")).run(model, PassContext(quiet=True))
    return sparsify_and_build(model, f"zero-groups{{fraction=0.5,seed=0,kind=prune,round-to={args.round_to}}}", args)


def sparsify_and_build(model: Any, sparsify: str, args: argparse.Namespace) -> tuple:
    """Time the latency pass on ``model`` (its search space analysed), run ``sparsify`` (a pipeline that zeroes
    groups), then time construct-subnet and verify: the tuple ``torchvision_pair`` documents."""
    space = model.analyses["search_space"]
    start = time.perf_counter()
    analyze_latency(model, space, batch=1, threads=args.threads, cache=args.cache)
    latency_seconds = time.perf_counter() - start
    PassManager(parse_pipeline(sparsify)).run(model, PassContext(quiet=True))
    sparse = model.copy()
    start = time.perf_counter()
    cost = construct_subnet(model)["cost"]
    seconds = time.perf_counter() - start
    diff = compare_models(model, sparse, seeds=1)["max_rel_diff"]
    return sparse, model, space, cost["before"]["macs"] / cost["after"]["macs"], latency_seconds, seconds, diff


def zoo_pair(name: str, args: argparse.Namespace, tmp: str) -> tuple:
    """The same for a zoo super-network (tiny) after a short H2SPG training on digits with the first recipe of
    ``tools/reproduce.py``'s grid (``--zoo-epochs``, ``round-to`` as given): the trained group-sparse model and
    the slim one constructed from it."""
    from asgnas.bridge.export import export_torch_model
    from asgnas.cli import _register_all_passes  # the train pass lives in the bridge
    from asgnas.zoo import build
    from evidence import make_splits
    from reproduce import GRIDS

    _register_all_passes()
    torch.manual_seed(0)
    net = build(name, "tiny")
    folder = Path(tmp) / name
    folder.mkdir()
    path = folder / "supernet.onnx"
    export_torch_model(net, net.example_input(1), path)
    train_npz, _ = make_splits("digits", 0).write(folder)
    recipe = GRIDS[name][0]
    kind = recipe.train_kind("erase")
    round_to = args.round_to if kind == "both" else 1
    model = load_model(str(path))
    PassManager(parse_pipeline("untie-aliases,search-space{groups=false}")).run(model, PassContext(quiet=True))
    train = (f"train{{optimizer=h2spg,data=npz:{train_npz},epochs={args.zoo_epochs},seed=0,lr={NET_LR.get(name, 0.05)},"
             f"quiet=true,target-sparsity={recipe.target},cost-weight={recipe.cost_weight},kind={kind},"
             f"prune-target={recipe.prune_target},round-to={round_to},gates={str(recipe.gates).lower()}}}")
    return sparsify_and_build(model, train, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,resnet50,resnext50_32x4d,mobilenet_v2",
                        help="tools/archs.py architectures ('' for none)")
    parser.add_argument("--zoo", default="", help="zoo super-networks to train briefly and time, e.g. "
                        "demosupnet,stackedunets,darts,superresnet,regnet")
    parser.add_argument("--zoo-epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--round-to", type=parse_round_to, default="auto",
                        help="keep channel counts a multiple of this (auto: what the latency model measured)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: every core)")
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="per model over --repeat runs (min: what other processes' load disturbs least)")
    parser.add_argument("--cache", default="", help="latency cache folder (default $ASGNAS_CACHE or ~/.cache/asgnas)")
    args = parser.parse_args()
    rows = []
    jobs = [(n, torchvision_pair) for n in args.archs.split(",") if n]
    jobs += [(n, zoo_pair) for n in args.zoo.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in jobs:
            sparse, model, space, macs_ratio, latency_seconds, seconds, diff = make(name, args, tmp)
            for batch in (int(b) for b in args.batches.split(",")):
                latency = analyze_latency(sparse.copy(), space, batch=batch, threads=args.threads, cache=args.cache)
                predicted = latency.predict_ms(model)
                full_ms, slim_ms = median_latencies([sparse, model], batch, args.repeat, args.threads, args.stat)
                speedup = full_ms / slim_ms
                error = predicted / slim_ms - 1
                # the same prediction anchored on this run's full-model time: what load drift between the latency
                # pass and this run cannot move
                anchored = full_ms * predicted / latency.total_ms / slim_ms - 1
                rows.append((name, batch, full_ms, slim_ms, predicted, error, anchored, speedup, macs_ratio,
                             speedup / macs_ratio, seconds, latency_seconds, diff))
                print(f"{name} batch {batch}: full {full_ms:.3g} ms, slim {slim_ms:.3g} ms (predicted {predicted:.3g}, "
                      f"{100 * error:+.0f}%; anchored {100 * anchored:+.0f}%), speed-up {speedup:.2f}x, MACs "
                      f"{macs_ratio:.2f}x -> "
                      f"{speedup / macs_ratio:.2f} of the MACs ratio; construction {seconds:.2f} s; latency pass "
                      f"(batch 1) {latency_seconds:.1f} s; verify max rel diff {diff:.1e}", flush=True)
    print("\n| model | batch | full ms | slim ms | predicted slim ms | prediction error | anchored error | speed-up | "
          "MACs reduction | speed-up / MACs reduction | construction s | latency pass s (b1) | max rel diff |\n|"
          + "---|" * 13)
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3g} | {r[3]:.3g} | {r[4]:.3g} | {100 * r[5]:+.0f}% | {100 * r[6]:+.0f}% | "
              f"{r[7]:.2f}x | {r[8]:.2f}x | {r[9]:.2f} | {r[10]:.2f} | {r[11]:.1f} | {r[12]:.1e} |")
    for column, what in ((5, "prediction error"), (6, "anchored error")):
        print(f"median |{what}|: {100 * statistics.median(abs(r[column]) for r in rows):.1f}% (target <= 10%)")

if __name__ == "__main__":
    main()
