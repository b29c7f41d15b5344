"""The bridge between the ONNX IR and PyTorch: train the IR in torch, export torch modules, map groups to params.

- ``OnnxModule`` (executor): runs an ``asgnas.ir.Model`` as a ``torch.nn.Module`` whose float initializers are
  ``nn.Parameter``s; ``write_back`` puts the trained values back into the IR.
- ``export_torch_model`` (export): legacy-export a user's module with one initializer per torch parameter and a
  verified ``torch name -> initializer`` map.
- ``to_param_groups`` (mapping): ``asgnas.passes.groups.Group`` -> ``asgnas.optim.groups.ParamGroup``.

Depends on torch; nothing in ``asgnas.ir`` / ``asgnas.passes`` imports this package.
"""

from asgnas.bridge.alias import untie_initializer_aliases
from asgnas.bridge.executor import OnnxModule, default_trainable, supported_ops
from asgnas.bridge.export import PARAM_MAP_KEY, BUFFER_MAP_KEY, export_torch_model
from asgnas.bridge.mapping import params_by_initializer, to_param_groups

__all__ = [
    "BUFFER_MAP_KEY",
    "OnnxModule",
    "PARAM_MAP_KEY",
    "default_trainable",
    "export_torch_model",
    "params_by_initializer",
    "supported_ops",
    "to_param_groups",
    "untie_initializer_aliases",
]
