"""The Python API: ``ASGNAS(torch_model, dummy_input)`` or ``ASGNAS.from_onnx(path)``, then an optimizer, a normal
training loop, and ``construct_subnet(out_dir)``.

    nas = ASGNAS(model, torch.randn(1, 3, 32, 32))
    data = nas.dataset("npz:cifar10.npz")     # optional: data fitted to the model's input as the train pass does
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=0.5, total_steps=epochs * len(loader))
    for x, y in loader: ...; loss.backward(); optimizer.step()
    summary = nas.construct_subnet("out/")   # full.onnx, slim.onnx, params/MACs before and after, max_abs_diff

The optimizers come from :func:`asgnas.bridge.training.build_optimizer`, as the ``train`` pass's do: the same
model, data and budget select the same sub-network either way. ``total_steps`` (the number of ``step()`` calls
the loop will make) sets the schedule; without it an explicit ``warmup_steps`` is needed (see ``H2SPG``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from asgnas.bridge.executor import OnnxModule
from asgnas.bridge.export import PARAM_MAP_KEY, export_torch_model
from asgnas.bridge.mapping import params_by_initializer
from asgnas.bridge.model_io import ClassScores, fitted_dataset, logits_head, pick_output
from asgnas.bridge.selection_costs import COST_MODELS, ROUND_TO_BY_COST, round_to_for_cost, selection_costs
from asgnas.bridge.train_pass import DEFAULT_COST_WEIGHT, PREPROCESSING_KEY
from asgnas.bridge.training import build_optimizer, channel_rounding
from asgnas.data import Dataset
from asgnas.ir import Model, load_model, save_model
from asgnas.optim import DHSPG, H2SPG
from asgnas.passes.groups import SearchSpace, group_is_zero
from asgnas.passes.search_space import analyze_search_space
from asgnas.passes.untie_aliases import untie_initializer_aliases


class ASGNAS:
    """One network, its search space, and the mapping from groups to its torch parameters."""

    def __init__(self, model: nn.Module, dummy_input: torch.Tensor | Sequence[torch.Tensor], *,
                 workdir: str | os.PathLike | None = None, opset: int = 17) -> None:
        self.model = model
        self.dummy_input = dummy_input
        self.opset = opset
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="asgnas-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ir = self._export(self.workdir / "traced.onnx")
        self.search_space: SearchSpace = analyze_search_space(self.ir)
        self._param_for_initializer = params_by_initializer(model, self.ir.analyses[PARAM_MAP_KEY])
        self._output = ""  # the graph output the model trains: the first
        self._preprocessing: dict[str, Any] | None = None  # of the last ``dataset()``
        self._optimizer: torch.optim.Optimizer | None = None
        self._executor: OnnxModule | None = None

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, workdir: str | os.PathLike | None = None,
                  output: str = "") -> "ASGNAS":
        """Train an ONNX model from any framework: ``self.model`` is a torch module executing its IR. For a graph
        ending in Softmax/LogSoftmax (Keras, Caffe2) it returns the logits before that head as [N, classes], the
        scores a loss such as ``cross_entropy`` expects, as the ``train`` pass trains; the written models keep the
        head. ``output``: the graph output to train when there are several (default: the first)."""
        self = cls.__new__(cls)
        self.ir = load_model(path)
        untie_initializer_aliases(self.ir)
        self.search_space = analyze_search_space(self.ir)
        head = logits_head(self.ir, pick_output(self.ir, output))
        self._output = head.output
        if head.activation is None and not output:  # the graph's own outputs
            self._executor = OnnxModule(self.ir)
            self.model = self._executor
        else:
            self._executor = OnnxModule(self.ir, outputs=[head.logits])
            self.model = ClassScores(self._executor, head)
        self.dummy_input = None
        self.opset = self.ir.opset
        self.workdir = Path(workdir) if workdir is not None else Path(path).parent
        self._param_for_initializer = dict(self._executor.param_for_initializer)
        self._optimizer = None
        return self

    def dataset(self, spec: str = "digits", *, seed: int = 0) -> Dataset:
        """``digits``, ``npz:PATH`` or ``synthetic`` data fitted to the model's inputs (shape, NCHW/NHWC layout,
        named or integer inputs) with the ``train`` pass's split for ``seed``: ``x_train``, ``y_train``, ``x_val``,
        ``y_val``, and the ``preprocessing`` to apply when deploying."""
        data = fitted_dataset(self.ir, spec, pick_output(self.ir, self._output), seed=seed)
        self._preprocessing = data.preprocessing  # construct_subnet records it in the models, as the train pass does
        return data

    def _export(self, path: Path) -> Model:
        was_training = self.model.training
        try:
            return export_torch_model(self.model, self.dummy_input, path, opset=self.opset)
        finally:
            self.model.train(was_training)

    # --- optimizers -----------------------------------------------------------------------------------------------
    def groups(self, kind: str) -> list:
        """The search space's groups of ``kind``: ``"erase"`` (removal structures), ``"prune"`` (channels) or
        ``"both"``."""
        if kind not in ("erase", "prune", "both"):
            raise ValueError(f"kind must be 'erase', 'prune' or 'both', got {kind!r}")
        kinds = {"prune", "erase"} if kind == "both" else {kind}
        return [g for g in self.search_space.groups if g.kind in kinds]

    def h2spg(self, lr: float = 0.05, target_group_sparsity: float | int = 0.5, *, total_steps: int | None = None,
              kind: str = "erase", cost_weight: float = DEFAULT_COST_WEIGHT, cost: str = "params-macs",
              round_to: int | str = ROUND_TO_BY_COST, **options: Any) -> H2SPG:
        """H2SPG over the removal structures (``kind="both"`` adds channel groups), guarded by the hierarchy oracle.

        ``total_steps``: the number of ``optimizer.step()`` calls the training will make; it derives warm-up,
        the group-lasso strength, the projection window and the forced-zero step (``H2SPG`` explains; ``options``
        such as ``warmup_steps``, ``hard_zero_step``, ``lmbda``, ``epsilon``, ``momentum`` (0.9), ``variant``
        override). Without it and without ``warmup_steps``, ``ValueError`` says what to pass.
        ``cost_weight`` > 0: cost-aware selection (ours), groups rank by saliency plus this weight times their
        cost (``asgnas.optim.scores.cost_aware_key``); ``cost``: ``"params-macs"``, their share of the model's
        params and MACs, or ``"latency"``, of its measured latency (``asgnas.bridge.selection_costs``); 0 is the
        paper's order.
        ``round_to`` > 1 (with channel groups): every channel space keeps a multiple of that many channels;
        ``"auto"``: per space, the multiple the latency model measures fastest (``asgnas.passes.latency``);
        ``"by-cost"`` (the default, as the train pass's): ``"auto"`` with ``cost="latency"``, else 1; anything else
        is a ``ValueError``."""
        from asgnas.passes.hierarchy import build_oracle

        if cost not in COST_MODELS:  # checked even where cost_weight 0 leaves the ranking to saliency
            raise ValueError(f"cost must be one of {', '.join(COST_MODELS)}, got {cost!r}")
        groups = self.groups(kind)
        oracle = build_oracle(self.ir, groups)
        costs = selection_costs(self.ir, groups, oracle, cost) if cost_weight > 0 else None
        self._optimizer = build_optimizer(
            "h2spg", list(self.model.parameters()), groups, self._param_for_initializer, lr=lr,
            target=target_group_sparsity, total_steps=total_steps, oracle=oracle, costs=costs,
            cost_weight=cost_weight, selection_filter=self._rounding(groups, round_to_for_cost(round_to, cost)),
            **options)
        return self._optimizer

    def dhspg(self, lr: float = 0.05, target_group_sparsity: float | int = 0.5, *, total_steps: int | None = None,
              kind: str = "prune", round_to: int | str = ROUND_TO_BY_COST, **options: Any) -> DHSPG:
        """DHSPG over the channel groups (pruning-only mode); ``total_steps`` and ``options`` as :meth:`h2spg`;
        ``round_to`` > 1: every channel space keeps a multiple of that many channels (hardware-friendly widths;
        the target is then an upper bound; ``"auto"`` as :meth:`h2spg`; ``"by-cost"``, the default, is 1: DHSPG ranks
        by saliency alone, so no cost model sets its rounding)."""
        groups = self.groups(kind)
        self._optimizer = build_optimizer(
            "dhspg", list(self.model.parameters()), groups, self._param_for_initializer, lr=lr,
            target=target_group_sparsity, total_steps=total_steps,
            selection_filter=self._rounding(groups, round_to_for_cost(round_to, COST_MODELS[0])), **options)
        return self._optimizer

    def _rounding(self, groups: list, round_to: int | str) -> Any:
        from asgnas.passes.latency import resolve_round_to

        if round_to != "auto" and not (isinstance(round_to, int) and not isinstance(round_to, bool) and round_to >= 1):
            raise ValueError(f"round_to must be an int >= 1, 'auto' or '{ROUND_TO_BY_COST}', got {round_to!r}")
        if not any(g.kind == "prune" for g in groups):  # nothing to round: auto would measure for nothing
            return None
        return channel_rounding(groups, resolve_round_to(self.ir, round_to, self.search_space))

    # --- construction -------------------------------------------------------------------------------------------
    def construct_subnet(self, out_dir: str | os.PathLike) -> dict[str, Any]:
        """Write the trained full model and the slim model as ONNX, prove them equal in onnxruntime."""
        from asgnas.passes.construct_subnet import construct_subnet
        from asgnas.passes.verify import compare_models

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        full_path, slim_path = out / "full.onnx", out / "slim.onnx"
        if self._executor is not None:
            full = self._executor.write_back(self.ir)
            save_model(full, full_path)
        else:
            full = self._export(full_path)
        if self._preprocessing is not None:  # the deployer needs it: the same metadata as the train pass writes
            full.metadata_props[PREPROCESSING_KEY] = json.dumps(self._preprocessing, sort_keys=True)
            save_model(full, full_path)
        removable = [g for g in analyze_search_space(full).groups if g.removable]
        zero = sum(group_is_zero(full, g) for g in removable)
        slim = load_model(full_path)
        built = construct_subnet(slim)
        comparison = compare_models(slim, load_model(full_path))
        save_model(slim, slim_path)
        return {
            "full_onnx": str(full_path),
            "subnet_onnx": str(slim_path),
            "params_before": built["cost"]["before"]["params"],
            "params_after": built["cost"]["after"]["params"],
            "macs_before": built["cost"]["before"]["macs"],
            "macs_after": built["cost"]["after"]["macs"],
            "max_abs_diff": comparison["max_abs_diff"],
            "max_rel_diff": comparison["max_rel_diff"],
            "group_sparsity": zero / len(removable) if removable else 0.0,
            "erased_structures": built["erased_structures"],
            "pruned_channel_groups": built["pruned_channel_groups"],
        }
