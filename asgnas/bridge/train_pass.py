"""``train``: train the model itself with H2SPG or DHSPG, so a model from any framework goes ONNX -> slim ONNX.

    train{optimizer=h2spg,data=digits,epochs=10,target-sparsity=0.5,lr=0.05,batch-size=64}

Reads: the IR and ``model.analyses["search_space"]`` (runs ``search-space`` when missing; with ``gates=true`` it
first runs ``gate-branches`` and rebuilds the search space, see ``asgnas.passes.gates``). Writes: the trained
initializers (and BatchNorm running statistics) back into the IR; a ``group-sparse`` checkpoint that becomes
``verify``'s reference; ``PassContext.validation`` so ``construct-subnet`` can measure the slim model's
accuracy; the training curve as SVG (``asgnas.bridge.curve``): ``curve=auto`` puts it beside the CLI's ``--report``
(``PassContext.report_path``: ``r.json`` -> ``r.train.svg``), else beside ``-o`` (``PassContext.output_path``), else
writes none; ``curve=PATH`` or ``none`` choose. Report key ``train``: options (schedule, ``cost_weight``), per-epoch
history, optimizer metrics (among them ``projected_groups`` and ``forced_zero_groups``: how the chosen groups
reached zero), the selected (``redundant_groups``) and zero groups, ``curve`` (the SVG's path, null when none),
validation accuracy of the trained full model (in onnxruntime), and, once ``construct-subnet`` ran, of the slim
model; the trained ``output`` and the value the loss read (the logits before a trailing Softmax/LogSoftmax,
``asgnas.bridge.model_io``); the ``preprocessing`` applied to the data (also written to the model's
``metadata_props`` under ``asgnas.preprocessing``); the ``verdict`` ("ok" or "not learning" with its
``verdict_reasons``, ``asgnas.bridge.verdict``: the CLI then exits 1, outputs written). A NaN/inf loss stops the
pass (``TrainingDiverged``: exit 1, no model written).
The module registers with the pass registry without importing torch; torch loads when the pass runs.
"""

from __future__ import annotations

from typing import Any

from asgnas.bridge.selection_costs import (COST_MODELS, ROUND_TO_BY_COST, parse_round_to_by_cost, round_to_for_cost,
                                          selection_costs)
from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, ValidationData, register_pass
from asgnas.passes.erasing import ANALYSIS_KEY as ERASING_KEY
from asgnas.passes.pruning import ANALYSIS_KEY as PRUNING_KEY
from asgnas.passes.search_space import SEARCH_SPACE_KEY
from asgnas.passes.latency import resolve_round_to

#: H2SPG's cost-aware selection weight in the train pass and the API (ours; 0 = the paper's saliency order)
DEFAULT_COST_WEIGHT = 0.0

CHECKPOINT = "group-sparse"
#: ``metadata_props`` key of the preprocessing the model was trained with (JSON)
PREPROCESSING_KEY = "asgnas.preprocessing"


def fixed_batch(model: Model) -> int | None:
    first = model.graph.inputs[0].shape[0]
    return first if isinstance(first, int) and first > 0 else None


def _batch_agnostic(module: Any, forward: Any, x_train: Any, device: Any) -> bool:
    """Whether a graph declared with a fixed batch computes per sample at any batch: exporters often declare the
    batch they traced with while every op is batch-agnostic. Probed at two other sizes, in eval mode."""
    import torch

    from asgnas.bridge.training import to_device

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for size in (2, 3):
                out = forward(to_device(x_train[:size], device))
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
        Option("data", str, "digits", "digits | npz:PATH | synthetic (npz: x, y, or one array per graph input "
               "named after it, plus y; optionally <name>_val, y_val)"),
        Option("output", str, "", "graph output to train when there are several (default: the first)"),
        Option("epochs", int, 10, "training epochs", minimum=1),
        Option("target-sparsity", float, 0.5, "fraction (<1) or count (>=1) of removable groups to zero",
               minimum=0),
        Option("kind", str, "auto", "groups to sparsify: auto (h2spg: erase, dhspg: prune), prune, erase, both",
               choices=("auto", "prune", "erase", "both")),
        Option("prune-target", float, -1.0, "with kind=both and h2spg: fraction (<1) or count (>=1) of the "
               "removable channel groups to zero, target-sparsity then counting structures only; -1: one "
               "target over both kinds"),
        Option("lr", float, 0.05, "learning rate (cosine schedule)", minimum=0),
        Option("batch-size", int, 64, "batch size (a fixed-batch model is re-batched when its graph allows, else it "
               "trains at its own batch)", minimum=1),
        Option("variant", str, "sgd", "base optimizer", choices=("sgd", "adam", "adamw")),
        Option("momentum", float, 0.9, "SGD momentum", minimum=0),
        Option("weight-decay", float, 0.0, "weight decay", minimum=0),
        Option("seed", int, 0, "seed for data order, split and initial state"),
        Option("device", str, "auto", "cpu, cuda or auto", choices=("auto", "cpu", "cuda")),
        Option("quiet", bool, False, "no progress output"),
        Option("cost-weight", float, DEFAULT_COST_WEIGHT, "h2spg's cost-aware selection (ours): rank groups by "
               "saliency (min-max scaled) + this weight x log10(1 + cost / 1% of the model's); 0 = the paper's "
               "saliency order"),
        Option("cost", str, "params-macs", "what cost-aware selection counts as a group's cost: its share of "
               "params and MACs, or of the latency measured by the latency pass", choices=COST_MODELS),
        Option("round-to", parse_round_to_by_cost, ROUND_TO_BY_COST, "keep a multiple of this many channels in every "
               "channel space (e.g. 8 or 16, the block of onnxruntime's conv kernels; auto: per space, the multiple "
               "the latency model measured fastest; the channel target is then an upper bound); by-cost: auto with "
               "cost=latency, else 1", minimum=1),
        Option("warmup-fraction", float, 0.2, "share of the steps before the redundant structures are chosen"),
        Option("hard-zero-fraction", float, 0.5, "share of the steps after which the chosen structures are forced "
               "to zero (the rest of the budget trains the sub-network)"),
        Option("curve", str, "auto", "training-curve SVG: auto (beside --report as REPORT.train.svg, else beside "
               "-o), none, or a path"),
        Option("gates", bool, False, "gate parameter-free Add/Sum branches first (gate-branches), so pools and "
               "skips become erasable; unselected gates stay exactly 1 and construct-subnet folds them"),
        Option("selection", str, "saliency", "order the optimizer picks its K groups in: saliency (the paper) or "
               "random (seeded by seed, still checked by the validity oracle: the ablation baseline)",
               choices=("saliency", "random")),
    )
    preserves = ALL_ANALYSES  # new weights, same structure (gate-branches drops the analyses itself)

    @property
    def requires(self) -> tuple[str, ...]:
        return () if self.config["gates"] else (SEARCH_SPACE_KEY,)  # with gates: built on the gated graph

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        import json
        import math

        import torch

        from asgnas.bridge import distributed
        from asgnas.bridge.curve import curve_path, training_curve_svg
        from asgnas.bridge.executor import OnnxModule
        from asgnas.bridge.model_io import fitted_dataset, logits_head, pick_output
        from asgnas.bridge.scoring import random_score
        from asgnas.bridge.training import DEFAULT_KIND, build_optimizer, channel_rounding, train
        from asgnas.ir.io import write_text_atomically
        from asgnas.passes.hierarchy import build_oracle
        from asgnas.passes.untie_aliases import untie_initializer_aliases
        from asgnas.runtime import onnx_accuracy

        cfg = self.config
        curve = curve_path(cfg["curve"], ctx.report_path, ctx.output_path)  # a bad folder fails before training
        analyses = AnalysisManager(model)
        if cfg["gates"]:
            from asgnas.passes.gates import gate_branches

            gate_branches(model)  # drops the analyses: the search space is rebuilt on the gated graph
        if untie_initializer_aliases(model):  # exporter aliases would tie unrelated tensors
            analyses.forget(PRUNING_KEY, ERASING_KEY)  # and what is built on them: the search space
        space = analyses.get(SEARCH_SPACE_KEY)
        kind = DEFAULT_KIND[cfg["optimizer"]] if cfg["kind"] == "auto" else cfg["kind"]
        kinds = {"prune", "erase"} if kind == "both" else {kind}
        groups = [g for g in space.groups if g.kind in kinds]
        if not any(g.removable for g in groups):
            raise AsgnasError(f"the search space has no removable {kind} groups to train")
        # only h2spg ranks by a cost; DHSPG's order is saliency alone, so no cost model sets its rounding
        round_to = round_to_for_cost(cfg["round-to"], cfg["cost"] if cfg["optimizer"] == "h2spg" else COST_MODELS[0])
        if cfg["round-to"] not in (1, ROUND_TO_BY_COST) and "prune" not in kinds:
            ctx.log(f"train: round-to={cfg['round-to']} has no effect with kind={kind} (no channel groups)")
        if cfg["cost"] != "params-macs" and not (cfg["cost-weight"] > 0 and cfg["optimizer"] == "h2spg"):
            ctx.log(f"train: cost={cfg['cost']} ranks nothing without h2spg's cost-weight > 0 (the saliency order)")
        output = pick_output(model, cfg["output"])
        head = logits_head(model, output)
        data = fitted_dataset(model, cfg["data"], output, seed=cfg["seed"])
        device = distributed.join(cfg["device"])  # under torchrun: this rank's device, in the process group
        torch.manual_seed(cfg["seed"])
        module = OnnxModule(model, outputs=[head.logits]).to(device)
        forward = head.forward(module)
        model_batch = fixed_batch(model)
        if model_batch is not None and model_batch != cfg["batch-size"]:
            if _batch_agnostic(module, forward, data.x_train, device):
                model_batch = None  # the declared batch is only a declaration: train at batch-size
            else:
                ctx.log(f"train: the graph computes with its fixed batch {model_batch}: training at that batch")
        batch = model_batch or cfg["batch-size"]
        params = list(module.parameters())
        steps = math.ceil(len(data.x_train) / batch) if model_batch is None else len(data.x_train) // batch
        if not 0.0 <= cfg["warmup-fraction"] < cfg["hard-zero-fraction"] <= 1.0:
            raise AsgnasError("train needs 0 <= warmup-fraction < hard-zero-fraction <= 1")
        target = cfg["target-sparsity"]
        n_removable = sum(g.removable for g in groups)
        if target > 1 and int(target) > n_removable:
            raise AsgnasError(f"target-sparsity {int(target)} exceeds the {n_removable} removable {kind} groups")
        oracle = build_oracle(model, groups) if cfg["optimizer"] == "h2spg" else None
        costs = None
        if cfg["cost-weight"] > 0 and oracle is not None:
            costs = selection_costs(model, groups, oracle, cfg["cost"])
        if cfg["prune-target"] != -1:  # -1: off; other negatives are refused there
            target, oracle = self._per_kind_targets(groups, target, cfg["prune-target"], kind, cfg["optimizer"],
                                                   oracle)
        optimizer = build_optimizer(
            cfg["optimizer"], params, groups, module.param_for_initializer, lr=cfg["lr"],
            target=int(target) if target >= 1 else target, total_steps=max(1, cfg["epochs"] * steps), oracle=oracle,
            warmup_fraction=cfg["warmup-fraction"], hard_zero_fraction=cfg["hard-zero-fraction"],
            variant=cfg["variant"], momentum=cfg["momentum"], weight_decay=cfg["weight-decay"],
            # without channel groups nothing is rounded: auto would measure the latency model for nothing
            selection_filter=channel_rounding(groups, resolve_round_to(model, round_to, space)
                                              if "prune" in kinds else 1),
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
        trained, shards = distributed.data_parallel(module, device, model_batch)
        history = train(trained, optimizer, data, epochs=cfg["epochs"], batch_size=batch, device=device,
                        seed=cfg["seed"], log=log, fixed_batch=model_batch is not None,
                        forward=head.forward(trained), shards=shards)
        module.write_back(model)
        schedule = {"total_steps": optimizer.total_steps, "warmup_steps": optimizer.warmup_steps,
                    "hard_zero_step": optimizer.hard_zero_step}
        model.metadata_props[PREPROCESSING_KEY] = json.dumps(data.preprocessing, sort_keys=True)
        if curve is not None and ctx.writes_files:
            title = f"{cfg['optimizer']} on {cfg['data']}, target sparsity {cfg['target-sparsity']:g}"
            write_text_atomically(curve, training_curve_svg(history.epochs, schedule, title))
            if log is not None:
                log(f"train: training curve -> {curve}")
        ctx.checkpoint(CHECKPOINT, model, as_reference=True)
        ctx.validation = ValidationData(data.x_val, data.y_val, head.output, self.report_key)
        metrics = optimizer.metrics()
        if log is not None:
            log(f"train: {metrics['projected_groups']} of the {metrics['num_redundant']} selected groups zeroed by "
                f"projection, {metrics['forced_zero_groups']} forced at step {optimizer.hard_zero_step}")
        val_accuracy = onnx_accuracy(model, data.x_val, data.y_val, output=head.output, log=log)
        verdict = self._verdict(history.epochs, val_accuracy, data, ctx, log)
        return {
            "optimizer": cfg["optimizer"],
            "prune_target": cfg["prune-target"],
            "kind": kind,
            "data": cfg["data"],
            "device": str(device),
            "batch_size": batch,
            "processes": shards.world,
            "epochs": history.epochs,
            "seconds": round(history.seconds, 2),
            "schedule": schedule,
            "cost_weight": cfg["cost-weight"],
            "cost": cfg["cost"],
            "selection": cfg["selection"],
            "round_to": round_to if "prune" in kinds else 1,
            "redundant_groups": sorted(int(i) for i in getattr(optimizer, "redundant_group_ids", [])),
            "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))},
            "zero_groups": sorted(int(i) for i in optimizer.zero_group_ids),
            "gates": gates,
            "curve": str(curve) if curve is not None else None,
            "output": head.output,
            "loss_on": {"value": head.logits, "after": head.activation},
            "preprocessing": data.preprocessing,
            **verdict,
            "val_accuracy_full": val_accuracy,
        }

    @staticmethod
    def _verdict(epochs: list[dict[str, Any]], val_accuracy: float, data: Any, ctx: PassContext,
                 log: Any) -> dict[str, Any]:
        """Report keys ``verdict``, ``verdict_reasons``, ``chance_accuracy``; "not learning" is logged and becomes
        a pipeline failure (CLI exit 1, outputs still written)."""
        from asgnas.bridge.verdict import chance_accuracy, learning_verdict

        found = learning_verdict(epochs, val_accuracy, chance_accuracy(data.y_val, data.num_classes))
        if found["verdict"] != "ok":
            line = f"train: not learning: {'; '.join(found['reasons'])}"
            ctx.failures.append(line)
            if log is not None:
                log(line)
        return {"verdict": found["verdict"], "verdict_reasons": found["reasons"],
                "chance_accuracy": found["chance_accuracy"]}

    @staticmethod
    def _per_kind_targets(groups: list[Any], target: float, prune_target: float, kind: str, optimizer: str,
                          oracle: Any) -> tuple[int, Any]:
        """K_erase from target-sparsity, K_prune from prune-target (each a fraction or a count of its kind's
        removable groups); returns the total K and the oracle that enforces the split."""
        from asgnas.bridge.training import KindQuotaOracle
        from asgnas.optim.param_groups import resolve_target_count

        if kind != "both" or optimizer != "h2spg":
            raise AsgnasError("prune-target needs kind=both and optimizer=h2spg")
        if prune_target < 0:
            raise AsgnasError(f"prune-target must be -1 (off), a fraction or a count, got {prune_target:g}")
        quotas = {}
        for k, value in (("erase", target), ("prune", prune_target)):
            n = sum(g.removable for g in groups if g.kind == k)
            if value >= 1 and int(value) > n:
                raise AsgnasError(f"train: target {int(value)} exceeds the {n} removable {k} groups")
            quotas[k] = resolve_target_count(int(value) if value >= 1 else value, n)
        return sum(quotas.values()), KindQuotaOracle(oracle, {g.id: g.kind for g in groups}, quotas)
