"""Parameter groups for the structured-sparsity optimizers (H2SPG, DHSPG).

A *group* is a set of tensor slices that must become exactly zero together: a zero-invariant group (ZIG,
one output channel of a conv together with its bias/BN rows) or the whole variable set of a removal structure
(GeZIG, one or several complete tensors).  This module holds

* the public description of groups (:class:`ParamSlice`, :class:`ParamGroup`),
* the :class:`ValidityOracle` protocol that H2SPG asks before it marks a group redundant,
* :func:`resolve_target_count` (fraction or count -> exact K), and
* :class:`GroupLayout`, the index structure built once per optimizer so that per-group reductions
  (norms, inner products) cost a few batched ops per *parameter*, never a Python loop over groups.

Pure torch; no ONNX, nothing else from asgnas.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Iterable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

__all__ = [
    "ParamSlice",
    "ParamGroup",
    "ValidityOracle",
    "Binding",
    "GroupLayout",
    "resolve_target_count",
]


@dataclass(frozen=True, eq=False)
class ParamSlice:
    """The part of one tensor that belongs to a group: ``param.index_select(axis, indices)``.

    ``indices=None`` means every index along ``axis`` (i.e. the whole tensor).
    """

    param: torch.nn.Parameter
    axis: int = 0
    indices: Optional[Sequence[int]] = None


@dataclass(eq=False)
class ParamGroup:
    """One zero-invariant group (a ZIG or a removal structure).

    ``id`` is the caller's identifier (passed back to the validity oracle and reported by the optimizers);
    ``removable=False`` groups are trained with the base optimizer only and are never projected to zero.
    """

    id: int
    slices: list[ParamSlice]
    removable: bool = True


@runtime_checkable
class ValidityOracle(Protocol):
    """Answers "is the network still valid if this group is erased too?" (implemented by the hierarchy pass)."""

    def reset(self) -> None:
        """Forget all removals committed so far."""
        ...

    def try_remove(self, group_id: int) -> bool:
        """Commit ``group_id`` and return True if removing it together with all groups removed so far keeps
        the network valid; otherwise return False and change nothing."""
        ...


def resolve_target_count(target_group_sparsity: float | int, n_removable: int) -> int:
    """Exact number K of groups to zero.

    An ``int`` (>= 0) is a count; a ``float`` in [0, 1] is a fraction of the removable groups, rounded half up
    (K = floor(frac * n + 0.5)) - Python's ``round`` would round 2.5 down to 2, which surprises users.
    """
    if isinstance(target_group_sparsity, bool):
        raise TypeError("target_group_sparsity must be a float fraction or an int count, not bool")
    if isinstance(target_group_sparsity, numbers.Integral):
        k = int(target_group_sparsity)
        if k < 0:
            raise ValueError(f"target group count must be >= 0, got {k}")
    elif isinstance(target_group_sparsity, numbers.Real):
        frac = float(target_group_sparsity)
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"target_group_sparsity as a fraction must lie in [0, 1], got {frac}")
        k = int(math.floor(frac * n_removable + 0.5))
    else:
        raise TypeError(f"target_group_sparsity must be float or int, got {type(target_group_sparsity)!r}")
    if k > n_removable:
        raise ValueError(f"target of {k} zero groups exceeds the {n_removable} removable groups")
    return k


class Binding:
    """How the groups cover one parameter tensor.

    Every element of a bound parameter belongs to at most one group.  The parameter is cut into *slots*
    along ``axis``; ``slot_group[s]`` is the compact index of the group owning slot ``s`` (or -1).

    ``flat`` bindings are those where a single group owns the whole tensor (the usual GeZIG case): they are
    treated as one slot so that reductions can run on the flattened tensor.
    """

    __slots__ = ("param", "axis", "n_slots", "flat", "slot_group", "grouped_slots", "gids", "slot_map")

    def __init__(self, param: torch.Tensor, axis: int, slot_group: torch.Tensor, n_groups: int) -> None:
        self.param = param
        dev = param.device
        uniform = bool((slot_group == slot_group[0]).all()) and int(slot_group[0]) >= 0
        self.flat = uniform
        if uniform:
            slot_group = slot_group[:1].clone()
        self.axis = axis
        self.n_slots = int(slot_group.numel())
        self.slot_group = slot_group  # CPU int64, kept for host-side bookkeeping
        mask = slot_group >= 0
        # None when every slot is grouped, so the common case needs no gather.
        self.grouped_slots = None if bool(mask.all()) else torch.nonzero(mask).flatten().to(dev)
        self.gids = slot_group[mask].to(dev)
        # slot -> group, ungrouped slots -> sentinel n_groups (a padding entry in group-level vectors)
        self.slot_map = torch.where(mask, slot_group, torch.full_like(slot_group, n_groups)).to(dev)

    def slot_numel(self) -> int:
        """Number of tensor elements in one slot."""
        if self.flat:
            return self.param.numel()
        return self.param.numel() // max(1, self.param.shape[self.axis])


class GroupLayout:
    """Validated, precomputed index structure for a list of :class:`ParamGroup`.

    Attributes (all group-level tensors are indexed by the *compact* group index 0..G-1, i.e. the position in
    ``groups``): ``ids`` (caller ids), ``removable`` (bool, CPU), ``sizes`` (float64 element counts, CPU) and
    ``bindings`` (``id(param) -> Binding``).
    """

    def __init__(self, groups: Sequence[ParamGroup], params: Iterable[torch.Tensor]) -> None:
        self.groups = list(groups)
        self.ids: list[int] = [g.id for g in self.groups]
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ParamGroup ids must be unique")
        self.index_of = {gid: i for i, gid in enumerate(self.ids)}
        n = len(self.groups)
        self.n_groups = n
        self.removable = torch.tensor([bool(g.removable) for g in self.groups], dtype=torch.bool)
        known = {id(p) for p in params}

        # param id -> (param, axis, slot -> group array); numpy here: this loop runs once per slice
        per_param: dict[int, tuple[torch.Tensor, int, np.ndarray]] = {}
        sizes = [0] * n
        for gi, g in enumerate(self.groups):
            if not g.slices:
                raise ValueError(f"group {g.id} has no slices")
            for sl in g.slices:
                p = sl.param
                pid = id(p)
                entry = per_param.get(pid)
                if entry is None:
                    if pid not in known:
                        raise ValueError(f"group {g.id}: a sliced tensor is not among the optimizer's params")
                    ndim = max(p.dim(), 1)
                    axis = sl.axis + ndim if sl.axis < 0 else sl.axis
                    if not 0 <= axis < ndim:
                        raise ValueError(f"group {g.id}: axis {sl.axis} out of range for shape {tuple(p.shape)}")
                    length = p.shape[axis] if p.dim() > 0 else 1
                    entry = per_param[pid] = (p, axis, np.full(length, -1, dtype=np.int64))
                p, axis0, slots = entry
                length = slots.shape[0]
                ndim = max(p.dim(), 1)
                axis = sl.axis + ndim if sl.axis < 0 else sl.axis
                if axis0 != axis:
                    # Two different axes of one tensor always intersect, so the element sets would overlap.
                    raise ValueError(
                        f"group {g.id}: tensor of shape {tuple(p.shape)} is sliced on axis {axis} here and on "
                        f"axis {axis0} by another slice; groups must not share elements"
                    )
                if sl.indices is None:
                    idx = np.arange(length)
                else:
                    idx = np.asarray(sl.indices, dtype=np.int64).reshape(-1)
                    if idx.size and (idx.min() < 0 or idx.max() >= length):
                        raise ValueError(f"group {g.id}: index out of range for axis {axis} of {tuple(p.shape)}")
                    if idx.size > 1 and np.unique(idx).size != idx.size:
                        raise ValueError(f"group {g.id}: repeated indices in one slice")
                taken = slots[idx]
                if (taken >= 0).any():
                    other = self.ids[int(taken[taken >= 0][0])]
                    raise ValueError(
                        f"groups {other} and {g.id} overlap on a tensor of shape {tuple(p.shape)}; "
                        "an element may belong to one group only"
                    )
                slots[idx] = gi
                sizes[gi] += (p.numel() // length if length else 0) * idx.size
        for gi, s in enumerate(sizes):
            if s == 0:
                raise ValueError(f"group {self.ids[gi]} selects no elements")
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        self.bindings: dict[int, Binding] = {
            pid: Binding(p, axis, torch.from_numpy(slots), n) for pid, (p, axis, slots) in per_param.items()
        }

    @property
    def n_removable(self) -> int:
        return int(self.removable.sum())

    def group_params(self, gi: int) -> list[torch.Tensor]:
        """Tensors touched by group ``gi`` (compact index)."""
        return [sl.param for sl in self.groups[gi].slices]
