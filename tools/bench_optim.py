"""Benchmark of asgnas.optim: one H2SPG step in the projection phase vs torch.optim.SGD(momentum=0.9).

Cases (synthetic tensors, no torchvision needed):

* ResNet-50 parameter set (161 tensors, 25.56M values): one group per output channel of every conv
  (conv weight row + BN gamma + BN beta), ~26.6k groups, target 50%;
* 12-layer transformer (d=768, ffn 3072, 85M values): one group per FFN neuron (fc1 row + bias) and per
  attention head (its q, k, v rows + biases), ~37k groups, target 50%;
* the hierarchical search alone over 10,000 groups with a trivial validity oracle.

Gradients are fixed random tensors, so only optimizer time is measured.  SGD and H2SPG steps are
interleaved and the median of the repeats is reported, because shared machines are noisy.  The ratio is
against torch's default SGD on CPU (``foreach=False``: one tensor at a time, ``buf.mul_(m).add_(g)`` then
``p.add_(buf, alpha=-lr)``); SGD with ``foreach=True`` is timed in the same loop for comparison.  After the
projection-phase repeats every redundant group is forced to zero and the step is timed again (the phase
after ``hard_zero_step``).
Run: ``python tools/bench_optim.py [--quick] [--threads N]``.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from asgnas.optim import H2SPG, ParamGroup, ParamSlice  # noqa: E402
from asgnas.optim.hybrid import HybridSparseOptimizer  # noqa: E402


def resnet50_convs() -> list[tuple[tuple[int, int, int, int], int]]:
    """(conv weight shape, residual block index or -1) for the 53 convs: -1 = stem or projection shortcut."""
    convs: list[tuple[tuple[int, int, int, int], int]] = [((64, 3, 7, 7), -1)]
    cin, block = 64, 0
    for mid, out, n in [(64, 256, 3), (128, 512, 4), (256, 1024, 6), (512, 2048, 3)]:
        for b in range(n):
            convs += [((mid, cin, 1, 1), block), ((mid, mid, 3, 3), block), ((out, mid, 1, 1), block)]
            if b == 0:
                convs.append(((out, cin, 1, 1), -1))
            cin, block = out, block + 1
    return convs


def make_resnet50(gen: torch.Generator, blocks: bool = False) -> tuple[list[torch.nn.Parameter], list[ParamGroup]]:
    """161 tensors: conv weights, BN gamma/beta, fc.  Channel groups (DHSPG style: conv row + gamma + beta),
    or with ``blocks=True`` one whole-tensor group per residual branch (its 3 convs and BNs, an H2SPG removal
    structure; stem, shortcuts and fc ungrouped)."""
    params: list[torch.nn.Parameter] = []
    groups: list[ParamGroup] = []
    branch: dict[int, list[ParamSlice]] = {}
    for wshape, block in resnet50_convs():
        w = torch.nn.Parameter(torch.randn(wshape, generator=gen) * 0.05)
        gamma = torch.nn.Parameter(1.0 + 0.1 * torch.randn(wshape[0], generator=gen))
        beta = torch.nn.Parameter(0.1 * torch.randn(wshape[0], generator=gen))
        params += [w, gamma, beta]
        if not blocks:
            for c in range(wshape[0]):
                groups.append(ParamGroup(len(groups), [ParamSlice(w, 0, [c]), ParamSlice(gamma, 0, [c]),
                                                       ParamSlice(beta, 0, [c])]))
        elif block >= 0:
            branch.setdefault(block, []).extend([ParamSlice(w), ParamSlice(gamma), ParamSlice(beta)])
    groups += [ParamGroup(b, sl) for b, sl in sorted(branch.items())]
    params.append(torch.nn.Parameter(torch.randn(1000, 2048, generator=gen) * 0.01))
    params.append(torch.nn.Parameter(torch.zeros(1000)))
    return params, groups


def make_transformer(gen: torch.Generator, layers: int = 12, d: int = 768, ffn: int = 3072, heads: int = 12
                     ) -> tuple[list[torch.nn.Parameter], list[ParamGroup]]:
    params: list[torch.nn.Parameter] = []
    groups: list[ParamGroup] = []
    hd = d // heads

    def P(*shape: int, scale: float = 0.02) -> torch.nn.Parameter:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * scale)
        params.append(p)
        return p

    params.append(torch.nn.Parameter(torch.randn(30522, d, generator=gen) * 0.02))  # embedding, ungrouped
    for _ in range(layers):
        qkv_w, qkv_b = P(3 * d, d), P(3 * d)
        P(d, d), P(d)                               # attention output projection (consumer side)
        P(d, scale=1.0), P(d)                       # LayerNorm 1
        fc1_w, fc1_b = P(ffn, d), P(ffn)
        P(d, ffn), P(d)                             # fc2 (consumer side)
        P(d, scale=1.0), P(d)                       # LayerNorm 2
        for h in range(heads):
            rows = [part * d + h * hd + i for part in range(3) for i in range(hd)]
            groups.append(ParamGroup(len(groups), [ParamSlice(qkv_w, 0, rows), ParamSlice(qkv_b, 0, rows)]))
        for j in range(ffn):
            groups.append(ParamGroup(len(groups), [ParamSlice(fc1_w, 0, [j]), ParamSlice(fc1_b, 0, [j])]))
    return params, groups


def clone_params(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


_NOT_PASSES = {"aten::view", "aten::narrow", "aten::slice", "aten::as_strided", "aten::select", "aten::empty",
               "aten::split", "aten::detach", "aten::alias", "aten::lift_fresh"}


def pass_census(step, n_values: int) -> tuple[float, int, dict[str, float]]:
    """Element-wise passes per parameter value in one step: every top-level aten op counts the numel of its
    largest operand (views and allocations excluded).  Returns (passes, op calls, passes per op name)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    work: collections.Counter = collections.Counter()
    calls = 0
    for ev in prof.events():
        if not ev.name.startswith("aten::") or ev.name in _NOT_PASSES:
            continue
        if ev.cpu_parent is not None and ev.cpu_parent.name.startswith("aten::"):
            continue  # counted in the op that called it
        work[ev.name] += max([math.prod(s) for s in ev.input_shapes if s] or [0])
        calls += 1
    per_op = {k: v / n_values for k, v in work.items() if v / n_values >= 0.005}
    return sum(work.values()) / n_values, calls, per_op


def bench_step(name: str, builder, repeats: int, lr: float = 0.01, census: bool = False) -> float:
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    params, groups = builder(gen)
    ref = clone_params(params)
    ref_fe = clone_params(params)
    for p, q, r in zip(params, ref, ref_fe):
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        q.grad = p.grad.clone()
        r.grad = p.grad.clone()
    sgd = torch.optim.SGD(ref, lr=lr, momentum=0.9)  # CPU default: foreach=False
    sgd_fe = torch.optim.SGD(ref_fe, lr=lr, momentum=0.9, foreach=True)
    opt = H2SPG(params, groups, lr=lr, momentum=0.9, target_group_sparsity=0.5, warmup_steps=1,
                lmbda=1e-3)
    build = time.perf_counter() - t0
    n = sum(p.numel() for p in params)
    for _ in range(3):  # warm-up step, selection step (both allocate state), one hybrid step
        opt.step()
        sgd.step()
        sgd_fe.step()

    def interleaved(k: int) -> tuple[list[float], list[float], list[float]]:
        ts, tf, th = [], [], []
        for _ in range(k):
            a = time.perf_counter()
            sgd.step()
            b = time.perf_counter()
            opt.step()
            c = time.perf_counter()
            sgd_fe.step()
            d = time.perf_counter()
            ts.append(b - a)
            th.append(c - b)
            tf.append(d - c)
        return ts, tf, th

    ts, tf, th = interleaved(repeats)
    m = opt.metrics()
    ms, mf, mh = statistics.median(ts), statistics.median(tf), statistics.median(th)
    print(f"{name}: {len(params)} tensors, {n / 1e6:.2f}M values, {len(groups)} groups "
          f"({m['num_redundant']} redundant, {m['num_redundant_zero']} zero after {m['step']} steps; "
          f"setup {build:.1f}s)")
    print(f"  torch.optim.SGD(momentum=0.9) step: median {ms * 1e3:8.1f} ms   min {min(ts) * 1e3:8.1f} ms")
    print(f"  SGD(momentum=0.9, foreach=True)   : median {mf * 1e3:8.1f} ms   min {min(tf) * 1e3:8.1f} ms")
    print(f"  H2SPG projection-phase step     : median {mh * 1e3:8.1f} ms   min {min(th) * 1e3:8.1f} ms")
    print(f"  ratio H2SPG/SGD: median {mh / ms:.3f}   min/min {min(th) / min(ts):.3f}   "
          f"(vs foreach SGD: median {mh / mf:.3f})")
    if census:
        for label, fn in (("SGD", sgd.step), ("H2SPG", opt.step)):
            passes, calls, per_op = pass_census(fn, n)
            ops = ", ".join(f"{k[6:]} {v:.2f}" for k, v in sorted(per_op.items(), key=lambda kv: -kv[1]))
            print(f"  census {label}: {passes:.2f} element-wise passes per value, {calls} op calls ({ops})")
    opt.force_zero_redundant()
    ts, _, tz = interleaved(max(3, repeats // 2))
    print(f"  after all redundant groups are zero: H2SPG median {statistics.median(tz) * 1e3:.1f} ms, "
          f"ratio {statistics.median(tz) / statistics.median(ts):.3f}")
    return mh / ms


class _TrivialOracle:
    """Accepts everything except every 10th id, so that the greedy walk also has to skip candidates."""

    def __init__(self) -> None:
        self.removed: set[int] = set()

    def reset(self) -> None:
        self.removed.clear()

    def try_remove(self, group_id: int) -> bool:
        if group_id % 10 == 9:
            return False
        self.removed.add(group_id)
        return True


def bench_search(n_groups: int = 10_000) -> float:
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(n_groups, 16, generator=gen))
    w.grad = torch.randn(n_groups, 16, generator=gen)
    groups = [ParamGroup(i, [ParamSlice(w, 0, [i])]) for i in range(n_groups)]
    t0 = time.perf_counter()
    opt = H2SPG([w], groups, lr=0.01, target_group_sparsity=0.5, warmup_steps=1, validity_oracle=_TrivialOracle())
    t1 = time.perf_counter()
    opt.step()  # warm-up step (scores)
    gs = opt.state["asgnas"]
    t2 = time.perf_counter()
    opt._select(gs)  # the hierarchical search alone
    t3 = time.perf_counter()
    print(f"hierarchical search: {n_groups} groups, K={opt.target_count}, "
          f"selected {len(opt.redundant_group_ids)}: search {1e3 * (t3 - t2):.1f} ms "
          f"(optimizer construction {1e3 * (t1 - t0):.1f} ms)")
    return t3 - t2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, ResNet-50 and search only")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--census", action="store_true", help="also count element-wise passes per value (profiler)")
    ap.add_argument("--chunk-numel", type=int, default=None, help="values per chunk of the optimizer passes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.chunk_numel:
        HybridSparseOptimizer.chunk_numel = args.chunk_numel
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, "
          f"chunks of {HybridSparseOptimizer.chunk_numel} values")
    r = args.repeats or (5 if args.quick else 15)
    bench_step("ResNet-50 channel groups", make_resnet50, r, census=args.census)
    bench_step("ResNet-50 residual-branch groups", lambda g: make_resnet50(g, blocks=True), r, census=args.census)
    if not args.quick:
        bench_step("12-layer transformer neuron/head groups", make_transformer, max(3, r // 3), census=args.census)
    bench_search()


if __name__ == "__main__":
    main()
