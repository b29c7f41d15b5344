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

Nested groups (an element in several groups, e.g. channel groups inside a whole-tensor removal structure) follow
the overlapping group lasso: the penalties of all active groups holding an element add up, the half-space
test uses the exact trial point, and an element is zero as soon as one of its groups is; a redundant group
whose every element lies in zero groups is recorded as zero.

Why it is fast: groups are never looped over.  Each parameter is cut into *slots* along the axis its groups
select on.  Pass 1 updates the optimizer state and writes per-slot sums (|x|^2, <x,d>, |d|^2) into one stat
buffer; a single ``index_add_`` turns them into per-group sums; lambda and the half-space test are vectorised
over groups; pass 2 multiplies each slot by one factor and adds the base step.  Both passes walk each tensor
in cache-sized chunks so that the several operations on a chunk reuse the cache; slots along dim 0 of a
contiguous tensor (conv / linear rows) are handled as 2-D ``[slots, rest]`` views, one row per slot.  Tensors
live on the parameter's device and dtype; the only host sync in a hybrid step reads which groups were just
projected.

Cost, in element-wise passes over a tensor (``tools/bench_optim.py --census`` counts them): a tensor without
active redundant slots takes 2 (fused momentum + update; torch's SGD takes 3), or 3 once some of its groups
are zero (their momentum rows are reset each step).  A tensor holding active redundant slots takes 7 with
row slots (momentum, |x|, x*d, its row sums, |d|, scale, update) and 6 as one whole-tensor group (three BLAS
dots) - the price of the group sums with stock kernels: no public torch op reduces a product per row without
a temporary, or scales x per row while adding d.  On a CPU the step time follows the pass count.  Ops are
issued per tensor (torch's multi-tensor ``_foreach`` kernels are private API), so on GPUs with many small
tensors the step is launch-bound.

The global bookkeeping (step, scores, redundant/zero masks, counters) lives in the standard optimizer state
under the key ``"asgnas"``, so ``state_dict()`` / ``load_state_dict()`` resume a run bit-for-bit.

Layout: this module is the engine (setup, slot plans, the passes, the step, checkpointing); the base step per
variant is in :mod:`.base_step`, the per-tensor plan in :mod:`.entry`, the selection in :mod:`.selection`, lambda
and the half-space decisions in :mod:`.projection`, the read-only reports in :mod:`.report`, and the options
H2SPG and DHSPG share in :mod:`.options`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch

from .base_step import BASE_STEPS, LAMBDA_DEFAULTS
from .entry import FLAT, SLOT, Entry
from .param_groups import GroupLayout, ParamGroup, resolve_target_count
from .options import SparseOptions
from .projection import HalfSpaceProjection
from .report import EngineReport
from .schedule import resolve_schedule
from .scores import saliency_score
from .selection import GroupSelection

__all__ = ["HybridSparseOptimizer", "GLOBAL_STATE_KEY", "LAMBDA_DEFAULTS"]

GLOBAL_STATE_KEY = "asgnas"


class HybridSparseOptimizer(HalfSpaceProjection, GroupSelection, EngineReport, torch.optim.Optimizer):
    """Base class; use :class:`asgnas.optim.H2SPG` or :class:`asgnas.optim.DHSPG`."""

    #: elements per chunk; ~1 MiB of float32, so that a chunk's operands stay in L2 between operations
    chunk_numel: int = 1 << 18

    #: option defaults of this optimizer over :class:`SparseOptions`'s, and the options it does not take
    option_defaults: dict[str, Any] = {}
    refused_options: frozenset[str] = frozenset()

    def __init__(self, params: Iterable[Any], groups: Sequence[ParamGroup], lr: float, **options: Any) -> None:
        """``options``: the keyword arguments of :class:`asgnas.optim.options.SparseOptions` (listed there)."""
        opts = SparseOptions.from_keywords(type(self).__name__, lr, options, self.option_defaults,
                                           self.refused_options)
        defaults = dict(lr=lr, momentum=opts.momentum, nesterov=opts.nesterov, betas=tuple(opts.betas),
                        eps=opts.eps, weight_decay=opts.weight_decay)
        super().__init__(params, defaults)

        d_l, d_a, d_c = LAMBDA_DEFAULTS[opts.variant]
        self.variant = opts.variant
        self._base = BASE_STEPS[opts.variant]
        self.lmbda_amplify = d_a if opts.lmbda_amplify is None else float(opts.lmbda_amplify)
        self.hat_lmbda_coeff = d_c if opts.hat_lmbda_coeff is None else float(opts.hat_lmbda_coeff)
        self.score_momentum = float(opts.score_momentum)
        self.score_normalization = opts.score_normalization
        self.score_fn = opts.score_fn
        self.cost_weight = float(opts.cost_weight)
        self.selection_filter = opts.selection_filter

        all_params = [p for g in self.param_groups for p in g["params"]]
        self.layout = GroupLayout(groups, all_params)
        self.target_count = resolve_target_count(opts.target_group_sparsity, self.layout.n_removable)
        sizes = self.layout.sizes.numpy()
        share = sizes / max(float(sizes.sum()), 1.0)  # a group without a cost: its share of the grouped elements
        self._costs = np.array([share[i] if g.cost is None else float(g.cost)
                                for i, g in enumerate(self.layout.groups)])
        if (self._costs < 0).any():
            raise ValueError("group costs must be >= 0")
        self.schedule = resolve_schedule(
            self.layout.groups, lr, total_steps=opts.total_steps, warmup_steps=opts.warmup_steps,
            hard_zero_step=opts.hard_zero_step, projection_start=opts.projection_start,
            penalty_start=opts.penalty_start, lmbda=opts.lmbda, epsilon=opts.epsilon,
            warmup_fraction=opts.warmup_fraction, hard_zero_fraction=opts.hard_zero_fraction)
        if not 0.0 <= self.schedule.epsilon < 1.0:
            raise ValueError("epsilon must lie in [0, 1)")
        self.total_steps = self.schedule.total_steps
        self.warmup_steps = self.schedule.warmup_steps
        self.hard_zero_step = self.schedule.hard_zero_step
        self.projection_start = self.schedule.projection_start
        self.penalty_start = self.schedule.penalty_start
        self.lmbda = d_l if self.schedule.lmbda is None else self.schedule.lmbda
        self.epsilon = self.schedule.epsilon
        self.steady_shrink = self.total_steps is not None if opts.steady_shrink is None else bool(opts.steady_shrink)
        grouped = [b.param for b in self.layout.bindings.values()]
        ref = grouped[0] if grouped else (all_params[0] if all_params else torch.empty(0))
        self._home = ref.device
        self._acc_dtype = torch.float64 if any(p.dtype == torch.float64 for p in grouped) else torch.float32
        self._sizes = self.layout.sizes.to(self._home, self._acc_dtype)
        self._removable_dev = self.layout.removable.to(self._home)
        self._rem_index = torch.nonzero(self.layout.removable).flatten().to(self._home)
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
            "filtered_out": 0,
            "target": self.target_count,
            "n_groups": g,
        }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "layout"):  # called after __init__: new tensors are ungrouped
            self._build_entries()

    def _build_entries(self) -> None:
        grouped_params = [b.param for b in self.layout.bindings.values()]
        if grouped_params:
            self._home = grouped_params[0].device
            self._acc_dtype = (torch.float64 if any(p.dtype == torch.float64 for p in grouped_params)
                               else torch.float32)
            self._sizes = self.layout.sizes.to(self._home, self._acc_dtype)
            self._removable_dev = self.layout.removable.to(self._home)
            self._rem_index = torch.nonzero(self.layout.removable).flatten().to(self._home)
        self._entries: list[Entry] = []
        for group in self.param_groups:
            for p in group["params"]:
                b = self.layout.bindings.get(id(p))
                e = Entry(p, group, b, self.chunk_numel)
                if b is not None:
                    e.removable = bool(self.layout.removable.numpy()[b.mem_group].any())
                self._entries.append(e)
        # Scratch: three chunk-sized buffers per (device, dtype), allocated once - fresh large allocations
        # would page-fault on every step on CPU.
        self._scratch: dict[tuple, torch.Tensor] = {}
        need: dict[tuple, int] = {}
        for e in self._entries:
            need[e.key] = max(need.get(e.key, 1), e.n_chunk_max)
        for key, n in need.items():
            self._scratch[key] = torch.empty(3 * n, device=key[0], dtype=key[1])
        for e in self._entries:
            buf, n = self._scratch[e.key], need[e.key]
            e.scrviews = [tuple(buf[i * n:i * n + pv.numel()].view(pv.shape) for i in range(3)) for pv in e.pviews]
        # Stat buffer per (device, dtype): columns = slots of all grouped tensors; slot-mode columns first
        # (their |x|, |d| rows hold norms and get squared), then one column per flat tensor (holds squares).
        self._stat: dict[tuple, dict[str, Any]] = {}
        grouped = [e for e in self._entries if e.binding is not None]
        for key in {e.key for e in grouped}:
            mine = [e for e in grouped if e.key == key]
            ordered = [e for e in mine if e.mode == SLOT] + [e for e in mine if e.mode != SLOT]
            col, mcols, mgids = 0, [], []
            for e in ordered:
                e.col = col
                col += e.ncols
                mcols.append(e.col + e.binding.mem_slot)
                mgids.append(e.binding.mem_group)
                e.mcols = torch.from_numpy(mcols[-1]).to(self._home)
                e.mgids = torch.from_numpy(mgids[-1]).to(self._home)
            n_slot_cols = sum(e.ncols for e in mine if e.mode == SLOT)
            buf = torch.zeros(3, col, device=key[0], dtype=key[1])
            self._stat[key] = {"buf": buf, "n_slot": n_slot_cols, "ncols": col,
                               "mcols": torch.from_numpy(np.concatenate(mcols)).to(self._home),
                               "mgids": torch.from_numpy(np.concatenate(mgids)).to(self._home)}
            for e in mine:
                if e.mode == SLOT:
                    e.statviews = [tuple(buf[r, e.col + s0:e.col + s0 + n] for r in range(3)) for s0, n in e.chunks]
                elif len(e.chunks) == 1:
                    e.statviews = [tuple(buf[r, e.col] for r in range(3))]
                else:  # per-chunk partial sums, reduced into the column afterwards
                    e.partial = torch.zeros(3, len(e.chunks), device=key[0], dtype=key[1])
                    e.statviews = [tuple(e.partial[r, i] for r in range(3)) for i in range(len(e.chunks))]
        # all grouped tensors' memberships back to back (columns numbered over ``grouped``), for _refresh
        self._grouped = grouped
        ncols = np.array([e.ncols for e in grouped], dtype=np.int64)
        nmem = np.array([e.binding.mem_slot.size for e in grouped], dtype=np.int64)
        self._col_starts = np.cumsum(np.append(0, ncols[:-1])) if grouped else np.zeros(0, dtype=np.int64)
        self._mem_starts = np.cumsum(np.append(0, nmem[:-1])) if grouped else np.zeros(0, dtype=np.int64)
        self._n_cols = int(ncols.sum())
        self._mem_col = (np.concatenate([c0 + e.binding.mem_slot for c0, e in zip(self._col_starts, grouped)])
                         if grouped else np.zeros(0, dtype=np.int64))
        self._mem_gid = (np.concatenate([e.binding.mem_group for e in grouped]) if grouped
                         else np.zeros(0, dtype=np.int64))
        self._keep_count: dict[int, int] = {}
        self._plan_key = None
        self._refresh()

    def _gstate(self) -> dict[str, Any]:
        gs = self.state.get(GLOBAL_STATE_KEY)
        if gs is None:  # e.g. a state_dict from a plain torch optimizer was loaded
            gs = self.state[GLOBAL_STATE_KEY] = self._fresh_global_state()
        return gs

    def _refresh(self) -> None:
        """Recompute per-parameter flags and the batched slot maps after the redundant or zero set changed.

        Vectorised over tensors with numpy (it runs whenever a group is projected); per-tensor keep masks are
        rebuilt only for tensors whose zero pattern changed.  A slot is zero as soon as one of its groups is."""
        gs = self._gstate()
        red_g = gs["redundant"].numpy()
        zero_g = gs["zero"].numpy()
        ents = self._grouped
        mg = self._mem_gid
        if ents:
            zero_col = np.bincount(self._mem_col, weights=zero_g[mg], minlength=self._n_cols) > 0
            if self.layout.has_overlap:
                # a redundant group whose every slot lies in zero groups (nested inside an erased structure)
                # is zero itself: record it, it needs no more updates
                live = np.bincount(mg, weights=~zero_col[self._mem_col], minlength=self.layout.n_groups)
                absorbed = (live == 0) & red_g & ~zero_g
                if absorbed.any():
                    zero_g = zero_g | absorbed
                    gs["zero"] = torch.from_numpy(zero_g.copy())
                    gs["projected"] += int(absorbed.sum())
        act_g = red_g & ~zero_g
        self._active_dev = torch.from_numpy(act_g.copy()).to(self._home)
        self._n_active = int(act_g.sum())
        if not ents:
            self._scale_plan = {}
            return
        has_red = np.logical_or.reduceat(red_g[mg], self._mem_starts)
        has_act = np.logical_or.reduceat(act_g[mg], self._mem_starts)
        n_zero = np.add.reduceat(zero_col.astype(np.int64), self._col_starts)
        for i, e in enumerate(ents):
            e.has_redundant = bool(has_red[i])
            e.has_active = bool(has_act[i])
            e.all_zero = bool(n_zero[i] == e.ncols)
            if n_zero[i] == 0:
                e.keep, e.keepviews = None, []
            elif e.keep is None or self._keep_count.get(id(e)) != n_zero[i]:  # zeros only ever grow
                c0 = self._col_starts[i]
                k = torch.from_numpy((~zero_col[c0:c0 + e.ncols]).astype(np.float32))
                e.keep = k.to(device=e.param.device, dtype=e.param.dtype)
                e.keepviews = e.slot_views(e.keep)
            self._keep_count[id(e)] = int(n_zero[i])
        # Per (device, dtype): the columns and memberships of every redundant-bearing tensor, so that one
        # gather + one scatter build all their slot factors in a step (rebuilt when the redundant set changes).
        plan_key = red_g.tobytes()
        if getattr(self, "_plan_key", None) != plan_key:
            self._plan_key = plan_key
            self._scale_plan = {}
            for i, e in enumerate(ents):
                if not e.has_redundant:
                    continue
                plan = self._scale_plan.setdefault(e.key, {"entries": [], "cols": [], "mcol": [], "mgid": [],
                                                           "n": 0})
                plan["entries"].append(e)
                plan["cols"].append(self._col_starts[i] + np.arange(e.ncols))
                plan["mcol"].append(plan["n"] + e.binding.mem_slot)
                plan["mgid"].append(e.binding.mem_group)
                plan["n"] += e.ncols
            for key, plan in self._scale_plan.items():
                plan["cols"] = np.concatenate(plan["cols"])
                plan["mcol"] = torch.from_numpy(np.concatenate(plan["mcol"])).to(key[0])
                plan["mgid"] = torch.from_numpy(np.concatenate(plan["mgid"])).to(key[0])
                plan["sizes"] = [e.ncols for e in plan["entries"]]
                # one persistent factor buffer: the per-chunk broadcast views are cut once, not every step
                plan["buf"] = torch.zeros(plan["n"], device=key[0], dtype=key[1])
                for e, part in zip(plan["entries"], plan["buf"].split(plan["sizes"])):
                    e.scaleviews = e.slot_views(part)
        for key, plan in self._scale_plan.items():
            z = zero_col[plan["cols"]]
            plan["keep"] = torch.from_numpy((~z).astype(np.float32)).to(key[0], key[1]) if z.any() else None

    def _state_tensors(self, e: Entry) -> list[torch.Tensor]:
        return self._base.state_tensors(self.state[e.param])

    def _state_views(self, e: Entry) -> list[list[torch.Tensor]]:
        """Per-chunk views of the state tensors, cached until the tensors are replaced (load_state_dict)."""
        ts = self._state_tensors(e)
        if e.rows and not all(t.is_contiguous() for t in ts):  # e.g. loaded from another layout: views need rows
            st = self.state[e.param]
            for k in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                if k in st and torch.is_tensor(st[k]):
                    st[k] = st[k].contiguous()
            ts = self._state_tensors(e)
        sids = tuple(id(t) for t in ts)
        if sids != e.sids:
            e.sids = sids
            e.sviews = [[e.view(t, c) for t in ts] for c in e.chunks]
        return e.sviews

    def _grad_views(self, e: Entry) -> list[torch.Tensor]:
        """Per-chunk views of the gradient, cut once per step (pass 2 reuses pass 1's; dropped by step())."""
        g = e.param.grad
        if e.gviews is not None and e.gviews[0] is g:
            return e.gviews[1]
        if g.is_sparse:
            raise RuntimeError("sparse gradients are not supported")
        gc = g.contiguous() if (e.mode == FLAT or e.rows) and not g.is_contiguous() else g
        views = [e.view(gc, c) for c in e.chunks]
        e.gviews = (g, views)
        return views

    # ------------------------------------------------------------------ passes over one parameter
    def _fused(self, e: Entry, hp: dict, stats: bool) -> None:
        """State update + base step in one chunked pass (optionally recording stats of x_t, d_t first)."""
        gvs = self._grad_views(e)
        bc1, bc2s, first = self._base.prepare(self.state[e.param], e.param, hp)
        svs = self._state_views(e)
        keepviews = e.keepviews
        pre = hp["pre"]
        for i in range(len(e.chunks)):
            pc, gc, sc = e.pviews[i], gvs[i], svs[i]
            s1, s2, s3 = e.scrviews[i]
            self._base.update_state(hp, first, pc, gc, sc, s1)
            if keepviews:  # zero groups: reset their optimizer state every step
                for s in sc:
                    s.mul_(keepviews[i])
            d = self._base.direction(hp, bc2s, pc, gc, sc, s2)
            if stats:
                e.chunk_stats(pc, self._base.stat_direction(bc1, d, sc, s3), e.statviews[i], s1)
            if pre != 1.0:
                pc.mul_(pre)
            self._base.apply(hp, bc1, pc, d, sc)
            if keepviews and not hp["d_from_state"]:
                pc.mul_(keepviews[i])
        if stats and e.partial is not None:
            self._reduce_partial(e)

    def _reduce_partial(self, e: Entry) -> None:
        buf = self._stat[e.key]["buf"]
        torch.sum(e.partial, dim=1, out=buf[:, e.col])

    def _pass1(self, e: Entry, hp: dict) -> tuple[float, float]:
        """State update and stats of (x_t, d_t); the parameter itself is left for pass 2."""
        g = e.param.grad
        if g is None:
            for i in range(len(e.chunks)):
                e.chunk_stats(e.pviews[i], None, e.statviews[i], e.scrviews[i][0])
            if e.partial is not None:
                self._reduce_partial(e)
            return 1.0, 1.0
        gvs = self._grad_views(e)
        bc1, bc2s, first = self._base.prepare(self.state[e.param], e.param, hp)
        svs = self._state_views(e)
        for i in range(len(e.chunks)):
            pc, gc, sc = e.pviews[i], gvs[i], svs[i]
            s1, s2, s3 = e.scrviews[i]
            self._base.update_state(hp, first, pc, gc, sc, s1)
            d = self._base.direction(hp, bc2s, pc, gc, sc, s2)
            e.chunk_stats(pc, self._base.stat_direction(bc1, d, sc, s3), e.statviews[i], s1)
        if e.partial is not None:
            self._reduce_partial(e)
        return bc1, bc2s

    def _pass2(self, e: Entry, hp: dict, bc: tuple[float, float], scales: Optional[list]) -> None:
        """x <- scale * x - lr * d per slot (scale = 1 - lr*wd_dec - lr*lambda/|x|, 0 for zero groups, or the
        plain AdamW decay factor), then reset zero slots of x and of the state."""
        p, g = e.param, e.param.grad
        if e.all_zero:
            p.zero_()
            for s in self._state_tensors(e):
                s.zero_()
            return
        gvs = None if g is None else self._grad_views(e)
        svs = self._state_views(e)
        keepviews = e.keepviews
        bc1, bc2s = bc
        pre = hp["pre"]
        for i in range(len(e.chunks)):
            pc = e.pviews[i]
            if gvs is None:
                if scales is not None:
                    pc.mul_(scales[i])
                continue
            gc, sc = gvs[i], svs[i]
            if keepviews:  # reset the state of zero slots first: then d is 0 there for most variants
                for s in sc:
                    s.mul_(keepviews[i])
            d = self._base.direction(hp, bc2s, pc, gc, sc, e.scrviews[i][1])  # before x changes (coupled decay)
            if scales is not None:
                pc.mul_(scales[i])  # 0 on zero slots
            elif pre != 1.0:
                pc.mul_(pre)
            self._base.apply(hp, bc1, pc, d, sc)
            if keepviews and not hp["d_from_state"]:  # d also depends on the raw gradient
                pc.mul_(keepviews[i])

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        gs = self._gstate()
        if any(e.param.data_ptr() != e.ptr for e in self._entries):
            self._build_entries()
        t = gs["step"]
        selecting = not gs["selected"] and t >= self.warmup_steps
        scoring = not gs["selected"] and (selecting or self.score_momentum > 0.0)
        hybrid = gs["selected"] and self._n_active > 0
        two_pass = selecting or hybrid

        hps = {id(g): self._base.hyperparams(g) for g in self.param_groups}
        stat_entries: list[tuple[Entry, dict, tuple[float, float]]] = []
        for e in self._entries:
            if e.all_zero:  # erased tensors: nothing to update (pass 2 handles those zeroed in this step)
                continue
            if scoring:
                want = e.removable
            elif hybrid:
                want = e.has_active
            else:
                want = False
            hp = hps[id(e.group)]
            if want and (two_pass or e.param.grad is None):
                stat_entries.append((e, hp, self._pass1(e, hp)))
            elif e.param.grad is not None:
                self._fused(e, hp, stats=want)
                if want:
                    stat_entries.append((e, hp, (1.0, 1.0)))

        acc = accw = None
        uniform = True
        self._stat_entries = stat_entries
        if stat_entries:
            acc, accw, uniform = self._accumulate(stat_entries, weighted=two_pass)
        if scoring and acc is not None:
            self._update_scores(gs, acc)
        if selecting:
            self._select(gs)
        if two_pass:
            scales: dict[int, torch.Tensor] = {}
            if self._n_active > 0 and acc is not None:
                coef = self._hybrid_decisions(gs, t, acc, accw, uniform)
                scales = self._slot_scales(coef, hps)
            for e, hp, bc in stat_entries:
                if e.param.grad is not None or e.has_redundant:
                    self._pass2(e, hp, bc, scales.get(id(e)))
        for e in self._entries:
            e.gviews = None  # do not keep this step's gradients alive
        gs["step"] = t + 1
        return loss

    def _accumulate(self, stat_entries: list, weighted: bool) -> tuple[torch.Tensor, Optional[torch.Tensor], bool]:
        """Scatter per-slot sums into group vectors: acc = [|x|^2, <x,d>, |d|^2]; when step sizes differ
        between tensors also accw = [sum lr|x|^2, sum lr<x,d>, sum lr*wd_dec*|x|^2] for the trial point.

        Columns of tensors not processed in this step hold stale values; they only reach groups that are
        not used in this step (every tensor of a used group is processed)."""
        G = self.layout.n_groups
        acc = torch.zeros(3, G, device=self._home, dtype=self._acc_dtype)
        keys = {(hp["lr"], hp["wdd"]) for _, hp, _ in stat_entries}
        uniform = len(keys) <= 1
        vals_by_key = {}
        for key, sb in self._stat.items():
            vals = sb["buf"].clone()
            vals[0::2, :sb["n_slot"]].square_()
            vals = vals.to(device=self._home, dtype=self._acc_dtype)
            vals_by_key[key] = vals
            acc.index_add_(1, sb["mgids"], vals.index_select(1, sb["mcols"]))
        self._vals = vals_by_key  # per-slot sums, reused by the overlap term of the half-space test
        accw = None
        if weighted and not uniform:
            accw = torch.zeros(3, G, device=self._home, dtype=self._acc_dtype)
            for e, hp, _ in stat_entries:
                v = vals_by_key[e.key].index_select(1, e.mcols)
                accw[:2].index_add_(1, e.mgids, v[:2], alpha=hp["lr"])
                if hp["wdd"] != 0.0:
                    accw[2].index_add_(0, e.mgids, v[0], alpha=hp["lr"] * hp["wdd"])
        if uniform and stat_entries:
            self._uniform_hp = stat_entries[0][1]
        return acc, accw, uniform

    def _update_scores(self, gs: dict[str, Any], acc: torch.Tensor) -> None:
        ri = self._rem_index
        xx, xd, dd = (acc[i].index_select(0, ri) for i in range(3))  # index_select: no host sync
        sizes = self._sizes.index_select(0, ri)
        if self.score_fn is None:
            s = saliency_score(xx, xd, dd, sizes, self.score_normalization)
        else:
            s = self.score_fn(xx, xd, dd, sizes)
        full = torch.full((self.layout.n_groups,), float("nan"), device=self._home, dtype=self._acc_dtype)
        full.index_copy_(0, ri, s.to(self._acc_dtype))
        if gs["scores"] is None or gs["score_steps"] == 0:
            gs["scores"] = full  # the EMA starts at the first observed score, not at 0
        else:
            w = self.score_momentum
            gs["scores"] = torch.where(self._removable_dev, w * gs["scores"] + (1.0 - w) * full, full)
        gs["score_steps"] += 1

    # ------------------------------------------------------------------ selection
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
                shape = [1] * e.param.dim()
                shape[e.axis] = e.binding.n_slots
                k = e.keep.view(shape)
                e.param.mul_(k)
                for s in states:
                    s.mul_(k)
        return n

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        gs = sd["state"].get(GLOBAL_STATE_KEY)
        if gs is not None:  # a snapshot, so that later steps do not mutate a saved dict
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
