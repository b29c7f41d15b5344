"""The driver: run the rules, resolve the relations into spaces and channel groups, check exactness.

Steps (each linear in the graph plus the number of channels involved):
1. every node's rule records relations (``builder.py``); unknown ops pin what they touch; graph inputs and
   outputs are pinned; computed sizes that reach places construction cannot rewrite pin their axes;
2. ``same`` unions form the level-1 *spaces*; products choose the atom that carries the channel (not pinned,
   preferably one with a stem behind it, else the outermost) and pin the others;
3. spaces get element ids; ``link`` and resolved products union elements (a second union-find). A *unit* is a
   connected set of elements; a unit that contains the output rows of at least one stem is a channel group;
4. the zero pass computes, for every value, what a removed channel holds there (0, a constant, or unknown);
   where a removed channel is summed into something that stays (consumer columns, contractions) it must be 0,
   or a constant a bias can absorb (recorded as a *fold*), otherwise that space is pinned;
5. groups: parameter slices (``param`` role members), the slices construction removes besides them, counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from onnx import helper

from asgnas.ir import Model, Node, Value
from asgnas.ir.model import gc_paused
from asgnas.ir.wellformed import check_conv_fits
from asgnas.passes.groups import Group, TensorSlice
from asgnas.passes.pruning.builder import Builder, Consume, Unsupported
from asgnas.passes.pruning.result import Fold, PruningAnalysis, Space
from asgnas.passes.pruning.rules import CHANNEL_RULES
from asgnas.passes.pruning.shapes import ShapeEval, check_shape_uses
from asgnas.passes.pruning.zeros import ZeroCtx
from asgnas.passes.shape_infer import ensure_shapes
from asgnas.passes.untie_aliases import untie_before_analysis

ANALYSIS_KEY = "pruning_groups"
_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16


def analyze_pruning(model: Model) -> PruningAnalysis:
    """Find every channel group of ``model`` (no IR change beyond filling missing shapes)."""
    with gc_paused():  # builds ~10 objects per node, no cycles: the cyclic GC would only rescan them
        return _analyze_pruning(model)


def _analyze_pruning(model: Model) -> PruningAnalysis:
    untie_before_analysis(model)  # exporter aliases would couple unrelated tensors' channels
    try:
        ensure_shapes(model)
    except Exception:  # an inconsistent model: unknown shapes pin what they touch (a bad weight fails just below)
        pass
    check_conv_fits(model)  # channel groups are read off weights: a weight that does not fit is bad input
    graph = model.graph
    b = Builder(model)
    se = ShapeEval(b)
    order = graph.toposort()

    # 1. relations
    for node in order:
        rule = CHANNEL_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is None:
            b.pin_node(node, f"{node.name} ({node.op_type}): unknown operator")
            continue
        if node.has_subgraphs:
            b.pin_node(node, f"{node.name} ({node.op_type}): has subgraphs")
            continue
        try:
            rule.analyze(node, b, se)
        except Unsupported as err:
            b.pin_node(node, f"{node.name} ({node.op_type}): {err}")
        except Exception as err:  # a rule bug must not crash the analysis or produce a wrong model
            b.pin_node(node, f"{node.name} ({node.op_type}): not analysable ({type(err).__name__}: {err})")
    for value in graph.inputs:
        b.pin_value(value, f"graph input {value.name}")
    for value in graph.outputs:
        b.pin_value(value, f"graph output {value.name}")
    check_shape_uses(se, order)

    # 2. products
    uf = b.uf
    pinned_roots = {uf.find(k) for k, idx, _ in b.pins if idx is None}
    live_roots = {uf.find(k) for k in b.stem_keys}
    resolved_links = []
    for prod in b.products:
        atoms = [a for a in prod.atoms if b.key_size[a] != 1]
        free = [a for a in atoms if uf.find(a) not in pinned_roots]
        live = [a for a in free if uf.find(a) in live_roots]
        carry = live[0] if live else (free[0] if free else None)
        reason = f"{prod.node} ({prod.op}): this factor of a reshaped axis keeps its size"
        for a in atoms:
            if a != carry:
                b.pin(a, None, reason)
                pinned_roots.add(uf.find(a))
        if carry is None:
            b.pin(prod.target, None, reason)
            continue
        inner = 1
        for a in atoms[atoms.index(carry) + 1:]:
            inner *= b.key_size[a]
        n = b.key_size[prod.target]
        positions = np.arange(n)
        resolved_links.append((prod.target, positions, carry, (positions // inner) % b.key_size[carry]))
        if uf.find(prod.target) in live_roots or uf.find(carry) in live_roots:
            live_roots.update((uf.find(prod.target), uf.find(carry)))

    # 3. elements
    nkeys = len(b.key_size)
    root_of_key = [uf.find(k) for k in range(nkeys)]
    root_size: dict[int, int] = {}
    root_members: dict[int, list[int]] = {}
    for key in range(nkeys):
        root = root_of_key[key]
        root_members.setdefault(root, []).append(key)
        size = b.key_size[key]
        if size is not None and size > 0:
            root_size.setdefault(root, size)
    base: dict[int, int] = {}
    total = 0
    for root in sorted(root_size):
        base[root] = total
        total += root_size[root]
    pairs_a, pairs_b = [], []
    for ka, ia, kb, ib in [(l.a, l.ia, l.b, l.ib) for l in b.links] + resolved_links:
        ra, rb = root_of_key[ka], root_of_key[kb]
        if ra not in base or rb not in base:
            continue
        n = min(len(ia), len(ib))
        pairs_a.append(base[ra] + np.asarray(ia[:n], dtype=np.int64))
        pairs_b.append(base[rb] + np.asarray(ib[:n], dtype=np.int64))
    labels = _min_labels(total, pairs_a, pairs_b)

    def root_slice(root: int) -> slice:
        return slice(base[root], base[root] + root_size[root])

    live_elem = np.zeros(total, dtype=bool)
    for key in b.stem_keys:
        root = root_of_key[key]
        if root in base:
            live_elem[root_slice(root)] = True
    live_label = np.zeros(total, dtype=bool)
    live_label[labels[live_elem]] = True
    elem_live = live_label[labels]
    root_live = {root for root in base if elem_live[root_slice(root)].any()}

    # 4. zero values
    zc = ZeroCtx(b, root_of_key, root_live, model.opset, se)
    origin: dict[str, str] = {}
    for node in order:
        rule = CHANNEL_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        for out in node.outputs:
            axes = zc.live_axes(out)
            entry: dict[int | str, float | None] = {}
            if rule is not None and rule.zero is not None:
                if rule.aligned and out is node.outputs[0] and axes:
                    zc.out = out
                    for axis in axes:
                        zc.axis = axis
                        entry[axis] = _safe_zero(rule, node, zc)
                    zc.axis = zc.out = None
                else:
                    z = _safe_zero(rule, node, zc)
                    entry = {axis: z for axis in axes} if axes else {"*": z}
            else:
                entry = {axis: None for axis in axes} if axes else {"*": None}
            zc.values[out.name] = entry
            if any(v != 0 for v in entry.values()):
                source = next((origin[v.name] for v in node.inputs if v is not None and v.name in origin
                               and v.dtype in _FLOAT_TYPES), None)
                changed = any(zc.z_at(node.inputs[0], None) != v for v in entry.values()) if node.inputs else True
                origin[out.name] = f"{node.name} ({node.op_type})" if changed or source is None else source
    folds: list[Fold] = []
    for use in b.consumes:
        _check_consume(use, b, zc, root_of_key, root_live, origin, folds)

    # pins -> elements
    pinned = np.zeros(total, dtype=bool)
    pin_reason = np.full(total, -1, dtype=np.int64)
    reasons: list[str] = []
    reason_index: dict[str, int] = {}
    pin_counts: dict[str, int] = {}
    for key, idx, reason in b.pins:
        root = root_of_key[key]
        if root not in base:
            continue
        ri = reason_index.setdefault(reason, len(reasons))
        if ri == len(reasons):
            reasons.append(reason)
        sel = np.arange(base[root], base[root] + root_size[root]) if idx is None else base[root] + idx
        fresh = sel[pin_reason[sel] < 0]
        pin_reason[fresh] = ri
        pinned[sel] = True
    unit_pin = np.full(total, -1, dtype=np.int64)  # by label: reason index of a pinned element
    order_pins = np.nonzero(pinned)[0]
    unit_pin[labels[order_pins[::-1]]] = pin_reason[order_pins[::-1]]

    # 5. groups
    from asgnas.passes.cost import node_costs

    try:
        costs = node_costs(model)
    except Exception:
        costs = None
    macs_per_root = _macs_per_root(b, order, costs or {}, root_of_key, root_live, root_size)

    # Units are the runs of equal label in the stably sorted labels (a unit's elements ascend), and a unit splits
    # into per-root pieces: roots own consecutive element ranges, so its pieces follow the root order. All of it
    # is array work; the loop below only builds the Python objects, one group at a time.
    roots_sorted = sorted(base)
    bases_arr = np.asarray([base[r] for r in roots_sorted], dtype=np.int64)
    sort = np.argsort(labels, kind="stable")
    sorted_labels = labels[sort]
    keep = live_label[sorted_labels]
    sort, sorted_labels = sort[keep], sorted_labels[keep]
    root_pos = np.searchsorted(bases_arr, sort, side="right") - 1
    offsets = sort - bases_arr[root_pos]
    new_unit = np.ones(len(sort), dtype=bool)
    new_unit[1:] = sorted_labels[1:] != sorted_labels[:-1]
    new_piece = new_unit.copy()
    new_piece[1:] |= root_pos[1:] != root_pos[:-1]
    piece_start = np.flatnonzero(new_piece)
    unit_piece = np.flatnonzero(new_unit[piece_start])  # first piece of each unit
    piece_bounds = np.r_[piece_start, len(sort)].tolist()
    unit_bounds = np.r_[unit_piece, len(piece_start)].tolist()
    piece_root = [roots_sorted[p] for p in root_pos[piece_start].tolist()]
    unit_reason = unit_pin[sorted_labels[piece_start[unit_piece]]].tolist()
    offset_list = offsets.tolist()

    stem_roots = {root_of_key[k] for k in b.stem_keys}
    space_ids: dict[int, str] = {}
    groups: list[Group] = []
    other_slices: dict[int, list[TensorSlice]] = {}
    elements: dict[int, dict[int, np.ndarray]] = {}
    value_nodes = _value_nodes_cache(b)
    root_plan: dict[int, _RootPlan] = {}
    unit_plan: dict[tuple[int, ...], tuple[list[str], int]] = {}  # roots of a unit -> its nodes, primary root
    no_param = "no trainable parameter to zero (weights are computed or constant nodes)"
    for unit, pin_index in enumerate(unit_reason):
        p0, p1 = unit_bounds[unit], unit_bounds[unit + 1]
        roots = tuple(piece_root[p0:p1])
        shared = unit_plan.get(roots)
        if shared is None:
            nodes: dict[str, None] = {}
            for root in roots:
                plan = root_plan.get(root)
                if plan is None:
                    plan = root_plan[root] = _root_plan(b, root_members[root], value_nodes)
                nodes.update(plan.nodes)
                space_ids.setdefault(root, "")
            primary = next((root for root in roots if root in stem_roots), roots[0])
            shared = unit_plan[roots] = (list(nodes), primary)
        gid = len(groups)
        params: list[TensorSlice] = []
        others: list[TensorSlice] = []
        per_root: dict[int, np.ndarray] = {}
        num_params = 0
        macs = 0.0
        for p in range(p0, p1):
            root = piece_root[p]
            start, end = piece_bounds[p], piece_bounds[p + 1]
            per_root[root] = offsets[start:end]
            indices = offset_list[start:end]
            macs += macs_per_root.get(root, 0.0) * (end - start)
            plan = root_plan[root]
            num_params += plan.params_per_index * (end - start)
            for name, axis, is_param in plan.slices:
                (params if is_param else others).append(TensorSlice(name, axis, indices))
        removable = pin_index < 0
        reason = "" if removable else reasons[pin_index]
        if removable and not params:
            removable, reason = False, no_param
        groups.append(Group(
            id=gid, kind="prune", nodes=list(shared[0]), params=params, removable=removable, reason=reason,
            num_params=num_params, macs=int(round(macs)), space=str(shared[1]),
        ))
        other_slices[gid] = others
        elements[gid] = per_root

    # name spaces in group order (produced spaces first appear with their first group)
    spaces: dict[str, Space] = {}
    counter = 0
    stem_keys = set(b.stem_keys)  # built once: per space they made the naming quadratic
    consumer_keys = {c.key: c.node.name for c in b.consumes}
    for group in groups:
        for root in elements[group.id]:
            if space_ids[root] == "":
                space_ids[root] = f"s{counter}"
                counter += 1
                spaces[space_ids[root]] = _make_space(space_ids[root], b, root_members[root], root_size[root],
                                                      stem_keys, consumer_keys)
            spaces[space_ids[root]].groups.append(group.id)
        group.space = space_ids[int(group.space)]

    analysis = PruningAnalysis(
        groups=groups, spaces=spaces, other_slices=other_slices, folds=folds,
        pin_reasons=pin_counts, shape_eval=se, _b=b, _root_of_key=root_of_key, _root_size=root_size,
        _root_members=root_members, _elements=elements, _space_id=space_ids,
        costs=costs,
    )
    for group in groups:
        if not group.removable:
            pin_counts[group.reason] = pin_counts.get(group.reason, 0) + 1
    return analysis


def _min_labels(total: int, pairs_a: list[np.ndarray], pairs_b: list[np.ndarray]) -> np.ndarray:
    """Each element's label: the smallest element connected to it through the pairs ``(a[k], b[k])``.

    Array rounds instead of a per-element union-find: every pair whose ends have different labels hooks the larger
    label under the smaller, then pointer jumping makes every label a root again; labels only ever drop to a
    connected element, so the fixed point is the component minimum.
    """
    labels = np.arange(total, dtype=np.int64)
    if not pairs_a:
        return labels
    xs, ys = np.concatenate(pairs_a), np.concatenate(pairs_b)
    while True:
        lx, ly = labels[xs], labels[ys]
        differ = lx != ly
        if not differ.any():
            return labels
        lx, ly = lx[differ], ly[differ]
        np.minimum.at(labels, np.maximum(lx, ly), np.minimum(lx, ly))
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped


@dataclass
class _RootPlan:
    """Per space, once: the nodes it touches, its constants' slices ``(name, axis, is a parameter slice)`` and the
    parameters removed per index (float-initializer elements; other constants count 0)."""

    nodes: dict[str, None]
    slices: list[tuple[str, int, bool]]
    params_per_index: int


def _root_plan(b: Builder, keys: list[int], value_nodes) -> _RootPlan:
    nodes: dict[str, None] = {}
    slices = []
    params_per_index = 0
    for key in keys:
        value = b.key_value[key]
        if value is None:
            continue
        nodes.update(dict.fromkeys(value_nodes(value)))
        if value.const is None:
            continue
        is_param = _is_float_initializer(value)
        role = b.roles.get(key) or ("param" if is_param else "const")
        if role == "param" and not value.is_initializer:
            role = "const"
        axis = b.key_axis[key]
        shape = value.const.shape
        if is_param:
            params_per_index += int(np.prod(shape, dtype=np.int64)) // max(shape[axis], 1)
        slices.append((value.name, axis, role == "param"))
    return _RootPlan(nodes, slices, params_per_index)


def _safe_zero(rule, node: Node, zc: ZeroCtx) -> float | None:
    try:
        return rule.zero(node, zc)
    except Exception:  # a zero rule that cannot decide: not a known constant
        return None


def _is_float_initializer(value: Value) -> bool:
    return value.is_initializer and _decodes_to_float(value.const.dtype)  # the element type only: no decoding


@lru_cache(maxsize=None)
def _decodes_to_float(elem_type: int) -> bool:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).kind == "f"


def _value_nodes_cache(b: Builder):
    cache: dict[str, list[str]] = {}

    def nodes(value: Value) -> list[str]:
        names = cache.get(value.name)
        if names is None:
            names = [n.name for n in ([value.producer] if value.producer is not None else [])]
            names += [n.name for n in value.consumers]
            cache[value.name] = names
        return names

    return nodes


def _make_space(sid: str, b: Builder, keys: list[int], size: int, stem_keys: set[int],
                consumer_keys: dict[int, str]) -> Space:
    members, producers, consumers = [], [], []
    for key in keys:
        value = b.key_value[key]
        if key in stem_keys and value is not None and value.producer is not None:
            producers.append(value.producer.name)
        if key in consumer_keys:
            consumers.append(consumer_keys[key])
        if value is None:
            continue
        role = b.roles.get(key, "param" if value.const is not None else "")
        members.append((value.name, b.key_axis[key], role))
    return Space(sid, size, members, sorted(set(producers)), sorted(set(consumers)))


def _check_consume(use: Consume, b: Builder, zc: ZeroCtx, root_of_key: list[int], root_live: set[int],
                   origin: dict[str, str], folds: list[Fold]) -> None:
    root = root_of_key[use.key]
    if root not in root_live:
        return
    z = zc.z_at(use.value, b.key_axis[use.key])
    where = f"{use.node.name} ({use.node.op_type})"
    if use.kind == "contract":
        other = use.other
        if z == 0 or zc.z_at(other, (other.rank or 2) - 2) == 0:
            return
        b.pin(use.key, None, f"{where} contracts channels that are not zero on either side")
        return
    if z == 0:
        return
    src = origin.get(use.value.name, "?")
    if z is None:
        b.pin(use.key, None, f"{where} reads removed channels that are not constant (after {src})")
        return
    if use.foldable and use.kind in ("conv", "gemm", "matmul") and use.weight is not None:
        folds.append(Fold(use.node.name, use.kind, float(z), use.weight, use.value.name))
        return
    why = use.why_not or "cannot fold them"
    b.pin(use.key, None, f"{where} reads removed channels equal to {z:g} (after {src}) and {why}")


def _macs_per_root(b: Builder, order: list[Node], costs: dict[str, dict[str, int]], root_of_key: list[int],
                   root_live: set[int], root_size: dict[int, int]) -> dict[int, float]:
    """MACs removed per element of each live space, split proportionally over the node's channel axes."""
    per: dict[int, float] = {}
    consumed: dict[str, list[int]] = {}
    for use in b.consumes:
        consumed.setdefault(use.node.name, []).append(use.key)
    for node in order:
        cost = costs.get(node.name)
        if not cost or not cost["macs"]:
            continue
        roots = set()
        for out in node.outputs:
            for axis in range(out.rank or 0):
                key = b.keys.get((out.name, axis))
                if key is not None and root_of_key[key] in root_live:
                    roots.add(root_of_key[key])
        for key in consumed.get(node.name, ()):
            if root_of_key[key] in root_live:
                roots.add(root_of_key[key])
        for root in roots:
            if root in root_size:
                per[root] = per.get(root, 0.0) + cost["macs"] / root_size[root]
    return per


__all__ = ["ANALYSIS_KEY", "Fold", "PruningAnalysis", "Space", "analyze_pruning"]
