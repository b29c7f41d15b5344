"""``latency``: a latency model of the target runtime (HALP-like lookup tables, measured in onnxruntime).

    latency{device=cpu,batch=1,threads=0,cache=DIR}

Measures the whole model under onnxruntime's profiler (wall time and per-node kernel times) and, for every
Conv/Gemm/MatMul whose weight a channel space slices (its output rows, or a consumer's input columns), a table of
the node's time against its kept width, on single-node models of the same shapes and attributes (one per distinct
signature; widths sampled, interpolated between samples). Probing a few widths just below a multiple of 32, at the
pass's threads, finds the kernel's block: the smallest width multiple that does not run at the padded width's speed
(8 or 16 for onnxruntime's blocked conv on one AVX2 or AVX-512 thread, more on several; a grouped conv's output is
probed per group, as its channel groups take one channel from every conv group). A space's preferred multiple is
the largest block of its producers and consumers, and at least the narrowest width that keeps its convs in the
runtime's blocked layout (found in onnxruntime's optimized graph of a two-conv chain); a space no wider than that
block keeps a finer divisor of it where the prediction says its other nodes save time and none of its kernels was
measured slowing when narrowed. The prediction scales each kernel by its table and keeps the executor's own time
per node (measured on a chain of tiny nodes) as a fixed cost.
Results are cached on disk by the model's structure and shapes (not its weight values), the machine (CPU, cores,
onnxruntime version), provider, batch and threads, in ``cache`` (default ``$ASGNAS_CACHE`` or
``~/.cache/asgnas``): a second run measures nothing.

Reads: the search space (runs ``search-space`` when missing). Writes: ``model.analyses["latency"]``, a
:class:`LatencyModel`. Report key ``latency``: whole-model ms, per-structure savings, per-space multiples, and
the per-width tables.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import onnx

from asgnas.errors import AsgnasError
from asgnas.ir import Model, lower
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager, register_analysis
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.groups import SearchSpace
from asgnas.passes.latency_measure import (Signature, WidthTable, layout_block, measure_table, node_overhead_ms,
                                           profile_model, signature)
from asgnas.passes.search_space import SEARCH_SPACE_KEY

LATENCY_KEY = "latency"
_CACHE_VERSION = 5  # 2: grouped convs probed per group, consumers' columns; 3: fastest kernel times; 4: block
# probes at the pass's threads; 5: tables say whether narrowing slows the kernel


def parse_round_to(text: str) -> int | str:
    """``round-to`` option: ``auto`` or an int (the Option's ``minimum`` bounds it)."""
    return text if text == "auto" else int(text)


parse_round_to.__name__ = "an int or 'auto'"  # Option's error message names the type by this


@dataclass
class LatencyModel:
    """``model.analyses["latency"]``: measured time of the model and what removing its parts saves.

    ``group_saving_ms``: per removable group id, the ms saved by removing it alone: an erase group, the profiled
    time of every node that goes with it; a channel group, its space's mean saving per channel from full to half
    width (one channel alone often saves nothing on blocked kernels, but channels go by the dozen).
    ``preferred_multiple``: per channel space (``Group.space``), the width multiple its kernels run fastest at.
    """

    total_ms: float
    group_saving_ms: dict[int, float]
    preferred_multiple: dict[str, int]
    provider: str
    batch: int
    threads: int
    node_ms: dict[str, float] = field(repr=False, default_factory=dict)
    unattributed_ms: float = 0.0
    node_overhead_ms: float = 0.0  # the executor's own time per node, which narrower kernels do not save
    tables: dict[str, dict[int, WidthTable]] = field(repr=False, default_factory=dict)  # signature -> axis -> table
    node_tables: dict[str, tuple[str, tuple[int, int]]] = field(repr=False, default_factory=dict)  # node -> sig, dims
    space_axes: dict[str, list[tuple[str, int]]] = field(repr=False, default_factory=dict)  # space -> (node, axis)
    space_nodes: dict[str, list[str]] = field(repr=False, default_factory=dict)  # scaled (non-table) nodes
    space_size: dict[str, int] = field(repr=False, default_factory=dict)
    node_numel: dict[str, int] = field(repr=False, default_factory=dict)
    channel_saving_ms: dict[str, float] = field(repr=False, default_factory=dict)  # space -> per channel
    erase_ids: set[int] = field(repr=False, default_factory=set)
    cached: bool = False
    measured: int = 0  # single-node measurements this run made (0 on a cache hit)

    def node_ratio(self, name: str, dims: tuple[int, int]) -> float:
        """Time of a width-carrying node at weight dims ``dims`` relative to its full width."""
        key, full = self.node_tables[name]
        ratio = 1.0
        for axis in (0, 1):
            if dims[axis] == full[axis]:
                continue
            table = self.tables.get(key, {}).get(axis)
            if table is None:
                ratio *= dims[axis] / full[axis]
            else:
                # capped: a narrower kernel is no slower than its full width (above 1 is noise)
                ratio *= min(table.at(dims[axis]) / max(table.at(full[axis]), 1e-9), 1.0)
        return ratio

    def predict_ms(self, model_or_widths: Model | Mapping[str, int]) -> float:
        """Predicted latency of a slim model built from the measured one (nodes matched by name; a node gone
        saves its time), or of a kept-width assignment ``{channel space: kept channels}``."""
        ratios = (self._ratios_of_model(model_or_widths) if isinstance(model_or_widths, Model)
                  else self._ratios_of_widths(model_or_widths))
        return self.predict_from_ratios(ratios)

    def predict_from_ratios(self, ratios: Mapping[str, float]) -> float:
        """Latency when each named node runs at ``ratio`` times its profiled time (0: gone)."""
        profiled = sum(self.node_ms.values()) + self.unattributed_ms
        if profiled <= 0:
            return self.total_ms
        kept = profiled - sum(ms * (1.0 - ratios.get(name, 1.0)) for name, ms in self.node_ms.items())
        # the executor's per-node work does not shrink with the widths (a node that is gone saves it); the rest of
        # the time outside the kernels (and the load of other processes) scales with them
        fixed = min(self.node_overhead_ms * len(self.node_ms), self.total_ms)
        gone = sum(1 for name in self.node_ms if ratios.get(name, 1.0) == 0.0)
        return fixed * (1.0 - gone / max(len(self.node_ms), 1)) + (self.total_ms - fixed) * kept / profiled

    def _ratios_of_widths(self, widths: Mapping[str, int]) -> dict[str, float]:
        dims = {name: list(full) for name, (_, full) in self.node_tables.items()}
        fractions: dict[str, list[float]] = {}
        for space, kept in widths.items():
            size = self.space_size.get(space)
            if not size or kept >= size:
                continue
            fraction = max(kept, 0) / size
            for name, axis in self.space_axes.get(space, []):
                dims[name][axis] = max(1, round(self.node_tables[name][1][axis] * fraction))
            for name in self.space_nodes.get(space, []):
                fractions.setdefault(name, []).append(fraction)
        ratios = {name: sum(f) / len(f) for name, f in fractions.items()}
        for name, (_, full) in self.node_tables.items():
            if tuple(dims[name]) != full:
                ratios[name] = self.node_ratio(name, (dims[name][0], dims[name][1]))
        return ratios

    def _ratios_of_model(self, slim: Model) -> dict[str, float]:
        from asgnas.passes.cost import ensure_shapes

        ensure_shapes(slim)
        ratios = {}
        by_name = {n.name: n for n in slim.graph.nodes}
        for name in self.node_ms:
            node = by_name.get(name)
            if node is None:
                ratios[name] = 0.0
            elif name in self.node_tables and node.inputs[1] is not None and node.inputs[1].const is not None:
                shape = node.inputs[1].const.array.shape
                ratios[name] = self.node_ratio(name, (int(shape[0]), int(shape[1])))
            elif self.node_numel.get(name) and node.outputs and _numel(node.outputs[0]):
                ratios[name] = _numel(node.outputs[0]) / self.node_numel[name]
        return ratios

    def report(self) -> dict[str, Any]:
        spaces = {sid: {"size": self.space_size[sid], "multiple": self.preferred_multiple.get(sid, 1),
                        "per_channel_ms": round(self.channel_saving_ms.get(sid, 0.0), 5)}
                  for sid in sorted(self.space_size)}
        return {
            "total_ms": round(self.total_ms, 4), "node_overhead_ms": round(self.node_overhead_ms, 5),
            "provider": self.provider, "batch": self.batch, "threads": self.threads,
            "cached": self.cached, "measured": self.measured,
            "per_structure_ms": {str(gid): round(ms, 5) for gid, ms in sorted(self.group_saving_ms.items())
                                 if gid in self.erase_ids},
            "channel_spaces": spaces,
            "tables": {key: {str(axis): t.to_json() for axis, t in axes.items()} for key, axes in self.tables.items()},
        }


def _numel(value: Any) -> int:
    if value is None or value.shape is None:
        return 0
    return math.prod(d if isinstance(d, int) and d > 0 else 1 for d in value.shape)


def structure_digest(model: Model) -> str:
    """A hash of the graph, its shapes and attributes, not of the float weights' values (zeroing groups, training
    and fine-tuning change no timing of dense kernels, so a group-sparse model shares its cache entry)."""
    proto = lower(model, weights=False)
    for tensor in proto.graph.initializer:
        if tensor.data_type in _FLOAT_TYPES:
            for name in ("raw_data", "float_data", "double_data", "int32_data"):
                tensor.ClearField(name)
    return hashlib.sha256(proto.SerializeToString()).hexdigest()[:24]


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _machine_digest() -> str:
    """What else decides the timings: a cache shared between machines or upgrades must not answer for another."""
    import platform

    import onnxruntime

    cpu = (platform.machine(), platform.processor(), os.cpu_count(), onnxruntime.__version__)
    return hashlib.sha256(repr(cpu).encode()).hexdigest()[:12]


def _cache_file(model: Model, directory: str, provider: str, batch: int, threads: int) -> Path:
    digest = structure_digest(model)
    root = Path(directory or os.environ.get("ASGNAS_CACHE") or Path.home() / ".cache" / "asgnas")
    return root / f"latency-{digest}-{_machine_digest()}-{provider}-b{batch}-t{threads}.json"


def _load_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: measure again
    return data if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else None


def _save_cache(path: Path, data: dict[str, Any]) -> None:
    from asgnas.ir.io import write_text_atomically

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(data))
    except OSError as err:
        raise AsgnasError(f"cannot write the latency cache {path}: {err}", pass_name="latency") from None


def analyze_latency(model: Model, space: SearchSpace | None = None, *, device: str = "cpu", batch: int = 1,
                    threads: int = 0, cache: str = "") -> LatencyModel:
    """Measure (or read from the cache) and assemble the latency model; stores it in ``model.analyses``."""
    from asgnas.passes.cost import ensure_shapes
    from asgnas.runtime import providers

    if space is None:
        space = AnalysisManager(model).get(SEARCH_SPACE_KEY)
    ensure_shapes(model)
    batch = _declared_batch(model) or batch
    provider = providers(device)[0].replace("ExecutionProvider", "").lower()
    if device == "cuda" and provider != "cuda":
        raise AsgnasError("device=cuda, but onnxruntime has no CUDA execution provider here (onnxruntime-gpu)",
                          pass_name="latency")
    path = _cache_file(model, cache, provider, batch, threads)
    data = _load_cache(path)
    cached = data is not None
    if data is None:
        total, node_ms, unattributed = profile_model(model, batch, device, threads)
        data = {"version": _CACHE_VERSION, "total_ms": total, "node_ms": node_ms, "unattributed_ms": unattributed,
                "tables": {}, "full_ms": {}}
    layout = _layout(model, space, batch)
    measured = 0
    for key, (sig, axes) in layout["signatures"].items():
        for axis in sorted(axes):
            if str(axis) in data["tables"].get(key, {}):
                continue
            table, count = measure_table(sig, axis, device, threads, data["full_ms"].get(key))
            data["full_ms"][key] = table.ms[table.widths.index(table.full)]
            data["tables"].setdefault(key, {})[str(axis)] = table.to_json()
            measured += count
    if "node_overhead_ms" not in data:
        data["node_overhead_ms"] = node_overhead_ms(device, threads)
        measured += 2
    if "layout_block" not in data:
        data["layout_block"] = layout_block(device, threads)
        measured += 1
    if measured or not cached:
        _save_cache(path, data)
    result = _assemble(model, space, data, layout, provider, batch, threads)
    result.cached, result.measured = cached and not measured, measured
    AnalysisManager(model).store(LATENCY_KEY, result)
    return result


def _declared_batch(model: Model) -> int | None:
    """A model with a fixed batch runs at it (the feeds follow the declared shape)."""
    first = model.graph.inputs[0].shape if model.graph.inputs else None
    return first[0] if first and isinstance(first[0], int) and first[0] > 0 else None


def _layout(model: Model, space: SearchSpace, batch: int) -> dict[str, Any]:
    """Which node weights each channel space slices (and along which axis), and the signatures to measure."""
    weight_users: dict[str, list[Any]] = {}
    node_sig: dict[str, Signature] = {}
    for node in model.graph.nodes:
        sig = signature(node, batch)
        if sig is not None:
            node_sig[node.name] = sig
            weight_users.setdefault(node.inputs[1].name, []).append(node)
    space_axes: dict[str, set[tuple[str, int]]] = {}
    space_nodes: dict[str, set[str]] = {}
    space_size: dict[str, int] = {}
    signatures: dict[str, tuple[Signature, set[int]]] = {}
    unit_channels: dict[tuple[str, str, int], int] = {}  # (space, node, axis) -> weight channels one group slices
    for group in space.groups:
        if group.kind != "prune":
            continue
        space_size[group.space] = space_size.get(group.space, 0) + 1
        if group.space in space_axes:
            continue  # every channel of a space touches the same tensors
        axes = space_axes[group.space] = set()
        for piece in _slices(model, group):
            for node in weight_users.get(piece.initializer, []):
                if piece.axis in (0, 1):
                    axes.add((node.name, piece.axis))
                    unit_channels[group.space, node.name, piece.axis] = len(piece.indices or [0])
                    sig = node_sig[node.name]
                    signatures.setdefault(sig.key, (sig, set()))[1].add(piece.axis)
        space_nodes[group.space] = {n for n in group.nodes if n not in node_sig}
    return {"node_sig": node_sig, "space_axes": space_axes, "space_nodes": space_nodes, "space_size": space_size,
            "signatures": signatures, "unit_channels": unit_channels}


def _slices(model: Model, group: Any) -> list[Any]:
    """The group's parameters and, from the channel analysis when present, the consumers' input columns (a
    consumer conv narrows with the space too)."""
    analysis = model.analyses.get("pruning_groups")
    if analysis is not None and group.id < len(analysis.groups) and analysis.groups[group.id].space == group.space:
        return analysis.slices(group.id)
    return list(group.params)


def _assemble(model: Model, space: SearchSpace, data: dict[str, Any], layout: dict[str, Any], provider: str,
              batch: int, threads: int) -> LatencyModel:
    tables = {key: {int(axis): WidthTable(**t) for axis, t in axes.items()} for key, axes in data["tables"].items()}
    node_tables = {name: (sig.key, (sig.w_shape[0], sig.w_shape[1])) for name, sig in layout["node_sig"].items()}
    numel = {n.name: _numel(n.outputs[0]) for n in model.graph.nodes if n.outputs}
    result = LatencyModel(
        total_ms=float(data["total_ms"]), group_saving_ms={}, preferred_multiple={}, provider=provider, batch=batch,
        threads=threads, node_ms=dict(data["node_ms"]), unattributed_ms=float(data["unattributed_ms"]),
        node_overhead_ms=float(data["node_overhead_ms"]),
        tables=tables, node_tables=node_tables,
        space_axes={s: sorted(a) for s, a in layout["space_axes"].items()},
        space_nodes={s: sorted(n) for s, n in layout["space_nodes"].items()},
        space_size=layout["space_size"], node_numel=numel)
    _vote_blocks(tables, layout["signatures"])
    for sid, axes in result.space_axes.items():
        # a block of channels in groups of the space (a grouped conv's channel group slices one channel per group)
        blocks = [_in_groups(tables[node_tables[name][0]][axis].block, layout["unit_channels"][sid, name, axis])
                  for name, axis in axes if axis in tables.get(node_tables[name][0], {})]
        floor = max(_layout_multiples(sid, axes, layout, int(data["layout_block"])), default=1)
        result.preferred_multiple[sid] = _cutting_multiple(result, sid, max(blocks + [floor]), floor)
        size = result.space_size[sid]
        half = size // 2
        saved = result.total_ms - result.predict_ms({sid: half}) if size > 1 else 0.0
        result.channel_saving_ms[sid] = max(saved, 0.0) / max(size - half, 1)
    _erase_savings(model, space, result)
    for group in space.groups:
        if group.kind == "prune" and group.removable:
            result.group_saving_ms[group.id] = result.channel_saving_ms.get(group.space, 0.0)
    return result


def _layout_multiples(sid: str, axes: list[tuple[str, int]], layout: dict[str, Any], block: int) -> list[int]:
    """A space whose convs are at least ``block`` (:func:`layout_block`) channels wide keeps multiples of it, so it
    never narrows below it and breaks its convs' blocked-layout chain into reorders."""
    out = []
    for name, axis in axes:
        sig = layout["node_sig"][name]
        channels = sig.w_shape[0] if axis == 0 else sig.x_shape[1]  # a conv's input channels, every group
        if sig.op == "Conv" and channels >= block:
            out.append(_in_groups(block, layout["unit_channels"][sid, name, axis]))
    return out


def _cutting_multiple(result: LatencyModel, sid: str, block: int, floor: int) -> int:
    """The multiple space ``sid`` keeps: its kernels' ``block`` when that leaves it a width to cut to. A space no
    wider than the block runs its kernels padded to the block at any width, but its other nodes (elementwise ops,
    pools, the layout reorders around them) still shrink: it keeps multiples of the largest divisor of the block
    (a multiple of the layout ``floor``) narrower than itself, when the latency model predicts the cut saves time
    (StackedUnets' 8-channel spaces on a 16-wide kernel: 10-25% of the model's time, docs/BENCHMARKS.md)."""
    size = result.space_size[sid]
    if block < size:
        return block
    for multiple in range(min(block, size - 1), floor - 1, -1):
        if block % multiple == 0 and multiple % floor == 0:
            # a saving below the executor's own time per node is within what the model resolves, not a saving
            saving = result.total_ms - result.predict_ms({sid: multiple})
            cut_pays = not _narrowing_slows(result, sid) and saving > result.node_overhead_ms
            return multiple if cut_pays else block
    return block


def _narrowing_slows(result: LatencyModel, sid: str) -> bool:
    """Whether a kernel of space ``sid`` was measured leaving its fast path when narrowed (its table's
    ``narrowing_slows``): such a cut is slower in a way the tables' interpolation does not predict."""
    return any(table.narrowing_slows
               for name, axis in result.space_axes.get(sid, [])
               for table in [result.tables.get(result.node_tables[name][0], {}).get(axis)] if table is not None)


def _in_groups(block: int, channels_per_group: int) -> int:
    """The fewest channel groups of ``channels_per_group`` channels that make a multiple of ``block`` channels."""
    return block // math.gcd(block, max(channels_per_group, 1))


def _vote_blocks(tables: dict[str, dict[int, WidthTable]], signatures: Mapping[str, Any]) -> None:
    """One block per kernel kind (op, weight axis, kernel size, depthwise, grouped): the median of what its
    signatures measured, and whether narrowing slows it by their majority, so one noisy probe does not set a
    space's multiple."""
    kinds: dict[tuple, list[WidthTable]] = {}
    for key, axes in tables.items():
        if key not in signatures:
            continue
        sig = signatures[key][0]
        group = int(dict(sig.attrs).get("group", 1))
        grouped = (sig.w_shape[0] // group, sig.w_shape[1]) if group != 1 else None  # blocks are per group
        for axis, table in axes.items():
            kinds.setdefault((sig.op, axis, sig.w_shape[2:], sig.depthwise, grouped), []).append(table)
    for members in kinds.values():
        block = sorted(t.block for t in members)[(len(members) - 1) // 2]
        slows = 2 * sum(t.narrowing_slows for t in members) > len(members)
        for table in members:
            table.block, table.narrowing_slows = block, slows


def _erase_savings(model: Model, space: SearchSpace, result: LatencyModel) -> None:
    """Each removable structure saves the profiled time of every node that goes with it (the oracle's removed
    segments: the structure, and what it alone fed)."""
    erase = [g for g in space.groups if g.kind == "erase" and g.removable]
    if not erase:
        return
    from asgnas.passes.hierarchy import build_oracle

    oracle = build_oracle(model, space.groups)
    segments = oracle.analysis.graph.by_id()
    for group in erase:
        nodes = {n for sid in oracle.removed_segments([group.id]) for n in segments[sid].nodes} | set(group.nodes)
        result.group_saving_ms[group.id] = result.total_ms - result.predict_from_ratios(dict.fromkeys(nodes, 0.0))
        result.erase_ids.add(group.id)


def resolve_round_to(model: Model, value: int | str, space: SearchSpace | None = None) -> int | dict[str, int]:
    """``round-to``: an int as given; ``auto``: per channel space, the multiple the latency model measured (the
    pipeline's ``latency`` analysis, else one measured now with its defaults)."""
    if value != "auto":
        return int(value)
    if space is not None and LATENCY_KEY not in model.analyses:
        return analyze_latency(model, space).preferred_multiple
    return AnalysisManager(model).get(LATENCY_KEY).preferred_multiple


@register_pass
class LatencyPass(Pass):
    name = "latency"
    summary = "measure the model's latency in onnxruntime and what each structure and channel width costs (cached)"
    options = (
        Option("device", str, "cpu", "execution provider: cpu, cuda or auto", choices=("cpu", "cuda", "auto")),
        Option("batch", int, 1, "batch size to time at (a model with a fixed batch is timed at its own)", minimum=1),
        Option("threads", int, 0, "onnxruntime intra-op threads (0: its default, every core)", minimum=0),
        Option("cache", str, "", "cache folder (default $ASGNAS_CACHE or ~/.cache/asgnas)"),
    )
    requires = (SEARCH_SPACE_KEY,)
    preserves = ALL_ANALYSES  # measures; changes nothing

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        start = time.perf_counter()
        cfg = self.config
        result = analyze_latency(model, model.analyses[SEARCH_SPACE_KEY], device=cfg["device"], batch=cfg["batch"],
                                 threads=cfg["threads"], cache=cfg["cache"])
        return {**result.report(), "seconds": round(time.perf_counter() - start, 3)}


# on demand (round-to=auto, train{cost=latency} without a latency pass before): the pass's defaults
register_analysis(LATENCY_KEY, lambda model, analyses: analyze_latency(model, analyses.get(SEARCH_SPACE_KEY)),
                  requires=(SEARCH_SPACE_KEY,))
