"""``draw-groups``: the dependency (segment) graph with its groups, as Graphviz DOT/SVG or as terminal text.

Reads: ``model.analyses["search_space"]`` and ``["erasing_groups"]`` (runs ``search-space`` when missing).
Writes: ``out`` (``.dot`` always; ``.svg`` when Graphviz's ``dot`` program is installed: ``apt-get install
graphviz``); with ``format=text`` the text form goes to the pass log. Report key ``draw-groups``: the paths written.

Picture: one box per segment (its operators); a removal structure is labelled ``g<id>`` with its parameters and
MACs, filled when removable, dashed when not (the reason in its tooltip); other segments are plain. Data edges are
solid; hierarchy edges (erasing the parent removes the child) are dotted. Channel groups are summarised per
segment that produces them (``+N ch``: how many removable channel groups its outputs carry).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.groups import Group, SearchSpace


def _load(model: Model) -> tuple[SearchSpace, Any]:
    from asgnas.passes.erasing import ANALYSIS_KEY
    from asgnas.passes.search_space import SEARCH_SPACE_KEY, analyze_search_space

    space = model.analyses.get(SEARCH_SPACE_KEY) or analyze_search_space(model)
    return space, model.analyses[ANALYSIS_KEY]


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _channel_counts(space: SearchSpace, node_segment: dict[str, int]) -> dict[int, int]:
    """Removable channel groups per segment that owns their first parameter's producer node."""
    counts: dict[int, int] = {}
    for group in space.removable("prune"):
        for node in group.nodes:
            if node in node_segment:
                counts[node_segment[node]] = counts.get(node_segment[node], 0) + 1
                break
    return counts


def to_dot(space: SearchSpace, erasing: Any) -> str:
    groups = space.by_id()
    segments = erasing.graph.segments
    channels = _channel_counts(space, erasing.graph.by_node)
    lines = ["digraph groups {", "  rankdir=TB; node [shape=box, fontname=Helvetica, fontsize=10];",
             '  input [shape=oval]; output [shape=oval];']
    for seg in segments:
        ops = " ".join(seg.nodes[:3]) + (f" ...(+{len(seg.nodes) - 3})" if len(seg.nodes) > 3 else "")
        label = f"{seg.id} {seg.op}\\n{ops}"
        style = "solid"
        tooltip = ""
        group: Group | None = groups.get(seg.group) if seg.group is not None else None
        if group is not None:
            label = f"g{group.id}: {group.num_params} params, {group.macs} MACs\\n{label}"
            style = "filled" if group.removable else "dashed"
            tooltip = group.reason
        if channels.get(seg.index):
            label += f"\\n+{channels[seg.index]} ch"
        fill = ', fillcolor="#9ecae1"' if style == "filled" else ""
        lines.append(f"  {seg.id} [label={_quote(label)}, style={style}{fill}, tooltip={_quote(tooltip)}];")
        if seg.reads_input:
            lines.append(f"  input -> {seg.id};")
        if seg.feeds_output:
            lines.append(f"  {seg.id} -> output;")
        for consumer in seg.consumers:
            lines.append(f"  {seg.id} -> {segments[consumer].id};")
    segment_of_group = {s.group: s.id for s in segments if s.group is not None}
    for group in space.groups:
        for child in group.children:
            if group.id in segment_of_group and child in segment_of_group:
                lines.append(f"  {segment_of_group[group.id]} -> {segment_of_group[child]} "
                             "[style=dotted, color=red, constraint=false];")
    lines.append("}")
    return "\n".join(lines)


def to_text(space: SearchSpace, erasing: Any) -> str:
    groups = space.by_id()
    channels = _channel_counts(space, erasing.graph.by_node)
    lines = []
    for seg in erasing.graph.segments:
        group = groups.get(seg.group) if seg.group is not None else None
        mark = "   "
        if group is not None:
            mark = "[x]" if group.removable else "[ ]"
        head = f"{mark} {seg.id:<5} {seg.op:<20} nodes={len(seg.nodes):<3}"
        if group is not None:
            head += f" g{group.id} params={group.num_params} macs={group.macs}"
            if group.children:
                head += f" children={group.children}"
            if not group.removable:
                head += f"  ({group.reason})"
        if channels.get(seg.index):
            head += f" +{channels[seg.index]} ch"
        consumers = ",".join(erasing.graph.segments[c].id for c in seg.consumers)
        lines.append(head + (f" -> {consumers}" if consumers else "") + (" -> output" if seg.feeds_output else ""))
    return "\n".join(lines)


@register_pass
class DrawGroupsPass(Pass):
    name = "draw-groups"
    summary = "draw the dependency graph with its groups (DOT/SVG via Graphviz, or text for terminals)"
    options = (
        Option("out", str, "groups.dot", "output path (.dot; an .svg beside it when Graphviz is installed)"),
        Option("format", str, "auto", "auto (DOT, plus SVG when Graphviz is installed), svg (DOT + SVG, needs "
               "Graphviz), dot, or text (printed)", choices=("auto", "svg", "dot", "text")),
    )

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        space, erasing = _load(model)
        if self.config["format"] == "text":
            ctx.log(to_text(space, erasing))
            return {"format": "text"}
        if not Path(self.config["out"]).name:
            raise AsgnasError("option 'out' needs a file name", pass_name=self.name)
        dot_path = Path(self.config["out"]).with_suffix(".dot")
        if not dot_path.parent.is_dir():  # like -o and --report: a typo in the folder is an error, not a new folder
            raise AsgnasError(f"cannot write {dot_path}: no such directory {dot_path.parent}")
        dot_path.write_text(to_dot(space, erasing))
        written = {"dot": str(dot_path)}
        dot_program = shutil.which("dot")
        if self.config["format"] == "auto" and dot_program is None:
            ctx.log(f"draw-groups: wrote {dot_path} only (for an SVG: apt-get install graphviz)")
        if self.config["format"] == "svg" or (self.config["format"] == "auto" and dot_program is not None):
            if dot_program is None:
                raise AsgnasError("Graphviz's `dot` is not installed (apt-get install graphviz); "
                                  f"the DOT file is at {dot_path}; or use draw-groups{{format=text}}")
            svg_path = dot_path.with_suffix(".svg")
            subprocess.run([dot_program, "-Tsvg", str(dot_path), "-o", str(svg_path)], check=True)
            written["svg"] = str(svg_path)
        return written
