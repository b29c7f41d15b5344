"""Benchmark: lift + shape-infer + lower of the asgnas IR vs onnx.load + infer_shapes + onnx.save.

    python tools/bench_ir.py [--sizes 10000,30000,100000] [--repeat 3]

For each model (ResNet-50 from tools/archs.py, synthetic chains of N nodes) it prints
- time of ``load_model`` + ``shape-infer`` + ``save_model`` as a ratio to ``onnx.load`` +
  ``onnx.shape_inference.infer_shapes`` + ``onnx.save`` on the same file, both measured in this run (best of
  ``--repeat``), and
- peak resident memory of each, measured in a fresh subprocess, above the interpreter's baseline, relative to the
  model's size on disk.
Targets (issue 2): time ratio <= 2x, peak memory <= 2x the file size, time linear in node count.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

OURS = """
from asgnas.ir import load_model, save_model
from asgnas.passes.shape_infer import infer_static
m = load_model({src!r}); infer_static(m); save_model(m, {dst!r})
"""
BASELINE = """
import onnx
m = onnx.load({src!r}); m = onnx.shape_inference.infer_shapes(m); onnx.save(m, {dst!r})
"""
PREAMBLE = "import os, threading, time, onnx, numpy\nimport asgnas.ir, asgnas.passes.shape_infer\n"
# The import high-water mark hides the work's, so a thread samples the resident size while the work runs;
# printed: peak minus the resident size right before the work, in KiB.
MEASURE = """
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024
peak, done = [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.001)
base = rss(); sampler = threading.Thread(target=sample); sampler.start()
{body}
done[0] = True; sampler.join(); print(max(peak[0], rss()) - base)
"""


def synthetic_chain(n_nodes: int, path: str) -> str:
    """A chain of Relu and MatMul-with-weight nodes: many nodes, realistic attribute-free ops."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(n_nodes):
        if i % 10 == 0:
            inits.append(numpy_helper.from_array(rng.random((16, 16), dtype=np.float32), f"w{i}"))
            nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"t{i}"], name=f"matmul_{i}"))
        else:
            nodes.append(helper.make_node("Relu", [prev], [f"t{i}"], name=f"relu_{i}"))
        prev = f"t{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def best_time(code: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        exec(code, {})
        best = min(best, time.perf_counter() - start)
    return best


def peak_kib(code: str) -> int:
    script = PREAMBLE + MEASURE.format(body=code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def bench(name: str, src: str, repeat: int, workdir: str) -> dict:
    dst = os.path.join(workdir, "out.onnx")
    ours_code, base_code = OURS.format(src=src, dst=dst), BASELINE.format(src=src, dst=dst)
    exec(ours_code, {})  # warm imports and caches for both
    ours, base = best_time(ours_code, repeat), best_time(base_code, repeat)
    size_kib = os.path.getsize(src) / 1024
    mem_ours, mem_base = peak_kib(ours_code), peak_kib(base_code)
    nodes = len(onnx.load(src, load_external_data=False).graph.node)
    return {"model": name, "nodes": nodes, "ours_s": ours, "onnx_s": base, "ratio": ours / base,
            "mem_ours_x_file": mem_ours / size_kib, "mem_onnx_x_file": mem_base / size_kib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    import archs

    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        resnet = archs.export(archs.resnet50(), torch.randn(1, 3, 224, 224), os.path.join(workdir, "r50.onnx"))
        rows.append(bench("resnet50", resnet, args.repeat, workdir))
        for size in (int(s) for s in args.sizes.split(",")):
            path = synthetic_chain(size, os.path.join(workdir, f"chain{size}.onnx"))
            rows.append(bench(f"chain-{size}", path, args.repeat, workdir))
    print(f"{'model':<14}{'nodes':>8}{'ours s':>9}{'onnx s':>9}{'ratio':>7}{'mem/file':>10}{'onnx mem/file':>15}"
          f"{'us/node':>9}")
    for r in rows:
        print(f"{r['model']:<14}{r['nodes']:>8}{r['ours_s']:>9.3f}{r['onnx_s']:>9.3f}{r['ratio']:>7.2f}"
              f"{r['mem_ours_x_file']:>10.2f}{r['mem_onnx_x_file']:>15.2f}{1e6 * r['ours_s'] / r['nodes']:>9.1f}")


if __name__ == "__main__":
    main()
