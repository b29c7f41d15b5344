"""``OnnxModule``: execute an ``asgnas.ir.Model`` as a trainable ``torch.nn.Module``.

Every live node is compiled once, at construction, into a closure ``fn(inputs, training) -> outputs`` with its
attributes (and constant shape/axes inputs) already decoded; ``forward`` walks the closures in topological order
over a dict of tensors keyed by value name. An unsupported op or attribute fails at construction, naming the
node, never mid-training.

State:
- ``params``: floating-point initializers as ``nn.Parameter`` (``default_trainable`` decides, or the caller's
  ``trainable``), under sanitized names; ``param_for_initializer`` / ``initializer_for_param`` map both ways;
- ``stats``: BatchNormalization running statistics (persistent buffers, updated in train mode like torch's BN);
- ``consts``: every other constant (integer/shape initializers, ``Constant`` outputs, frozen floats), as
  non-persistent buffers so they follow ``.to(device)`` but stay out of ``state_dict``.

Semantics follow the ONNX spec as onnxruntime implements it (opsets 11 to current). Train/eval mode: in train
mode BatchNormalization uses batch statistics and updates the running ones (ONNX momentum m -> torch 1 - m) and
Dropout drops; in eval mode both are inference ops, as in onnxruntime.

Layout: ``registry`` (the builder table and the construction context ``BuildContext``), one ``ops_*`` module per
operator family (importing it registers its builders), ``module`` (``OnnxModule`` itself).
"""

from . import ops_conv, ops_elementwise, ops_linalg, ops_resize, ops_shape  # noqa: F401  (register the builders)
from .module import OnnxModule, default_trainable
from .registry import supported_ops

__all__ = ["OnnxModule", "default_trainable", "supported_ops"]
