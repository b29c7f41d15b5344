"""``export_torch_model``: one initializer per torch parameter under its torch name, aliases untied, sharing
kept, folded tensors (dynamo) refused by value check, training flags restored."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from asgnas.bridge import BUFFER_MAP_KEY, PARAM_MAP_KEY, export_torch_model, untie_initializer_aliases
from asgnas.ir import load_model, lower
from models import ZOO, ort_run


class FreshConvBN(nn.Module):
    """Untouched BNs and zero biases: the legacy exporter aliases them behind Identity nodes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.drop = nn.Dropout(0.3)
        nn.init.zeros_(self.conv2.bias)
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.conv3(self.drop(x))


class TiedLinear(nn.Module):
    """One Parameter owned by two modules (tied embedding-style weights)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph]


def _ort_equals_torch(path: Path, module: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        want = module.eval()(x).numpy()
    got = ort_run(path, [x.numpy()])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_bn_names_map_one_to_one(tmp_path: Path) -> None:
    module = FreshConvBN()
    module.train()
    module.bn2.eval()  # mixed flags must come back as they were
    x = torch.randn(2, 3, 8, 8)
    model = export_torch_model(module, x, tmp_path / "m.onnx")
    assert module.training and module.conv1.training and not module.bn2.training
    param_map = model.analyses[PARAM_MAP_KEY]
    assert param_map == {name: name for name, _ in module.named_parameters()}
    buffers = model.analyses[BUFFER_MAP_KEY]
    for bn in ("bn1", "bn2"):
        assert buffers[f"{bn}.running_mean"] == f"{bn}.running_mean"
        assert buffers[f"{bn}.running_var"] == f"{bn}.running_var"
    assert "Identity" not in _ops(model)
    assert _ops(model).count("BatchNormalization") == 2 and "Dropout" not in _ops(model)
    values = model.graph.values
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if name.endswith("num_batches_tracked"):
            continue
        value = values[name]
        assert value.is_initializer
        np.testing.assert_array_equal(value.const.array, tensor.detach().numpy())
    # the file on disk is the untied model, with a symbolic batch
    saved = onnx.load(str(tmp_path / "m.onnx"))
    assert not any(n.op_type == "Identity" for n in saved.graph.node)
    assert saved.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _ort_equals_torch(tmp_path / "m.onnx", module, torch.randn(3, 3, 8, 8))


def test_weight_sharing_keeps_one_initializer(tmp_path: Path) -> None:
    case = ZOO["weight_sharing"]
    module = case.build()
    model = export_torch_model(module, case.inputs(), tmp_path / "ws.onnx", dynamic_batch=False)
    param_map = model.analyses[PARAM_MAP_KEY]
    assert param_map == {name: name for name, _ in module.named_parameters()}
    shared = model.graph.values["shared.weight"]
    assert sum(node.op_type == "Conv" for node in shared.consumers) == 2


def test_tied_parameters_map_to_the_same_initializer(tmp_path: Path) -> None:
    module = TiedLinear()
    model = export_torch_model(module, torch.randn(2, 6), tmp_path / "tied.onnx")
    param_map = model.analyses[PARAM_MAP_KEY]
    assert param_map["a.weight"] == param_map["b.weight"]
    assert {"a.bias", "b.bias"} <= set(param_map) and param_map["a.bias"] != param_map["b.bias"]
    weight = model.graph.values[param_map["a.weight"]]
    assert len(weight.consumers) == 2 or weight.consumers[0].op_type == "Transpose"
    _ort_equals_torch(tmp_path / "tied.onnx", module, torch.randn(5, 6))


def test_untie_initializer_aliases_on_a_raw_export(tmp_path: Path) -> None:
    module = FreshConvBN().eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, do_constant_folding=False, opset_version=17)
    model = load_model(path)
    identities = {n.outputs[0].name: n.inputs[0].name for n in model.graph if n.op_type == "Identity"}
    assert identities, "the legacy exporter should alias equal-valued tensors"
    untied = untie_initializer_aliases(model)
    assert untied == identities
    assert "Identity" not in _ops(model)
    values = model.graph.values
    for out, src in untied.items():
        assert values[out].is_initializer and values[src].is_initializer
        np.testing.assert_array_equal(values[out].const.array, values[src].const.array)
        assert values[out].const.array is not values[src].const.array  # own copies: untied for real
    np.testing.assert_allclose(ort_run(lower(model), [x.numpy()])[0], ort_run(path, [x.numpy()])[0], atol=1e-6)


def test_keep_shared_rewires_instead_of_copying(tmp_path: Path) -> None:
    module = FreshConvBN().eval()
    path = tmp_path / "raw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, do_constant_folding=False)
    model = load_model(path)
    before = {v.name for v in model.graph.initializers()}
    untied = untie_initializer_aliases(model, keep_shared=lambda src, out: True)
    assert untied == {} and "Identity" not in _ops(model)
    assert {v.name for v in model.graph.initializers()} == before


def test_dynamo_folded_names_are_not_trusted(tmp_path: Path) -> None:
    """The dynamo exporter folds BN into the conv but keeps the name ``conv1.weight``: refuse that mapping."""
    module = FreshConvBN().eval()
    with torch.no_grad():  # non-trivial BN so folding changes the conv weights
        module.bn1.running_var.fill_(2.0)
        module.bn2.running_mean.fill_(0.5)
    model = export_torch_model(module, torch.randn(1, 3, 8, 8), tmp_path / "d.onnx", dynamo=True, opset=18)
    param_map = model.analyses[PARAM_MAP_KEY]
    assert "conv1.weight" not in param_map and "conv2.weight" not in param_map
    assert "conv1.weight" in model.analyses["unmapped_params"]
    values = model.graph.values
    for name, init in param_map.items():
        np.testing.assert_array_equal(values[init].const.array, dict(module.named_parameters())[name].detach().numpy())


def test_export_names_and_multiple_outputs(tmp_path: Path) -> None:
    case = ZOO["two_outputs"]
    module = case.build()
    model = export_torch_model(module, case.inputs(), tmp_path / "two.onnx", input_names=["image"],
                               output_names=["logits", "features"])
    assert [v.name for v in model.graph.inputs] == ["image"]
    assert [v.name for v in model.graph.outputs] == ["logits", "features"]
    with pytest.raises(Exception, match="names"):
        export_torch_model(module, case.inputs(), tmp_path / "bad.onnx", output_names=["only_one"])
