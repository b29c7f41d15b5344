"""Segment-graph structure of the zoo exports (spec 2.3/2.4), checked with the
minimal segmenter in ``zoo_tools``: StackedUnets must reproduce the authors'
erasing dependency graph (spec 2.7); the other nets their designed candidates.
"""
from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
import torch

from asgnas.zoo import build
from zoo_tools import calibrate_bn, export_legacy, is_gezig, randomize_bn, segment_graph

C, B, R, M, U, A = "Conv", "BatchNormalization", "Relu", "MaxPool", "Resize", "Add"
HEAD = ("GlobalAveragePool", "Flatten", "Gemm")  # authors: GAP, squeeze, squeeze, linear

# Spec 2.7, segment -> (op types, consumers); keys are the trace ids of the segment's vertices.
STACKED_UNETS_SPEC: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "0-3": ((C, B, R, C), ("4-9", "add34")),
    "4-9": ((M, C, R, C, R, B), ("10-12", "add25")),
    "10-12": ((M, C, C), ("13-19", "add20")),
    "13-19": ((M, C, C, U), ("add20",)),
    "add20": ((A,), ("up24",)),
    "up24": ((U,), ("add25",)),
    "add25": ((A,), ("26-33",)),
    "26-33": ((C, C, B, R, U), ("add34",)),
    "add34": ((A,), ("35-38",)),
    "35-38": ((R, C, R, B), ("add76",)),
    "39-41": ((C, B, R), ("42-44", "add71")),
    "42-44": ((C, C, R), ("45-49", "add62")),
    "45-49": ((C, R, B, C, C), ("50-56", "add57")),
    "50-56": ((C, C, C, U), ("add57",)),
    "add57": ((A,), ("up61",)),
    "up61": ((U,), ("add62",)),
    "add62": ((A,), ("63-70",)),
    "63-70": ((C, C, B, R, U), ("add71",)),
    "add71": ((A,), ("72-75",)),
    "72-75": ((R, C, R, B), ("add76",)),
    "add76": ((A,), ("77-82",)),
    "77-82": (HEAD, ()),
}
STACKED_UNETS_GEZIGS = {"35-38", "72-75", "13-19", "26-33", "50-56", "63-70"}
# Torch module names (= trace ids of the weighted vertices) inside each GeZIG.
STACKED_UNETS_GEZIG_MODULES = [{"conv36", "bn38"}, {"conv73", "bn75"}, {"conv14", "conv15"},
                               {"conv26", "conv27", "bn28"}, {"conv50", "conv51", "conv52"},
                               {"conv63", "conv64", "bn65"}]


def _export(name: str, size: str, tmp_path: Path):
    torch.manual_seed(0)
    net = build(name, size)
    # Distinct BN values: the legacy exporter merges equal-valued initializers
    # (fresh BN gammas are all ones), which would hide parameters behind Identity.
    randomize_bn(net)
    calibrate_bn(net, net.example_input(8))
    return export_legacy(net, net.example_input(2), tmp_path / f"{name}.{size}.onnx")


@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_stacked_unets_matches_authors_segment_graph(size: str, tmp_path: Path) -> None:
    segs, seeds = segment_graph(_export("stackedunets", size, tmp_path))
    assert len(segs) == 22  # spec 2.7 enumerates 6 + 7 + 9 = 22 (its "21" miscounts)
    gezigs = [s for s in segs if is_gezig(segs, s)]
    assert len(gezigs) == 6
    assert sorted(map(sorted, (s.modules for s in gezigs))) == sorted(map(sorted, STACKED_UNETS_GEZIG_MODULES))

    got = nx.DiGraph()
    got.add_node("in", ops=("input",), gezig=False)
    for k, s in enumerate(segs):
        got.add_node(k, ops=s.ops, gezig=is_gezig(segs, s))
        got.add_edges_from((k, c) for c in s.consumers)
    got.add_edges_from(("in", k) for k in seeds)

    want = nx.DiGraph()
    want.add_node("in", ops=("input",), gezig=False)
    for key, (ops, consumers) in STACKED_UNETS_SPEC.items():
        want.add_node(key, ops=ops, gezig=key in STACKED_UNETS_GEZIGS)
        want.add_edges_from((key, c) for c in consumers)
    want.add_edges_from([("in", "0-3"), ("in", "39-41")])

    assert nx.is_isomorphic(got, want, node_match=lambda a, b: a == b)


def _reaches_output(segs, seeds, removed: set[int]) -> bool:
    stack, seen = [s for s in seeds if s not in removed], set()
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if segs[k].feeds_output:
            return True
        stack.extend(c for c in segs[k].consumers if c not in removed)
    return False


def test_demosupnet_has_the_paper_properties(tmp_path: Path) -> None:
    segs, seeds = segment_graph(_export("demosupnet", "tiny", tmp_path))
    by_module = {frozenset(s.modules): k for k, s in enumerate(segs) if s.modules}
    gezigs = {frozenset(s.modules) for s in segs if is_gezig(segs, s)}
    assert gezigs == {frozenset({"conv2"}), frozenset({"maxpool", "conv3"}),
                      frozenset({"conv6"}), frozenset({"conv8"})}
    conv1 = segs[by_module[frozenset({"conv1"})]]
    assert len(conv1.consumers) == 3  # Conv2, MaxPool, AvgPool: erasing it starves all three
    concat = {segs[c].ops for k in (by_module[frozenset({"conv2"})], by_module[frozenset({"maxpool", "conv3"})])
              for c in segs[k].consumers}
    assert concat == {("Concat",)}
    conv7 = by_module[frozenset({"conv7"})]
    assert not is_gezig(segs, segs[conv7])
    assert not _reaches_output(segs, seeds, {conv7})  # bridge
    for g in gezigs:  # each removal structure alone leaves a valid network
        assert _reaches_output(segs, seeds, {by_module[g]})


# Designed removal candidates of the tiny configs (segment rule of spec 2.4):
#  superresnet: 3 blocks x (3 kernel branches + residual tail) + 1 projection = 13
#  regnet:      6 residual tails + 1 projection = 7
#  darts:       14 edges x 4 weighted ops per cell x 3 cells = 168, plus in both
#               reduction cells 8 stride-2 skip FactorizedReduce edges x 3
#               (its two convs feed its Concat, its BN feeds the node Add) = 48,
#               plus the FactorizedReduce preprocessing of the cell after a
#               reduction (2 convs; its BN has many consumers) = 2  -> 218
@pytest.mark.parametrize("name,count", [("superresnet", 13), ("regnet", 7), ("darts", 218)])
def test_removal_candidate_counts(name: str, count: int, tmp_path: Path) -> None:
    segs, _ = segment_graph(_export(name, "tiny", tmp_path))
    assert sum(is_gezig(segs, s) for s in segs) == count
