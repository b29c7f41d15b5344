"""``asgnas-demo``: the main job end to end on a built-in default, in minutes on a 2-core CPU.

Builds the tiny SuperResNet of ``asgnas.zoo``, exports it to ONNX with stable parameter names, then runs
``search-space, train{h2spg on digits}, construct-subnet, verify`` over the file and prints a before/after table
(parameters, MACs, validation accuracy, onnxruntime latency) and where the slim ONNX model was written. The "full"
column is a separately trained baseline: the same ``train`` pass, epochs, learning rate, seed and data with no group
ever selected (``target-sparsity=0``), not the group-sparse model, which equals the slim one by construction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgnas-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="superresnet", help="a super-network of asgnas.zoo")
    parser.add_argument("--out-dir", default="runs/demo", help="where the ONNX files and the report go")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--target-sparsity", type=float, default=0.5)
    parser.add_argument("--optimizer", default="h2spg", choices=("h2spg", "dhspg"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from asgnas.bridge.export import export_torch_model
    from asgnas.cli import main as opt_main
    from asgnas.runtime import latency_ms
    from asgnas.zoo import build

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    net = build(args.supernet, "tiny")
    source = out_dir / f"{args.supernet}.onnx"
    export_torch_model(net, net.example_input(1), source, input_names=["input"], output_names=["logits"])
    print(f"exported the tiny {args.supernet} super-network to {source}")
    train = f"train{{optimizer={args.optimizer},data=digits,epochs={args.epochs},seed={args.seed},target-sparsity="
    quiet = ["-q"] if args.quiet else []
    full, baseline_path = out_dir / f"{args.supernet}_full.onnx", out_dir / "baseline_report.json"
    print("training the full baseline (no sparsity, the same budget)")
    status = opt_main([str(source), "--passes", train + "0}", "-o", str(full), "--report", str(baseline_path)]
                      + quiet)
    if status != 0:
        return status
    slim, report_path = out_dir / f"{args.supernet}_slim.onnx", out_dir / "report.json"
    print(f"training with {args.optimizer} at target sparsity {args.target_sparsity}")
    pipeline = f"search-space{{groups=false}},{train}{args.target_sparsity}}},construct-subnet,verify"
    status = opt_main([str(source), "--passes", pipeline, "-o", str(slim), "--report", str(report_path)] + quiet)
    if status != 0:
        return status
    report = json.loads(report_path.read_text())
    cost, trained = report["cost"], report["train"]
    baseline_acc = json.loads(baseline_path.read_text())["train"]["val_accuracy_full"]
    rows = [
        ("parameters", f"{cost['before']['params']:,}", f"{cost['after']['params']:,}",
         f"{cost['after']['params'] / cost['before']['params']:.2f}x"),
        ("MACs", f"{cost['before']['macs']:,}", f"{cost['after']['macs']:,}",
         f"{cost['after']['macs'] / cost['before']['macs']:.2f}x"),
        ("val accuracy (digits)", f"{baseline_acc:.3f}", f"{trained['val_accuracy_slim']:.3f}",
         f"{trained['val_accuracy_slim'] - baseline_acc:+.3f}"),
    ]
    full_ms, slim_ms = latency_ms(str(full)), latency_ms(str(slim))
    rows.append(("onnxruntime latency, batch 1", f"{full_ms:.3f} ms", f"{slim_ms:.3f} ms", f"{slim_ms / full_ms:.2f}x"))
    summary = report["search_space"]["summary"]
    print(f"\nsearch space: {summary['num_removable_erase_groups']} removable structures, "
          f"{summary['num_removable_prune_groups']} removable channel groups; "
          f"erased {report['construct-subnet']['erased_structures']} structures, "
          f"verify max abs diff {report['verify']['max_abs_diff']:.2e}")
    print(f"{'':<30}{'full baseline':>14}{'slim':>14}{'ratio':>9}")
    for name, before, after, ratio in rows:
        print(f"{name:<30}{before:>14}{after:>14}{ratio:>9}")
    print(f"\nfull baseline: {full}\nslim model: {slim}\nreports: {baseline_path}, {report_path}")
    if trained.get("curve"):
        print(f"training curve: {trained['curve']}")
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
