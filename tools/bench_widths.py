"""Latency vs MACs of one super-network at several uniform widths: how far onnxruntime's CPU conv kernels follow
the MACs when channels are cut (and which widths they prefer: blocked kernels pad odd counts back up).

    python tools/bench_widths.py [--net stackedunets] [--size paper] [--widths 64,48,40,32,24] [--input-size 8]

Each width is exported at random weights and timed against the first width with ``reproduce.latencies`` (one
thread, interleaved, batch 1 and ``--latency-batch``); prints the latency speed-up divided by the MACs speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from asgnas.bridge.export import export_torch_model
from asgnas.cli import _register_all_passes
from asgnas.ir import Model, load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
from asgnas.zoo import build
from reproduce import latencies


def export_width(net: str, size: str, width: int, input_size: int, path: Path) -> tuple[Model, int]:
    torch.manual_seed(0)
    module = build(net, size, width=width, in_channels=1, input_size=input_size).eval()
    export_torch_model(module, module.example_input(1), path)
    model = load_model(path)
    macs = PassManager(parse_pipeline("cost")).run(model, PassContext(quiet=True))["cost"]["macs"]
    return load_model(path), macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="stackedunets")
    parser.add_argument("--size", default="paper", choices=("tiny", "paper"))
    parser.add_argument("--widths", default="64,48,40,32,24", help="the first one is the reference")
    parser.add_argument("--input-size", type=int, default=8, help="8: digits' 8x8 images")
    parser.add_argument("--latency-batch", type=int, default=64)
    args = parser.parse_args()
    _register_all_passes()
    widths = [int(w) for w in args.widths.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ref, ref_macs = export_width(args.net, args.size, widths[0], args.input_size, Path(tmp) / "ref.onnx")
        print(f"| width | MACs speed-up | latency / MACs speed-up, b1 | b{args.latency_batch} |\n|---|---|---|---|")
        for width in widths[1:]:
            model, macs = export_width(args.net, args.size, width, args.input_size, Path(tmp) / f"w{width}.onnx")
            ratios = []
            for batch in (1, args.latency_batch):
                times = latencies(ref, model, batch)
                speedup = times[f"latency_full_ms_b{batch}"] / times[f"latency_slim_ms_b{batch}"]
                ratios.append(speedup / (ref_macs / macs))
            print(f"| {width} | {ref_macs / macs:.2f} | {ratios[0]:.2f} | {ratios[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
