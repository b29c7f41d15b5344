"""Shared engine of H2SPG and DHSPG: base optimizer + saliency scores + half-space projection.

One optimizer step has up to three phases (PAPER_SPEC section 3.1):

* warm-up (steps ``0 .. warmup_steps-1``): plain base step (SGD/momentum/Nesterov, Adam or AdamW) on every
  parameter, plus an EMA of the per-group saliency score;
* selection (the step with index ``warmup_steps``): the subclass picks the redundant groups from the scores
  (H2SPG: greedy with a validity oracle; DHSPG: global top-K); under ``torch.distributed`` rank 0's choice is
  broadcast;
* hybrid (from the selection step on): important groups and ungrouped tensors take the base step; every
  redundant non-zero group g takes the trial step ``x - lr (d + lambda_g x/|x|)`` with the adaptive lambda_g
  of DHSPG, and is set to zero when the trial point leaves the half-space ``<x~, x> >= epsilon |x|^2``.
  Zero groups are absorbing: their rows of the parameter *and* of the optimizer state (momentum, Adam
  moments) are reset every step, so neither momentum nor (decoupled) weight decay can revive them.
  At ``hard_zero_step`` any redundant group still non-zero is forced to zero (exact target count).

Implementation notes (why it is fast): groups are never looped over.  Each parameter is cut into *slots*
along the axis its groups select on; per-slot sums (|x|^2, <x,d>, |d|^2) are reduced in cache-sized chunks
and scattered into group-level vectors with one ``index_add_`` per parameter.  All lambda/projection logic is
vectorised over groups.  The parameter update then multiplies each slot by a per-slot factor and adds the
base step, again chunk by chunk so that the two passes over a chunk hit the cache.  Tensors are created on
the parameter's device and dtype; the only host sync in a hybrid step is reading which groups were just
projected (a boolean vector over groups).

The global bookkeeping (step, scores, redundant/zero masks, counters) lives in the standard optimizer state
under the key ``"asgnas"``, so ``state_dict()`` / ``load_state_dict()`` resume a run bit-for-bit.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from .groups import Binding, GroupLayout, ParamGroup, resolve_target_count
from .scores import ScoreFn, saliency_score

__all__ = ["HybridSparseOptimizer", "GLOBAL_STATE_KEY", "LAMBDA_DEFAULTS"]

GLOBAL_STATE_KEY = "asgnas"
# (lmbda, lmbda_amplify, hat_lmbda_coeff) per base variant: DHSPG code defaults (PAPER_SPEC 3.5)
LAMBDA_DEFAULTS = {"sgd": (1e-3, 2.0, 10.0), "adam": (1e-2, 20.0, 1e3), "adamw": (1e-2, 20.0, 1e3)}
_FLAT, _SLOT, _WHOLE = 0, 1, 2  # chunking modes of a parameter


class _Entry:
    """Per-parameter plan: how to chunk it, which slots are redundant/zero (rebuilt when masks change)."""

    __slots__ = (
        "param", "group", "binding", "mode", "axis", "chunks", "other_dims", "bshape", "stat", "max_chunk",
        "removable", "has_redundant", "has_active", "all_zero", "keep", "slot_map_cpu",
    )

    def __init__(self, param: torch.Tensor, group: dict, binding: Optional[Binding], chunk_numel: int) -> None:
        self.param = param
        self.group = group
        self.binding = binding
        n = param.numel()
        if binding is not None and not binding.flat:
            self.mode = _SLOT
            self.axis = binding.axis
            per_slot = max(1, binding.slot_numel())
            step = max(1, chunk_numel // per_slot)
            ns = binding.n_slots
            self.chunks = [(s, min(step, ns - s)) for s in range(0, ns, step)]
            self.other_dims = tuple(d for d in range(param.dim()) if d != self.axis)
            self.bshape = [1] * param.dim()
            self.max_chunk = min(step, ns) * per_slot
            self.stat = None  # [3, n_slots], allocated lazily
        elif param.is_contiguous():
            self.mode = _FLAT
            self.axis = 0
            self.chunks = [(s, min(chunk_numel, n - s)) for s in range(0, max(n, 1), chunk_numel)]
            self.other_dims = ()
            self.bshape = [1]
            self.max_chunk = min(chunk_numel, n)
            self.stat = None  # [3, n_chunks]
        else:  # odd memory layout: process in one piece, no views needed
            self.mode = _WHOLE
            self.axis = 0
            self.chunks = [(0, n)]
            self.other_dims = ()
            self.bshape = [1]
            self.max_chunk = n
            self.stat = None
        self.removable = False
        self.has_redundant = False
        self.has_active = False
        self.all_zero = False
        self.keep: Optional[torch.Tensor] = None  # 1.0/0.0 per slot, only when some slot is zero
        self.slot_map_cpu: Optional[torch.Tensor] = None

    def view(self, t: torch.Tensor, c: tuple[int, int]) -> torch.Tensor:
        if self.mode == _SLOT:
            return t.narrow(self.axis, c[0], c[1])
        if self.mode == _FLAT:
            return t.view(-1).narrow(0, c[0], c[1])
        return t

    def slot_vec(self, v: torch.Tensor, c: tuple[int, int]) -> torch.Tensor:
        """Per-slot vector ``v`` restricted to chunk ``c`` and shaped to broadcast against the chunk."""
        if self.mode == _SLOT:
            shape = list(self.bshape)
            shape[self.axis] = c[1]
            return v.narrow(0, c[0], c[1]).view(shape)
        return v  # one slot: shape [1] broadcasts against anything


class _HP:
    """Hyper-parameters of one parameter for the current step (read from its param_group every step, so that
    lr schedulers work)."""

    __slots__ = ("lr", "wd", "momentum", "nesterov", "beta1", "beta2", "eps", "bc1", "bc2_sqrt", "pre", "wdd",
                 "first")


class HybridSparseOptimizer(torch.optim.Optimizer):
    """Base class; use :class:`asgnas.optim.H2SPG` or :class:`asgnas.optim.DHSPG`."""

    #: elements per chunk of the fused passes; ~1 MiB of float32 keeps three operands in L2
    chunk_numel: int = 1 << 18

    def __init__(
        self,
        params: Iterable[Any],
        groups: Sequence[ParamGroup],
        lr: float,
        target_group_sparsity: float | int = 0.5,
        variant: str = "sgd",
        momentum: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        score_momentum: float = 0.9,
        lmbda: Optional[float] = None,
        lmbda_amplify: Optional[float] = None,
        hat_lmbda_coeff: Optional[float] = None,
        epsilon: float = 0.0,
        projection_start: Optional[int] = None,
        penalty_start: Optional[int] = None,
        hard_zero_step: Optional[int] = None,
        score_normalization: str = "count",
        score_fn: Optional[ScoreFn] = None,
    ) -> None:
        variant = variant.lower()
        if variant not in LAMBDA_DEFAULTS:
            raise ValueError(f"variant must be one of {sorted(LAMBDA_DEFAULTS)}, got {variant!r}")
        if lr < 0:
            raise ValueError(f"invalid lr {lr}")
        if nesterov and (variant != "sgd" or momentum <= 0):
            raise ValueError("nesterov needs variant='sgd' and momentum > 0")
        if not 0.0 <= score_momentum < 1.0:
            raise ValueError("score_momentum must lie in [0, 1)")
        if not 0.0 <= epsilon < 1.0:
            raise ValueError("epsilon must lie in [0, 1)")
        if warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if score_normalization not in ("count", "sqrt"):
            raise ValueError("score_normalization must be 'count' or 'sqrt'")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, betas=tuple(betas), eps=eps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)

        d_l, d_a, d_c = LAMBDA_DEFAULTS[variant]
        self.variant = variant
        self.lmbda = d_l if lmbda is None else float(lmbda)
        self.lmbda_amplify = d_a if lmbda_amplify is None else float(lmbda_amplify)
        self.hat_lmbda_coeff = d_c if hat_lmbda_coeff is None else float(hat_lmbda_coeff)
        self.epsilon = float(epsilon)
        self.warmup_steps = int(warmup_steps)
        self.score_momentum = float(score_momentum)
        # penalty/projection cannot start before the redundant set exists
        self.penalty_start = max(self.warmup_steps, self.warmup_steps if penalty_start is None else penalty_start)
        self.projection_start = max(self.warmup_steps,
                                    self.warmup_steps if projection_start is None else projection_start)
        self.hard_zero_step = None if hard_zero_step is None else int(hard_zero_step)
        self.score_normalization = score_normalization
        self.score_fn = score_fn

        all_params = [p for g in self.param_groups for p in g["params"]]
        self.layout = GroupLayout(groups, all_params)
        self.target_count = resolve_target_count(target_group_sparsity, self.layout.n_removable)
        grouped = [b.param for b in self.layout.bindings.values()]
        ref = grouped[0] if grouped else (all_params[0] if all_params else torch.empty(0))
        self._home = ref.device
        self._acc_dtype = torch.float64 if any(p.dtype == torch.float64 for p in grouped) else torch.float32
        self._sizes = self.layout.sizes.to(self._home, self._acc_dtype)
        self._removable_dev = self.layout.removable.to(self._home)
        self._rem_index = torch.nonzero(self.layout.removable).flatten().to(self._home)
        self._scratch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._last: dict[str, Any] = {}
        self.state[GLOBAL_STATE_KEY] = self._fresh_global_state()
        self._build_entries()

    # ------------------------------------------------------------------ setup / bookkeeping
    def _fresh_global_state(self) -> dict[str, Any]:
        g = self.layout.n_groups
        return {
            "step": 0,
            "selected": False,
            "scores": None,
            "score_steps": 0,
            "redundant": torch.zeros(g, dtype=torch.bool),
            "zero": torch.zeros(g, dtype=torch.bool),
            "forced": 0,
            "projected": 0,
            "shortfall": 0,
            "target": self.target_count,
            "n_groups": g,
        }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "layout"):  # called after __init__: new tensors are ungrouped
            self._build_entries()

    def _build_entries(self) -> None:
        self._entries: list[_Entry] = []
        for group in self.param_groups:
            for p in group["params"]:
                b = self.layout.bindings.get(id(p))
                e = _Entry(p, group, b, self.chunk_numel)
                if b is not None:
                    e.removable = bool(self.layout.removable[b.slot_group[b.slot_group >= 0]].any())
                    m = b.slot_group.clone()
                    m[m < 0] = self.layout.n_groups
                    e.slot_map_cpu = m
                self._entries.append(e)
        self._refresh()

    def _gstate(self) -> dict[str, Any]:
        gs = self.state.get(GLOBAL_STATE_KEY)
        if gs is None:  # e.g. a state_dict from a plain torch optimizer was loaded
            gs = self.state[GLOBAL_STATE_KEY] = self._fresh_global_state()
        return gs

    def _refresh(self) -> None:
        """Recompute the host-side per-parameter flags after the redundant or zero set changed."""
        gs = self._gstate()
        pad = torch.zeros(1, dtype=torch.bool)
        red = torch.cat([gs["redundant"], pad])
        zero = torch.cat([gs["zero"], pad])
        active = red & ~zero
        self._active_dev = active[:-1].to(self._home)
        self._n_active = int(active.sum())
        for e in self._entries:
            if e.slot_map_cpu is None:
                continue
            m = e.slot_map_cpu
            z = zero[m]
            e.has_redundant = bool(red[m].any())
            e.has_active = bool(active[m].any())
            e.all_zero = bool(z.all())
            e.keep = (~z).to(dtype=e.param.dtype, device=e.param.device) if bool(z.any()) else None

    def _scratch_for(self, e: _Entry) -> torch.Tensor:
        """Three chunk-sized scratch buffers per (device, dtype), reused across steps: fresh large
        allocations would page-fault every step on CPU."""
        p = e.param
        key = (p.device, p.dtype)
        need = 3 * max(1, e.max_chunk)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < need:
            buf = torch.empty(need, device=p.device, dtype=p.dtype)
            self._scratch[key] = buf
        return buf

    def _hp(self, e: _Entry, has_grad: bool) -> _HP:
        g = e.group
        hp = _HP()
        hp.lr = float(g["lr"])
        hp.wd = float(g["weight_decay"])
        hp.momentum = float(g["momentum"])
        hp.nesterov = bool(g["nesterov"])
        hp.beta1, hp.beta2 = (float(b) for b in g["betas"])
        hp.eps = float(g["eps"])
        hp.wdd = hp.wd if self.variant == "adamw" else 0.0  # decoupled decay enters the trial point
        hp.pre = 1.0 - hp.lr * hp.wdd
        hp.first = False
        hp.bc1 = 1.0
        hp.bc2_sqrt = 1.0
        if not has_grad:  # torch semantics: no gradient, no state change
            return hp
        st = self.state[e.param]
        if self.variant == "sgd":
            if hp.momentum != 0.0 and "momentum_buffer" not in st:
                st["momentum_buffer"] = torch.empty_like(e.param, memory_format=torch.preserve_format)
                hp.first = True
        else:
            if "exp_avg" not in st:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(e.param, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(e.param, memory_format=torch.preserve_format)
            st["step"] += 1
            step = st["step"]
            hp.bc1 = 1.0 - hp.beta1 ** step
            hp.bc2_sqrt = (1.0 - hp.beta2 ** step) ** 0.5
        return hp

    def _state_tensors(self, e: _Entry) -> list[torch.Tensor]:
        st = self.state[e.param]
        if self.variant == "sgd":
            return [st["momentum_buffer"]] if "momentum_buffer" in st else []
        return [st["exp_avg"], st["exp_avg_sq"]] if "exp_avg" in st else []

    # ------------------------------------------------------------------ base-optimizer kernels (one chunk)
    # The formulas mirror torch.optim.SGD / Adam / AdamW (single-tensor path) so that the warm-up is
    # bit-identical to them.
    def _update_state(self, hp: _HP, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                      scr: torch.Tensor) -> None:
        if self.variant == "sgd":
            if hp.momentum == 0.0:
                return
            g1 = gc if hp.wd == 0.0 else torch.add(gc, pc, alpha=hp.wd, out=scr)
            if hp.first:
                sc[0].copy_(g1)
            else:
                sc[0].mul_(hp.momentum).add_(g1)
            return
        g1 = gc if (hp.wd == 0.0 or self.variant == "adamw") else torch.add(gc, pc, alpha=hp.wd, out=scr)
        sc[0].lerp_(g1, 1.0 - hp.beta1)
        sc[1].mul_(hp.beta2).addcmul_(g1, g1, value=1.0 - hp.beta2)

    def _direction(self, hp: _HP, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                   scr: torch.Tensor) -> torch.Tensor:
        """SGD: the update direction d (p -= lr d).  Adam: the denominator (p -= lr/bc1 * m / denom)."""
        if self.variant == "sgd":
            if hp.momentum == 0.0:
                return gc if hp.wd == 0.0 else torch.add(gc, pc, alpha=hp.wd, out=scr)
            if hp.nesterov:
                g1 = gc if hp.wd == 0.0 else torch.add(gc, pc, alpha=hp.wd, out=scr)
                return torch.add(g1, sc[0], alpha=hp.momentum, out=scr)
            return sc[0]
        denom = torch.sqrt(sc[1], out=scr)
        return denom.div_(hp.bc2_sqrt).add_(hp.eps)

    def _apply(self, hp: _HP, pc: torch.Tensor, d: torch.Tensor, sc: list[torch.Tensor]) -> None:
        if self.variant == "sgd":
            pc.add_(d, alpha=-hp.lr)
        else:
            pc.addcdiv_(sc[0], d, value=-hp.lr / hp.bc1)

    def _stat_direction(self, hp: _HP, d: torch.Tensor, sc: list[torch.Tensor], scr: torch.Tensor) -> torch.Tensor:
        """The direction used for scores and lambda: for Adam the bias-corrected m_hat / (sqrt(v_hat) + eps)."""
        if self.variant == "sgd":
            return d
        return torch.div(sc[0], d, out=scr).div_(hp.bc1)

    def _chunk_stats(self, e: _Entry, ci: int, c: tuple[int, int], x: torch.Tensor, d: Optional[torch.Tensor],
                     scr: torch.Tensor) -> None:
        """Write per-slot |x|^2 (as a norm), <x,d>, |d|^2 (as a norm) of chunk ``c`` into ``e.stat``."""
        st = e.stat
        if e.mode == _SLOT:
            s0, n = c
            if d is None:
                tgt = st[:, s0:s0 + n]
                tgt[1:].zero_()
                if x.dim() == 1:
                    torch.abs(x, out=tgt[0])
                else:
                    torch.linalg.vector_norm(x, dim=e.other_dims, out=tgt[0])
                return
            if x.dim() == 1:  # one element per slot
                torch.abs(x, out=st[0, s0:s0 + n])
                torch.mul(x, d, out=st[1, s0:s0 + n])
                torch.abs(d, out=st[2, s0:s0 + n])
            else:
                torch.linalg.vector_norm(x, dim=e.other_dims, out=st[0, s0:s0 + n])
                prod = torch.mul(x, d, out=scr[:x.numel()].view(x.shape))
                torch.sum(prod, dim=e.other_dims, out=st[1, s0:s0 + n])
                torch.linalg.vector_norm(d, dim=e.other_dims, out=st[2, s0:s0 + n])
            return
        if e.mode == _FLAT:
            # contiguous 1-D chunks: BLAS dot reads each operand once and needs no temporary
            torch.dot(x, x, out=st[0, ci])
            if d is None:
                st[1:, ci].zero_()
            else:
                torch.dot(x, d, out=st[1, ci])
                torch.dot(d, d, out=st[2, ci])
            return
        st[0, 0] = x.pow(2).sum()
        if d is None:
            st[1:, 0].zero_()
        else:
            st[1, 0] = (x * d).sum()
            st[2, 0] = d.pow(2).sum()

    def _alloc_stat(self, e: _Entry) -> None:
        if e.stat is None:
            cols = e.binding.n_slots if e.mode == _SLOT else len(e.chunks)
            e.stat = torch.zeros(3, cols, device=e.param.device, dtype=e.param.dtype)

    def _finish_stats(self, e: _Entry) -> torch.Tensor:
        """Per-slot [3, n_grouped_slots] sums on the home device: |x|^2, <x,d>, |d|^2."""
        st = e.stat
        if e.mode == _SLOT:
            st[0::2].square_()
            s = st if e.binding.grouped_slots is None else st.index_select(1, e.binding.grouped_slots)
        else:
            s = st.sum(dim=1, keepdim=True)
        return s.to(device=self._home, dtype=self._acc_dtype)

    # ------------------------------------------------------------------ passes over one parameter
    def _fused(self, e: _Entry, hp: _HP, stats: bool) -> None:
        """State update + base step in one chunked pass (optionally recording stats of x_t, d_t first)."""
        p, g = e.param, e.param.grad
        if g.is_sparse:
            raise RuntimeError("sparse gradients are not supported")
        if e.mode == _FLAT and not g.is_contiguous():
            g = g.contiguous()
        sc_full = self._state_tensors(e)
        scr = self._scratch_for(e)
        m = max(1, e.max_chunk)
        s1, s2, s3 = scr[:m], scr[m:2 * m], scr[2 * m:3 * m]
        if stats:
            self._alloc_stat(e)
        for ci, c in enumerate(e.chunks):
            pc, gc = e.view(p, c), e.view(g, c)
            sc = [e.view(s, c) for s in sc_full]
            shp = pc.shape
            self._update_state(hp, pc, gc, sc, s1[:pc.numel()].view(shp))
            if e.keep is not None:  # zero groups: reset their optimizer state every step
                k = e.slot_vec(e.keep, c)
                for s in sc:
                    s.mul_(k)
            d = self._direction(hp, pc, gc, sc, s2[:pc.numel()].view(shp))
            if stats:
                self._chunk_stats(e, ci, c, pc, self._stat_direction(hp, d, sc, s3[:pc.numel()].view(shp)), s1)
            if hp.pre != 1.0:
                pc.mul_(hp.pre)
            self._apply(hp, pc, d, sc)
            if e.keep is not None:
                pc.mul_(e.slot_vec(e.keep, c))

    def _pass1(self, e: _Entry, hp: _HP) -> None:
        """State update and stats of (x_t, d_t); the parameter is left untouched until pass 2."""
        p, g = e.param, e.param.grad
        self._alloc_stat(e)
        scr = self._scratch_for(e)
        m = max(1, e.max_chunk)
        s1, s2, s3 = scr[:m], scr[m:2 * m], scr[2 * m:3 * m]
        if g is None:
            for ci, c in enumerate(e.chunks):
                self._chunk_stats(e, ci, c, e.view(p, c), None, s1)
            return
        if g.is_sparse:
            raise RuntimeError("sparse gradients are not supported")
        if e.mode == _FLAT and not g.is_contiguous():
            g = g.contiguous()
        sc_full = self._state_tensors(e)
        for ci, c in enumerate(e.chunks):
            pc, gc = e.view(p, c), e.view(g, c)
            sc = [e.view(s, c) for s in sc_full]
            shp = pc.shape
            self._update_state(hp, pc, gc, sc, s1[:pc.numel()].view(shp))
            d = self._direction(hp, pc, gc, sc, s2[:pc.numel()].view(shp))
            self._chunk_stats(e, ci, c, pc, self._stat_direction(hp, d, sc, s3[:pc.numel()].view(shp)), s1)

    def _pass2(self, e: _Entry, hp: _HP, scale: Optional[torch.Tensor]) -> None:
        """x <- scale * x - lr * d per slot (scale = 1 - lr*wd_decoupled - lr*lambda/|x| or 0), then reset
        zero slots of x and state."""
        p, g = e.param, e.param.grad
        sc_full = self._state_tensors(e)
        if e.all_zero:
            p.zero_()
            for s in sc_full:
                s.zero_()
            return
        if g is not None and e.mode == _FLAT and not g.is_contiguous():
            g = g.contiguous()
        scr = self._scratch_for(e)
        m = max(1, e.max_chunk)
        s1, s2 = scr[:m], scr[m:2 * m]
        for c in e.chunks:
            pc = e.view(p, c)
            shp = pc.shape
            if g is None:
                if scale is not None:
                    pc.mul_(e.slot_vec(scale, c))
                continue
            gc = e.view(g, c)
            sc = [e.view(s, c) for s in sc_full]
            d = self._direction(hp, pc, gc, sc, s2[:pc.numel()].view(shp))  # uses the old x (coupled weight decay)
            if scale is not None:
                pc.mul_(e.slot_vec(scale, c))
            elif hp.pre != 1.0:
                pc.mul_(hp.pre)
            self._apply(hp, pc, d, sc)
            if e.keep is not None:
                k = e.slot_vec(e.keep, c)
                pc.mul_(k)
                for s in sc:
                    s.mul_(k)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gs = self._gstate()
        t = gs["step"]
        selecting = not gs["selected"] and t >= self.warmup_steps
        scoring = not gs["selected"] and (selecting or self.score_momentum > 0.0)
        hybrid = gs["selected"] and self._n_active > 0
        two_pass = selecting or hybrid
        if selecting or scoring:
            needs_stats = lambda e: e.removable  # noqa: E731
        elif hybrid:
            needs_stats = lambda e: e.has_active  # noqa: E731
        else:
            needs_stats = lambda e: False  # noqa: E731

        acc = None
        stat_entries: list[tuple[_Entry, _HP]] = []
        for e in self._entries:
            if e.all_zero:  # erased tensors: nothing to update (pass 2 handles those zeroed this step)
                continue
            want = needs_stats(e)
            if e.param.grad is None and not (want and two_pass):
                continue
            hp = self._hp(e, has_grad=e.param.grad is not None)
            if want and two_pass:
                self._pass1(e, hp)
                stat_entries.append((e, hp))
            else:
                self._fused(e, hp, stats=want)
                if want:
                    stat_entries.append((e, hp))

        if stat_entries:
            acc, accw, uniform = self._accumulate(stat_entries, weighted=two_pass)
        if scoring and acc is not None:
            self._update_scores(gs, acc)
        if selecting:
            self._select(gs)
        if two_pass:
            scales = self._hybrid_decisions(gs, t, acc, accw, uniform) if self._n_active > 0 else None
            for e, hp in stat_entries:
                self._pass2(e, hp, self._slot_scale(e, hp, scales) if scales is not None else None)
        gs["step"] = t + 1
        return loss

    def _accumulate(self, stat_entries: list[tuple[_Entry, _HP]], weighted: bool
                    ) -> tuple[torch.Tensor, Optional[torch.Tensor], bool]:
        """Scatter per-slot sums into group vectors: acc = [|x|^2, <x,d>, |d|^2]; when the step sizes differ
        between tensors, also accw = [sum lr|x|^2, sum lr<x,d>, sum lr*wd_dec|x|^2] for the trial point."""
        G = self.layout.n_groups
        acc = torch.zeros(3, G, device=self._home, dtype=self._acc_dtype)
        keys = {(hp.lr, hp.wdd) for _, hp in stat_entries}
        uniform = len(keys) <= 1
        accw = None if (uniform or not weighted) else torch.zeros(3, G, device=self._home, dtype=self._acc_dtype)
        for e, hp in stat_entries:
            s = self._finish_stats(e)
            gids = e.binding.gids
            if gids.device != self._home:
                gids = gids.to(self._home)
            acc.index_add_(1, gids, s)
            if accw is not None:
                accw[:2].index_add_(1, gids, s[:2], alpha=hp.lr)
                if hp.wdd != 0.0:
                    accw[2].index_add_(0, gids, s[0], alpha=hp.lr * hp.wdd)
        if uniform and stat_entries:
            self._uniform_hp = stat_entries[0][1]
        return acc, accw, uniform

    def _update_scores(self, gs: dict[str, Any], acc: torch.Tensor) -> None:
        rem, ri = self._removable_dev, self._rem_index
        xx, xd, dd = (acc[i].index_select(0, ri) for i in range(3))  # index_select: no host sync
        sizes = self._sizes.index_select(0, ri)
        if self.score_fn is None:
            s = saliency_score(xx, xd, dd, sizes, self.score_normalization)
        else:
            s = self.score_fn(xx, xd, dd, sizes)
        full = torch.full((self.layout.n_groups,), float("nan"), device=self._home, dtype=self._acc_dtype)
        full.index_copy_(0, ri, s.to(self._acc_dtype))
        if gs["scores"] is None or gs["score_steps"] == 0:
            gs["scores"] = full  # EMA starts at the first observed score, not at 0 (no bias toward 0)
        else:
            w = self.score_momentum
            gs["scores"] = torch.where(rem, w * gs["scores"] + (1.0 - w) * full, full)
        gs["score_steps"] += 1

    # ------------------------------------------------------------------ selection
    def _select_groups(self, order: list[int], k: int) -> list[int]:
        """Choose up to k compact group indices from ``order`` (most redundant first)."""
        raise NotImplementedError

    def _sync_selection(self, chosen: list[int]) -> list[int]:
        """Under torch.distributed every rank adopts rank 0's choice (public API only)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return chosen
        box: list[Any] = [chosen if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        theirs = [int(i) for i in box[0]]
        if theirs != chosen:
            self._on_selection_overridden(theirs)
        return theirs

    def _on_selection_overridden(self, chosen: list[int]) -> None:
        """Hook: this rank's local choice differed from rank 0's (H2SPG re-syncs its oracle)."""

    def _select(self, gs: dict[str, Any]) -> None:
        rem_idx = torch.nonzero(self.layout.removable).flatten().tolist()
        k = self.target_count
        if gs["scores"] is None:
            scores = np.zeros(len(rem_idx))
        else:
            scores = gs["scores"].detach().to("cpu", torch.float64).numpy()[rem_idx]
        scores = np.where(np.isnan(scores), -np.inf, scores)
        # stable sort: equal scores keep the caller's group order, identical on every rank
        order = [rem_idx[i] for i in np.argsort(-scores, kind="stable")]
        chosen = self._select_groups(order, k) if k > 0 else []
        chosen = self._sync_selection(chosen)
        shortfall = k - len(chosen)
        if shortfall > 0:
            warnings.warn(
                f"{type(self).__name__}: only {len(chosen)} of the {k} requested groups could be selected "
                f"without breaking validity; training continues with {len(chosen)}",
                RuntimeWarning,
                stacklevel=3,
            )
        red = torch.zeros(self.layout.n_groups, dtype=torch.bool)
        if chosen:
            red[torch.tensor(chosen, dtype=torch.long)] = True
        gs["redundant"] = red
        gs["selected"] = True
        gs["shortfall"] = shortfall
        self._refresh()

    # ------------------------------------------------------------------ hybrid decisions
    def _hybrid_decisions(self, gs: dict[str, Any], t: int, acc: torch.Tensor, accw: Optional[torch.Tensor],
                          uniform: bool) -> torch.Tensor:
        """Adaptive lambda, half-space test and forced zeros, vectorised over groups.

        Returns ``coef_ext`` = lambda_g / |x_g| for groups that stay active (0 elsewhere, plus a trailing
        0 for ungrouped slots); marks newly zero groups in the state.
        """
        XX, XD, DD = acc[0], acc[1], acc[2]
        if uniform:
            hp = self._uniform_hp
            XXl, XDl, XXa = hp.lr * XX, hp.lr * XD, (1.0 - hp.lr * hp.wdd) * XX
        else:
            XXl, XDl, XXa = accw[0], accw[1], XX - accw[2]
        active = self._active_dev
        nx = XX.clamp_min(0).sqrt()
        pos = nx > 0
        safe_nx = torch.where(pos, nx, torch.ones_like(nx))
        lam = torch.full_like(XX, self.lmbda)
        if t >= self.penalty_start:
            neg = XD < 0
            lam_min = -XD / safe_nx
            lam_max = -DD * nx / torch.where(neg, XD, -torch.ones_like(XD))
            lam_ad = (self.lmbda_amplify * lam_min).clamp(self.lmbda, self.lmbda * self.hat_lmbda_coeff)
            lam_ad = torch.where(lam_ad >= lam_max, 0.5 * (lam_min + lam_max), lam_ad)
            lam = torch.where(neg, lam_ad, lam)
        coef = lam / safe_nx
        # a redundant group that is already exactly zero just joins the zero set
        project = active & ~pos
        if t >= self.projection_start:
            inner = XXa - coef * XXl - XDl  # <x_trial, x> from group sums, no extra pass
            project = project | (active & (inner < self.epsilon * XX))
        forced = torch.zeros_like(project)
        if self.hard_zero_step is not None and t + 1 >= self.hard_zero_step:
            forced = active & ~project
            project = project | forced
        keep_active = active & ~project
        coef = torch.where(keep_active, coef, torch.zeros_like(coef))
        self._last = {"lambda": lam, "lambda_mask": keep_active}

        # one host sync per step: which groups became zero (needed to re-plan the parameter passes)
        newly = torch.nonzero(project).flatten().cpu()
        if newly.numel():
            n_forced = int(forced.sum())
            gs["zero"][newly] = True
            gs["forced"] += n_forced
            gs["projected"] += int(newly.numel()) - n_forced
            self._refresh()
        return torch.cat([coef, coef.new_zeros(1)])

    def _slot_scale(self, e: _Entry, hp: _HP, coef_ext: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-slot factor on x: 1 - lr*wd_dec - lr*lambda_g/|x_g| (active), 0 (zero groups), pre (others)."""
        if not e.has_redundant:
            return None
        c = coef_ext.to(device=e.param.device, dtype=e.param.dtype)
        idx = e.binding.slot_map
        s = c.index_select(0, idx).mul_(-hp.lr).add_(hp.pre)
        if e.keep is not None:
            s.mul_(e.keep)
        return s

    # ------------------------------------------------------------------ public helpers
    def force_zero_redundant(self) -> int:
        """Set every redundant group that is not zero yet to exactly zero now (parameters and optimizer state
        slices); returns how many were forced.  The same happens automatically at ``hard_zero_step``."""
        gs = self._gstate()
        if not gs["selected"]:
            raise RuntimeError("no redundant groups have been selected yet (still in warm-up)")
        active = gs["redundant"] & ~gs["zero"]
        n = int(active.sum())
        if n == 0:
            return 0
        gs["zero"] = gs["zero"] | active
        gs["forced"] += n
        self._refresh()
        with torch.no_grad():
            for e in self._entries:
                if e.keep is None:
                    continue
                states = self._state_tensors(e)
                if e.all_zero:
                    e.param.zero_()
                    for s in states:
                        s.zero_()
                    continue
                full = (0, e.binding.n_slots) if e.mode == _SLOT else None
                k = e.slot_vec(e.keep, full) if full else e.keep
                e.param.mul_(k)
                for s in states:
                    s.mul_(k)
        return n

    @property
    def redundant_group_ids(self) -> list[int]:
        """Caller ids of the selected redundant groups (empty before selection)."""
        gs = self._gstate()
        return [self.layout.ids[i] for i in torch.nonzero(gs["redundant"]).flatten().tolist()]

    @property
    def zero_group_ids(self) -> list[int]:
        """Caller ids of the redundant groups this optimizer has set to zero so far."""
        gs = self._gstate()
        return [self.layout.ids[i] for i in torch.nonzero(gs["zero"]).flatten().tolist()]

    @property
    def scores(self) -> Optional[torch.Tensor]:
        """Current saliency scores (compact group order; NaN for non-removable groups)."""
        s = self._gstate()["scores"]
        return None if s is None else s.detach().clone()

    @torch.no_grad()
    def group_norms(self) -> torch.Tensor:
        """L2 norm of every group's current values (compact group order), one pass over grouped tensors."""
        acc = torch.zeros(self.layout.n_groups, device=self._home, dtype=self._acc_dtype)
        for e in self._entries:
            if e.binding is None:
                continue
            p = e.param
            if e.mode == _SLOT:
                v = p.pow(2) if p.dim() == 1 else torch.linalg.vector_norm(p, dim=e.other_dims).square()
                if e.binding.grouped_slots is not None:
                    v = v.index_select(0, e.binding.grouped_slots)
            else:
                v = torch.linalg.vector_norm(p).square().reshape(1)
            acc.index_add_(0, e.binding.gids.to(self._home), v.to(self._home, self._acc_dtype))
        return acc.sqrt()

    def metrics(self) -> dict[str, Any]:
        """Progress report (costs one read pass over the grouped tensors).

        Keys: ``step`` (completed steps), ``phase`` ('warmup' | 'hybrid'), ``variant``, ``num_groups``,
        ``num_removable``, ``target_count`` (K), ``num_redundant`` (selected), ``selection_shortfall``,
        ``num_zero_groups`` / ``group_sparsity`` (removable groups that are exactly zero now, measured),
        ``num_redundant_zero``, ``redundant_norm_sum``, ``important_norm_sum`` (all non-redundant groups),
        ``forced_zero_groups``, ``projected_groups``, ``target_reached``, ``lambda_mean`` (last step, active
        redundant groups), ``score_steps``.
        """
        gs = self._gstate()
        norms = self.group_norms()
        rem = self._removable_dev
        red = gs["redundant"].to(self._home)
        is_zero = norms == 0
        n_rem = self.layout.n_removable
        n_zero = int((is_zero & rem).sum())
        lam, lam_mask = self._last.get("lambda"), self._last.get("lambda_mask")
        lam = None if lam is None else lam[lam_mask]
        return {
            "step": gs["step"],
            "phase": "hybrid" if gs["selected"] else "warmup",
            "variant": self.variant,
            "num_groups": self.layout.n_groups,
            "num_removable": n_rem,
            "target_count": self.target_count,
            "num_redundant": int(gs["redundant"].sum()),
            "selection_shortfall": gs["shortfall"],
            "num_zero_groups": n_zero,
            "group_sparsity": n_zero / n_rem if n_rem else 0.0,
            "num_redundant_zero": int((is_zero & red).sum()),
            "redundant_norm_sum": float(norms[red].sum()),
            "important_norm_sum": float(norms[~red].sum()),
            "forced_zero_groups": gs["forced"],
            "projected_groups": gs["projected"],
            "target_reached": bool(gs["selected"]) and int((is_zero & red).sum()) == int(gs["redundant"].sum()),
            "lambda_mean": float(lam.mean()) if lam is not None and lam.numel() else float("nan"),
            "score_steps": gs["score_steps"],
        }

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        gs = sd["state"].get(GLOBAL_STATE_KEY)
        if gs is not None:  # snapshot, so that later steps do not mutate a saved dict
            sd["state"][GLOBAL_STATE_KEY] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in gs.items()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        gs = self.state.get(GLOBAL_STATE_KEY)
        if gs is None:
            self.state[GLOBAL_STATE_KEY] = self._fresh_global_state()
        else:
            if gs.get("n_groups") != self.layout.n_groups:
                raise ValueError(
                    f"checkpoint has {gs.get('n_groups')} groups, this optimizer {self.layout.n_groups}")
            new = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in gs.items()}
            new["redundant"] = new["redundant"].to("cpu", torch.bool)
            new["zero"] = new["zero"].to("cpu", torch.bool)
            if new["scores"] is not None:
                new["scores"] = new["scores"].to(self._home, self._acc_dtype)
            self.state[GLOBAL_STATE_KEY] = new
        self._build_entries()
