"""Parameter groups for the structured-sparsity optimizers (H2SPG, DHSPG).

A *group* is a set of tensor slices that must become exactly zero together: a zero-invariant group (ZIG,
one output channel of a conv together with its bias/BN rows) or the whole variable set of a removal structure
(GeZIG, one or several complete tensors).  This module holds

* the public description of groups (:class:`ParamSlice`, :class:`ParamGroup`),
* the :class:`ValidityOracle` protocol that H2SPG asks before it marks a group redundant,
* :func:`resolve_target_count` (fraction or count -> exact K), and
* :class:`GroupLayout`, the index structure built once per optimizer so that per-group reductions
  (norms, inner products) cost a few batched ops per *parameter*, never a Python loop over groups.

Groups may nest (one element in several groups); the index slices of one tensor must share one axis.

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
    ``cost`` is what erasing the group saves as a non-negative fraction of the whole model's (e.g. of its MACs
    and params, or of its latency); only cost-aware selection (``cost_weight > 0``) reads it, and ``None``
    stands for the group's share of all grouped elements. ``family`` names a set of groups that fills a quota of
    its own (asgnas: ``"erase"`` structures and ``"prune"`` channel groups under ``kind=both,prune-target``):
    cost-aware selection then scales saliency within each family, so one family's candidates do not rescale
    another's. Groups that compete in one ranking share a family (the default).
    """

    id: int
    slices: list[ParamSlice]
    removable: bool = True
    cost: Optional[float] = None
    family: str = ""


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

    The parameter is cut into *slots* along ``axis`` (one slot per index).  ``mem_slot[i]`` / ``mem_group[i]``
    list the memberships: slot ``mem_slot[i]`` belongs to group ``mem_group[i]`` (compact index).  A slot may
    belong to no group, one group, or several (nested groups, e.g. a channel group inside a whole-tensor
    removal structure).

    ``flat`` bindings are those where only whole-tensor slices touch the tensor (the usual GeZIG case): the
    tensor is one slot, so that reductions can run on the flattened tensor.
    """

    __slots__ = ("param", "axis", "n_slots", "flat", "mem_slot", "mem_group")

    def __init__(self, param: torch.Tensor, axis: Optional[int], n_slots: int, mem_slot: np.ndarray,
                 mem_group: np.ndarray) -> None:
        self.param = param
        self.flat = axis is None
        self.axis = 0 if axis is None else axis
        self.n_slots = 1 if axis is None else n_slots
        order = np.lexsort((mem_group, mem_slot))  # by slot, then group: deterministic layouts
        self.mem_slot = mem_slot[order]
        self.mem_group = mem_group[order]

    def slot_numel(self) -> int:
        """Number of tensor elements in one slot."""
        if self.flat:
            return self.param.numel()
        return self.param.numel() // max(1, self.param.shape[self.axis])


class GroupLayout:
    """Validated, precomputed index structure for a list of :class:`ParamGroup`.

    Attributes (all group-level tensors are indexed by the *compact* group index 0..G-1, i.e. the position in
    ``groups``): ``ids`` (caller ids), ``removable`` (bool, CPU), ``sizes`` (float64 element counts, CPU),
    ``bindings`` (``id(param) -> Binding``) and ``has_overlap`` (some element lies in several groups).

    Rules: the index-selecting slices of one tensor must all use the same axis (slices on two axes would cut
    the tensor into a grid, which the slot structure cannot express); whole-tensor slices (``indices=None``)
    combine with any axis; a group may not list the same element twice.
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

        # First pass: the slot axis of every tensor (the axis of its index-selecting slices).
        axis_of: dict[int, Optional[int]] = {}
        tensor_of: dict[int, torch.Tensor] = {}
        for g in self.groups:
            for sl in g.slices:
                p = sl.param
                pid = id(p)
                if pid not in known:
                    raise ValueError(f"group {g.id}: a sliced tensor is not among the optimizer's params")
                tensor_of[pid] = p
                ndim = max(p.dim(), 1)
                axis = sl.axis + ndim if sl.axis < 0 else sl.axis
                if not 0 <= axis < ndim:
                    raise ValueError(f"group {g.id}: axis {sl.axis} out of range for shape {tuple(p.shape)}")
                if sl.indices is None or p.dim() == 0:
                    axis_of.setdefault(pid, None)
                    continue
                prev = axis_of.get(pid)
                if prev is not None and prev != axis:
                    raise ValueError(
                        f"group {g.id}: tensor of shape {tuple(p.shape)} is sliced on axis {axis} here and on "
                        f"axis {prev} by another slice; all index slices of a tensor must share one axis"
                    )
                axis_of[pid] = axis

        # Second pass: memberships (slot, group) per tensor; numpy, since this loop runs once per slice.
        mem: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {pid: ([], []) for pid in tensor_of}
        sizes = [0] * n
        for gi, g in enumerate(self.groups):
            seen: dict[int, np.ndarray] = {}
            for sl in g.slices:
                p = sl.param
                pid = id(p)
                axis = axis_of[pid]
                length = 1 if axis is None else p.shape[axis]
                per_slot = p.numel() // length if length else 0
                if sl.indices is None or p.dim() == 0:
                    idx = np.arange(length)
                else:
                    idx = np.asarray(sl.indices, dtype=np.int64).reshape(-1)
                    if idx.size and (idx.min() < 0 or idx.max() >= length):
                        raise ValueError(f"group {g.id}: index out of range for axis {axis} of {tuple(p.shape)}")
                if pid in seen:  # several slices of one tensor in one group: must not repeat elements
                    idx = np.concatenate([seen[pid], idx])
                if idx.size > 1 and np.unique(idx).size != idx.size:
                    raise ValueError(f"group {g.id}: repeated indices of one tensor")
                new = idx[len(seen[pid]):] if pid in seen else idx
                seen[pid] = idx
                mem[pid][0].append(new)
                mem[pid][1].append(np.full(new.size, gi, dtype=np.int64))
                sizes[gi] += per_slot * int(new.size)
        for gi, s in enumerate(sizes):
            # an empty non-removable group is harmless (e.g. all its tensors were frozen); a removable one is a bug
            if s == 0 and self.groups[gi].removable:
                raise ValueError(f"removable group {self.ids[gi]} selects no elements")
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        self.bindings: dict[int, Binding] = {}
        self.has_overlap = False
        sizes_arr = self.sizes.clone()
        sizes_arr[sizes_arr == 0] = 1.0  # keeps per-element averages finite for empty (non-removable) groups
        self.sizes = sizes_arr
        for pid, p in tensor_of.items():
            axis = axis_of[pid]
            n_slots = 1 if axis is None else p.shape[axis]
            ms, mg = np.concatenate(mem[pid][0]), np.concatenate(mem[pid][1])
            if ms.size == 0:  # only empty index lists: the tensor is effectively ungrouped
                continue
            if axis is None:
                ms = np.zeros_like(ms)
            b = Binding(p, axis, n_slots, ms, mg)
            self.has_overlap |= bool(np.bincount(b.mem_slot, minlength=b.n_slots).max() > 1)
            self.bindings[pid] = b

    @property
    def n_removable(self) -> int:
        return int(self.removable.sum())

    def group_params(self, gi: int) -> list[torch.Tensor]:
        """Tensors touched by group ``gi`` (compact index)."""
        return [sl.param for sl in self.groups[gi].slices]
