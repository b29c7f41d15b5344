"""Export a user's torch module to ONNX so that every torch parameter keeps an initializer of its own.

The traps (ANCHORS section 0 item 7) and what we do about them:
- constant folding fuses BN into Conv and renames weights (``onnx::Conv_20``): export with
  ``do_constant_folding=False`` in eval mode, so BN nodes stay and initializers carry the torch names;
- the legacy exporter de-duplicates equal-valued tensors behind ``Identity`` nodes (zero BN bias and
  ``running_mean``): untie them, each torch tensor gets its own initializer (``untie_initializer_aliases``);
  true sharing (one tensor under several names) stays one initializer;
- the dynamo exporter folds Conv+BN and keeps the name ``conv.weight`` for the fused tensor: every mapping is
  verified by value, and a name whose initializer does not hold exactly the torch tensor is left out.

Only public torch APIs are used (``torch.onnx.export``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.untie_aliases import untie_initializer_aliases
from asgnas.errors import AsgnasError
from asgnas.ir import Model, Value, load_model, save_model

#: ``model.analyses`` key of the ``torch parameter name -> initializer name`` map.
PARAM_MAP_KEY = "param_map"
#: ``model.analyses`` key of the ``torch buffer name -> initializer name`` map (BN running statistics).
BUFFER_MAP_KEY = "buffer_map"
#: ``model.analyses`` key of ``torch name -> why it has no initializer`` (unused, folded, renamed).
UNMAPPED_KEY = "unmapped_params"


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters print progress and warn about things we handle; keep the caller's console clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    raise AsgnasError(f"unsupported model output type {type(out).__name__}")


def _default_names(prefix: str, count: int) -> list[str]:
    return [prefix] if count == 1 else [f"{prefix}_{i}" for i in range(count)]


def export_torch_model(
    module: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike,
    *,
    dynamo: bool = False,
    opset: int = 17,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
) -> Model:
    """Export ``module`` (in eval mode) to ``path`` and return the lifted model.

    ``model.analyses["param_map"]`` maps every torch parameter name (``named_parameters(remove_duplicate=False)``,
    so each name of a shared parameter) to its initializer; ``["buffer_map"]`` does the same for buffers (BN
    running statistics); ``["unmapped_params"]`` says why a parameter has none (unused by the forward pass,
    or folded by the dynamo exporter). The file at ``path`` is the returned model (aliases untied). The
    module's train/eval flags (per submodule) are restored afterwards.
    """
    args = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            n_out = len(_flatten(module(*args)))
        in_names = list(input_names) if input_names else _default_names("input", len(args))
        out_names = list(output_names) if output_names else _default_names("output", n_out)
        if len(in_names) != len(args) or len(out_names) != n_out:
            raise AsgnasError(f"module takes {len(args)} input(s) and returns {n_out} output(s); "
                              f"got names for {len(in_names)} and {len(out_names)}")
        dynamic_axes = {n: {0: "batch"} for n in in_names + out_names} if dynamic_batch else None
        with _quiet():
            if dynamo:
                torch.onnx.export(module, args, str(path), dynamo=True, opset_version=opset,
                                  input_names=in_names, output_names=out_names, dynamic_axes=dynamic_axes)
            else:
                torch.onnx.export(module, args, str(path), dynamo=False, do_constant_folding=False,
                                  opset_version=opset, input_names=in_names, output_names=out_names,
                                  dynamic_axes=dynamic_axes)
    finally:
        for m, training in modes:
            m.train(training)
    model = load_model(path)
    param_map, buffer_map, unmapped = map_torch_names(model, module)
    save_model(model, path)
    analyses = AnalysisManager(model)
    analyses.store(PARAM_MAP_KEY, param_map)
    analyses.store(BUFFER_MAP_KEY, buffer_map)
    analyses.store(UNMAPPED_KEY, unmapped)
    return model


def map_torch_names(model: Model, module: nn.Module) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Untie exporter aliases in ``model`` and map torch parameter/buffer names to initializers.

    Returns ``(param_map, buffer_map, unmapped)``; ``unmapped`` holds the parameter names left out, with why.
    A name is mapped only when its initializer holds exactly the torch tensor (same shape and values).
    """
    named: list[tuple[str, torch.Tensor, bool]] = [
        (n, p, True) for n, p in module.named_parameters(remove_duplicate=False)
    ] + [(n, b, False) for n, b in module.named_buffers(remove_duplicate=False) if b is not None]
    names_of: dict[int, set[str]] = {}  # tensor identity -> every name it has (true sharing)
    for name, tensor, _ in named:
        names_of.setdefault(id(tensor), set()).add(name)
    owner = {name: id(tensor) for name, tensor, _ in named}

    def same_tensor(src: Value, out: Value) -> bool:
        # an Identity between two names of one torch tensor is real sharing: keep it one initializer
        return src.name in owner and out.name in owner and owner[src.name] == owner[out.name]

    untie_initializer_aliases(model, keep_shared=same_tensor)

    values = model.graph.values
    by_tensor: dict[int, str] = {}  # tensor identity -> initializer found under one of its names
    for name, tensor, _ in named:
        v = values.get(name)
        if v is not None and v.is_initializer:
            by_tensor.setdefault(id(tensor), name)

    param_map: dict[str, str] = {}
    buffer_map: dict[str, str] = {}
    unmapped: dict[str, str] = {}
    for name, tensor, is_param in named:
        init = by_tensor.get(id(tensor))
        if init is None:
            if is_param:
                unmapped[name] = "no initializer of that name (unused by forward, folded or renamed)"
            continue
        array = values[init].const.array
        expected = tensor.detach().cpu().numpy()
        if array.shape != expected.shape or not np.array_equal(array, expected.astype(array.dtype)):
            if is_param:
                unmapped[name] = f"initializer {init!r} does not hold the torch tensor (folded by the exporter)"
            continue
        (param_map if is_param else buffer_map)[name] = init
    return param_map, buffer_map, unmapped
