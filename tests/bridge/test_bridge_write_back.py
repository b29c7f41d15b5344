"""``OnnxModule.write_back``: train in torch, write back into the IR, save, run in onnxruntime: same outputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from asgnas.bridge import OnnxModule
from asgnas.ir import load_model, save_model
from models import ZOO, ort_run, seeded_inputs

CASES = ["resnet_basic", "concat", "convtranspose_in", "transformer_mha", "groupnorm", "conv_prelu", "linear_to_conv"]


def _train(module: OnnxModule, feeds: dict[str, np.ndarray], steps: int = 3) -> None:
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(11)
    for _ in range(steps):
        inputs = {k: torch.randn(v.shape, generator=generator) for k, v in feeds.items()}
        out = module(**inputs)
        out = out if isinstance(out, tuple) else (out,)
        loss = sum(o.float().square().mean() for o in out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()


def _torch_outputs(module: OnnxModule, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(float(np.abs(w).max()), 1.0))


@pytest.mark.parametrize("name", CASES)
def test_train_write_back_save_run(name: str, onnx_path, tmp_path: Path) -> None:
    path = onnx_path(name, "legacy")
    model = load_model(path)
    before = {v.name: v.const.array.copy() for v in model.graph.initializers()}
    module = OnnxModule(model)
    feeds = seeded_inputs(path, seed=1)
    _train(module, feeds)
    want = _torch_outputs(module, feeds)
    assert module.write_back() is model
    out = save_model(model, tmp_path / f"{name}.trained.onnx")
    got = ort_run(out, feeds)
    _assert_same(got, want)
    # parameters moved; BN running statistics (where there are BNs) too
    changed = {n for n, a in before.items() if not np.array_equal(model.graph.values[n].const.array, a)}
    unchanged = set(module.param_for_initializer) - changed  # e.g. a conv bias before InstanceNorm: zero grad
    assert len(unchanged) <= len(module.param_for_initializer) // 5, unchanged
    assert set(module.stat_for_initializer) <= changed
    assert not np.allclose(got[0], ort_run(path, feeds)[0])


def test_write_back_into_a_copy_leaves_the_source_alone(onnx_path) -> None:
    model = load_model(onnx_path("conv_bn_relu", "legacy"))
    module = OnnxModule(model)
    _train(module, seeded_inputs(onnx_path("conv_bn_relu", "legacy")), steps=1)
    copy = model.copy()
    snapshot = {v.name: v.const.array.copy() for v in model.graph.initializers()}
    module.write_back(copy)
    for name, array in snapshot.items():
        np.testing.assert_array_equal(model.graph.values[name].const.array, array)
    assert any(not np.array_equal(copy.graph.values[n].const.array, a) for n, a in snapshot.items())


def test_aliased_bn_statistics_get_their_own_initializers(tmp_path: Path) -> None:
    """A raw legacy export aliases fresh BN statistics to other tensors through Identity. Training must not write
    through the alias; write_back gives each changed statistic its own initializer."""
    from asgnas.zoo import build

    net = build("demosupnet", "tiny").eval()
    path = tmp_path / "raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (net.example_input(2),), str(path), dynamo=False, do_constant_folding=False,
                          opset_version=17, input_names=["x"], dynamic_axes={"x": {0: "n"}})
    model = load_model(path)
    bn_stat_aliases = [n for n in model.graph if n.op_type == "Identity"
                       and any(u.op_type == "BatchNormalization" and i in (3, 4) for u, i in n.outputs[0].uses)]
    assert bn_stat_aliases
    sources = {n.inputs[0].name: n.inputs[0].const.array.copy() for n in bn_stat_aliases}
    module = OnnxModule(model)
    feeds = seeded_inputs(path, seed=2)
    with torch.no_grad():
        module.train()(**{k: torch.from_numpy(v) for k, v in feeds.items()})  # update running stats only
    module.eval()
    # the alias sources (BN weights/biases of other layers) were not touched by the running-stat updates
    for name, array in sources.items():
        param = module.param_for_initializer.get(name)
        if param is not None:
            np.testing.assert_array_equal(param.detach().numpy(), array)
    want = _torch_outputs(module, feeds)
    module.write_back()
    for node in model.graph:
        if node.op_type == "BatchNormalization":
            for slot in (3, 4):
                assert node.inputs[slot].is_initializer, (node.name, slot)
    got = ort_run(save_model(model, tmp_path / "trained.onnx"), feeds)
    _assert_same(got, want)
    # a second round writes into the now-untied initializers: no new (orphaned) initializers appear
    count = len(model.graph.initializers())
    with torch.no_grad():
        module.train()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    want = _torch_outputs(module.eval(), feeds)
    module.write_back()
    assert len(model.graph.initializers()) == count
    _assert_same(ort_run(save_model(model, tmp_path / "trained2.onnx"), feeds), want)
