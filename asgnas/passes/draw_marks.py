"""What ``draw-groups`` writes on each segment: its channel spaces, and what went after sub-network construction.

Channel spaces (``pruning_groups``) are drawn on the segments that produce them: size and removable channels.
Against a slim model (the one ``construct-subnet`` made from the drawn model, matched by node and tensor names,
which construction keeps): a segment whose every node is gone was erased (or bypassed, a joint left with one
operand); a space's size in the slim model is read from the first of its tensors still there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from asgnas.ir import Model
from asgnas.passes.groups import SearchSpace


@dataclass
class ChannelSpace:
    id: str
    size: int
    removable: int  # removable channel groups of the space
    size_after: int | None = None  # in the slim model; None when not compared (or every tensor of it is gone)


@dataclass
class Marks:
    """Per segment index: its channel spaces; the segments gone in the slim model (empty when not compared)."""

    channels: dict[int, list[ChannelSpace]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    compared: bool = False


def _size_in(model: Model, members: list[tuple[str, int, str]]) -> int | None:
    """A space's size in ``model``: the axis of its first tensor there, constants (exact shapes) first."""
    values = model.graph.values
    present = [(values[name], axis) for name, axis, _ in members if name in values]
    for value, axis in sorted(present, key=lambda item: item[0].const is None):
        shape = value.const.shape if value.const is not None else value.shape  # dims only, no decoding
        if shape is not None and axis < len(shape) and isinstance(shape[axis], int):
            return int(shape[axis])
    return None


def segment_marks(space: SearchSpace, erasing: Any, pruning: Any, slim: Model | None = None) -> Marks:
    """The channel spaces of each segment and, given ``slim``, what construction removed."""
    segment_of = erasing.graph.by_node
    removable = Counter(g.space for g in space.removable("prune"))
    marks = Marks(compared=slim is not None)
    for sid, channel_space in pruning.spaces.items():
        producers = sorted({segment_of[n] for n in channel_space.producers if n in segment_of})
        if not producers:
            continue
        entry = ChannelSpace(sid, channel_space.size, removable[sid])
        if slim is not None:
            entry.size_after = _size_in(slim, channel_space.members)
        marks.channels.setdefault(producers[0], []).append(entry)
    if slim is not None:
        kept_nodes = {node.name for node in slim.graph}
        marks.gone = {seg.index for seg in erasing.graph.segments if not kept_nodes.intersection(seg.nodes)}
    return marks
