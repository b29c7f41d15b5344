"""``asgnas-demo``: the main job on a built-in default model, end to end, on a 2-core CPU.

Builds the tiny SuperResNet from ``asgnas.zoo``, exports it to ONNX with stable parameter names, runs the pass
pipeline over it and prints what each stage found, and where the output model was written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

DEFAULT_PIPELINE = "shape-infer,cost,dce,verify"


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asgnas-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default="superresnet", help="a super-network of asgnas.zoo")
    parser.add_argument("--out-dir", default="runs/demo", help="where the ONNX files and report go")
    parser.add_argument("--passes", default=DEFAULT_PIPELINE, help="pipeline to run on the exported model")
    args = parser.parse_args(argv)

    import torch

    from asgnas.cli import main as opt_main
    from asgnas.zoo import build

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build(args.supernet, "tiny").eval()
    source = out_dir / f"{args.supernet}.onnx"
    with torch.no_grad():
        torch.onnx.export(net, (net.example_input(1),), str(source), dynamo=False, do_constant_folding=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
    print(f"exported {args.supernet} (tiny) to {source}")
    return opt_main([str(source), "--passes", args.passes, "-o", str(out_dir / "out.onnx"),
                     "--report", str(out_dir / "report.json")])


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
