"""Before/after timings of the passes a refactor must not slow: load + search-space, construct-subnet, train.

    PYTHONPATH=. python tools/bench_passes.py [--trees /tmp/before,.] [--repeat 5] [--models all] [--json out.json]

Every model is exported once, by this tree's asgnas, into a temporary folder; then, for each repetition, one
subprocess per tree (``PYTHONPATH=TREE``; the order alternates between repetitions, so load drift on a shared
machine hits every tree alike) times on each model, in one ``PassManager`` run per pipeline (as ``asgnas-opt``
runs it):
- ``load`` (``load_model``) and ``search-space`` (the pass's own seconds in the report);
- ``construct-subnet``: the pipeline ``search-space,zero-groups{fraction=0.5,seed=0,kind=both},construct-subnet``
  on a freshly loaded model, the seconds of every pass after zero-groups (a tree may run construct-subnet as
  several registered passes);
- ``train`` (zoo nets only): ``search-space,train{epochs=2,...}`` on digits, the train pass's seconds.
``load + search-space`` is what the search-space benchmarks (docs/BENCHMARKS.md, issue 3) time; ``load`` is the
best of 3 loads inside the worker. Each worker first runs the pipelines of the smallest model of each kind untimed
(lazy imports, allocator warm-up). The table gives the best of ``--repeat`` per tree and stage, and the ratio of
each tree to the first. Only public functions that exist in both trees are used (``asgnas.ir.load_model``,
``asgnas.passes.PassManager/parse_pipeline/PassContext``, ``asgnas.cli._register_all_passes``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARCHS = ("resnet50", "resnet18")  # tools/archs.py at 224x224, legacy export without constant folding
FOLDED = ("resnet18-folded",)  # the same resnet18, legacy export with constant folding (BN folded into the convs)
ZOO = ("demosupnet", "superresnet", "stackedunets")  # asgnas.zoo tiny, exported as tools/reproduce.py does
CHAIN = ("chain-10000",)  # tools/bench_ir.py's synthetic Relu/MatMul chain (chain-N: N nodes): per-node overhead
ALL_MODELS = ARCHS + FOLDED + ZOO + CHAIN
ZERO = "zero-groups{fraction=0.5,seed=0,kind=both}"
TRAIN = "train{data=digits,epochs=2,seed=0,device=cpu,quiet=true}"
STAGES = ("load", "search-space", "load + search-space", "construct-subnet", "train")
LOAD_REPEAT = 3  # loads of the small models take milliseconds: best of a few inside each worker


# ----- parent: export once, spawn workers, print the table -----

def export_models(names: list[str], folder: Path) -> dict[str, str]:
    """Each model's ONNX file, written by this tree's exporters (the same files for every tree)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tools"))
    paths = {}
    for name in names:
        path = folder / f"{name}.onnx"
        if name.startswith("chain-"):
            import bench_ir

            bench_ir.synthetic_chain(int(name.split("-")[1]), str(path))
        else:
            export_torch_net(name, path)
        paths[name] = str(path)
    return paths


def export_torch_net(name: str, path: Path) -> None:
    import torch

    import archs
    from asgnas.bridge.export import export_torch_model
    from asgnas.zoo import build

    torch.manual_seed(0)
    if name in ZOO:
        net = build(name, "tiny")
        export_torch_model(net, net.example_input(1), path)
        return
    net = getattr(archs, name.removesuffix("-folded"))()
    example = torch.randn(1, 3, 224, 224)
    if name in FOLDED:
        with torch.no_grad():
            torch.onnx.export(net, (example,), str(path), dynamo=False, do_constant_folding=True,
                              opset_version=17, input_names=["input"], output_names=["output"])
    else:
        archs.export(net, example, str(path))


def run_worker(tree: str, paths: dict[str, str], threads: int, workdir: str) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(paths)], env=env, cwd=workdir,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker for {tree} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(trees: list[str], runs: dict[str, list[dict[str, dict[str, float]]]], models: list[str]) -> str:
    """Best of the repetitions per tree; ratio of each tree to the first (> 1: slower)."""
    head = "| model | stage | " + " | ".join(f"{Path(t).name} s (best)" for t in trees)
    head += "".join(f" | {Path(t).name} / {Path(trees[0]).name}" for t in trees[1:]) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(trees) - 1)]
    for model in models:
        for stage in STAGES:
            best = [min((r[model][stage] for r in runs[t] if stage in r[model]), default=None) for t in trees]
            if best[0] is None:
                continue
            cells = [f"{b:.3f}" if b is not None else "-" for b in best]  # "-": a tree with no run yet
            cells += [f"{b / best[0]:.2f}" if b is not None else "-" for b in best[1:]]
            lines.append(f"| {model} | {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", default=str(ROOT), help="comma-separated source trees (the first: the baseline)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="all", help=f"comma-separated among {','.join(ALL_MODELS)}")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the workers (torch's threads)")
    parser.add_argument("--json", default="", help="write every repetition's timings here (after each worker)")
    parser.add_argument("--table", default="", help="only print the table of a --json file (a finished or partial run)")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        print(table(saved["trees"], saved["runs"], list(saved["runs"][saved["trees"][0]][0])))
        return
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    models = list(ALL_MODELS) if args.models == "all" else args.models.split(",")
    runs: dict[str, list[dict[str, dict[str, float]]]] = {t: [] for t in trees}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_models(models, Path(tmp))
        for rep in range(args.repeat):
            for tree in trees if rep % 2 == 0 else trees[::-1]:
                runs[tree].append(run_worker(tree, paths, args.threads, tmp))
                if args.json:  # after every worker: a long run can be read while it goes
                    Path(args.json).write_text(json.dumps({"trees": trees, "threads": args.threads, "runs": runs}))
                print(f"repetition {rep + 1}/{args.repeat}: {tree} done "
                      f"({time.time() - start:.0f} s, load average {os.getloadavg()[0]:.1f})", file=sys.stderr,
                      flush=True)
    print(table(trees, runs, models))


# ----- worker: one tree, every model once -----

def worker(paths: dict[str, str]) -> dict[str, dict[str, float]]:
    """Torch is imported only where the pipelines import it (train), as in ``asgnas-opt``: its objects would
    otherwise sit in every garbage collection the analyses make; the threads are set by OMP_NUM_THREADS."""
    import asgnas

    tree = os.environ["PYTHONPATH"]
    if not Path(asgnas.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"asgnas imported from {asgnas.__file__}, not from {tree}")
    from asgnas.cli import _register_all_passes

    _register_all_passes()
    for group in ([name for name in paths if name not in ZOO], [name for name in paths if name in ZOO]):
        if group:  # warm-up, untimed: the smallest model of each kind (the zoo's: train, i.e. torch, too)
            smallest = min(group, key=lambda name: os.path.getsize(paths[name]))
            time_model(paths[smallest], smallest in ZOO)
    return {name: time_model(path, name in ZOO) for name, path in paths.items()}


def time_model(path: str, train: bool) -> dict[str, float]:
    from asgnas.ir import load_model

    loads = []
    for _ in range(LOAD_REPEAT):
        gc.collect()
        start = time.perf_counter()
        model = load_model(path)
        loads.append(time.perf_counter() - start)
    out = {"load": min(loads), "search-space": pass_seconds(model, "search-space", "search-space")}
    out["load + search-space"] = out["load"] + out["search-space"]
    out["construct-subnet"] = pass_seconds(load_model(path), f"search-space,{ZERO},construct-subnet", "zero-groups")
    if train:
        out["train"] = pass_seconds(load_model(path), f"search-space,{TRAIN}", "search-space")
    return out


def pass_seconds(model: Any, pipeline: str, after: str) -> float:
    """One PassManager run of ``pipeline``: the seconds of the passes after the last one named ``after`` (or of
    ``after`` itself when it is the last)."""
    from asgnas.passes import PassContext, PassManager, parse_pipeline

    gc.collect()
    return seconds_after(PassManager(parse_pipeline(pipeline)).run(model, PassContext(quiet=True))["passes"], after)


def seconds_after(entries: list[dict[str, Any]], after: str) -> float:
    """The seconds of the report's pass entries after the last one named ``after`` (``after``'s own when last)."""
    last = max(i for i, entry in enumerate(entries) if entry["name"] == after)
    timed = entries[last + 1:] or entries[last:]
    return sum(entry["seconds"] for entry in timed)


if __name__ == "__main__":
    main()
