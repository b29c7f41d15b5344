"""DistributedDataParallel (2 processes, gloo): identical weights and identical redundant groups on all ranks,
even when one rank's validity oracle would have chosen differently (rank 0's choice is broadcast)."""
from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from asgnas.optim import H2SPG
from optim_testlib import MatMulMLP, batches, digits


class _PickyOracle:
    """Rank 1 refuses group ``refuse`` so its local greedy choice differs from rank 0's."""

    def __init__(self, refuse=None):
        self.refuse = refuse
        self.local_choice = None
        self.removed = []

    def reset(self):
        self.removed = []

    def try_remove(self, gid):
        if gid == self.refuse:
            return False
        self.removed.append(gid)
        return True


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"  # every rank a client of the test's store, as under torchrun
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = MatMulMLP()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        groups = model.neuron_groups()
        oracle = _PickyOracle()  # on rank 1 it will refuse the group rank 0 takes first
        opt = H2SPG(ddp.parameters(), groups, lr=0.1, momentum=0.9, target_group_sparsity=0.5, warmup_steps=4,
                    validity_oracle=oracle, lmbda=5.0, epsilon=0.5, hard_zero_step=14)
        x, y = digits()
        orig_select = opt._select_groups

        def select(order, k):
            if rank == 1:
                oracle.refuse = opt.layout.ids[order[0]]  # what rank 0 takes first
            chosen = orig_select(order, k)
            oracle.local_choice = [opt.layout.ids[i] for i in chosen]
            return chosen

        opt._select_groups = select
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rank 1's oracle disagrees (on purpose)
            for i in batches(18, batch=32, seed=100 + rank):  # different data per rank
                loss = F.cross_entropy(ddp(x[i]), y[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.save({"params": [p.detach().clone() for p in model.parameters()],
                    "redundant": opt.redundant_group_ids, "zero": opt.zero_group_ids,
                    "local": oracle.local_choice, "metrics": opt.metrics()}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_two_ranks_agree(tmp_path):
    # the store holds a port the system picked: a port found free and released could be taken by a concurrent
    # test before rank 0 binds it
    store = dist.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)
    mp.spawn(_worker, args=(2, store.port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["local"] != r1["local"]  # rank 1 alone would have picked differently
    assert r0["redundant"] == r1["redundant"] == sorted(r0["local"])
    assert r0["zero"] == r1["zero"] and len(r0["zero"]) == r0["metrics"]["target_count"]
    for p, q in zip(r0["params"], r1["params"]):
        assert torch.equal(p, q)
