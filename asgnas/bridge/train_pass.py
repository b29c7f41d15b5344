"""``train``: train the model itself with H2SPG or DHSPG, so a model from any framework goes ONNX -> slim ONNX.

    train{optimizer=h2spg,data=digits,epochs=10,target-sparsity=0.5,lr=0.05,batch-size=64}

Reads: the IR and ``model.analyses["search_space"]`` (runs ``search-space`` when missing; with ``gates=true``
it first runs ``gate-branches`` and rebuilds the search space, see ``asgnas.passes.gates``). Writes: the trained
initializers (and BatchNorm running statistics) back into the IR; a ``group-sparse`` checkpoint that becomes
``verify``'s reference; the data set on the pipeline context so ``construct-subnet`` can measure the slim model's
accuracy. Report key ``train``: options (schedule, ``cost_weight``), per-epoch history, optimizer metrics, the
selected (``redundant_groups``) and zero groups, validation accuracy of the trained full model (in onnxruntime),
and, once ``construct-subnet`` ran, of the slim model.
The module registers with the pass registry without importing torch; torch loads when the pass runs.
"""

from __future__ import annotations

from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.base import Option, Pass, PassContext, register_pass

#: H2SPG's cost-aware selection weight in the train pass and the API (ours; 0 = the paper's saliency order)
DEFAULT_COST_WEIGHT = 0.0

CHECKPOINT = "group-sparse"


def sample_shape(model: Model) -> tuple[int, ...]:
    """Per-sample input shape (batch dim dropped); every other dim must be static."""
    if len(model.graph.inputs) != 1:
        raise AsgnasError(f"train supports models with one input, this one has {len(model.graph.inputs)}")
    shape = model.graph.inputs[0].shape
    if not shape or any(not isinstance(d, int) for d in shape[1:]):
        raise AsgnasError(f"train needs a static per-sample input shape, got {shape}")
    return tuple(shape[1:])


def fixed_batch(model: Model) -> int | None:
    first = model.graph.inputs[0].shape[0]
    return first if isinstance(first, int) and first > 0 else None


def _batch_agnostic(module: Any, x_train: Any, device: Any) -> bool:
    """Whether a graph declared with a fixed batch computes per sample at any batch: exporters often declare the
    batch they traced with while every op is batch-agnostic. Probed at two other sizes, in eval mode."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for size in (2, 3):
                out = module(torch.as_tensor(x_train[:size], device=device))
                outs = out if isinstance(out, (tuple, list)) else (out,)
                if any(o.dim() == 0 or o.shape[0] != size for o in outs):
                    return False
    except Exception:  # a Reshape with the batch baked in, or similar: keep the declared batch
        return False
    finally:
        module.train(was_training)
    return True


@register_pass
class TrainPass(Pass):
    name = "train"
    summary = "train with H2SPG (erase structures) or DHSPG (prune channels) until the target groups are exactly zero"
    options = (
        Option("optimizer", str, "h2spg", "structured-sparsity optimizer", choices=("h2spg", "dhspg")),
        Option("data", str, "digits", "digits | npz:PATH | synthetic"),
        Option("epochs", int, 10, "training epochs", minimum=1),
        Option("target-sparsity", float, 0.5, "fraction (<1) or count (>=1) of removable groups to zero"),
        Option("kind", str, "auto", "groups to sparsify: auto (h2spg: erase, dhspg: prune), prune, erase, both",
               choices=("auto", "prune", "erase", "both")),
        Option("prune-target", float, -1.0, "with kind=both and h2spg: fraction (<1) or count (>=1) of the "
               "removable channel groups to zero, target-sparsity then counting structures only; -1: one "
               "target over both kinds"),
        Option("lr", float, 0.05, "learning rate (cosine schedule)", minimum=0),
        Option("batch-size", int, 64, "batch size (a fixed-batch model is re-batched when its graph allows, else it "
               "trains at its own batch)", minimum=1),
        Option("variant", str, "sgd", "base optimizer", choices=("sgd", "adam", "adamw")),
        Option("momentum", float, 0.9, "SGD momentum"),
        Option("weight-decay", float, 0.0, "weight decay"),
        Option("seed", int, 0, "seed for data order, split and initial state"),
        Option("device", str, "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
        Option("quiet", bool, False, "no progress output"),
        Option("cost-weight", float, DEFAULT_COST_WEIGHT, "h2spg's cost-aware selection (ours): rank structures "
               "by saliency + this weight x their share of params and MACs (both min-max scaled); 0 = the paper's "
               "saliency order"),
        Option("round-to", int, 1, "keep a multiple of this many channels in every channel space (e.g. 8 or 16, "
               "the block of onnxruntime's conv kernels; the channel target is then an upper bound)", minimum=1),
        Option("warmup-fraction", float, 0.2, "share of the steps before the redundant structures are chosen"),
        Option("hard-zero-fraction", float, 0.5, "share of the steps after which the chosen structures are forced "
               "to zero (the rest of the budget trains the sub-network)"),
        Option("gates", bool, False, "gate parameter-free Add/Sum branches first (gate-branches), so pools and "
               "skips become erasable; unselected gates stay exactly 1 and construct-subnet folds them"),
        Option("selection", str, "saliency", "order the optimizer picks its K groups in: saliency (the paper) or "
               "random (seeded by seed, still checked by the validity oracle: the ablation baseline)",
               choices=("saliency", "random")),
    )

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        import math

        import torch

        from asgnas.bridge.executor import OnnxModule
        from asgnas.bridge.scoring import random_score
        from asgnas.bridge.training import (DEFAULT_KIND, Schedule, build_optimizer, channel_rounding, pick_device,
                                            train)
        from asgnas.data import load_dataset
        from asgnas.passes.hierarchy import build_oracle
        from asgnas.passes.search_space import SEARCH_SPACE_KEY, analyze_search_space
        from asgnas.passes.untie import untie_initializer_aliases
        from asgnas.runtime import onnx_accuracy

        cfg = self.config
        space = model.analyses.get(SEARCH_SPACE_KEY)
        if cfg["gates"]:
            from asgnas.passes.gates import gate_branches

            gate_branches(model)  # drops the analyses: the search space is rebuilt on the gated graph
            space = None
        if untie_initializer_aliases(model) or space is None:  # exporter aliases would tie unrelated tensors
            space = analyze_search_space(model)
        kind = DEFAULT_KIND[cfg["optimizer"]] if cfg["kind"] == "auto" else cfg["kind"]
        kinds = {"prune", "erase"} if kind == "both" else {kind}
        groups = [g for g in space.groups if g.kind in kinds]
        if not any(g.removable for g in groups):
            raise AsgnasError(f"the search space has no removable {kind} groups to train")
        if cfg["round-to"] > 1 and "prune" not in kinds:
            ctx.log(f"train: round-to={cfg['round-to']} has no effect with kind={kind} (no channel groups)")
        out_shape = model.graph.outputs[0].shape
        num_classes = out_shape[-1] if out_shape and isinstance(out_shape[-1], int) else None
        data = load_dataset(cfg["data"], sample_shape(model), num_classes, seed=cfg["seed"])
        device = pick_device(cfg["device"])
        torch.manual_seed(cfg["seed"])
        module = OnnxModule(model).to(device)
        model_batch = fixed_batch(model)
        if model_batch is not None and model_batch != cfg["batch-size"]:
            if _batch_agnostic(module, data.x_train, device):
                model_batch = None  # the declared batch is only a declaration: train at batch-size
            else:
                ctx.log(f"train: the graph computes with its fixed batch {model_batch}: training at that batch")
        batch = model_batch or cfg["batch-size"]
        params = list(module.parameters())
        steps = math.ceil(len(data.x_train) / batch) if model_batch is None else len(data.x_train) // batch
        if not 0.0 <= cfg["warmup-fraction"] < cfg["hard-zero-fraction"] <= 1.0:
            raise AsgnasError("train needs 0 <= warmup-fraction < hard-zero-fraction <= 1")
        schedule = Schedule.for_budget(cfg["epochs"], steps, cfg["warmup-fraction"], cfg["hard-zero-fraction"])
        target = cfg["target-sparsity"]
        n_removable = sum(g.removable for g in groups)
        if target > 1 and int(target) > n_removable:
            raise AsgnasError(f"target-sparsity {int(target)} exceeds the {n_removable} removable {kind} groups")
        oracle = build_oracle(model, groups) if cfg["optimizer"] == "h2spg" else None
        costs = None
        if cfg["cost-weight"] > 0 and oracle is not None:
            from asgnas.bridge.mapping import removal_costs

            costs = removal_costs(model, groups, oracle)
        if cfg["prune-target"] >= 0:
            target, oracle = self._per_kind_targets(groups, target, cfg["prune-target"], kind, cfg["optimizer"],
                                                   oracle)
        optimizer = build_optimizer(
            cfg["optimizer"], params, groups, module.param_for_initializer, lr=cfg["lr"],
            target=int(target) if target >= 1 else target, schedule=schedule, oracle=oracle,
            variant=cfg["variant"], momentum=cfg["momentum"], weight_decay=cfg["weight-decay"],
            selection_filter=channel_rounding(groups, cfg["round-to"]),
            **({"costs": costs, "cost_weight": cfg["cost-weight"]} if cfg["optimizer"] == "h2spg" else {}),
            **({"score_fn": random_score(cfg["seed"])} if cfg["selection"] == "random" else {}),
        )
        gates = 0
        if cfg["gates"]:
            from asgnas.passes.gates import pin_gates

            gates = pin_gates(optimizer, groups, module.param_for_initializer)
        if model_batch is not None:  # keep only whole batches of the model's own size
            keep = len(data.x_train) - len(data.x_train) % batch
            data.x_train, data.y_train = data.x_train[:keep], data.y_train[:keep]
        log = None if (cfg["quiet"] or ctx.quiet) else ctx.log
        history = train(module, optimizer, data, epochs=cfg["epochs"], batch_size=batch, device=device,
                        seed=cfg["seed"], log=log, fixed_batch=model_batch is not None)
        module.write_back(model)
        ctx.checkpoint(CHECKPOINT, model, as_reference=True)
        ctx.dataset = data
        metrics = optimizer.metrics()
        return {
            "optimizer": cfg["optimizer"],
            "prune_target": cfg["prune-target"],
            "kind": kind,
            "data": cfg["data"],
            "device": str(device),
            "batch_size": batch,
            "epochs": history.epochs,
            "seconds": round(history.seconds, 2),
            "schedule": vars(schedule),
            "cost_weight": cfg["cost-weight"],
            "selection": cfg["selection"],
            "round_to": cfg["round-to"],
            "redundant_groups": sorted(int(i) for i in getattr(optimizer, "redundant_group_ids", [])),
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))},
            "zero_groups": sorted(int(i) for i in optimizer.zero_group_ids),
            "gates": gates,
            "val_accuracy_full": onnx_accuracy(model, data.x_val, data.y_val),
        }

    @staticmethod
    def _per_kind_targets(groups: list[Any], target: float, prune_target: float, kind: str, optimizer: str,
                          oracle: Any) -> tuple[int, Any]:
        """K_erase from target-sparsity, K_prune from prune-target (each a fraction or a count of its kind's
        removable groups); returns the total K and the oracle that enforces the split."""
        from asgnas.bridge.training import KindQuotaOracle
        from asgnas.optim.groups import resolve_target_count

        if kind != "both" or optimizer != "h2spg":
            raise AsgnasError("prune-target needs kind=both and optimizer=h2spg")
        quotas = {}
        for k, value in (("erase", target), ("prune", prune_target)):
            n = sum(g.removable for g in groups if g.kind == k)
            if value >= 1 and int(value) > n:
                raise AsgnasError(f"train: target {int(value)} exceeds the {n} removable {k} groups")
            quotas[k] = resolve_target_count(int(value) if value >= 1 else value, n)
        return sum(quotas.values()), KindQuotaOracle(oracle, {g.id: g.kind for g in groups}, quotas)
