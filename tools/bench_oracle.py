"""Benchmark the erasing analysis, the hierarchy pass and the incremental validity oracle on a synthetic graph.

The graph (built directly with onnx.helper, no torch) is a stack of blocks, mixed at random:
- multi-branch residual: ``relu(x + b1(x) + b2(x) + b3(x))``, each branch conv-BN-relu-conv-BN (a removal structure);
- nested: ``x + tail(relu(b1(h) + b2(h)))`` with ``h = conv(x)``: erasing the tail kills the branches (hierarchy);
- concat: ``x + conv1x1(relu(BN(concat(b1(x), b2(x), x))))``: branches are Concat operands with auxiliary BN slices.
Tiny tensors (4 channels, 4x4) keep shape inference cheap; only the graph size matters here.

    .venv/bin/python tools/bench_oracle.py                 # ~10,000 nodes
    .venv/bin/python tools/bench_oracle.py --nodes 2000 --orders 2

Prints the analysis/hierarchy build times and per-query oracle latencies (mean / p50 / p99 / max) for
``try_remove`` over random greedy orders (the H2SPG access pattern) and ``is_valid`` of random subsets
(absolute checks: cost grows with the subset, so it is also given per id). Target: <= 1 ms per query.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asgnas.ir import lift  # noqa: E402
from asgnas.passes.erasing import analyze_erasing  # noqa: E402
from asgnas.passes.hierarchy import build_hierarchy  # noqa: E402

C, S = 4, 4


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}{self.k}"

    def init(self, base: str, shape: tuple[int, ...]) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(self.rng.standard_normal(shape).astype(np.float32) * 0.3, name))
        return name

    def op(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(f"{op.lower()}_out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, cin: int = C, cout: int = C, k: int = 3) -> str:
        return self.op("Conv", [x, self.init("w", (cout, cin, k, k)), self.init("b", (cout,))],
                       pads=[k // 2] * 4)

    def bn(self, x: str, c: int = C) -> str:
        var = self.name("var")
        self.inits.append(numpy_helper.from_array(self.rng.uniform(0.5, 1.5, c).astype(np.float32), var))
        return self.op("BatchNormalization", [x, self.init("g", (c,)), self.init("be", (c,)), self.init("m", (c,)),
                                              var])

    def branch(self, x: str) -> str:
        return self.bn(self.conv(self.op("Relu", [self.bn(self.conv(x))])))

    def adds(self, terms: list[str]) -> str:
        out = terms[0]
        for t in terms[1:]:
            out = self.op("Add", [out, t])
        return out

    def block(self, x: str) -> str:
        kind = self.rng.integers(0, 3)
        if kind == 0:
            return self.op("Relu", [self.adds([x] + [self.branch(x) for _ in range(3)])])
        if kind == 1:
            h = self.op("Relu", [self.conv(x)])
            inner = self.op("Relu", [self.adds([self.branch(h), self.branch(h)])])
            return self.op("Relu", [self.adds([x, self.bn(self.conv(inner))])])
        cat = self.op("Concat", [self.branch(x), self.branch(x), x], axis=1)
        mixed = self.conv(self.op("Relu", [self.bn(cat, 3 * C)]), cin=3 * C, k=1)
        return self.op("Relu", [self.adds([x, mixed])])


def synthetic_model(target_nodes: int, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    x = b.conv("input", cin=3)
    while len(b.nodes) < target_nodes - 3:
        x = b.block(x)
    pooled = b.op("GlobalAveragePool", [x])
    flat = b.op("Flatten", [pooled])
    out = b.op("Gemm", [flat, b.init("fc", (10, C)), b.init("fcb", (10,))], transB=1)
    b.nodes[-1].output[0] = "output"
    del out
    graph = helper.make_graph(
        b.nodes, "synthetic", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, S, S])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _stats(samples: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples)
    p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
    return (f"n={len(us)} mean={statistics.fmean(us):.1f}us p50={us[len(us) // 2]:.1f}us p99={p99:.1f}us "
            f"max={us[-1]:.1f}us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=3, help="random greedy orders to replay")
    parser.add_argument("--subsets", type=int, default=200, help="random is_valid queries")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    proto = synthetic_model(args.nodes, args.seed)
    model = lift(proto)
    t0 = time.perf_counter()
    analysis = analyze_erasing(model)
    t1 = time.perf_counter()
    hierarchy = build_hierarchy(analysis)
    t2 = time.perf_counter()
    oracle = hierarchy.oracle()
    t3 = time.perf_counter()
    removable = [g.id for g in analysis.removable()]
    print(f"graph: {len(model.graph)} nodes, {len(analysis.graph.segments)} segments, "
          f"{len(analysis.groups)} erase groups, {len(removable)} removable, "
          f"{sum(len(c) for c in hierarchy.children.values())} hierarchy edges")
    print(f"erasing-groups analysis: {(t1 - t0) * 1e3:.0f} ms; hierarchy: {(t2 - t1) * 1e3:.0f} ms; "
          f"oracle build: {(t3 - t2) * 1e3:.1f} ms")

    rng = np.random.default_rng(args.seed)
    tries: list[float] = []
    accepted = 0
    for _ in range(args.orders):
        order = list(removable)
        rng.shuffle(order)
        t = time.perf_counter()
        oracle.reset()
        reset_time = time.perf_counter() - t
        for gid in order:
            t = time.perf_counter()
            ok = oracle.try_remove(gid)
            tries.append(time.perf_counter() - t)
            accepted += ok
    print(f"try_remove (greedy over all removable, {args.orders} orders, {accepted} accepted): {_stats(tries)}")
    print(f"reset after a full greedy pass: {reset_time * 1e3:.2f} ms")

    checks: list[float] = []
    sizes = []
    for _ in range(args.subsets):
        k = int(rng.integers(1, max(2, len(removable) // 10)))
        ids = list(rng.choice(removable, size=k, replace=False))
        sizes.append(k)
        t = time.perf_counter()
        oracle.is_valid(ids)
        checks.append(time.perf_counter() - t)
    per_id = [c / k for c, k in zip(checks, sizes)]
    print(f"is_valid (random subsets of 1..{max(sizes)} ids): {_stats(checks)}; per id: {_stats(per_id)}")
    mean_ms = statistics.fmean(tries) * 1e3
    print(f"target <= 1 ms per try_remove: {'met' if mean_ms <= 1.0 else 'NOT met'} (mean {mean_ms:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
