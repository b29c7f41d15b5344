"""``hierarchy``: dependencies between removal structures, and the validity oracle (spec 2.5, 2.6).

Reads: ``model.analyses["erasing_groups"]`` (required: the analysis manager computes it when missing) and, when
present, the channel groups of ``model.analyses["search_space"]`` / ``["pruning_groups"]``.
Writes: ``Group.parents`` / ``Group.children`` of the erase groups (B is a child of A when erasing A alone removes
B: B's segment starves or becomes dead code; transitive reduction), and ``model.analyses["hierarchy"]`` =
``Hierarchy`` (``kills``: every group removed with A; ``oracle()``: a fresh ``HierarchyOracle``). Report key
``hierarchy``: edge counts and depth.

Validity of a removal set Z (spec 2.6, made exact so that construction reproduces the zeroed model):
1. R(Z) = Z, plus every segment *starved* (a joint whose erasable operands are all gone, any other segment one of
   whose operands is gone, or whose input shape is read from a removed tensor), plus every segment that is *dead
   code* (all its consumers removed and it produces no graph output); iterate to the fixed point.
2. Valid iff no graph output is produced by a starved/erased segment (every output still depends on a graph
   input), and every removed segment that still feeds a surviving joint contributes zero there in the zeroed
   model: an erased segment does (Z1); a starved one only if it maps zeros to zeros (a starved Conv with bias, a
   BatchNorm, a shape reader do not), and a starved one never into a Concat whose channel path needs auxiliary
   slices (its slices are not zeroed). Surviving non-joint multi-input vertices keep all their inputs (otherwise
   they are starved), every surviving Concat keeps >= 1 input, no survivor reads a removed tensor's shape, and a
   surviving Add/Sum/Sub left with one operand can become that operand (``erasing/bypass.py``: no Expand along
   dims that are not static).
3. Channel groups (``kind="prune"``): removing every group of one ``space`` is invalid (a zero-width tensor).

The oracle is incremental: removal states, starved/dead counters and an undo log live on the segment graph;
``try_remove`` propagates only through the segments whose state changes and checks only those, and rolls back
when the result is invalid. Precomputation is linear in the segment graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager, register_analysis
from asgnas.passes.base import Pass, PassContext, register_pass
from asgnas.passes.erasing import ANALYSIS_KEY, ErasingAnalysis
from asgnas.passes.erasing.segments import ABSORB, ERASABLE, SHAPE
from asgnas.passes.groups import Group

HIERARCHY_KEY = "hierarchy"

_NONE, _ERASED, _STARVED, _DEAD = 0, 1, 2, 3
_K_ERASABLE, _K_PLAIN, _K_ABSORB, _K_SHAPE = 0, 1, 2, 3
_KIND_CODE = {ERASABLE: _K_ERASABLE, ABSORB: _K_ABSORB, SHAPE: _K_SHAPE}


class _Static:
    """The segment graph as flat lists (shared by every oracle state built on it)."""

    def __init__(self, analysis: ErasingAnalysis) -> None:
        segments = analysis.graph.segments
        self.n = n = len(segments)
        self.ids = [s.id for s in segments]
        self.heads = [f"{s.nodes[0]} ({s.op})" for s in segments]
        self.in_edges: list[tuple[tuple[int, int], ...]] = []
        self.out_edges: list[tuple[tuple[int, int], ...]] = []
        self.producers: list[tuple[int, ...]] = []
        self.joint = [s.kind == "joint" for s in segments]
        self.aux_joint = [False] * n
        self.feeds_output = [s.feeds_output for s in segments]
        self.outputs = [s.outputs for s in segments]
        self.zero_transparent = [s.zero_transparent for s in segments]
        self.reads_input = [s.reads_input for s in segments]
        self.joint_inputs = [0] * n  # operands of a joint (distinct producers, +1 for graph inputs)
        self.consumers = [0] * n
        self.lone_keep_problems = analysis.graph.lone_keep_problems
        for seg in segments:
            edges = tuple((p, _KIND_CODE.get(k, _K_PLAIN)) for p, k in seg.in_edges)
            self.in_edges.append(edges)
            self.out_edges.append(tuple((c, _KIND_CODE.get(k, _K_PLAIN)) for c, k in seg.out_edges))
            self.producers.append(tuple(sorted({p for p, _ in edges})))
            self.consumers[seg.index] = len({c for c, _ in seg.out_edges})
            if seg.kind == "joint":
                # a joint starves when every operand is gone (a non-erasable one, Sub's left, starves it at once)
                self.joint_inputs[seg.index] = len(self.producers[-1]) + (1 if seg.reads_input else 0)
                plan = analysis.graph.concat_plans.get(seg.nodes[0])
                self.aux_joint[seg.index] = plan is not None and any(t.aux for t in plan.touches)


class HierarchyOracle:
    """Incremental validity checks over erase groups (segments) and channel groups (spaces).

    Implements the optimizer's protocol ``asgnas.optim.ValidityOracle``: ``reset()``, ``try_remove(group_id) ->
    bool`` (commit when the removal, together with everything committed so far, keeps the network valid; otherwise
    change nothing), and ``is_valid(ids)`` (absolute: does removing exactly ``ids`` keep it valid; the committed
    state is untouched).
    Group ids are the given groups' ids; an erase group is found by its ``space`` (segment id), so renumbered
    copies of the groups work as long as their ``space`` is kept.
    """

    def __init__(self, analysis: ErasingAnalysis, groups: Iterable[Group] | None = None,
                 _static: _Static | None = None) -> None:
        self.analysis = analysis
        self._s = _static or _Static(analysis)
        seg_index = {sid: i for i, sid in enumerate(self._s.ids)}
        self._segment_of: dict[int, int] = {}
        self._space_of: dict[int, str] = {}
        self._space_total: dict[str, int] = {}
        self._not_removable: dict[int, str] = {}
        self._groups: dict[int, Group] = {}
        for group in analysis.groups if groups is None else groups:
            if group.id in self._groups:
                raise AsgnasError(f"validity oracle: duplicate group id {group.id}")
            self._groups[group.id] = group
            if not group.removable:
                self._not_removable[group.id] = group.reason or "not removable"
            if group.kind == "erase":
                if group.space not in seg_index:
                    raise AsgnasError(f"validity oracle: erase group {group.id} names unknown segment {group.space}")
                self._segment_of[group.id] = seg_index[group.space]
            else:
                self._space_of[group.id] = group.space
                self._space_total[group.space] = self._space_total.get(group.space, 0) + 1
        n = self._s.n
        self._state = [_NONE] * n
        self._zero = [False] * n  # value in the zeroed model of a starved/erased segment is zero
        self._dead_inputs = [0] * n
        self._live_consumers = list(self._s.consumers)
        self._space_removed: dict[str, int] = {}
        self._log: list[tuple[list, Any, Any]] = []
        self._committed: list[int] = []
        self._committed_set: set[int] = set()
        self._scratch: HierarchyOracle | None = None
        self.last_reason = ""

    # --- protocol ---------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._rollback(0)
        self._committed.clear()
        self._committed_set.clear()

    def try_remove(self, group_id: int) -> bool:
        if group_id in self._committed_set:
            return True
        if group_id in self._not_removable:
            self.last_reason = f"group {group_id} is not removable: {self._not_removable[group_id]}"
            return False
        if group_id not in self._groups:
            raise KeyError(f"unknown group id {group_id}")
        mark = len(self._log)
        reason = self._apply([group_id])
        if reason:
            self._rollback(mark)
            self.last_reason = reason
            return False
        self._committed.append(group_id)
        self._committed_set.add(group_id)
        self.last_reason = ""
        return True

    def is_valid(self, ids: Collection[int]) -> bool:
        return self.why_invalid(ids) is None

    # --- extras -----------------------------------------------------------------------------------------------
    @property
    def removed(self) -> list[int]:
        """Committed group ids, in commit order."""
        return list(self._committed)

    def why_invalid(self, ids: Collection[int]) -> str | None:
        """None when removing exactly ``ids`` is valid, else the first violation in words."""
        for gid in ids:
            if gid not in self._groups:
                raise KeyError(f"unknown group id {gid}")
            if gid in self._not_removable:
                return f"group {gid} is not removable: {self._not_removable[gid]}"
        scratch = self._scratch_oracle()
        try:
            return scratch._apply(list(dict.fromkeys(ids))) or None
        finally:
            scratch._rollback(0)

    def check_segments(self, segment_ids: Collection[str]) -> str | None:
        """Structural check of erasing arbitrary segments (removable or not): None when valid, else why."""
        index = {sid: i for i, sid in enumerate(self._s.ids)}
        scratch = self._scratch_oracle()
        try:
            touched: list[int] = []
            for sid in segment_ids:
                scratch._erase(index[sid], touched)
            return scratch._violation(touched) or None
        finally:
            scratch._rollback(0)

    def removed_segments(self, ids: Collection[int] | None = None) -> set[str]:
        """Segments gone (erased, starved or dead code) when ``ids`` (default: the committed ones) are removed."""
        if ids is None:
            return {self._s.ids[i] for i, st in enumerate(self._state) if st != _NONE}
        scratch = self._scratch_oracle()
        try:
            scratch._apply(list(ids), check=False)
            return {scratch._s.ids[i] for i, st in enumerate(scratch._state) if st != _NONE}
        finally:
            scratch._rollback(0)

    # --- engine -----------------------------------------------------------------------------------------------
    def _scratch_oracle(self) -> "HierarchyOracle":
        if self._scratch is None:
            scratch = HierarchyOracle.__new__(HierarchyOracle)
            scratch.__dict__.update(self.__dict__)
            n = self._s.n
            scratch._state = [_NONE] * n
            scratch._zero = [False] * n
            scratch._dead_inputs = [0] * n
            scratch._live_consumers = list(self._s.consumers)
            scratch._space_removed = {}
            scratch._log = []
            scratch._committed, scratch._committed_set = [], set()
            scratch._scratch = None
            self._scratch = scratch
        return self._scratch

    def _set(self, array: list | dict, index: Any, value: Any) -> None:
        self._log.append((array, index, array[index] if not isinstance(array, dict) else array.get(index, 0)))
        array[index] = value

    def _rollback(self, mark: int) -> None:
        log = self._log
        while len(log) > mark:
            array, index, old = log.pop()
            array[index] = old

    def _apply(self, ids: list[int], check: bool = True) -> str:
        """Remove ``ids`` on top of the current state; returns the first violation ('' when valid)."""
        touched: list[int] = []
        for gid in ids:
            seg = self._segment_of.get(gid)
            if seg is not None:
                self._erase(seg, touched)
                continue
            space = self._space_of[gid]
            count = self._space_removed.get(space, 0) + 1
            self._set(self._space_removed, space, count)
            if check and count >= self._space_total[space]:
                return f"every channel group of space {space} would be removed (zero-width tensor)"
        return self._violation(touched) if check else ""

    def _erase(self, seg: int, touched: list[int]) -> None:
        state = self._state[seg]
        if state == _ERASED:
            return
        self._set(self._state, seg, _ERASED)
        if state == _NONE:
            self._set(self._zero, seg, True)
            self._enter_removed(seg, touched, forward=True)
        elif state == _STARVED:
            # now zero (and its auxiliary Concat slices zeroed too): starved readers may turn zero as well
            touched.append(seg)
            self._set(self._zero, seg, True)
            self._revalue(seg, touched)
        else:  # dead code already: its consumers are all gone, nothing propagates
            self._set(self._zero, seg, True)

    def _enter_removed(self, seg: int, touched: list[int], forward: bool) -> None:
        """``seg`` just left the live set (as erased/starved when ``forward``, else as dead code)."""
        s = self._s
        stack = [(seg, forward)]
        state = self._state
        while stack:
            cur, fwd = stack.pop()
            touched.append(cur)
            if fwd:
                for consumer, kind in s.out_edges[cur]:
                    if state[consumer] != _NONE:
                        continue
                    if kind == _K_ERASABLE:
                        count = self._dead_inputs[consumer] + 1
                        self._set(self._dead_inputs, consumer, count)
                        if count < s.joint_inputs[consumer]:
                            continue
                    self._set(state, consumer, _STARVED)
                    self._set(self._zero, consumer, self._value_zero(consumer))
                    stack.append((consumer, True))
            for producer in s.producers[cur]:
                if state[producer] != _NONE:
                    continue
                left = self._live_consumers[producer] - 1
                self._set(self._live_consumers, producer, left)
                if left == 0 and not s.feeds_output[producer]:
                    self._set(state, producer, _DEAD)
                    stack.append((producer, False))

    def _contrib_zero(self, producer: int, consumer: int) -> bool:
        """Does removed ``producer`` feed zeros into ``consumer`` in the zeroed model?"""
        if not self._zero[producer]:
            return False
        return not self._s.aux_joint[consumer] or self._state[producer] == _ERASED

    def _value_zero(self, seg: int) -> bool:
        """Is starved ``seg`` identically zero in the zeroed model (so dropping it changes nothing)?"""
        s = self._s
        state = self._state
        dead_any = False
        live_any = s.reads_input[seg]
        absorbed = False
        for producer, kind in s.in_edges[seg]:
            if state[producer] in (_ERASED, _STARVED):
                if kind == _K_SHAPE or not self._contrib_zero(producer, seg):
                    return False  # a survivor of a lost shape, or a non-zero constant flowing in
                dead_any = True
                absorbed = absorbed or kind == _K_ABSORB
            elif kind != _K_SHAPE:
                live_any = True
        if not dead_any:
            return False
        if absorbed:
            return True  # Mul / MatMul with a zero operand
        return not live_any and s.zero_transparent[seg]

    def _revalue(self, seg: int, touched: list[int]) -> None:
        stack = [seg]
        while stack:
            cur = stack.pop()
            for consumer, _ in self._s.out_edges[cur]:
                if self._state[consumer] != _STARVED:
                    continue
                zero = self._value_zero(consumer)
                if zero != self._zero[consumer]:
                    self._set(self._zero, consumer, zero)
                    touched.append(consumer)
                    stack.append(consumer)

    def _violation(self, touched: list[int]) -> str:
        s = self._s
        state = self._state
        for seg in touched:
            st = state[seg]
            if st not in (_ERASED, _STARVED):
                continue
            if s.feeds_output[seg]:
                what = "erased" if st == _ERASED else "starved"
                return f"graph output {s.outputs[seg][0]} would lose its input: segment {s.ids[seg]} " \
                       f"({s.heads[seg]}) is {what}"
            for consumer, _ in s.out_edges[seg]:
                if state[consumer] == _NONE and not self._contrib_zero(seg, consumer):
                    return (
                        f"segment {s.ids[seg]} ({s.heads[seg]}) is starved but not zero in the zeroed model, and "
                        f"segment {s.ids[consumer]} ({s.heads[consumer]}) still reads it"
                    )
                if state[consumer] == _NONE and (problem := self._lone_keep_problem(consumer)):
                    return problem
        return ""

    def _lone_keep_problem(self, joint: int) -> str:
        """Why the joint left with a single live operand could not be bypassed to it ('' when it could)."""
        problems = self._s.lone_keep_problems.get(joint)
        if not problems:
            return ""
        live = [p for p in self._s.producers[joint] if self._state[p] == _NONE]
        live += [-1] if self._s.reads_input[joint] else []
        return problems.get(live[0], "") if len(live) == 1 else ""


@dataclass
class Hierarchy:
    """``model.analyses["hierarchy"]``."""

    analysis: ErasingAnalysis
    kills: dict[int, list[int]]  # removable group id -> every erase group removed when it alone is erased
    children: dict[int, list[int]]  # transitive reduction of ``kills`` (erase groups only)
    parents: dict[int, list[int]]
    _static: _Static | None = field(default=None, repr=False)

    def oracle(self, groups: Iterable[Group] | None = None) -> HierarchyOracle:
        """A fresh oracle over ``groups`` (default: the erase groups; pass the whole search space to include
        channel groups)."""
        return HierarchyOracle(self.analysis, groups, self._static)

    def summary(self) -> dict[str, Any]:
        removable = [g.id for g in self.analysis.removable()]
        depth: dict[int, int] = {}
        for root in removable:  # longest parent chain, iteratively (cycles of mutual kills are cut)
            stack = [(root, False)]
            on_path: set[int] = set()
            while stack:
                gid, done = stack.pop()
                if done:
                    on_path.discard(gid)
                    depth[gid] = 1 + max((depth.get(p, 0) for p in self.parents.get(gid, []) if p not in on_path),
                                         default=0)
                    continue
                if gid in depth or gid in on_path:
                    continue
                on_path.add(gid)
                stack.append((gid, True))
                stack.extend((p, False) for p in self.parents.get(gid, []) if p not in depth and p not in on_path)
        return {
            "num_removable": len(removable),
            "num_edges": sum(len(c) for c in self.children.values()),
            "roots": [g for g in removable if not self.parents.get(g)],
            "max_depth": max((depth.get(g, 1) for g in removable), default=0),
            "children": {str(k): v for k, v in list((k, v) for k, v in self.children.items() if v)[:100]},
        }


def build_hierarchy(analysis: ErasingAnalysis) -> Hierarchy:
    static = _Static(analysis)
    oracle = HierarchyOracle(analysis, analysis.groups, static)
    seg_group = {s.index: s.group for s in analysis.graph.segments if s.group is not None}
    removable = {g.id for g in analysis.removable()}
    kills: dict[int, list[int]] = {}
    for gid in sorted(removable):
        oracle._apply([gid], check=False)
        # the undo log names exactly the segments whose state changed: no scan of the whole graph per group
        gone = {index for array, index, _ in oracle._log if array is oracle._state}
        oracle._rollback(0)
        kills[gid] = sorted(seg_group[i] for i in gone if i in seg_group and seg_group[i] != gid)
    kill_sets = {g: set(k) for g, k in kills.items()}
    children: dict[int, list[int]] = {}
    for gid, killed in kill_sets.items():
        # transitive reduction: B is a direct child unless another killed C kills B too (C not killed back by B)
        covered: set[int] = set()
        for c in killed:
            covered |= kill_sets.get(c, set())
        children[gid] = [
            b for b in sorted(killed)
            if b not in covered
            or not any(b in kill_sets.get(c, ()) and c not in kill_sets.get(b, ()) for c in killed if c != b)
        ]
    parents: dict[int, list[int]] = {g.id: [] for g in analysis.groups}
    for gid, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, []).append(gid)
    erase_ids = {g.id for g in analysis.groups}
    for group in analysis.groups:  # links to other kinds (channel groups, set by search-space) are kept
        group.children = list(children.get(group.id, [])) + [c for c in group.children if c not in erase_ids]
        group.parents = sorted(parents.get(group.id, [])) + [p for p in group.parents if p not in erase_ids]
    return Hierarchy(analysis, kills, children, parents, static)


def _search_space_groups(model: Model) -> list[Group] | None:
    space = AnalysisManager(model).cached("search_space")
    if space is not None and hasattr(space, "groups"):
        return list(space.groups)
    return None


@register_pass
class HierarchyPass(Pass):
    name = "hierarchy"
    summary = "dependencies between removal structures (parents/children) and the incremental validity oracle"
    requires = (ANALYSIS_KEY,)
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        analysis = AnalysisManager(model).get(ANALYSIS_KEY)
        hierarchy = build_hierarchy(analysis)
        space_groups = _search_space_groups(model)
        if space_groups is not None:  # mirror onto the search space's erase groups (matched by segment id)
            by_id = analysis.by_id()
            by_space = {g.space: g for g in analysis.groups}
            space_id = {g.space: g.id for g in space_groups if g.kind == "erase"}

            def translate(ids: list[int]) -> list[int]:
                return [space_id[by_id[i].space] for i in ids if by_id[i].space in space_id]

            for group in space_groups:
                twin = by_space.get(group.space)
                if group.kind == "erase" and twin is not None and group is not twin:
                    group.children = translate(twin.children)
                    group.parents = translate(twin.parents)
        AnalysisManager(model).store(HIERARCHY_KEY, hierarchy)
        return hierarchy.summary()


def build_oracle(model: Model, groups: Iterable[Group] | None = None) -> HierarchyOracle:
    """Convenience: the oracle for ``model`` (running the analyses it needs), over ``groups`` or every group of
    the search space / the erase groups."""
    hierarchy = AnalysisManager(model).get(HIERARCHY_KEY)
    if groups is None:
        groups = _search_space_groups(model)
    return hierarchy.oracle(groups)


register_analysis(HIERARCHY_KEY, lambda model, analyses: build_hierarchy(analyses.get(ANALYSIS_KEY)),
                  requires=(ANALYSIS_KEY,))
