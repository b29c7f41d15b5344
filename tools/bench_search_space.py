"""Benchmark: ``search-space`` time vs Torch-Pruning's ``DependencyGraph.build_dependency`` on the same nets.

    .venv-sweep/bin/pip install torch-pruning   # into the sweep venv (torchvision), never a project dependency
    .venv-sweep/bin/python tools/bench_search_space.py [--models resnet50,densenet121] [--repeat 3]

Ours runs from the ONNX file (reading and lifting included, reported beside the analysis); Torch-Pruning's from
the torch module (its forward trace included), both best of ``--repeat`` in this run. Also times a 24-layer
transformer encoder (``torch.nn.TransformerEncoder``, d=256) and, for linear growth, synthetic chains of
10k/30k/100k nodes (ours only, best of ``--repeat`` too).
Target (issue 3): ours <= half of Torch-Pruning's time; linear growth in node count.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from asgnas.ir import load_model  # noqa: E402
from asgnas.passes.search_space import analyze_search_space  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        gc.collect(0)  # as for ours: the young objects it left are traversed inside the timing
        times.append(time.perf_counter() - start)
    return min(times)


def ours(path: str, repeat: int) -> tuple[float, float]:
    """Best of ``repeat`` runs of load + analysis: (load s, analysis s) of the fastest run."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        model = load_model(path)
        loaded = time.perf_counter()
        analyze_search_space(model)
        gc.collect(0)  # the analysis pauses the cyclic GC: its deferred first pass is part of the cost
        runs.append((loaded - start, time.perf_counter() - loaded))
        del model
    return min(runs, key=sum)


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name == "transformer24":
        layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
        return torch.nn.TransformerEncoder(layer, 24, enable_nested_tensor=False).eval(), torch.randn(1, 64, 256)
    import torchvision

    return getattr(torchvision.models, name)(weights=None).eval(), torch.randn(1, 3, 224, 224)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,densenet121,transformer24")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="10000,30000,100000")
    args = parser.parse_args()
    import torch_pruning as tp

    import bench_ir

    torch.backends.mha.set_fastpath_enabled(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            net, x = build(name)
            path = str(Path(tmp) / f"{name}.onnx")
            with torch.no_grad():
                torch.onnx.export(net, (x,), path, dynamo=False, do_constant_folding=False, opset_version=17)
            load, analysis = ours(path, args.repeat)
            theirs = best(lambda: tp.DependencyGraph().build_dependency(net, example_inputs=x), args.repeat)
            nodes = len(load_model(path).graph)
            rows.append((name, nodes, load, analysis, theirs))
            total = load + analysis
            print(f"{name}: {nodes} nodes, asgnas {total:.3f} s (load {load:.3f} + analysis {analysis:.3f}), "
                  f"Torch-Pruning {theirs:.3f} s, ratio {total / theirs:.2f}", flush=True)
        for size in (int(s) for s in args.sizes.split(",")):
            path = bench_ir.synthetic_chain(size, str(Path(tmp) / f"chain{size}.onnx"))
            load, analysis = ours(path, args.repeat)
            rows.append((f"chain-{size}", size, load, analysis, None))
            print(f"chain-{size}: asgnas {load + analysis:.2f} s ({1e6 * (load + analysis) / size:.1f} us/node)",
                  flush=True)
    print("\n| model | nodes | asgnas s (load + analysis) | us/node | Torch-Pruning s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, nodes, load, analysis, theirs in rows:
        total = load + analysis
        ratio = f"{total / theirs:.2f}" if theirs else "-"
        print(f"| {name} | {nodes} | {total:.3f} ({load:.3f} + {analysis:.3f}) | {1e6 * total / nodes:.0f} | "
              f"{'-' if theirs is None else f'{theirs:.3f}'} | {ratio} |")


if __name__ == "__main__":
    main()
