"""Helpers shared by the erasing / hierarchy / erase-construction tests (no tests here).

``zoo_onnx(name, exporter)`` exports an ``asgnas.zoo`` super-network (tiny config, norms randomised so that the
exporters cannot deduplicate equal BN tensors) once per process and returns the path; ``load(path)`` lifts it.
``reference_validity`` is a from-scratch (non-incremental) statement of the oracle's validity rule, used to
cross-check the incremental oracle.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

_TESTS = Path(__file__).resolve().parents[1]
for _p in (str(_TESTS), str(_TESTS.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from models import ModelCase, export_onnx, randomize_norms  # noqa: E402

from asgnas.ir import Model, load_model  # noqa: E402
from asgnas.passes.erasing import ErasingAnalysis  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="asgnas_erasing_tests_"))


class DartsTwoCells(torch.nn.Module):
    """The zoo's DARTS cells, two of them (normal, then reduction), 2 intermediate nodes each: the mixed-edge
    structure of ``DartsSuperNet`` at a size the exporters handle in a second (the full tiny net takes ~10 s)."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        from asgnas.zoo.darts import Cell

        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 3 * c, 3, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(3 * c))
        self.cell1 = Cell(3 * c, 3 * c, c, reduction=False, reduction_prev=False, steps=2)
        self.cell2 = Cell(3 * c, 2 * c, 2 * c, reduction=True, reduction_prev=False, steps=2)
        self.fc = torch.nn.Linear(4 * c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        s1 = self.cell1(s, s)
        s2 = self.cell2(s, s1)
        return self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(s2, 1), 1))

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return torch.randn(batch, 1, 8, 8)


def zoo_module(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "darts_cells":
        net = DartsTwoCells()
    else:
        from asgnas.zoo import build

        net = build(name, "tiny")
    return randomize_norms(net).eval()


@functools.lru_cache(maxsize=None)
def zoo_onnx(name: str, exporter: str = "legacy") -> Path:
    """Export a zoo super-network (legacy: dynamo=False, do_constant_folding=False, opset 17)."""
    net = zoo_module(name)
    case = ModelCase(name, build=lambda: net, inputs=lambda: (net.example_input(1),))
    return export_onnx(case, _DIR / f"{name}.{exporter}.onnx", exporter)


def export_module(module: torch.nn.Module, example: torch.Tensor, name: str, exporter: str = "legacy",
                  dynamic_batch: bool = False) -> Path:
    torch.manual_seed(0)
    module = randomize_norms(module).eval()
    case = ModelCase(name, build=lambda: module, inputs=lambda: (example,), dynamic_batch=dynamic_batch)
    return export_onnx(case, _DIR / f"{name}.{exporter}.onnx", exporter)


def load(path: Path) -> Model:
    return load_model(path)


def dynamo_available() -> bool:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def reference_validity(analysis: ErasingAnalysis, ids: list[int]) -> bool:
    """Batch restatement of hierarchy.py's rule: starve forward in topological order, dead code backward,
    then check outputs and zero contributions into surviving readers."""
    segs = analysis.graph.segments
    by_id = analysis.by_id()
    erased = {analysis.segment_of(by_id[i]).index for i in ids}
    aux_joint = {
        s.index for s in segs
        if s.kind == "joint" and (plan := analysis.graph.concat_plans.get(s.nodes[0])) is not None
        and any(t.aux for t in plan.touches)
    }
    removed_f: set[int] = set()
    zero: dict[int, bool] = {}

    def contrib_zero(p: int, c: int) -> bool:
        return zero[p] and (c not in aux_joint or p in erased)

    for s in segs:  # producers always have smaller indices
        if s.index in erased:
            removed_f.add(s.index)
            zero[s.index] = True
            continue
        dead = [(p, k) for p, k in s.in_edges if p in removed_f]
        if not dead:
            continue
        producers = {p for p, _ in s.in_edges}
        all_dead = not s.reads_input and all(p in removed_f for p in producers)
        starved = s.kind != "joint" or any(k != "erasable" for _, k in dead) or all_dead
        if not starved:
            continue
        removed_f.add(s.index)
        if any(k == "shape" or not contrib_zero(p, s.index) for p, k in dead):
            zero[s.index] = False
        elif any(k == "absorb" for _, k in dead):
            zero[s.index] = True
        else:
            live = s.reads_input or any(p not in removed_f for p, k in s.in_edges if k != "shape")
            zero[s.index] = not live and s.zero_transparent
    removed = set(removed_f)
    for s in reversed(segs):
        if s.index in removed or s.feeds_output or not s.out_edges:
            continue
        if all(c in removed for c, _ in s.out_edges):
            removed.add(s.index)
    for x in removed_f:
        if segs[x].feeds_output:
            return False
        for c, _ in segs[x].out_edges:
            if c not in removed and not contrib_zero(x, c):
                return False
    return True


def random_valid_subset(oracle, ids: list[int], rng: np.random.Generator) -> list[int]:
    order = list(ids)
    rng.shuffle(order)
    oracle.reset()
    k = int(rng.integers(1, len(order) + 1))
    return [g for g in order[:k] if oracle.try_remove(g)]
