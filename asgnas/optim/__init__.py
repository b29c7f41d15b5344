"""Structured-sparsity optimizers for asgnas: H2SPG (erasing mode, hierarchy-aware) and DHSPG (pruning mode).

Pure torch + numpy.  Describe the zero-invariant groups with :class:`ParamGroup` / :class:`ParamSlice`, pass
them with all trainable parameters to :class:`H2SPG` or :class:`DHSPG`, train as usual, and read
``metrics()`` / ``zero_group_ids`` to know what to remove::

    groups = [ParamGroup(i, [ParamSlice(conv.weight, 0, [i]), ParamSlice(bn.weight, 0, [i]),
                             ParamSlice(bn.bias, 0, [i])]) for i in range(conv.out_channels)]
    opt = H2SPG(model.parameters(), groups, lr=0.1, momentum=0.9, target_group_sparsity=0.5,
                total_steps=epochs * len(data), validity_oracle=oracle)
    for x, y in data:
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    opt.metrics()["group_sparsity"], opt.zero_group_ids
"""
from .dhspg import DHSPG
from .param_groups import GroupLayout, ParamGroup, ParamSlice, ValidityOracle, resolve_target_count
from .h2spg import H2SPG, greedy_valid_selection
from .hybrid import GLOBAL_STATE_KEY, LAMBDA_DEFAULTS, HybridSparseOptimizer
from .options import SparseOptions
from .schedule import SparseSchedule, budget_lambda
from .scores import saliency_score

__all__ = [
    "DHSPG",
    "GLOBAL_STATE_KEY",
    "GroupLayout",
    "H2SPG",
    "HybridSparseOptimizer",
    "LAMBDA_DEFAULTS",
    "ParamGroup",
    "ParamSlice",
    "SparseOptions",
    "SparseSchedule",
    "ValidityOracle",
    "budget_lambda",
    "greedy_valid_selection",
    "resolve_target_count",
    "saliency_score",
]
