"""Training in several processes (``torchrun --nproc_per_node=N``): process group, DDP, batch shards, synchronised
BatchNorm statistics, one exit status.

Launched by torchrun (env ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``), the train pass joins the process group
(gloo on CPU; nccl on CUDA, one device ``cuda:LOCAL_RANK`` per process) and trains a DistributedDataParallel module.
``batch-size`` stays the global batch: every rank takes its contiguous slice of the same seeded permutation and
scales its mean loss by its share of the batch, so DDP's averaged gradient is a single process's gradient on the
whole batch. BatchNormalization in train mode takes its statistics over the whole global batch (all-reduced, as
torch's SyncBatchNorm does), so activations, running statistics and gradients are also a single process's. Hence
parameters, saliency scores and the selected groups are those of one process on the same global batches, up to
the order of float summation; the optimizers also broadcast rank 0's selection, so every rank holds the same.
One exception: a last batch with fewer samples than ranks leaves some ranks without a sample; they run one sample
at loss weight 0 (DDP needs every rank's backward), which leaves gradients exact but enters BatchNorm statistics.

Only rank 0 writes files (the CLI's ``-o``/``--report``, ``draw-groups``); every rank ends with the same exit status
(``finish``). Torch is imported only when a process group is actually used.
"""

from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from asgnas.errors import AsgnasError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: exit statuses after which the ranks cannot be trusted to meet again (internal error, interrupt, closed pipe)
_CRASH_STATUSES = frozenset({3, 130, 141})


def world_size() -> int:
    """Processes torchrun launched (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank among them (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def _group_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def join(device: str) -> "torch.device":
    """This rank's device (``device`` is auto, cpu or cuda); under torchrun the process group is joined first:
    nccl for CUDA (device ``cuda:LOCAL_RANK``), gloo for CPU."""
    import torch
    import torch.distributed as dist

    from asgnas.bridge.device import pick_device

    chosen = pick_device(device)
    if world_size() <= 1:
        return chosen
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    if not dist.is_available():
        raise AsgnasError("torchrun launched several processes, but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return chosen


class Shards:
    """One process: every batch whole, validation whole, epoch totals as they are."""

    world = 1

    def take(self, index: np.ndarray) -> tuple[np.ndarray, float]:
        """This rank's samples of a global batch and the weight of its mean loss."""
        return index, 1.0

    def epoch_totals(self, mean_loss: float, correct: int) -> tuple[float, int]:
        """Global mean loss over the epoch's batches and correct predictions, from this rank's."""
        return mean_loss, correct

    def accuracy(self, evaluate: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy over all of ``x``, ``evaluate`` seeing this rank's part."""
        return evaluate(x, y)

    def all_finite(self, loss: float) -> bool:
        """Whether this step's loss is finite on every rank (all ranks must stop together, or the next
        collective hangs)."""
        return math.isfinite(loss)


class RankShards(Shards):
    """This rank's contiguous part of every global batch and of the validation set."""

    def __init__(self, device: "torch.device") -> None:
        import torch.distributed as dist

        self.rank, self.world, self.device = dist.get_rank(), dist.get_world_size(), device

    def _bounds(self, n: int) -> tuple[int, int]:
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def take(self, index: np.ndarray) -> tuple[np.ndarray, float]:
        start, stop = self._bounds(len(index))
        if stop == start:  # fewer samples than ranks: still run forward/backward (DDP needs it), weightless
            return index[:1], 0.0
        # mean over the shard x (shard / batch) x world: DDP's average over ranks is then the batch mean
        return index[start:stop], (stop - start) * self.world / len(index)

    def _sum(self, values: list[float]) -> list[float]:
        import torch
        import torch.distributed as dist

        totals = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return totals.tolist()

    def all_finite(self, loss: float) -> bool:
        return self._sum([0.0 if math.isfinite(loss) else 1.0])[0] == 0.0

    def epoch_totals(self, mean_loss: float, correct: int) -> tuple[float, int]:
        loss_sum, correct_sum = self._sum([mean_loss, float(correct)])
        return loss_sum / self.world, int(round(correct_sum))

    def accuracy(self, evaluate: Callable[[np.ndarray, np.ndarray], float], x: np.ndarray, y: np.ndarray) -> float:
        start, stop = self._bounds(len(x))
        part = evaluate(x[start:stop], y[start:stop]) if stop > start else 0.0
        correct, total = self._sum([round(part * (stop - start)), float(stop - start)])  # counts: exact
        return int(correct) / max(int(total), 1)


def data_parallel(module: "nn.Module", device: "torch.device",
                  fixed_batch: int | None) -> tuple["nn.Module", Shards]:
    """In a process group: ``module`` wrapped in DDP and this rank's shards; else ``module`` and whole batches."""
    if world_size() <= 1 or not _group_active():
        return module, Shards()
    if fixed_batch is not None:
        raise AsgnasError(f"train: the graph computes with its fixed batch {fixed_batch}, so a batch cannot be split "
                          "across processes; export it with a dynamic batch or train in one process")
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # Buffers need no broadcast before every forward: BatchNorm's running statistics follow the synchronised
    # batch statistics, the rest are constants (newer torch calls the option forward_sync_buffers).
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    # static_graph: the ONNX graph is the same every step, so DDP learns once which parameters take no gradient
    wrapped = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                      static_graph=True, **{no_sync: False})
    return wrapped, RankShards(device)


def batch_norm_train(x: "torch.Tensor", running_mean: Any, running_var: Any, weight: Any, bias: Any,
                     momentum: float, eps: float, across_ranks: bool = True) -> "torch.Tensor":
    """``F.batch_norm`` with batch statistics; in a process group and ``across_ranks`` (the module trains: every
    rank runs the same steps) they are the global batch's: two differentiable all-reduces (sum and count, then
    squared deviations) as in torch's SyncBatchNorm."""
    import torch
    import torch.nn.functional as F

    if not across_ranks or world_size() <= 1 or not _group_active():
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    all_reduce = _differentiable_sum().apply
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    count = x.new_full((1,), float(x.numel() // x.shape[1]))
    sums = all_reduce(torch.cat([x.sum(dims), count]))
    total = sums[-1]
    mean = sums[:-1] / total
    centered = x - mean.reshape(shape)
    var = all_reduce(centered.square().sum(dims)) / total
    y = centered * torch.rsqrt(var + eps).reshape(shape)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    if running_mean is not None:
        with torch.no_grad():  # torch's convention: running variance unbiased, batch variance biased
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            unbiased = var * (total / (total - 1).clamp(min=1))
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
    return y


@functools.cache
def _differentiable_sum() -> type:
    """All-reduce (sum) as an autograd function: the gradient of a sum over ranks is the sum of the ranks'
    gradients, so backward all-reduces too (public ``dist.all_reduce`` only)."""
    import torch
    import torch.distributed as dist

    class SumOverRanks(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            total = x.clone()
            dist.all_reduce(total)
            return total

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            total = grad.clone()
            dist.all_reduce(total)
            return total

    return SumOverRanks


def finish(status: int) -> int:
    """The exit status every rank returns: the highest of all ranks' (e.g. rank 0's failed write), then the
    process group is left. After a crash status (internal error, interrupt) the ranks may not meet again: that
    rank's own status stands."""
    if world_size() <= 1:
        return status
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return status
    if status in _CRASH_STATUSES:  # the others may be inside a collective: leave now, torchrun stops them
        return status
    if not dist.is_initialized():  # a pipeline without train: a group only to agree
        dist.init_process_group("gloo")
    try:
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
        agreed = torch.tensor([status], dtype=torch.int64, device=device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return int(agreed.item())
    finally:
        dist.destroy_process_group()
