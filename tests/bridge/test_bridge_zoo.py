"""The torch executor on every zoo model and both exporters: onnxruntime equality (eval), torch equality in
train mode (BN batch statistics and running-stat updates), and gradients reaching every parameter."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from asgnas.bridge import OnnxModule, default_trainable
from asgnas.ir import load_model
from models import ZOO, case_names, ort_run, seeded_inputs

PAIRS = [(name, "legacy") for name in sorted(ZOO)] + [(name, "dynamo") for name in case_names(all_of={"dynamo_ok"})]
IDS = [f"{n}-{e}" for n, e in PAIRS]


def _close(got: torch.Tensor, want: np.ndarray, rel: float = 1e-5) -> None:
    got = got.detach().numpy()
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * scale)


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name,exporter", PAIRS, ids=IDS)
def test_eval_matches_onnxruntime(name: str, exporter: str, onnx_path) -> None:
    path = onnx_path(name, exporter)
    feeds = seeded_inputs(path, seed=3)  # symbolic batch -> 2
    module = OnnxModule(load_model(path)).eval()
    with torch.no_grad():
        out = _as_tuple(module(**{k: torch.from_numpy(v) for k, v in feeds.items()}))
    ref = ort_run(path, feeds)
    assert len(out) == len(ref)
    for got, want in zip(out, ref):
        _close(got, want)


@pytest.mark.parametrize("name,exporter", PAIRS, ids=IDS)
def test_gradient_reaches_every_parameter(name: str, exporter: str, onnx_path) -> None:
    model = load_model(onnx_path(name, exporter))
    module = OnnxModule(model).train()
    live = model.graph.live_nodes()
    expected = {v.name for v in model.graph.initializers()
                if default_trainable(v) and any(node in live for node, _ in v.uses)}
    assert set(module.param_for_initializer) == expected
    feeds = seeded_inputs(onnx_path(name, exporter), seed=4)
    out = _as_tuple(module(**{k: torch.from_numpy(v) for k, v in feeds.items()}))
    sum(o.float().square().mean() for o in out).backward()
    for init, param in module.param_for_initializer.items():
        assert param.grad is not None, f"no gradient reached {init}"
        assert torch.isfinite(param.grad).all(), init
    nonzero = sum(bool(p.grad.abs().sum() > 0) for p in module.param_for_initializer.values())
    assert nonzero >= 0.8 * len(expected)  # a few may be dead (e.g. ReLU-masked), most must move


BN_CASES = case_names(all_of={"bn"})


@pytest.mark.parametrize("name", BN_CASES)
def test_train_mode_matches_torch_batchnorm(name: str, onnx_path) -> None:
    """Train mode: batch statistics in the forward and torch-identical running-stat updates."""
    case = ZOO[name]
    ref_module = case.build().train()
    module = OnnxModule(load_model(onnx_path(name, "legacy"))).train()
    inputs = case.inputs()
    if case.dynamic_batch:
        generator = torch.Generator().manual_seed(5)
        inputs = tuple(torch.randn((3,) + tuple(t.shape[1:]), generator=generator) for t in inputs)
    for _ in range(2):  # two steps: the second forward already reads updated running statistics in torch
        want = _as_tuple(ref_module(*inputs))
        got = _as_tuple(module(*inputs))
        for g, w in zip(got, want):
            _close(g, w.detach().numpy(), rel=1e-4)
    buffers = dict(ref_module.named_buffers())
    stats = module.stat_for_initializer
    assert stats, "BN statistics should be BN-exclusive initializers in the zoo exports"
    for init, buffer in stats.items():
        np.testing.assert_allclose(buffer.numpy(), buffers[init].numpy(), rtol=1e-5, atol=1e-6)
    module.eval()
    ref_module.eval()
    with torch.no_grad():
        for g, w in zip(_as_tuple(module(*inputs)), _as_tuple(ref_module(*inputs))):
            _close(g, w.numpy(), rel=1e-4)


SUPERNETS = ["superresnet", "stackedunets", "regnet", "darts", "demosupnet"]
#: DARTS' legacy export time grows steeply with the cell's node count: 2 steps keep every op kind in ~0.5 s
_SUPERNET_KW = {"darts": {"steps": 2}}


@pytest.fixture(scope="module")
def supernet_path(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("supernets")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            from asgnas.zoo import build

            net = build(name, "tiny", **_SUPERNET_KW.get(name, {})).eval()
            path = root / f"{name}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # a raw legacy export: Identity aliases (fresh BNs share values) are kept on purpose
                torch.onnx.export(net, (net.example_input(2),), str(path), dynamo=False,
                                  do_constant_folding=False, opset_version=17)
            cache[name] = path
        return cache[name]

    return get


@pytest.mark.parametrize("name", SUPERNETS)
def test_paper_supernets_match_onnxruntime(name: str, supernet_path) -> None:
    path = supernet_path(name)
    feeds = seeded_inputs(path, seed=6)
    module = OnnxModule(load_model(path)).eval()
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    _close(out, ort_run(path, feeds)[0])
