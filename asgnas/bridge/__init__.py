"""The bridge between the ONNX IR and PyTorch: train the IR in torch, export torch modules, map groups to params.

- ``OnnxModule`` (executor): runs an ``asgnas.ir.Model`` as a ``torch.nn.Module`` whose float initializers are
  ``nn.Parameter``s; ``write_back`` puts the trained values back into the IR.
- ``export_torch_model`` (export): legacy-export a user's module with one initializer per torch parameter and a
  verified ``torch name -> initializer`` map.
- ``to_param_groups`` (mapping): ``asgnas.passes.groups.Group`` -> ``asgnas.optim.param_groups.ParamGroup``.

Depends on torch; nothing in ``asgnas.ir`` / ``asgnas.passes`` imports this package.
"""

import importlib

_EXPORTS = {
    "untie_initializer_aliases": "asgnas.passes.untie_aliases",
    "OnnxModule": "asgnas.bridge.executor",
    "default_trainable": "asgnas.bridge.executor",
    "supported_ops": "asgnas.bridge.executor",
    "PARAM_MAP_KEY": "asgnas.bridge.export",
    "BUFFER_MAP_KEY": "asgnas.bridge.export",
    "export_torch_model": "asgnas.bridge.export",
    "map_torch_names": "asgnas.bridge.export",
    "UNMAPPED_KEY": "asgnas.bridge.export",
    "params_by_initializer": "asgnas.bridge.mapping",
    "to_param_groups": "asgnas.bridge.mapping",
}


def __getattr__(name: str):
    """Lazy exports: importing ``asgnas.bridge.train_pass`` (to register the pass) must not import torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'asgnas.bridge' has no attribute {name!r}")


__all__ = [
    "BUFFER_MAP_KEY",
    "OnnxModule",
    "PARAM_MAP_KEY",
    "UNMAPPED_KEY",
    "default_trainable",
    "export_torch_model",
    "map_torch_names",
    "params_by_initializer",
    "supported_ops",
    "to_param_groups",
    "untie_initializer_aliases",
]
