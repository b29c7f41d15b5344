"""``hierarchy``: parents/children between removal structures and the incremental validity oracle (spec 2.5-2.7)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_erasing_support import load, reference_validity, zoo_onnx  # noqa: E402

from asgnas.ir import lift  # noqa: E402
from asgnas.passes import PassManager, parse_pipeline  # noqa: E402
from asgnas.passes.erasing import analyze_erasing  # noqa: E402
from asgnas.passes.groups import Group  # noqa: E402
from asgnas.passes.hierarchy import HIERARCHY_KEY, HierarchyOracle, build_hierarchy, build_oracle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _by_conv(analysis) -> dict[str, Group]:
    """Group by the first conv/linear module its parameters belong to (``conv73`` -> the {72..75} structure)."""
    out = {}
    for group in analysis.groups:
        names = sorted({m.group(1) for p in group.params if (m := re.match(r"((?:conv|linear)\d+)\.", p.initializer))},
                       key=lambda n: int(re.sub(r"\D", "", n)))
        out[names[0]] = group
    return out


@pytest.fixture(scope="module")
def stacked():
    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    return model, analysis, build_hierarchy(analysis)


def test_stacked_unets_paper_choice_is_valid_and_kills_the_right_unet(stacked) -> None:
    model, analysis, hierarchy = stacked
    g = _by_conv(analysis)
    choice = [g["conv73"].id, g["conv14"].id, g["conv50"].id, g["conv63"].id]  # spec 2.7 H2SPG result
    oracle = hierarchy.oracle()
    assert oracle.is_valid(choice)
    gone = oracle.removed_segments(choice)
    gone_nodes = {n for s in analysis.graph.segments if s.id in gone for n in s.nodes}
    right = {n.name for n in model.graph if re.search(r"conv(39|4\d|5\d|6\d|7[0-5])|bn(40|47|65|75)", n.name)}
    assert right <= gone_nodes  # the whole right U-Net (39..75), its Adds and Resizes too
    assert {"/Add_3", "/Add_4", "/Add_5", "/Resize_3", "/Resize_4", "/Resize_5"} <= gone_nodes
    assert {"/MaxPool_2", "/conv14/Conv", "/conv15/Conv", "/Resize"} <= gone_nodes  # deepest left level
    assert "/Add_6" not in gone_nodes and "/Add" not in gone_nodes  # bypassed at construction, not removed
    # all six together would leave the head without input
    assert not oracle.is_valid([gr.id for gr in analysis.removable()])
    assert "graph output" in oracle.why_invalid([gr.id for gr in analysis.removable()])


def test_stacked_unets_hierarchy(stacked) -> None:
    _, analysis, hierarchy = stacked
    g = _by_conv(analysis)
    ids = {name: gr.id for name, gr in g.items()}
    # erasing {72..75} makes every other right-U-Net structure dead code
    assert set(hierarchy.kills[ids["conv73"]]) == {ids["conv39"], ids["conv42"], ids["conv45"], ids["conv50"],
                                                    ids["conv63"]}
    assert set(g["conv73"].children) == {ids["conv39"], ids["conv63"]}  # transitive reduction
    assert g["conv63"].parents == [ids["conv73"]]
    assert ids["conv50"] in g["conv63"].children and g["conv50"].parents == [ids["conv63"]]
    # erasing {26..33} kills the left U-Net's deeper levels, including the removable {13,14,15,19}
    assert ids["conv14"] in hierarchy.kills[ids["conv26"]]
    assert hierarchy.kills[ids["conv14"]] == []  # add20 survives on conv12
    summary = hierarchy.summary()
    assert summary["max_depth"] == 3 and ids["conv36"] in summary["roots"]


def test_try_remove_commits_only_valid_and_changes_nothing_otherwise(stacked) -> None:
    _, analysis, hierarchy = stacked
    g = _by_conv(analysis)
    oracle = hierarchy.oracle()
    assert oracle.try_remove(g["conv36"].id)  # left output branch
    state = (list(oracle._state), list(oracle._zero), list(oracle._live_consumers), list(oracle._dead_inputs))
    assert not oracle.try_remove(g["conv73"].id)  # with the left one gone, the head would starve
    assert "graph output" in oracle.last_reason
    assert state == (list(oracle._state), list(oracle._zero), list(oracle._live_consumers), list(oracle._dead_inputs))
    assert oracle.removed == [g["conv36"].id]
    assert not oracle.try_remove(g["conv0"].id) and "not removable" in oracle.last_reason
    assert oracle.is_valid([g["conv73"].id])  # absolute: ignores what is committed ...
    assert oracle.removed == [g["conv36"].id]  # ... and leaves it alone
    oracle.reset()
    assert oracle.removed == [] and oracle.try_remove(g["conv73"].id)


def test_protocol_of_the_optimizer() -> None:
    from asgnas.optim.param_groups import ValidityOracle as OracleProtocol

    analysis = analyze_erasing(load(zoo_onnx("demosupnet", "legacy")))
    assert isinstance(build_hierarchy(analysis).oracle(), OracleProtocol)


def test_demosupnet_bridge_and_concat() -> None:
    model = load(zoo_onnx("demosupnet", "legacy"))
    analysis = analyze_erasing(model)
    by_conv = {p.initializer.split(".")[0]: g for g in analysis.groups for p in g.params[:1]}
    oracle = build_hierarchy(analysis).oracle()
    conv7 = by_conv["conv7"]
    assert not conv7.removable and not oracle.try_remove(conv7.id)
    # even structurally: the only input->output path runs through it
    reason = oracle.check_segments([conv7.space])
    assert reason and "graph output" in reason
    # the Concat keeps its AvgPool operand: both parameterised operands may go
    assert oracle.is_valid([by_conv["conv2"].id, by_conv["conv3"].id])
    assert oracle.is_valid([by_conv["conv2"].id, by_conv["conv3"].id, by_conv["conv6"].id, by_conv["conv8"].id])
    assert set(by_conv["conv6"].children) == {by_conv["conv2"].id, by_conv["conv3"].id}


def test_residual_blocks_keep_the_identity_path() -> None:
    """SuperResNet: a whole residual branch may go; all kernel branches without the tail may not (the starved
    tail outputs BN's beta / conv bias into the residual Add)."""
    analysis = analyze_erasing(load(zoo_onnx("superresnet", "legacy")))
    oracle = build_hierarchy(analysis).oracle()
    blocks: dict[str, dict[str, int]] = {}
    for group in analysis.removable():
        m = re.match(r"blocks\.(\d+)\.(branches|tail|shortcut)", group.params[0].initializer)
        blocks.setdefault(m.group(1), {}).setdefault(m.group(2), []).append(group.id)
    for block, parts in blocks.items():
        branches, (tail,) = parts["branches"], parts["tail"]
        assert oracle.is_valid([tail]), block
        assert set(branches) <= set(build_hierarchy(analysis).kills[tail])
        assert oracle.is_valid(branches[:2])
        assert not oracle.is_valid(branches)
        assert "starved" in oracle.why_invalid(branches)
        assert oracle.is_valid(branches + [tail])


def test_channel_groups_of_one_space_cannot_all_go() -> None:
    analysis = analyze_erasing(load(zoo_onnx("demosupnet", "legacy")))
    offset = 1000
    prune = [Group(id=offset + i, kind="prune", nodes=["x"], params=[], space="conv1.out") for i in range(3)]
    prune += [Group(id=offset + 3 + i, kind="prune", nodes=["y"], params=[], space="conv8.out") for i in range(2)]
    oracle = HierarchyOracle(analysis, list(analysis.groups) + prune)
    assert oracle.try_remove(offset) and oracle.try_remove(offset + 1)
    assert not oracle.try_remove(offset + 2) and "zero-width" in oracle.last_reason
    assert oracle.try_remove(offset + 3)
    assert not oracle.is_valid([offset + 3, offset + 4])
    erase = analysis.removable()[0].id
    assert oracle.try_remove(erase) and oracle.removed == [offset, offset + 1, offset + 3, erase]


@pytest.mark.parametrize("name", ["stackedunets", "darts_cells", "superresnet", "regnet", "demosupnet"])
def test_incremental_oracle_agrees_with_batch_reference(name: str) -> None:
    """Random greedy sequences: every try_remove answer equals a from-scratch evaluation of the same set."""
    analysis = analyze_erasing(load(zoo_onnx(name, "legacy")))
    oracle = build_hierarchy(analysis).oracle()
    ids = [g.id for g in analysis.removable()]
    rng = np.random.default_rng(0)
    for _ in range(6):
        oracle.reset()
        order = list(ids)
        rng.shuffle(order)
        for gid in order:
            expected = reference_validity(analysis, oracle.removed + [gid])
            assert oracle.try_remove(gid) == expected, (name, oracle.removed, gid)
        k = int(rng.integers(1, len(ids) + 1))
        subset = list(rng.choice(ids, size=k, replace=False))
        assert oracle.is_valid(subset) == reference_validity(analysis, subset)


def test_hierarchy_pass_and_build_oracle() -> None:
    model = load(zoo_onnx("stackedunets", "legacy"))
    report = PassManager(parse_pipeline("erasing-groups,hierarchy")).run(model)
    assert report["hierarchy"]["num_removable"] == 6 and report["hierarchy"]["num_edges"] >= 5
    hierarchy = model.analyses[HIERARCHY_KEY]
    assert any(g.children for g in hierarchy.analysis.groups)
    oracle = build_oracle(model)
    assert oracle.try_remove(hierarchy.analysis.removable()[0].id)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_oracle", ROOT / "tools" / "bench_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_answers_every_query_on_a_10k_node_graph() -> None:
    """Its speed (target <= 1 ms per query) is measured by tools/bench_oracle.py, not asserted here."""
    bench = _bench_module()
    analysis = analyze_erasing(lift(bench.synthetic_model(10_000, seed=1)))
    assert len(analysis.graph.segments) > 3000 and len(analysis.removable()) > 1000
    oracle = build_hierarchy(analysis).oracle()
    order = [g.id for g in analysis.removable()]
    np.random.default_rng(1).shuffle(order)
    answers = [oracle.try_remove(gid) for gid in order]
    assert sum(answers) == len(oracle.removed)
    assert len(oracle.removed) > len(order) // 2


def test_hierarchy_pass_mirrors_onto_a_renumbered_search_space() -> None:
    """The oracle and the pass find erase groups by segment id, so renumbered copies work."""
    import dataclasses

    from asgnas.passes.groups import SearchSpace

    model = load(zoo_onnx("stackedunets", "legacy"))
    analysis = analyze_erasing(model)
    copies = [dataclasses.replace(g, id=g.id + 100, parents=[], children=[]) for g in analysis.groups]
    prune = [Group(id=i, kind="prune", nodes=[], params=[], space=f"ch{i % 2}") for i in range(4)]
    model.analyses["search_space"] = SearchSpace(prune + copies)
    PassManager(parse_pipeline("erasing-groups,hierarchy")).run(model)
    fresh = model.analyses["erasing_groups"]
    assert fresh.groups[0].id == 4  # ids follow the channel groups already stored
    copy_id = {g.space: g.id for g in copies}
    space_of = {g.id: g.space for g in fresh.groups}
    assert any(g.children for g in copies)
    for original in fresh.groups:
        copy = next(g for g in copies if g.space == original.space)
        assert copy.children == [copy_id[space_of[c]] for c in original.children]
        assert copy.parents == [copy_id[space_of[p]] for p in original.parents]
    oracle = build_oracle(model)  # over the search space: channel ids 0..3, erase ids 100..
    assert oracle.try_remove(0) and not oracle.try_remove(2) and oracle.try_remove(copies[3].id)
