"""Measurements behind the ``latency`` pass: the whole model under onnxruntime's profiler, and single-node models
of the width-carrying operators (Conv, Gemm, MatMul with a constant weight) at sampled weight widths, giving a
``WidthTable`` per node signature and weight axis with the kernel's block (the width multiple it does not pad).

A width-carrying node is described by its *signature*: op, input shape, weight shape, attributes; nodes with equal
signatures (ResNet's repeated blocks) are measured once. Widths are weight dimensions: axis 0 / 1 of the weight
(Conv: output channels / input channels per group; Gemm and MatMul: the weight's own axes).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from asgnas.ir import Model, Node, lower

TABLE_OPS = ("Conv", "Gemm", "MatMul")
#: kernels onnxruntime fuses a width-carrying node into (their time belongs to that node)
_FUSED_KERNELS = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "NhwcConv"}
_TIME_BUDGET_S = 0.03  # per single-node measurement: repeats fill this, within [3, 15]
_PROBE_STEP = 32  # block probes sit just below a multiple of this (or of the largest power of two that fits)


@dataclass(frozen=True)
class Signature:
    """What a width-carrying node's time depends on; ``key`` names it in the cache."""

    op: str
    x_shape: tuple[int, ...]  # the data input at full width, batch resolved
    w_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    bias: bool
    depthwise: bool

    @property
    def key(self) -> str:
        return json.dumps([self.op, self.x_shape, self.w_shape, self.attrs, self.bias, self.depthwise])


def _attr_items(node: Node) -> tuple[tuple[str, Any], ...]:
    items = []
    for name in sorted(node.attrs):
        value = node.attr(name)
        items.append((name, list(value) if isinstance(value, (list, tuple)) else value))
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in items)


def signature(node: Node, batch: int) -> Signature | None:
    """The node's signature, or None when it is not a width-carrying node with known shapes."""
    if node.op_type not in TABLE_OPS or len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    x, w = node.inputs[0], node.inputs[1]
    if w.const is None or x is None or x.shape is None or any(not isinstance(d, int) for d in x.shape[1:]):
        return None
    x_shape = tuple(d if isinstance(d, int) and d > 0 else batch for d in x.shape)
    w_shape = tuple(int(d) for d in w.const.array.shape)
    if node.op_type == "Gemm" and len(x_shape) != 2 or len(w_shape) != (2 if node.op_type != "Conv" else len(x_shape)):
        return None
    group = int(node.attr("group", 1)) if node.op_type == "Conv" else 1
    depthwise = group > 1 and group == x_shape[1] and w_shape[1] == 1 and w_shape[0] == group
    bias = len(node.inputs) > 2 and node.inputs[2] is not None
    return Signature(node.op_type, x_shape, w_shape, _attr_items(node), bias, depthwise)


def single_node_model(sig: Signature, d0: int, d1: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model of ``sig`` with weight dims (d0, d1) (depthwise: d0 channels in, out and groups; grouped:
    d0 a multiple of the fixed group count), with a random constant weight and its feed."""
    rng = np.random.default_rng(0)
    attrs = dict(sig.attrs)
    x_shape = list(sig.x_shape)
    if sig.op == "Conv":
        group = int(attrs.get("group", 1))
        if sig.depthwise:
            group, d1 = d0, 1
        elif group > 1:
            d0 = max(group, d0 // group * group)
        attrs["group"] = group
        x_shape[1] = d1 * group
        w_shape = [d0, d1, *sig.w_shape[2:]]
        out_dim = d0
    elif sig.op == "Gemm":
        w_shape = [d0, d1]
        x_shape[0 if attrs.get("transA", 0) else 1] = d1 if attrs.get("transB", 0) else d0  # K
        out_dim = d0 if attrs.get("transB", 0) else d1
    else:  # MatMul: x [..., K] @ w [K, N]
        w_shape = [d0, d1]
        x_shape[-1] = d0
        out_dim = d1
    initializers = [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")]
    inputs = ["x", "w"]
    if sig.bias:
        initializers.append(numpy_helper.from_array(rng.standard_normal(out_dim).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(sig.op, inputs, ["y"], name="n", **attrs)
    graph = helper.make_graph([node], "single", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto, {"x": rng.standard_normal(x_shape).astype(np.float32)}


@dataclass
class WidthTable:
    """A node's time (ms) against one weight dimension, the other at full width; ``block``: the kernel's width
    multiple (a width in between runs as fast as the next multiple up); ``narrowing_slows``: the block probes ran
    clearly slower one step below the widest probe (the kernel leaves its fast path, as onnxruntime's grouped conv
    below 16 channels per group: 2.3x at 8), which no interpolation between the table's widths shows."""

    full: int
    widths: list[int]
    ms: list[float]
    block: int = 1
    narrowing_slows: bool = False

    def at(self, width: int) -> float:
        padded = min(-(-max(width, 1) // self.block) * self.block, self.full)
        points = sorted((w, t) for w, t in zip(self.widths, self.ms) if w % self.block == 0 or w == self.full)
        return float(np.interp(padded, [w for w, _ in points], [t for _, t in points]))

    def to_json(self) -> dict[str, Any]:
        return {"full": self.full, "widths": self.widths, "ms": [round(t, 4) for t in self.ms], "block": self.block,
                "narrowing_slows": self.narrowing_slows}


#: a narrower probe this much slower than the wider one is a kernel leaving its fast path, not timing noise
_CLEARLY_SLOWER = 1.25


def per_group_unit(sig: Signature, axis: int) -> int:
    """Channels one step of weight dim ``axis`` adds: a grouped (not depthwise) conv's output channels go one per
    group (its groups stay equal), anything else one."""
    group = int(dict(sig.attrs).get("group", 1)) if sig.op == "Conv" else 1
    return group if axis == 0 and group > 1 and not sig.depthwise else 1


def _probe_plan(full: int) -> tuple[int, int, list[int]]:
    """``(hi, lo, steps)``: probe widths ``hi - m`` for m in ``steps`` against the line from ``lo`` to ``hi``.
    Small widths show the block best (one channel is a larger share of the time)."""
    step = _PROBE_STEP
    while step > 1 and 2 * step > full:
        step //= 2
    hi = min(full // step * step, 2 * step)
    return hi, hi - step, [1 << k for k in range(max(step.bit_length() - 1, 0))]


def _block(times: dict[int, float], hi: int, lo: int, steps: list[int]) -> int:
    """The smallest probe step m such that every width ``hi - m'`` (m' >= m) runs at least halfway from the padded
    time down to the line between ``lo`` and ``hi``: a width multiple the kernel does not pad. When ``lo`` runs
    slower than ``hi`` (onnxruntime's grouped conv leaves its blocked kernel for a generic one below 16 channels per
    group), only ``hi`` is a width the kernel likes."""
    span = hi - lo
    if times[lo] > times[hi]:
        return hi
    block = span
    for m in sorted(steps, reverse=True):
        w = hi - m
        expected = times[lo] + (times[hi] - times[lo]) * (w - lo) / span
        if times[w] > expected + 0.5 * max(times[hi] - expected, 0.0):
            break
        block = m
    return block


def measure_table(sig: Signature, axis: int, device: str, threads: int,
                  full_ms: float | None) -> tuple[WidthTable, int]:
    """The node's time against weight dim ``axis``; returns the table and the number of measurements made. The
    block probes run at batch 1 (the block is the kernel's, not the batch's) on the pass's ``threads`` (0: every
    core, onnxruntime's default; more threads also make the probes more sensitive to other processes): how the
    kernel splits its channel blocks over threads sets the width it likes (ResNet-18 on 2 AVX2 cores: block 8 on
    one thread, 16-32 on two, where 40, 56 or 80 channels run 1.1-1.3x slower per MAC than 32, 48 or 64); the
    table at the pass's batch and ``threads``."""
    full_dims = sig.w_shape[:2]
    full = full_dims[axis]
    count = 0

    def run(width: int, times: dict[int, float], of: Signature, run_threads: int) -> None:
        nonlocal count
        if width not in times:
            dims = list(full_dims)
            dims[axis] = width
            proto, feeds = single_node_model(of, dims[0], dims[1])
            times[width] = time_ms(proto, feeds, device, run_threads)
            count += 1

    probes: dict[int, float] = {}
    batch_first = not (sig.op == "Gemm" and dict(sig.attrs).get("transA", 0))  # Gemm transA: x is [K, M]
    probe_sig = replace(sig, x_shape=(1, *sig.x_shape[1:])) if batch_first else sig
    unit = per_group_unit(sig, axis)  # a grouped conv's output width moves by one channel per group
    hi, lo, steps = _probe_plan(full // unit)
    block, slows = 1, False
    if steps:
        for width in sorted({hi, lo, *(hi - m for m in steps)}):
            run(width * unit, probes, probe_sig, threads)
        block = _block({w // unit: t for w, t in probes.items()}, hi, lo, steps) * unit
        slows = probes[lo * unit] > _CLEARLY_SLOWER * probes[hi * unit]
    times: dict[int, float] = {full: full_ms} if full_ms is not None else {}
    if probe_sig == sig:
        times.update({w: t for w, t in probes.items() if w % block == 0})
    for fraction in (0.75, 0.5, 0.25):
        width = max(block, round(full * fraction / block) * block)
        if width < full:
            run(width, times, sig, threads)
    run(full, times, sig, threads)
    widths = sorted(times)
    return WidthTable(full, widths, [times[w] for w in widths], block, slows), count


def node_overhead_ms(device: str, threads: int, nodes: int = 64) -> float:
    """The executor's own time per node (ms): a chain of ``nodes`` Relu nodes on one float, less one node's run.
    What a slim model does not save however narrow its kernels get."""
    rng = np.random.default_rng(0)
    names = [f"t{i}" for i in range(nodes + 1)]
    chain = [helper.make_node("Relu", [names[i]], [names[i + 1]], name=f"n{i}") for i in range(nodes)]

    def model(of: list) -> onnx.ModelProto:
        graph = helper.make_graph(of, "chain", [helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info(of[-1].output[0], onnx.TensorProto.FLOAT, [1])])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        return proto

    feeds = {"t0": rng.standard_normal(1).astype(np.float32)}
    many, one = time_ms(model(chain), feeds, device, threads), time_ms(model(chain[:1]), feeds, device, threads)
    return max(many - one, 0.0) / (nodes - 1)


def layout_block(device: str, threads: int, widest: int = 64) -> int:
    """The narrowest width that keeps a chain of convs in the runtime's blocked layout: the narrowest power of two
    ``c`` for which conv(64 -> c) -> conv(c -> 64) gets no more layout reorders in onnxruntime's optimized graph
    than at full width (its NCHWc transform: 8 on AVX2, 16 on AVX-512; 1 where there is none, e.g. CUDA). A space
    kept narrower breaks the chain around it into reorders, which no single-node probe sees (StackedUnets with 2-6
    of 8 channels kept: 15 reorders, slower than the full model); wider widths are padded to the block, which the
    probes do see."""
    at_full = _reorders_in_chain(widest, device, threads)
    c = 1
    while c < widest and _reorders_in_chain(c, device, threads) > at_full:
        c *= 2
    return c


def _reorders_in_chain(width: int, device: str, threads: int) -> int:
    """Layout reorders in onnxruntime's optimized graph of conv(64 -> width) -> conv(width -> 64)."""
    import onnxruntime as ort

    from asgnas.runtime import providers

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (width, 64, 3, 3)), ("w2", (64, width, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="c2", pads=[1, 1, 1, 1])]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64, 8, 8])
    graph = helper.make_graph(nodes, "chain", [x], [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                              weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")  # the graph as it will run
        ort.InferenceSession(proto.SerializeToString(), options, providers=providers(device))
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return sum(node.op_type.startswith("Reorder") for node in optimized.graph.node)


def time_ms(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], device: str, threads: int) -> float:
    """Best of a few warm runs (ms): the minimum is what load from other processes disturbs least."""
    from asgnas.runtime import session

    sess = session(proto, device=device, threads=threads)
    sess.run(None, feeds)
    start = time.perf_counter()
    sess.run(None, feeds)
    first = time.perf_counter() - start
    times = [first]
    for _ in range(min(15, max(3, int(_TIME_BUDGET_S / max(first, 1e-6))))):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def profile_model(model: Model, batch: int, device: str, threads: int) -> tuple[float, dict[str, float], float]:
    """``(whole-model median ms, {IR node: fastest kernel ms}, unattributed kernel ms)``: the kernels from
    onnxruntime's profiler, the whole model's wall time from a session without it (profiling slows each run).

    onnxruntime renames the nodes it fuses or converts to its blocked layout (``<output>_nchwc``) and adds layout
    reorders of its own; kernels are credited to the IR node of the same name or output, a fused width-carrying
    kernel to the nearest Conv/Gemm/MatMul upstream, and the rest (reorders) stays unattributed.
    """
    import onnxruntime as ort

    from asgnas.runtime import median_run_seconds, model_feeds, providers, session

    feeds = model_feeds(model, seed=0, symbolic_dim=batch)
    plain = session(model, device=device, threads=threads)
    plain.run(None, feeds)
    once = median_run_seconds(plain, feeds, 1, warmup=0)
    total_ms = 1e3 * median_run_seconds(plain, feeds, min(10, max(3, int(2.0 / once))), warmup=0)
    del plain
    runs = min(5, max(3, int(1.0 / once)))  # a few seconds in all, even for a big model at batch 32
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(lower(model).SerializeToString(), options, providers=providers(device))
        for _ in range(runs + 1):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as handle:
            events = json.load(handle)
    per_run: dict[str, list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            key = (event["name"][: -len("_kernel_time")], event.get("args", {}).get("op_name", ""))
            per_run.setdefault(json.dumps(key), []).append(event["dur"] / 1e3)
    node_ms: dict[str, float] = {}
    unattributed = 0.0
    for key, durations in per_run.items():
        name, kernel = json.loads(key)
        ms = float(np.min(durations[-runs:]))  # the timed runs (a kernel runs once per run); the minimum, as load
        # from other processes lands on a few kernels of a run and would scale their share of a prediction
        node = _credited_node(model, name, kernel)
        if node is None:
            unattributed += ms
        else:
            node_ms[node] = node_ms.get(node, 0.0) + ms
    return total_ms, node_ms, unattributed


def _credited_node(model: Model, name: str, kernel: str) -> str | None:
    graph = model.graph
    node = graph.node_by_name(name)
    if node is None and name.endswith("_nchwc"):
        value = graph.values.get(name[: -len("_nchwc")])
        node = value.producer if value is not None else None
    if node is None:
        return None
    if kernel in _FUSED_KERNELS and node.op_type not in TABLE_OPS:
        upstream = _upstream_table_node(node)
        return upstream.name if upstream is not None else node.name
    return node.name


def _upstream_table_node(node: Node, hops: int = 4) -> Node | None:
    frontier = [node]
    for _ in range(hops):
        nxt = []
        for current in frontier:
            for value in current.inputs:
                producer = value.producer if value is not None else None
                if producer is None:
                    continue
                if producer.op_type in TABLE_OPS:
                    return producer
                nxt.append(producer)
        frontier = nxt
    return None
