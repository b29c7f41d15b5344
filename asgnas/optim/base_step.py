"""The base optimizer under H2SPG / DHSPG: one small strategy object per variant (SGD, Adam, AdamW).

Each works on one chunk of one tensor with the engine's scratch buffers (no allocation) and keeps the same
formulas as torch.optim.SGD / Adam / AdamW, except that the momentum update is one fused ``buf = g + m * buf``
(one pass instead of two; equal up to rounding).  The engine calls, per tensor and step: ``prepare`` (state,
bias corrections), then per chunk ``update_state``, ``direction``, ``stat_direction`` (scores and lambda) and
``apply``.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["BASE_STEPS", "LAMBDA_DEFAULTS", "AdamStep", "AdamWStep", "BaseStep", "SgdStep"]


class BaseStep:
    """One base-optimizer variant; stateless (its state lives in the optimizer's per-parameter state)."""

    #: (lmbda, lmbda_amplify, hat_lmbda_coeff): DHSPG code defaults (PAPER_SPEC 3.5)
    lambda_defaults: tuple[float, float, float]
    #: weight decay decoupled from the gradient (AdamW): it also enters the projection's trial point
    decoupled_decay = False

    def hyperparams(self, g: dict) -> dict[str, Any]:
        """A param group's hyperparameters, decoded once per step."""
        lr, wd = float(g["lr"]), float(g["weight_decay"])
        wdd = wd if self.decoupled_decay else 0.0  # decoupled decay also enters the trial point
        b1, b2 = (float(b) for b in g["betas"])
        m, nesterov, eps = float(g["momentum"]), bool(g["nesterov"]), float(g["eps"])
        return {"lr": lr, "wd": wd, "m": m, "nesterov": nesterov, "b1": b1, "b2": b2, "eps": eps, "wdd": wdd,
                "pre": 1.0 - lr * wdd, "d_from_state": self.d_from_state(m, nesterov, eps)}

    def d_from_state(self, m: float, nesterov: bool, eps: float) -> bool:
        """d is exactly 0 wherever the optimizer state is 0."""
        raise NotImplementedError

    def state_tensors(self, st: dict) -> list[torch.Tensor]:
        raise NotImplementedError

    def prepare(self, st: dict, param: torch.Tensor, hp: dict) -> tuple[float, float, bool]:
        """Create missing state and advance the per-tensor step; returns (bias corr. 1, sqrt bias corr. 2,
        first momentum step)."""
        raise NotImplementedError

    def update_state(self, hp: dict, first: bool, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                     s1: torch.Tensor) -> None:
        raise NotImplementedError

    def direction(self, hp: dict, bc2s: float, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                  s2: torch.Tensor) -> torch.Tensor:
        """SGD: the direction d (x -= lr d).  Adam: the denominator (x -= lr/bc1 * m / denom)."""
        raise NotImplementedError

    def apply(self, hp: dict, bc1: float, pc: torch.Tensor, d: torch.Tensor, sc: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def stat_direction(self, bc1: float, d: torch.Tensor, sc: list[torch.Tensor], s3: torch.Tensor
                       ) -> torch.Tensor:
        """Direction for scores and lambda; for Adam the bias-corrected m_hat / (sqrt(v_hat) + eps)."""
        raise NotImplementedError


class SgdStep(BaseStep):
    """SGD with optional (Nesterov) momentum and L2 weight decay."""

    lambda_defaults = (1e-3, 2.0, 10.0)

    def d_from_state(self, m: float, nesterov: bool, eps: float) -> bool:
        return m != 0.0 and not nesterov  # the momentum buffer is the direction

    def state_tensors(self, st: dict) -> list[torch.Tensor]:
        b = st.get("momentum_buffer")
        return [] if b is None else [b]

    def prepare(self, st: dict, param: torch.Tensor, hp: dict) -> tuple[float, float, bool]:
        if hp["m"] != 0.0 and "momentum_buffer" not in st:
            st["momentum_buffer"] = torch.empty_like(param, memory_format=torch.preserve_format)
            return 1.0, 1.0, True
        return 1.0, 1.0, False

    def update_state(self, hp: dict, first: bool, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                     s1: torch.Tensor) -> None:
        if hp["m"] == 0.0:
            return
        g1 = gc if hp["wd"] == 0.0 else torch.add(gc, pc, alpha=hp["wd"], out=s1)
        if first:
            sc[0].copy_(g1)
        else:
            torch.add(g1, sc[0], alpha=hp["m"], out=sc[0])

    def direction(self, hp: dict, bc2s: float, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                  s2: torch.Tensor) -> torch.Tensor:
        if hp["m"] == 0.0:
            return gc if hp["wd"] == 0.0 else torch.add(gc, pc, alpha=hp["wd"], out=s2)
        if hp["nesterov"]:
            g1 = gc if hp["wd"] == 0.0 else torch.add(gc, pc, alpha=hp["wd"], out=s2)
            return torch.add(g1, sc[0], alpha=hp["m"], out=s2)
        return sc[0]

    def apply(self, hp: dict, bc1: float, pc: torch.Tensor, d: torch.Tensor, sc: list[torch.Tensor]) -> None:
        pc.add_(d, alpha=-hp["lr"])

    def stat_direction(self, bc1: float, d: torch.Tensor, sc: list[torch.Tensor], s3: torch.Tensor
                       ) -> torch.Tensor:
        return d


class AdamStep(BaseStep):
    """Adam with L2 weight decay (added to the gradient)."""

    lambda_defaults = (1e-2, 20.0, 1e3)

    def d_from_state(self, m: float, nesterov: bool, eps: float) -> bool:
        return eps > 0.0  # Adam's m is 0 -> the step is 0

    def state_tensors(self, st: dict) -> list[torch.Tensor]:
        return [st["exp_avg"], st["exp_avg_sq"]] if "exp_avg" in st else []

    def prepare(self, st: dict, param: torch.Tensor, hp: dict) -> tuple[float, float, bool]:
        if "exp_avg" not in st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        st["step"] += 1
        k = st["step"]
        return 1.0 - hp["b1"] ** k, (1.0 - hp["b2"] ** k) ** 0.5, False

    def update_state(self, hp: dict, first: bool, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                     s1: torch.Tensor) -> None:
        g1 = gc if (hp["wd"] == 0.0 or self.decoupled_decay) else torch.add(gc, pc, alpha=hp["wd"], out=s1)
        sc[0].lerp_(g1, 1.0 - hp["b1"])
        sc[1].mul_(hp["b2"]).addcmul_(g1, g1, value=1.0 - hp["b2"])

    def direction(self, hp: dict, bc2s: float, pc: torch.Tensor, gc: torch.Tensor, sc: list[torch.Tensor],
                  s2: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(sc[1], out=s2).div_(bc2s).add_(hp["eps"])

    def apply(self, hp: dict, bc1: float, pc: torch.Tensor, d: torch.Tensor, sc: list[torch.Tensor]) -> None:
        pc.addcdiv_(sc[0], d, value=-hp["lr"] / bc1)

    def stat_direction(self, bc1: float, d: torch.Tensor, sc: list[torch.Tensor], s3: torch.Tensor
                       ) -> torch.Tensor:
        return torch.div(sc[0], d, out=s3).div_(bc1)


class AdamWStep(AdamStep):
    """Adam with decoupled weight decay (applied to x by the engine's ``pre`` factor, not to the gradient)."""

    decoupled_decay = True


#: variant name -> its strategy
BASE_STEPS: dict[str, BaseStep] = {"sgd": SgdStep(), "adam": AdamStep(), "adamw": AdamWStep()}
# (lmbda, lmbda_amplify, hat_lmbda_coeff) per base variant: DHSPG code defaults (PAPER_SPEC 3.5)
LAMBDA_DEFAULTS = {name: step.lambda_defaults for name, step in BASE_STEPS.items()}
