"""asgnas.zoo: build API, forward shapes, legacy ONNX export vs onnxruntime, paper-size counts."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asgnas.zoo import SUPERNETS, DartsSuperNet, StackedUnets, build
from zoo_tools import calibrate_bn, count_macs, count_params, export_legacy, ort_outputs, randomize_bn

NAMES = sorted(SUPERNETS)

# Ops that carry data; anything else may only appear in constant side-chains
# (Resize scales, Slice bounds) or as Identity aliases the exporter makes for
# equal-valued buffers (e.g. two pools' BN stats over the same input).
DATA_OPS = {"Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "Resize", "Add", "Concat",
            "GlobalAveragePool", "Flatten", "Gemm", "Sigmoid", "Mul", "Slice"}
CONST_OPS = {"Constant", "Concat", "Unsqueeze", "Identity"}


def test_zoo_is_pure_torch() -> None:
    """asgnas.zoo must not depend on onnx or on other asgnas packages."""
    for src in (Path(__file__).resolve().parents[2] / "asgnas" / "zoo").glob("*.py"):
        for line in src.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                mod = words[1]
                assert not mod.startswith(("onnx", "asgnas")), (src.name, line)


def test_build_api() -> None:
    assert set(SUPERNETS) == {"superresnet", "stackedunets", "regnet", "darts", "demosupnet"}
    assert isinstance(build("StackedUnets"), StackedUnets)
    assert isinstance(build("darts", "paper", layers=5), DartsSuperNet)
    assert build("darts", "tiny", C=2).C == 2
    with pytest.raises(KeyError):
        build("nope")
    with pytest.raises(ValueError):
        build("darts", "huge")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_forward_shape_and_size(name: str) -> None:
    torch.manual_seed(0)
    net = build(name, "tiny")
    assert (net.in_channels, net.num_classes, net.input_size) == (1, 10, 8)
    assert 2_000 <= count_params(net) <= 100_000
    x = net.example_input(3)
    assert x.shape == (3, 1, 8, 8)
    assert net(x).shape == (3, 10)


@pytest.mark.parametrize("name,size", [
    ("stackedunets", 16), ("darts", 12), ("demosupnet", 10), ("demosupnet", 7),
    ("superresnet", 10), ("superresnet", 7), ("regnet", 6), ("regnet", 9),
])
def test_other_input_sizes(name: str, size: int) -> None:
    net = build(name, "tiny", input_size=size, in_channels=3, num_classes=4)
    assert net(net.example_input(2)).shape == (2, 4)


def test_invalid_input_sizes_rejected() -> None:
    with pytest.raises(ValueError):
        StackedUnets.tiny(input_size=12)
    with pytest.raises(ValueError):
        DartsSuperNet.tiny(input_size=10)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_onnx_export_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build(name, "tiny")
    randomize_bn(net)
    calibrate_bn(net, net.example_input(16))
    x = net.example_input(4)
    model = export_legacy(net, x, tmp_path / f"{name}.onnx")

    inits = {i.name for i in model.graph.initializer}
    data = {model.graph.input[0].name}
    for node in model.graph.node:
        if any(i in data for i in node.input):
            data.update(node.output)
            assert node.op_type in DATA_OPS, node.op_type
        else:
            assert node.op_type in CONST_OPS, node.op_type
    # Every trainable torch parameter is its own initializer (no tying, no Identity aliases).
    assert {n for n, _ in net.named_parameters()} <= inits

    with torch.no_grad():
        ref = net(x).numpy()
    got = ort_outputs(tmp_path / f"{name}.onnx", x)
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_mac_counter_on_known_layers() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    expect = 8 * 10 * 10 * 3 * 9 + 8 * 5 * 5 * 2 * 9 + 8 * 5
    assert count_macs(net, torch.randn(1, 3, 10, 10)) == expect


# Figures of PAPER_SPEC 7.1 (StackedUnets reconstruction) and 7.4 (DARTS-8, C=24, 32x32).
SPEC = {"stackedunets": (0.78e6, 207e6), "darts": (4.08e6, 600e6)}


@pytest.mark.parametrize("name", sorted(SPEC))
def test_paper_counts_match_spec(name: str) -> None:
    net = build(name, "paper")
    params, macs = count_params(net), count_macs(net, net.example_input(1))
    spec_params, spec_macs = SPEC[name]
    assert abs(params - spec_params) <= 0.10 * spec_params, params
    assert abs(macs - spec_macs) <= 0.10 * spec_macs, macs


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", ["tiny", "paper"])
def test_docstring_counts_are_current(name: str, size: str) -> None:
    """The module docstring states each config's parameter count; keep it honest."""
    net = build(name, size)
    params = count_params(net)
    doc = importlib.import_module(type(net).__module__).__doc__
    assert f"{params:,} params" in doc, (name, size, params)
    macs = count_macs(net, net.example_input(1)) / 1e6
    stated = f"{macs:.1f}M MACs" if macs >= 1 else f"{macs:.2f}M MACs"
    assert stated in doc, (name, size, stated)
