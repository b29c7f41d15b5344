"""The search-space vocabulary shared by the analysis, rewrite and training layers.

A ``Group`` is a set of parameter slices that, once all zero, make something contribute nothing:
- ``kind="prune"``: one channel (or one GroupNorm group, or one attention head) of a channel space; removing it
  slices the producers' rows and the consumers' columns (the ZIGs of OTOv1/v2);
- ``kind="erase"``: one minimal removal structure (a segment of whole operators); removing it deletes its nodes
  (the GeZIGs of OTOv3 / ASGNAS).
Groups are referred to by integer ``id``; the ids are unique within one ``SearchSpace``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from asgnas.ir import Model

GroupKind = Literal["prune", "erase"]


@dataclass(slots=True)  # slots: a search space holds ~10^5 of them
class TensorSlice:
    """The part of one initializer selected by ``indices`` along ``axis`` (``indices=None``: the whole tensor)."""

    initializer: str
    axis: int = 0
    indices: list[int] | None = None

    def select(self, array: np.ndarray) -> np.ndarray:
        return array if self.indices is None else np.take(array, self.indices, axis=self.axis)

    def size(self, shape: tuple[int, ...]) -> int:
        if self.indices is None:
            return int(np.prod(shape, dtype=np.int64))
        return int(np.prod(shape, dtype=np.int64) // max(shape[self.axis], 1) * len(self.indices))


@dataclass(slots=True)
class Group:
    id: int
    kind: GroupKind
    nodes: list[str]  # prune: nodes the channel flows through; erase: nodes the structure deletes
    params: list[TensorSlice]  # the variables of the group: zero all of them and the group contributes nothing
    removable: bool = True
    reason: str = ""  # why not removable (names node and op), empty when removable
    num_params: int = 0  # parameters removed with the group (its own slices plus consumer slices that go with it)
    macs: int = 0  # MACs removed with the group
    parents: list[int] = field(default_factory=list)  # groups this one depends on / is contained in
    children: list[int] = field(default_factory=list)
    space: str = ""  # prune: the channel space (groups of one space share tensors); erase: the segment id
    segment: int | None = None  # erase: index of its segment in the segment graph; prune: None (a channel space)

    def to_json(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies every list (0.45 s for ResNet-50's 5,054 groups)
        params = [{"initializer": p.initializer, "axis": p.axis,
                   "indices": None if p.indices is None else list(p.indices)} for p in self.params]
        return {"id": self.id, "kind": self.kind, "nodes": list(self.nodes), "params": params,
                "removable": self.removable, "reason": self.reason, "num_params": self.num_params,
                "macs": self.macs, "parents": list(self.parents), "children": list(self.children),
                "space": self.space, "segment": self.segment}


def group_is_zero(model: Model, group: Group) -> bool:
    """True when every parameter slice of the group is exactly zero in ``model``."""
    values = model.graph.values
    for piece in group.params:
        value = values.get(piece.initializer)
        if value is None or value.const is None:
            return False
        if np.any(piece.select(value.const.array)):
            return False
    return True


def zero_group(model: Model, group: Group) -> None:
    """Set every parameter slice of the group to exactly zero (copy-on-write on the initializer)."""
    zero_groups(model, [group])


def zero_groups(model: Model, groups: Iterable[Group]) -> None:
    """Zero every parameter slice of ``groups``, copying each touched initializer once (copy-on-write)."""
    values = model.graph.values
    copies: dict[str, np.ndarray] = {}
    for group in groups:
        for piece in group.params:
            array = copies.get(piece.initializer)
            if array is None:
                array = copies[piece.initializer] = np.array(values[piece.initializer].const.array, copy=True)
            if piece.indices is None:
                array[...] = 0
            else:
                index = [slice(None)] * array.ndim
                index[piece.axis] = piece.indices
                array[tuple(index)] = 0
    for name, array in copies.items():
        values[name].const.array = array


def round_kept_channels(groups: Sequence[Group], chosen: Sequence[Group],
                        multiple: int | Mapping[str, int]) -> list[Group]:
    """Un-choose channel groups so that every channel space keeps a multiple of ``multiple`` channels (a mapping:
    per channel space, e.g. the latency model's ``preferred_multiple``; spaces it does not name keep any count).

    ``groups``: every group of the search space (a space's size counts its removable and fixed channels);
    ``chosen``: the groups to zero, most redundant first; a space's last-chosen ones are dropped. Odd channel
    counts (33 of 64) make onnxruntime's blocked conv kernels pad back up: the slim model is then smaller on
    paper only. Zeroing fewer channels of a space is always valid, so this never breaks the oracle's verdict.
    """
    per_space = multiple if isinstance(multiple, Mapping) else None
    if per_space is None and multiple <= 1:
        return list(chosen)
    size = Counter(g.space for g in groups if g.kind == "prune")
    by_space: dict[str, list[Group]] = {}
    for group in chosen:
        if group.kind == "prune":
            by_space.setdefault(group.space, []).append(group)
    dropped: set[int] = set()
    for sid, members in by_space.items():
        step = per_space.get(sid, 1) if per_space is not None else multiple
        kept = size[sid] - len(members)
        rounded = min(size[sid], -(-kept // step) * step)
        dropped.update(g.id for g in members[len(members) - (rounded - kept):])
    return [g for g in chosen if g.id not in dropped]


@dataclass
class SearchSpace:
    """``model.analyses["search_space"]``: every group, plus the validity oracle's factory (hierarchy pass)."""

    groups: list[Group]

    def by_id(self) -> dict[int, Group]:
        return {g.id: g for g in self.groups}

    def removable(self, kind: GroupKind | None = None) -> list[Group]:
        return [g for g in self.groups if g.removable and (kind is None or g.kind == kind)]

    def summary(self) -> dict[str, Any]:
        return {
            "num_prune_groups": sum(g.kind == "prune" for g in self.groups),
            "num_erase_groups": sum(g.kind == "erase" for g in self.groups),
            "num_removable_prune_groups": len(self.removable("prune")),
            "num_removable_erase_groups": len(self.removable("erase")),
            # prunable channel spaces: what Torch-Pruning's DependencyGraph and OTO call "groups"
            "num_channel_spaces": len({g.space for g in self.removable("prune")}),
        }
