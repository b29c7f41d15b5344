"""Per-parameter plan of the hybrid engine: how a tensor is cut into chunks and slots, its cached views,
and the per-slot sums of one chunk (the only per-tensor reduction the engine needs)."""
from __future__ import annotations

from typing import Optional

import torch

from .param_groups import Binding

__all__ = ["Entry", "FLAT", "SLOT", "WHOLE"]

FLAT, SLOT, WHOLE = 0, 1, 2  # chunking modes of a parameter


class Entry:
    """Per-parameter plan: chunking, cached views, where its per-slot stats go, redundant/zero flags."""

    __slots__ = (
        "param", "group", "binding", "mode", "axis", "chunks", "other_dims", "n_chunk_max", "pviews", "sids",
        "sviews", "col", "ncols", "statviews", "partial", "scrviews", "removable", "has_redundant", "has_active",
        "all_zero", "keep", "keepviews", "key", "ptr", "mcols", "mgids", "rows", "scaleviews", "gviews",
    )

    def __init__(self, param: torch.Tensor, group: dict, binding: Optional[Binding], chunk_numel: int) -> None:
        self.param = param
        self.group = group
        self.binding = binding
        self.key = (param.device, param.dtype)
        self.ptr = param.data_ptr()  # cached views die if the caller swaps param.data (e.g. model.to())
        n = param.numel()
        self.rows = False
        if binding is not None and not binding.flat:
            self.mode = SLOT
            self.axis = binding.axis
            per_slot = max(1, binding.slot_numel())
            step = max(1, chunk_numel // per_slot)
            ns = binding.n_slots
            self.chunks = [(s, min(step, ns - s)) for s in range(0, ns, step)]
            # slots along dim 0 of a contiguous tensor are contiguous rows: work on 2-D [slots, rest] views, whose
            # per-row reductions are cheaper than reductions over several trailing dims
            self.rows = self.axis == 0 and param.dim() > 2 and param.is_contiguous()
            self.other_dims = (1,) if self.rows else tuple(d for d in range(param.dim()) if d != self.axis)
            self.n_chunk_max = min(step, ns) * per_slot
        elif param.is_contiguous():
            self.mode = FLAT
            self.axis = 0
            self.chunks = [(s, min(chunk_numel, n - s)) for s in range(0, max(n, 1), chunk_numel)]
            self.other_dims = ()
            self.n_chunk_max = min(chunk_numel, max(n, 1))
        else:  # unusual memory layout: one piece, no flattening
            self.mode = WHOLE
            self.axis = 0
            self.chunks = [(0, n)]
            self.other_dims = ()
            self.n_chunk_max = max(n, 1)
        self.pviews = [self.view(param, c) for c in self.chunks]
        self.sids: tuple = ()
        self.sviews: list[list[torch.Tensor]] = [[] for _ in self.chunks]
        self.col = 0
        self.ncols = 0 if binding is None else (binding.n_slots if self.mode == SLOT else 1)
        self.statviews: list = []
        self.partial: Optional[torch.Tensor] = None
        self.scrviews: list = []
        self.removable = False
        self.has_redundant = False
        self.has_active = False
        self.all_zero = False
        self.keep: Optional[torch.Tensor] = None  # 1.0/0.0 per slot, only when some slot is zero
        self.keepviews: list = []
        self.mcols: Optional[torch.Tensor] = None  # memberships: stat-buffer column, group (home device)
        self.mgids: Optional[torch.Tensor] = None
        self.scaleviews: list = []  # per-chunk views of this tensor's slot factors (persistent buffer)
        self.gviews: Optional[tuple] = None  # (grad, its chunk views) within one step, dropped at its end

    def view(self, t: torch.Tensor, c: tuple[int, int]) -> torch.Tensor:
        """Chunk ``c`` of ``t`` (the parameter, its gradient, a state tensor: same shape and layout)."""
        if self.rows:
            t = t.view(t.shape[0], -1)
        if len(self.chunks) == 1:
            return t.view(-1) if self.mode == FLAT else t
        if self.mode == SLOT:
            return t.narrow(self.axis, c[0], c[1])
        return t.view(-1).narrow(0, c[0], c[1])

    def slot_views(self, v: torch.Tensor) -> list[torch.Tensor]:
        """Per-slot vector ``v`` cut per chunk and shaped to broadcast against the chunk."""
        if self.mode != SLOT:
            return [v] * len(self.chunks)  # one slot: shape [1] broadcasts against anything
        out = []
        for (s0, n), pv in zip(self.chunks, self.pviews):
            shape = [1] * pv.dim()
            shape[self.axis] = n
            out.append(v.narrow(0, s0, n).view(shape))
        return out

    def chunk_stats(self, x: torch.Tensor, d: Optional[torch.Tensor], out: tuple,
                     s1: torch.Tensor) -> None:
        """Per-slot |x| (slot mode) or |x|^2 (flat), <x,d>, |d| or |d|^2 of one chunk into ``out``."""
        o0, o1, o2 = out
        if self.mode == SLOT:
            if x.dim() == 1:  # one element per slot
                torch.abs(x, out=o0)
                if d is None:
                    o1.zero_()
                    o2.zero_()
                    return
                torch.mul(x, d, out=o1)
                torch.abs(d, out=o2)
                return
            torch.linalg.vector_norm(x, dim=self.other_dims, out=o0)
            if d is None:
                o1.zero_()
                o2.zero_()
                return
            torch.sum(torch.mul(x, d, out=s1), dim=self.other_dims, out=o1)
            torch.linalg.vector_norm(d, dim=self.other_dims, out=o2)
            return
        if self.mode == FLAT:
            # contiguous 1-D chunk: BLAS dot reads each operand once and needs no temporary
            torch.dot(x, x, out=o0)
            if d is None:
                o1.zero_()
                o2.zero_()
                return
            torch.dot(x, d, out=o1)
            torch.dot(d, d, out=o2)
            return
        o0.copy_(x.pow(2).sum())
        if d is None:
            o1.zero_()
            o2.zero_()
            return
        o1.copy_((x * d).sum())
        o2.copy_(d.pow(2).sum())
