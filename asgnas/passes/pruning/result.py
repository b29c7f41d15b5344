"""What the channel analysis hands on: the spaces, the groups, the folds, and (for construction in this package)
the relations they were resolved from. A module of its own so that the rewrite rules can read a result without
importing the driver that computes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from asgnas.ir import Model, Value
from asgnas.passes.groups import Group, TensorSlice
from asgnas.passes.pruning.builder import Builder
from asgnas.passes.pruning.shapes import ShapeEval


@dataclass
class Space:
    """One level-1 channel space: axes indexed identically."""

    id: str
    size: int
    members: list[tuple[str, int, str]]  # (value name, axis, role): role is "" for activations
    producers: list[str]  # stems whose output rows index this space
    consumers: list[str]  # nodes whose input columns index this space
    groups: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "producers": self.producers, "consumers": self.consumers,
                "groups": len(self.groups), "members": len(self.members)}


@dataclass
class Fold:
    """A removed channel holding constant ``z`` read by ``node``: construction adds its contribution to a bias."""

    node: str
    kind: str  # conv | gemm | matmul
    z: float
    weight: tuple[str, int]  # (initializer, axis) along which the removed columns lie
    value: str  # the consumed value


@dataclass
class PruningAnalysis:
    """``model.analyses["pruning_groups"]``.

    Public: ``groups`` (ids 0..n-1, ``kind="prune"``), ``spaces`` (id -> ``Space``), ``costs``, ``by_id()``,
    ``removable()``, ``slices(group_id)`` (every slice construction removes with the group: params, consumer
    columns, running statistics, constants), ``space_groups(space_id)``, ``summary()``, ``to_json()``; for
    construction, the channel index spaces ("roots": linked spaces share one) as ints: ``removed_masks(ids)``,
    ``removes_from(group_id, root)``, ``root_of(value, axis)``, ``key_root(key)``, ``virtual_axis(node, label)``,
    ``root_members(root)`` and the folded shape computations ``shape_eval``, valid while ``describes(model)``.
    """

    groups: list[Group]
    spaces: dict[str, Space]
    other_slices: dict[int, list[TensorSlice]]
    folds: list[Fold]
    pin_reasons: dict[str, int]
    #: the analysed graph's shape computations, folded (construction rewrites the shape inputs they feed)
    shape_eval: ShapeEval | None = None
    _b: Builder | None = None
    _root_of_key: list[int] = field(default_factory=list)
    _root_size: dict[int, int] = field(default_factory=dict)
    _root_members: dict[int, list[int]] = field(default_factory=dict)
    _elements: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # group -> root -> indices
    _space_id: dict[int, str] = field(default_factory=dict)
    costs: dict[str, dict[str, int]] | None = None  # node_costs of the model as analysed (None: they failed)

    def by_id(self) -> dict[int, Group]:
        return {g.id: g for g in self.groups}

    def removable(self) -> list[Group]:
        return [g for g in self.groups if g.removable]

    def slices(self, group_id: int) -> list[TensorSlice]:
        group = self.groups[group_id]
        return list(group.params) + list(self.other_slices.get(group_id, ()))

    def space_groups(self, space_id: str) -> list[int]:
        """Every group that removes channels of the space (its own and those it shares with linked spaces)."""
        return list(self.spaces[space_id].groups)

    def group_spaces(self, group_id: int) -> list[str]:
        """Every space a group removes channels from (``Group.space`` is the first: its producing space). More than
        one when spaces are linked: a concat's inputs and output, a grouped conv's, a reshape's factors."""
        ids = [self._space_id[root] for root in self._elements[group_id]]
        return sorted(ids, key=lambda sid: sid != self.groups[group_id].space)

    def describes(self, model: Model) -> bool:
        """True when this analysis was computed on ``model``'s graph (construction reads its relations)."""
        return self._b is not None and self._b.graph is model.graph

    def removed_masks(self, group_ids: Iterable[int]) -> dict[int, np.ndarray]:
        """Per root the groups touch: which of its channels they remove."""
        masks: dict[int, np.ndarray] = {}
        for gid in group_ids:
            for root, idx in self._elements[gid].items():
                mask = masks.get(root)
                if mask is None:
                    mask = masks[root] = np.zeros(self._root_size[root], dtype=bool)
                mask[idx] = True
        return masks

    def removes_from(self, group_id: int, root: int) -> bool:
        return root in self._elements[group_id]

    def root_of(self, value_name: str, axis: int) -> int | None:
        """The root indexing ``axis`` of the named tensor; None when no channel relation reached it."""
        key = self._b.keys.get((value_name, axis)) if self._b is not None else None
        return None if key is None else self._root_of_key[key]

    def key_root(self, key: int) -> int:
        """The root of a relation key (``shape_eval`` names the keys a computed size depends on)."""
        return self._root_of_key[key]

    def virtual_axis(self, node_name: str, label: str) -> tuple[int, int]:
        """The root and the size of an axis a rule invented on the node (e.g. a GroupNormalization's groups)."""
        key = self._b.virtual_keys[(node_name, label)]
        return self._root_of_key[key], int(self._b.key_size[key])

    def root_members(self, root: int) -> list[tuple[Value, int]]:
        """Every tensor of the analysed IR indexed by ``root``, with the axis that is."""
        b = self._b
        return [(b.key_value[key], b.key_axis[key]) for key in self._root_members[root] if b.key_value[key] is not None]

    def summary(self) -> dict[str, Any]:
        removable = self.removable()
        produced = [s for s in self.spaces.values() if s.producers]
        return {
            "num_spaces": len(produced),
            "num_prunable_spaces": sum(
                any(self.groups[g].removable for g in s.groups) for s in produced),
            "num_groups": len(self.groups),
            "num_removable_groups": len(removable),
            "removable_params": int(sum(g.num_params for g in removable)),
            "removable_macs": int(sum(g.macs for g in removable)),
            "pins": dict(sorted(self.pin_reasons.items(), key=lambda kv: -kv[1])[:20]),
        }

    def to_json(self, compact: bool = True) -> dict[str, Any]:
        groups = []
        for g in self.groups:
            if compact:
                groups.append({"id": g.id, "space": g.space, "removable": g.removable, "reason": g.reason,
                               "num_params": g.num_params, "macs": g.macs,
                               "channels": {s.initializer: len(s.indices or ()) for s in g.params[:1]}})
            else:
                groups.append(g.to_json())
        return {"summary": self.summary(), "spaces": [s.to_json() for s in self.spaces.values()],
                "groups": groups}


__all__ = ["Fold", "PruningAnalysis", "Space"]
