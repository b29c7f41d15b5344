"""Training an IR (or a torch module mapped to one) with H2SPG / DHSPG: optimizer set-up, the loop, evaluation.

Shared by the ``train`` pass (ONNX in, ONNX out) and the ``asgnas.ASGNAS`` Python API (a user's torch module).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from asgnas.bridge.distributed import Shards
from asgnas.bridge.verdict import TrainingDiverged, diverged_message
from asgnas.data import Dataset, NamedInputs, Samples
from asgnas.errors import AsgnasError
from asgnas.optim import DHSPG, H2SPG
from asgnas.passes.groups import Group, round_kept_channels
from asgnas.progress import Progress

#: Which search-space groups each optimizer works on by default: erasing for H2SPG (the paper), channels for DHSPG.
DEFAULT_KIND = {"h2spg": "erase", "dhspg": "prune"}


class KindQuotaOracle:
    """Per-kind targets for mixed groups (train ``kind=both`` with ``prune-target``): wraps the validity oracle
    and refuses a group once its kind's quota is selected, so that H2SPG's single greedy walk (K = the sum of
    the quotas) picks K_erase structures and K_prune channel groups instead of a fraction of all groups, which
    the many channel groups would dominate."""

    def __init__(self, oracle: Any, kind_of: Mapping[int, str], quotas: Mapping[str, int]) -> None:
        self.oracle, self.kind_of, self.quotas = oracle, dict(kind_of), dict(quotas)
        self._taken = dict.fromkeys(self.quotas, 0)

    def reset(self) -> None:
        self.oracle.reset()
        self._taken = dict.fromkeys(self.quotas, 0)

    def try_remove(self, group_id: int) -> bool:
        kind = self.kind_of[group_id]
        if self._taken[kind] >= self.quotas[kind] or not self.oracle.try_remove(group_id):
            return False
        self._taken[kind] += 1
        return True


def channel_rounding(groups: Sequence[Group],
                     multiple: int | Mapping[str, int]) -> Callable[[list[int]], list[int]] | None:
    """The optimizers' ``selection_filter`` that keeps a multiple of ``multiple`` channels in every channel space
    (train ``round-to``; a mapping: per space, ``asgnas.passes.latency.resolve_round_to``); ``None`` for 1."""
    if not isinstance(multiple, Mapping) and multiple <= 1:
        return None
    by_id = {g.id: g for g in groups}
    return lambda ids: [g.id for g in round_kept_channels(groups, [by_id[i] for i in ids], multiple)]


def build_optimizer(
    name: str,
    params: Sequence[nn.Parameter],
    groups: list[Group],
    param_for_initializer: Mapping[str, nn.Parameter],
    *,
    lr: float,
    target: float | int,
    total_steps: int | None = None,
    oracle: Any = None,
    variant: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    costs: Mapping[int, float] | None = None,
    **options: Any,
) -> torch.optim.Optimizer:
    """H2SPG (with the hierarchy oracle) or DHSPG over ``groups``' slices of the given parameters: the one
    constructor of the train pass and of ``ASGNAS.h2spg/dhspg``, so both train the same way. ``total_steps``
    (the training budget) derives the schedule, the group-lasso strength and epsilon
    (:mod:`asgnas.optim.schedule`); ``options`` (e.g. ``warmup_fraction``, ``warmup_steps``, ``lmbda``) override.
    ``costs`` (group id -> saving) feeds cost-aware selection (option ``cost_weight``)."""
    from asgnas.bridge.mapping import to_param_groups

    # kinds with quotas of their own (train's prune-target) rank, and scale their saliency, apart
    param_groups = to_param_groups(groups, param_for_initializer, strict=False, costs=costs,
                                   families=isinstance(oracle, KindQuotaOracle))
    common = dict(lr=lr, target_group_sparsity=target, variant=variant, momentum=momentum if variant == "sgd" else 0.0,
                  weight_decay=weight_decay, total_steps=total_steps, **options)
    if name == "h2spg":
        return H2SPG(params, param_groups, validity_oracle=oracle, **common)
    if name == "dhspg":
        return DHSPG(params, param_groups, **common)
    raise AsgnasError(f"unknown optimizer '{name}' (h2spg, dhspg)")


@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def to_device(samples: Samples, device: torch.device) -> torch.Tensor | dict[str, torch.Tensor]:
    """A batch as torch: one tensor, or input name -> tensor for several graph inputs (``NamedInputs``)."""
    if isinstance(samples, NamedInputs):
        return {name: torch.from_numpy(array).to(device) for name, array in samples.arrays.items()}
    return torch.from_numpy(samples).to(device)


@torch.no_grad()
def accuracy(forward: Callable[[Any], torch.Tensor], x: Samples, y: np.ndarray,
             device: torch.device, batch_size: int = 256, fixed_batch: bool = False) -> float:
    """Top-1 accuracy; ``fixed_batch``: the graph only runs at ``batch_size``, so the remainder is dropped."""
    usable = len(x) - len(x) % batch_size if fixed_batch else len(x)
    correct = 0
    for start in range(0, usable, batch_size):
        logits = forward(to_device(x[start:start + batch_size], device))
        correct += int((logits.argmax(-1).cpu().numpy() == y[start:start + batch_size]).sum())
    return correct / max(usable, 1)


def train(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    lr_schedule: str = "cosine",
    log: Callable[[str], None] | None = print,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fixed_batch: bool = False,
    shards: Shards | None = None,
) -> History:
    """Plain supervised loop (cross-entropy on what ``forward`` returns: logits); the optimizer does the
    structured-sparsity work. ``fixed_batch``: the graph only runs at ``batch_size`` (validation batches likewise).
    ``shards``: this rank's part of each batch when training in several processes (``bridge.distributed``).
    A NaN/inf loss (on any rank) raises ``TrainingDiverged`` at that step."""
    forward = forward or module
    shards = shards or Shards()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    history = History()
    start = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        module.train()
        losses, correct, loss_sum = [], 0, 0.0
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{epochs}", log)
        for index in _batches(len(data.x_train), batch_size, rng):
            if lr_schedule == "cosine":
                scale = 0.5 * (1 + math.cos(math.pi * step / max(epochs * steps_per_epoch, 1)))
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * scale
            index, weight = shards.take(index)
            xb = to_device(data.x_train[index], device)
            yb = torch.from_numpy(data.y_train[index]).to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = forward(xb)
            loss = loss_fn(logits, yb) * weight
            losses.append(float(loss.detach()))
            loss_sum += losses[-1]  # the bar's running mean, without re-averaging the epoch every step
            if not shards.all_finite(losses[-1]):  # stop at once: nothing trained from here on is worth writing
                raise TrainingDiverged(diverged_message(losses[-1], epoch + 1, epochs, step + 1, base_lrs[0]))
            loss.backward()
            optimizer.step()
            step += 1
            correct += int((logits.argmax(-1) == yb).sum()) if weight else 0
            bar.update(loss=loss_sum / len(losses))
        bar.close()
        module.eval()
        metrics = optimizer.metrics()
        mean_loss, correct = shards.epoch_totals(float(np.mean(losses)), correct)
        row = {
            "epoch": epoch + 1,
            "loss": mean_loss,
            "train_accuracy": correct / len(data.x_train),
            "val_accuracy": shards.accuracy(lambda x, y: accuracy(forward, x, y, device,
                                                                  *((batch_size, True) if fixed_batch else ())),
                                            data.x_val, data.y_val),
            "group_sparsity": float(metrics.get("group_sparsity", 0.0)),
            "num_zero_groups": int(metrics.get("num_zero_groups", 0)),
            "phase": metrics.get("phase"),
        }
        history.epochs.append(row)
        if log is not None:
            log(f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  train acc {row['train_accuracy']:.3f}  "
                f"val acc {row['val_accuracy']:.3f}  group sparsity {row['group_sparsity']:.3f} "
                f"({row['num_zero_groups']} zero groups, {row['phase']})")
    history.seconds = time.perf_counter() - start
    return history
