"""Sweep: search space -> random 50% zero groups -> construct-subnet -> verify, over torchvision architectures.

    .venv-sweep/bin/python tools/sweep.py [--models resnet18,mobilenet_v2] [--size 224] [--out docs/sweep.json]

torchvision cannot be installed beside the CPU torch wheel this project pins, so the sweep runs in its own venv:
    python3 -m venv .venv-sweep && .venv-sweep/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        && .venv-sweep/bin/pip install -e . onnxscript
Each model runs in a subprocess (a crash or a timeout is a row, not the end of the sweep). Weights are random
(no downloads) with randomized BatchNorm statistics so that zero-invariance is tested on non-trivial values.
A row either passes verify or carries the reason the model was refused; a wrong slim model is a failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = [
    "resnet18", "resnet50", "resnet152", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "mobilenet_v2",
    "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny",
    "shufflenet_v2_x1_0", "squeezenet1_0", "mnasnet0_5", "googlenet", "vit_b_16", "swin_t",
]

WORKER = r"""
import json, sys, time, torch, torchvision
from asgnas.ir import load_model
from asgnas.passes import PassContext, PassManager, parse_pipeline
name, size, path, fraction, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
torch.backends.mha.set_fastpath_enabled(False)  # the fused eval-mode attention kernel has no ONNX export
kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
net = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
with torch.no_grad():
    for p in net.parameters():  # zero-initialised heads (vit) would make every output constant: verify vacuous
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.02)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.5, 0.5)
    torch.onnx.export(net, (torch.randn(1, 3, size, size),), path, dynamo=False, do_constant_folding=False,
                      opset_version=17, input_names=["input"], output_names=["output"])
row = {"model": name}
model = load_model(path)
start = time.perf_counter()
pipeline = (f"search-space{{groups=false}},zero-groups{{fraction={fraction},seed={seed},kind=both}},"
            "construct-subnet,verify{rtol=1e-3,seeds=1}")
manager = PassManager(parse_pipeline(pipeline))
try:
    report = manager.run(model, PassContext(quiet=True, log=lambda _: None))
    row["error"] = None
except Exception as err:
    report = manager.report
    row["error"] = f"{type(err).__name__}: {err}"
row["seconds"] = round(time.perf_counter() - start, 2)
summary = report.get("search_space", {}).get("summary", {})
row.update({k: summary.get(k) for k in ("num_prune_groups", "num_erase_groups", "num_removable_prune_groups",
                                       "num_channel_spaces",
                                       "num_removable_erase_groups", "removable_param_fraction")})
row["construct_seconds"] = next((p["seconds"] for p in report.get("passes", []) if p["name"] == "construct-subnet"),
                                None)
row["zeroed"] = len(report.get("zero-groups", {}).get("zeroed", []))
cost = report.get("cost", {})
row["before"], row["after"] = cost.get("before"), cost.get("after")
verify = report.get("verify", {})
row.update(max_abs_diff=verify.get("max_abs_diff"), max_rel_diff=verify.get("max_rel_diff"), ok=verify.get("ok"))
print("ROW " + json.dumps(row))
"""


def run_model(name: str, size: int, fraction: float, seed: int, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / f"{name}.onnx")
        try:
            proc = subprocess.run([sys.executable, "-c", WORKER, name, str(size), path, str(fraction), str(seed)],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"model": name, "error": f"timeout after {timeout} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"model": name, "error": f"worker failed: {tail}"}


def markdown(rows: list[dict]) -> str:
    head = ("| model | channel spaces | prune groups (removable) | erase groups (removable) | % params removable | "
            "zeroed | verify max abs / rel diff | params before -> after | MACs before -> after | outcome |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if r.get("before") and r.get("after"):
            params = f"{r['before']['params'] / 1e6:.2f}M -> {r['after']['params'] / 1e6:.2f}M"
            macs = f"{r['before']['macs'] / 1e6:.0f}M -> {r['after']['macs'] / 1e6:.0f}M"
        else:
            params = macs = "-"
        frac = r.get("removable_param_fraction")
        outcome = "ok" if r.get("ok") else (r.get("error") or "verify failed")
        diff = r.get("max_abs_diff")
        verify = "-" if diff is None else f"{diff:.1e} / {r['max_rel_diff']:.1e}"
        lines.append(
            f"| {r['model']} | {r.get('num_channel_spaces', '-')} | "
            f"{r.get('num_prune_groups', '-')} ({r.get('num_removable_prune_groups', '-')}) | "
            f"{r.get('num_erase_groups', '-')} ({r.get('num_removable_erase_groups', '-')}) | "
            f"{'-' if frac is None else f'{100 * frac:.1f}'} | {r.get('zeroed', '-')} | "
            f"{verify} | {params} | {macs} | {outcome[:120]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out", default="docs/sweep.json")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        row = run_model(name, args.size, args.fraction, args.seed, args.timeout)
        print(f"{name}: {'ok' if row.get('ok') else row.get('error') or 'verify failed'} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        rows.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
