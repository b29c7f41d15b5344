"""The API and the train pass on the same net, data and budget (issue 11): do they select the same groups, and how
many of the K reach zero by projection rather than at the forced step?

    python tools/bench_front_ends.py --nets demosupnet,superresnet --epochs 10

Exports the tiny super-network, runs ``train`` (the pass's defaults: digits, batch 64, target 0.5, seed 0), then
``ASGNAS.from_onnx`` + ``nas.h2spg(total_steps=...)`` + the library's own loop on the same file, and prints both.
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from asgnas import ASGNAS
from asgnas.bridge.export import export_torch_model
from asgnas.bridge.model_io import input_specs
from asgnas.bridge.training import train
from asgnas.cli import main as opt_main
from asgnas.data import load_dataset
from asgnas.zoo import build

KEYS = ("target_count", "projected_groups", "forced_zero_groups", "num_zero_groups")


def compare(name: str, epochs: int, workdir: Path) -> None:
    torch.manual_seed(0)
    net = build(name, "tiny")
    source = workdir / f"{name}.onnx"
    export_torch_model(net, net.example_input(1), source)
    start = time.perf_counter()
    report_path = workdir / f"{name}.json"
    opt_main([str(source), "--passes", f"search-space{{groups=false}},train{{data=digits,epochs={epochs},"
              "quiet=true,curve=none}", "--report", str(report_path), "-q"])
    passed = json.loads(report_path.read_text())["train"]
    print(f"{name} train pass ({time.perf_counter() - start:.0f} s): schedule {passed['schedule']}, "
          f"{ {k: passed['metrics'][k] for k in KEYS} }, selected {passed['redundant_groups']}")

    nas = ASGNAS.from_onnx(source, workdir=workdir)
    data = load_dataset("digits", input_specs(nas.ir)[0].shape, 10, seed=0)
    optimizer = nas.h2spg(lr=0.05, target_group_sparsity=0.5,
                          total_steps=epochs * math.ceil(len(data.x_train) / 64))
    train(nas.model, optimizer, data, epochs=epochs, batch_size=64, device=torch.device("cpu"), seed=0, log=None)
    metrics = optimizer.metrics()
    selected = sorted(int(i) for i in optimizer.redundant_group_ids)
    print(f"{name} API: { {k: metrics[k] for k in KEYS} }, selected {selected}; "
          f"same selection: {selected == passed['redundant_groups']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="demosupnet,superresnet")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.nets.split(","):
            compare(name, args.epochs, Path(tmp))


if __name__ == "__main__":
    main()
