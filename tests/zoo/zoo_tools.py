"""Test helpers for asgnas.zoo: counting, legacy ONNX export, and a minimal
segment-graph builder (spec 2.3/2.4) used only to check the super-networks'
structure.  Deliberately independent of the rest of asgnas.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

# ---------------------------------------------------------------- counting


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one sample of ``x``.

    Conv: out_elems * (c_in / groups) * kh * kw; Linear: in * out.  Bias adds,
    BN, pools and element-wise ops are not counted (the usual convention).
    """
    total = 0

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += (out.numel() // out.shape[0]) * (m.in_channels // m.groups) * kh * kw
        else:
            total += (out.numel() // out.shape[-1] // out.shape[0]) * m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x[:1])
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total


# ---------------------------------------------------------------- export / run


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics/affine params so eval-mode BN is not ~identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set BN running stats to the batch statistics of ``x`` (one train-mode pass).

    The un-weighted DARTS sums grow without bound in eval mode when running
    stats are arbitrary (1e13 at paper size), which would drown the ONNX/torch
    comparison in float32 rounding; calibrated stats keep activations O(1),
    as after any real training.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass = exact batch stats
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def export_legacy(model: nn.Module, x: torch.Tensor, path: Path) -> onnx.ModelProto:
    """The export call the project uses (TorchScript exporter, opset 17, no folding)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False,
                          do_constant_folding=False, opset_version=17)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    return m


def ort_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


# ---------------------------------------------------------------- segment graph

ERASE_JOINTS = {"Add", "Sum", "Concat"}
STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class Segment:
    nodes: list[onnx.NodeProto]
    last: int = -1                                       # index of the last node among data nodes
    consumers: set[int] = field(default_factory=set)    # ids of consumer segments
    feeds_output: bool = False
    trainable: bool = False
    joint: bool = False

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(n.op_type for n in self.nodes)

    @property
    def modules(self) -> set[str]:
        """First path component of node names (``/conv26/Conv`` -> ``conv26``) for nodes with weights."""
        out = set()
        for n in self.nodes:
            parts = n.name.strip("/").split("/")
            if len(parts) > 1:
                out.add(parts[0])
        return out


def segment_graph(model: onnx.ModelProto) -> tuple[list[Segment], list[int]]:
    """Spec 2.3 on an ONNX graph: returns (segments, ids of segments fed by the graph input).

    Constant side-chains (Constant nodes and anything computed only from
    constants/initializers, e.g. Resize scales or Slice bounds) are not data
    flow and are dropped first, as spec 2.1 requires.
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    data = {i.name for i in g.input if i.name not in inits}
    data_nodes: list[onnx.NodeProto] = []
    for n in g.node:  # ONNX nodes are topologically sorted
        if any(i in data for i in n.input):
            data_nodes.append(n)
            data.update(n.output)
    consumers: dict[str, list[int]] = {}
    for k, n in enumerate(data_nodes):
        for i in n.input:
            if i in data:
                consumers.setdefault(i, []).append(k)
    outputs = {o.name for o in g.output}
    n_data_in = [sum(i in data for i in n.input) for n in data_nodes]

    def is_joint(k: int) -> bool:
        return n_data_in[k] >= 2

    def cons(k: int) -> list[int]:
        return [c for o in data_nodes[k].output for c in consumers.get(o, [])]

    seg_of: dict[int, int] = {}
    segments: list[Segment] = []
    start_of: dict[int, int] = {}
    graph_in = {i.name for i in g.input if i.name not in inits}
    seeds = sorted({c for i in graph_in for c in consumers.get(i, [])})
    queue = list(seeds)
    seen = set(seeds)
    while queue:
        u = queue.pop(0)
        path = [u]
        if not is_joint(u):
            while True:
                cur = path[-1]
                nxt = cons(cur)
                if len(nxt) != 1 or is_joint(nxt[0]) or any(o in outputs for o in data_nodes[cur].output):
                    break
                path.append(nxt[0])
        sid = len(segments)
        start_of[u] = sid
        for k in path:
            assert k not in seg_of, f"node {data_nodes[k].name} in two segments"
            seg_of[k] = sid
        last = path[-1]
        seg = Segment([data_nodes[k] for k in path], last=last, joint=is_joint(u))
        seg.feeds_output = any(o in outputs for o in data_nodes[last].output)
        seg.trainable = any(i in inits and not i.endswith(STAT_SUFFIXES)
                            for k in path for i in data_nodes[k].input)
        segments.append(seg)
        for c in cons(last):
            if c not in seen:
                seen.add(c)
                queue.append(c)
    assert len(seg_of) == len(data_nodes), "every data node must land in exactly one segment"
    for seg in segments:
        seg.consumers = {start_of[c] for c in cons(seg.last)}
    return segments, [start_of[s] for s in seeds]


def is_gezig(segments: list[Segment], seg: Segment) -> bool:
    """Spec 2.4: trainable, every consumer an erase-joint (Add/Sum/Concat), not feeding the output."""
    return (seg.trainable and not seg.feeds_output and bool(seg.consumers)
            and all(segments[c].joint and segments[c].ops[0] in ERASE_JOINTS for c in seg.consumers))
