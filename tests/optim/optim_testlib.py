"""Helpers for the asgnas.optim tests: tiny models with their groups, data, and a naive reference optimizer.

The reference (:class:`NaiveHybrid`) is written independently of the vectorised engine: one Python loop
per group, index_select / index_copy on slices, float64 friendly.  Tests compare trajectories of both.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asgnas.optim import ParamGroup, ParamSlice


# ---------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=None)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32) / 16.0, torch.tensor(y, dtype=torch.long)


def batches(n_steps: int, batch: int = 64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = digits()[0].shape[0]
    return [torch.randint(0, n, (batch,), generator=g) for _ in range(n_steps)]


# ---------------------------------------------------------------------------------------------- models
class ConvNet(nn.Module):
    """8x8 digits: conv-bn-relu x2, 2x2 average pooling, linear.  Channel groups span conv weight rows, conv bias,
    BN gamma and beta (four tensors).  ``conv_bias=False`` drops the conv bias, whose gradient in front of a BN
    is rounding noise (Adam amplifies noise to full-size steps, so exact comparisons need it gone)."""

    def __init__(self, c1: int = 8, c2: int = 12, conv_bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=conv_bias)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=conv_bias)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc = nn.Linear(c2 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(F.avg_pool2d(x, 2).flatten(1))

    def channel_groups(self) -> list[ParamGroup]:
        out = []
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
            for c in range(conv.out_channels):
                sl = [ParamSlice(conv.weight, 0, [c]), ParamSlice(bn.weight, 0, [c]), ParamSlice(bn.bias, 0, [c])]
                if conv.bias is not None:
                    sl.append(ParamSlice(conv.bias, 0, [c]))
                out.append(ParamGroup(len(out), sl))
        return out


class MatMulMLP(nn.Module):
    """x @ W1 + b1 with W1 stored [in, out] (ONNX MatMul layout): a neuron's group is column j of W1 (axis 1)
    plus b1[j] (axis 0) and a per-neuron scale s[j]; the first ``n_fixed`` neurons are not removable."""

    def __init__(self, hidden: int = 24, n_fixed: int = 4) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(64, hidden) * 0.15)
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.s = nn.Parameter(torch.ones(hidden))
        self.out = nn.Linear(hidden, 10)
        self.n_fixed = n_fixed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(x @ self.w1 + self.b1) * self.s)

    def neuron_groups(self) -> list[ParamGroup]:
        h = self.w1.shape[1]
        return [ParamGroup(100 + j, [ParamSlice(self.w1, 1, [j]), ParamSlice(self.b1, 0, [j]),
                                     ParamSlice(self.s, 0, [j])], removable=j >= self.n_fixed) for j in range(h)]


class BranchNet(nn.Module):
    """Removal structures as whole tensors: h = relu(x W0); h = h + sum_k branch_k(h) per stage; the branches
    are GeZIGs (one group = every tensor of the branch).  Stage s has ``width`` parallel branches."""

    def __init__(self, stages: int = 3, width: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(64, hidden)
        self.branches = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, hidden, bias=False))
                          for _ in range(width))
            for _ in range(stages))
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        for stage in self.branches:
            h = h + sum(b(h) for b in stage)
        return self.head(h)

    def branch_groups(self) -> list[ParamGroup]:
        out = []
        for s, stage in enumerate(self.branches):
            for k, b in enumerate(stage):
                out.append(ParamGroup(10 * s + k, [ParamSlice(p) for p in b.parameters()]))
        return out


def train(model: nn.Module, opt: torch.optim.Optimizer, idx: Sequence[torch.Tensor],
          hook: Optional[Callable[[int], None]] = None) -> list[float]:
    x, y = digits()
    losses = []
    for t, i in enumerate(idx):
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if hook is not None:
            hook(t)
    return losses


def full_loss(model: nn.Module) -> float:
    x, y = digits()
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def group_values(group: ParamGroup) -> torch.Tensor:
    parts = []
    for sl in group.slices:
        p = sl.param.detach()
        if p.dim() == 0:
            parts.append(p.reshape(1))
            continue
        idx = torch.arange(p.shape[sl.axis]) if sl.indices is None else torch.as_tensor(list(sl.indices))
        parts.append(p.index_select(sl.axis, idx).reshape(-1))
    return torch.cat(parts)


def is_zero(group: ParamGroup) -> bool:
    return bool((group_values(group) == 0).all())


# ---------------------------------------------------------------------------------------------- reference
class NaiveHybrid:
    """Straightforward re-implementation of the spec (3.1-3.4) for cross-checking: loops over groups and
    tensors, no batching.  Same hyper-parameter meaning and step numbering as asgnas.optim."""

    def __init__(self, param_groups: list[dict], groups: list[ParamGroup], k: int, variant: str,
                 warmup_steps: int, score_momentum: float, lmbda: float, amplify: float, cap: float,
                 epsilon: float, penalty_start: int, projection_start: int, hard_zero_step: Optional[int],
                 select: Callable[[list[int]], list[int]]) -> None:
        self.pgs = param_groups  # dicts with params, lr, momentum, nesterov, betas, eps, weight_decay
        self.groups = groups
        self.k = k
        self.variant = variant
        self.tw = warmup_steps
        self.omega = score_momentum
        self.lmbda, self.amp, self.cap, self.eps_hs = lmbda, amplify, cap, epsilon
        self.penalty_start, self.projection_start, self.hard = penalty_start, projection_start, hard_zero_step
        self.select = select
        self.t = 0
        self.state: dict[int, dict] = {}
        self.scores: Optional[torch.Tensor] = None
        self.redundant: Optional[list[int]] = None
        self.zero: set[int] = set()

    def _hp(self, p: torch.Tensor) -> dict:
        for g in self.pgs:
            if any(q is p for q in g["params"]):
                return g
        raise KeyError

    @staticmethod
    def _idx(sl: ParamSlice) -> torch.Tensor:
        n = sl.param.shape[sl.axis] if sl.param.dim() else 1
        return torch.arange(n) if sl.indices is None else torch.as_tensor(list(sl.indices))

    def _get(self, t: torch.Tensor, sl: ParamSlice) -> torch.Tensor:
        return t.reshape(1) if t.dim() == 0 else t.index_select(sl.axis, self._idx(sl))

    def _set(self, t: torch.Tensor, sl: ParamSlice, v: torch.Tensor) -> None:
        if t.dim() == 0:
            t.copy_(v.reshape(()))
        else:
            t.index_copy_(sl.axis, self._idx(sl), v)

    @torch.no_grad()
    def step(self) -> None:
        t = self.t
        params = [p for g in self.pgs for p in g["params"]]
        direction: dict[int, torch.Tensor] = {}
        for p in params:
            hp = self._hp(p)
            st = self.state.setdefault(id(p), {})
            g = p.grad
            lr, wd = hp["lr"], hp["weight_decay"]
            if self.variant == "sgd":
                g1 = g + wd * p
                m = hp["momentum"]
                if m:
                    st["buf"] = g1.clone() if "buf" not in st else g1 + m * st["buf"]
                    d = g1 + m * st["buf"] if hp["nesterov"] else st["buf"]
                else:
                    d = g1
            else:
                b1, b2 = hp["betas"]
                g1 = g + wd * p if self.variant == "adam" else g
                st.setdefault("m", torch.zeros_like(p))
                st.setdefault("v", torch.zeros_like(p))
                st["k"] = st.get("k", 0) + 1
                st["m"] = b1 * st["m"] + (1 - b1) * g1
                st["v"] = b2 * st["v"] + (1 - b2) * g1 * g1
                bc1, bc2 = 1 - b1 ** st["k"], 1 - b2 ** st["k"]
                d = (st["m"] / bc1) / (st["v"].sqrt() / math.sqrt(bc2) + hp["eps"])
            direction[id(p)] = d

        def stats(gr: ParamGroup) -> tuple[float, float, float]:
            x = torch.cat([self._get(sl.param, sl).reshape(-1) for sl in gr.slices])
            dd = torch.cat([self._get(direction[id(sl.param)], sl).reshape(-1) for sl in gr.slices])
            return float(x @ x), float(x @ dd), float(dd @ dd)

        removable = [i for i, gr in enumerate(self.groups) if gr.removable]
        if self.redundant is None and (t >= self.tw or self.omega > 0):
            c, a = [], []
            for i in removable:
                xx, xd, dd = stats(self.groups[i])
                nx, nd = math.sqrt(xx), math.sqrt(dd)
                c.append(xd / (nx * nd) if nx * nd > 0 else 0.0)
                n = sum(self._get(sl.param, sl).numel() for sl in self.groups[i].slices)
                a.append(1.0 / (nx / n + 1e-6))
            c, a = torch.tensor(c, dtype=torch.float64), torch.tensor(a, dtype=torch.float64)
            s = 0.5 * c / max(float(c.norm()), 1e-300) + 0.5 * a / float(a.norm())
            self.scores = s if self.scores is None else self.omega * self.scores + (1 - self.omega) * s
        if self.redundant is None and t >= self.tw:
            order = sorted(range(len(removable)), key=lambda j: (-float(self.scores[j]), j))
            self.redundant = self.select([removable[j] for j in order])

        # base step everywhere (new tensors, applied at the end)
        new = {}
        for p in params:
            hp = self._hp(p)
            pre = 1 - hp["lr"] * hp["weight_decay"] if self.variant == "adamw" else 1.0
            new[id(p)] = pre * p - hp["lr"] * direction[id(p)]
        newly = set()
        if self.redundant is not None:
            # lambda_g / |x_g| of every active redundant group; nested groups add their penalties per element
            coef: dict[int, float] = {}
            for i in self.redundant:
                if i in self.zero:
                    continue
                xx, xd, dd = stats(self.groups[i])
                nx = math.sqrt(xx)
                if nx == 0:
                    newly.add(i)
                    continue
                lam = self.lmbda
                if t >= self.penalty_start and xd < 0:
                    lo, hi = -xd / nx, -dd * nx / xd
                    lam = min(max(self.amp * lo, self.lmbda), self.lmbda * self.cap)
                    if lam >= hi:
                        lam = 0.5 * (lo + hi)
                coef[i] = lam / nx

            def csum(active: dict[int, float]) -> dict[int, torch.Tensor]:
                out = {id(p): torch.zeros_like(p) for p in params}
                for i, c in active.items():
                    for sl in self.groups[i].slices:
                        v = out[id(sl.param)]
                        self._set(v, sl, self._get(v, sl) + c)
                return out

            cs = csum(coef)
            hard = self.hard is not None and t + 1 >= self.hard
            for i in list(coef):
                inner = 0.0
                for sl in self.groups[i].slices:
                    hp = self._hp(sl.param)
                    pre = 1 - hp["lr"] * hp["weight_decay"] if self.variant == "adamw" else 1.0
                    x = self._get(sl.param, sl)
                    xt = pre * x - hp["lr"] * (self._get(direction[id(sl.param)], sl)
                                               + self._get(cs[id(sl.param)], sl) * x)
                    inner += float((xt * x).sum())
                xx = stats(self.groups[i])[0]
                if (t >= self.projection_start and inner < self.eps_hs * xx) or hard:
                    newly.add(i)
                    del coef[i]
            cs = csum(coef)  # penalties of the groups that stay
            for p in params:
                new[id(p)] -= self._hp(p)["lr"] * cs[id(p)] * p
        self.zero |= newly
        if self.redundant is not None:  # nested groups whose every element lies in a zero group are zero too
            covered = {id(p): torch.zeros_like(p, dtype=torch.bool) for p in params}
            for i in self.zero:
                for sl in self.groups[i].slices:
                    self._set(covered[id(sl.param)], sl, torch.ones_like(self._get(covered[id(sl.param)], sl)))
            for i in self.redundant:
                if i not in self.zero and all(bool(self._get(covered[id(sl.param)], sl).all())
                                              for sl in self.groups[i].slices):
                    self.zero.add(i)
        for i in self.zero:
            for sl in self.groups[i].slices:
                v = new[id(sl.param)]
                self._set(v, sl, torch.zeros_like(self._get(v, sl)))
                for key in ("buf", "m", "v"):
                    s = self.state[id(sl.param)].get(key)
                    if s is not None:
                        self._set(s, sl, torch.zeros_like(self._get(s, sl)))
        for p in params:
            p.copy_(new[id(p)])
        self.t += 1
