"""``draw-groups``: the dependency (segment) graph with its groups, as Graphviz DOT/SVG or as terminal text.

Reads: ``model.analyses["search_space"]``, ``["erasing_groups"]`` and ``["pruning_groups"]`` of the model it
draws (the analysis manager runs ``search-space`` when missing; no ``requires``: after construction it draws the
pipeline's input, not the current model). Writes: ``out`` (``.dot`` always; ``.svg`` when Graphviz's ``dot`` program is
installed: ``apt-get install graphviz``); with ``format=text`` the text form goes to the pass log. Report key
``draw-groups``: the paths written and whether the picture marks what went.

Picture: one box per segment (its operators) with a short label: segment id and head op, for a removal structure
``g<id>`` with the parameters and MACs it removes, and the channel spaces the segment produces (``64 ch, 60
removable``). Removable structures are filled, structures that must stay dashed; hovering a box (SVG tooltip) shows
its full ONNX node names and, for a fixed structure, why. Data edges are solid; hierarchy edges (erasing the parent
removes the child) red and dotted. A legend explains the marks.

After construction (what went): run after ``construct-subnet`` (or ``erase-subnet``/``prune-subnet``) in the
same pipeline, the pass draws the pipeline's input model and marks what the current model lacks; or, on any
model, ``after=SLIM.onnx`` compares with a slim model written by an earlier run. Erased structures (and joints left
with one operand) are greyed and struck through; channel spaces read ``64 -> 24 ch``.
"""

from __future__ import annotations

import shutil
import subprocess
from html import escape
from pathlib import Path
from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.ir.io import write_text_atomically
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.draw_marks import ChannelSpace, Marks, segment_marks
from asgnas.passes.groups import Group, SearchSpace

#: report keys of the passes that construct a sub-network: after them, the picture shows what went
CONSTRUCTION_KEYS = ("construct-subnet", "erase-subnet", "prune-subnet")
REMOVABLE_FILL, ERASED_FILL, ERASED_INK = "#9ecae1", "#eeeeee", "#999999"


def _load(model: Model) -> tuple[SearchSpace, Any, Any]:
    from asgnas.passes.erasing import ANALYSIS_KEY
    from asgnas.passes.pruning import ANALYSIS_KEY as PRUNING_KEY
    from asgnas.passes.search_space import SEARCH_SPACE_KEY

    analyses = AnalysisManager(model)
    space = analyses.get(SEARCH_SPACE_KEY)  # stores its parts: the two below are cached with it
    return space, analyses.get(ANALYSIS_KEY), analyses.get(PRUNING_KEY)


def _quote(text: str) -> str:
    """A DOT string; real line breaks become DOT's ``\\n`` (tooltips show them as line breaks)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(number: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= scale:
            return f"{number / scale:.3g}{suffix}"
    return str(number)


def _channel_counts(space: SearchSpace, node_segment: dict[str, int]) -> dict[int, int]:
    """Removable channel groups per segment that owns their first parameter's producer node (text form)."""
    counts: dict[int, int] = {}
    for group in space.removable("prune"):
        for node in group.nodes:
            if node in node_segment:
                counts[node_segment[node]] = counts.get(node_segment[node], 0) + 1
                break
    return counts


def _channel_line(entry: ChannelSpace, compared: bool) -> str:
    if compared and entry.size_after is not None and entry.size_after != entry.size:
        return f"{entry.size} -> {entry.size_after} ch"
    if not compared and entry.removable:
        return f"{entry.size} ch, {entry.removable} removable"
    return f"{entry.size} ch"


def _html_label(lines: list[str], struck: bool) -> str:
    """A Graphviz HTML-like label: one line per entry (the first bold), struck through when erased."""
    cells = [escape(line) for line in lines]
    cells[0] = f"<B>{cells[0]}</B>"
    if struck:
        cells = [f"<S>{cell}</S>" for cell in cells]
    return "<" + "<BR/>".join(cells) + ">"


def _segment_node(seg: Any, group: Group | None, marks: Marks) -> str:
    more = f" +{len(seg.nodes) - 1}" if len(seg.nodes) > 1 else ""
    head = f"{seg.id} \u00b7 {seg.op}{more}"
    lines = [f"g{group.id} \u00b7 {head}" if group is not None else head]
    tooltip = [f"{seg.id} ({seg.kind}, {len(seg.nodes)} nodes):", *seg.nodes]
    style = "style=solid"
    if group is not None:
        lines.append(f"{_short(group.num_params)} params \u00b7 {_short(group.macs)} MACs")
        style = f'style=filled, fillcolor="{REMOVABLE_FILL}"' if group.removable else "style=dashed"
        if not group.removable:
            tooltip.insert(0, f"stays: {group.reason}")
    gone = seg.index in marks.gone
    lines += [f"{entry.size} ch" if gone else _channel_line(entry, marks.compared)
              for entry in marks.channels.get(seg.index, ())]
    if gone:
        lines.append("erased" if group is not None else "bypassed")
        style = f'style="filled,dashed", fillcolor="{ERASED_FILL}", color="{ERASED_INK}", fontcolor="{ERASED_INK}"'
    return f"  {seg.id} [label={_html_label(lines, gone)}, {style}, tooltip={_quote(chr(10).join(tooltip))}];"


def _legend(compared: bool) -> str:
    rows = [(REMOVABLE_FILL, "g&lt;id&gt;: removable structure (params, MACs removed with it)"),
            ("white", "dashed box: structure that must stay (hover: why)"),
            ("white", "plain box: segment without parameters of its own"),
            ("white", "N ch: channel space produced here" if compared else
             "N ch, M removable: channel space produced here, M channels removable"),
            ("white", "red dotted edge: erasing the parent removes the child"),
            ("white", "hover a box: its ONNX node names")]
    if compared:
        rows[3:3] = [(ERASED_FILL, "<S>greyed, struck</S>: erased by construction"),
                     ("white", "64 -&gt; 24 ch: channels before -&gt; after construction")]
    body = '<TR><TD COLSPAN="2"><B>legend</B></TD></TR>' + "".join(
        f'<TR><TD BGCOLOR="{colour}" WIDTH="18"> </TD><TD ALIGN="LEFT">{text}</TD></TR>' for colour, text in rows)
    table = f'<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3">{body}</TABLE>'
    return f'  legend [shape=plaintext, tooltip="legend", label=<{table}>];\n  {{ rank=min; legend; input; }}'


def to_dot(space: SearchSpace, erasing: Any, marks: Marks | None = None) -> str:
    """The DOT text; ``marks`` (``draw_marks.segment_marks``) adds channel spaces and what went."""
    marks = marks or Marks()
    groups = space.by_id()
    segments = erasing.graph.segments
    lines = ["digraph groups {", "  rankdir=TB; node [shape=box, fontname=Helvetica, fontsize=10];",
             '  input [shape=oval]; output [shape=oval];', _legend(marks.compared)]
    for seg in segments:
        group = groups.get(seg.group) if seg.group is not None else None
        lines.append(_segment_node(seg, group, marks))
        grey = f' [color="{ERASED_INK}"]' if seg.index in marks.gone else ""
        if seg.reads_input:
            lines.append(f"  input -> {seg.id}{grey};")
        if seg.feeds_output:
            lines.append(f"  {seg.id} -> output{grey};")
        for consumer in seg.consumers:
            edge_grey = grey or (f' [color="{ERASED_INK}"]' if consumer in marks.gone else "")
            lines.append(f"  {seg.id} -> {segments[consumer].id}{edge_grey};")
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
    summary = "draw the groups' dependency graph (DOT/SVG via Graphviz, or text); after construct-subnet: what went"
    options = (
        Option("out", str, "groups.dot", "output path (.dot; an .svg beside it when Graphviz is installed)"),
        Option("format", str, "auto", "auto (DOT, plus SVG when Graphviz is installed), svg (DOT + SVG, needs "
               "Graphviz), dot, or text (printed)", choices=("auto", "svg", "dot", "text")),
        Option("after", str, "", "a slim ONNX model made from this one (e.g. an earlier run's -o): mark what it "
               "lacks; in a pipeline after construct-subnet that happens by itself"),
    )
    preserves = ALL_ANALYSES

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        drawn, slim = self._models(model, ctx)
        space, erasing, pruning = _load(drawn)
        if self.config["format"] == "text":
            ctx.log(to_text(space, erasing))
            return {"format": "text"}
        if not Path(self.config["out"]).name:
            raise AsgnasError("option 'out' needs a file name", pass_name=self.name)
        dot_path = Path(self.config["out"]).with_suffix(".dot")
        if not dot_path.parent.is_dir():  # like -o and --report: a typo in the folder is an error, not a new folder
            raise AsgnasError(f"cannot write {dot_path}: no such directory {dot_path.parent}")
        if not ctx.writes_files:
            return {"dot": str(dot_path)}
        marks = segment_marks(space, erasing, pruning, slim)
        if marks.gone and len(marks.gone) == len(erasing.graph.segments):
            raise AsgnasError(f"the slim model {self.config['after'] or '(current)'} shares no node with the drawn "
                              "model: was it made from it?")
        write_text_atomically(dot_path, to_dot(space, erasing, marks))
        written: dict[str, Any] = {"dot": str(dot_path), "after_construction": slim is not None}
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

    def _models(self, model: Model, ctx: PassContext) -> tuple[Model, Model | None]:
        """(the model to draw, the slim model to mark it against or None)."""
        if self.config["after"]:
            from asgnas.ir import load_model

            return model, load_model(self.config["after"])
        if ctx.input_model is not None and any(key in ctx.results for key in CONSTRUCTION_KEYS):
            return ctx.input_model, model
        return model, None
