"""The op-builder registry and the construction context every builder receives."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from onnx import TensorProto

from asgnas.errors import AsgnasError
from asgnas.ir import Node, Value

__all__ = ["BUILDERS", "TORCH_DTYPES", "BuildContext", "OpFn", "positive_axis", "register", "supported_ops",
           "torch_pad_order"]

OpFn = Callable[[list, bool], Any]  # (inputs, training) -> Tensor | tuple of tensors

TORCH_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32,
    TensorProto.DOUBLE: torch.float64,
    TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16,
    TensorProto.INT8: torch.int8,
    TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64,
    TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}
for _onnx_type, _name in ((TensorProto.UINT16, "uint16"), (TensorProto.UINT32, "uint32"),
                          (TensorProto.UINT64, "uint64")):
    if hasattr(torch, _name):  # torch >= 2.3
        TORCH_DTYPES[_onnx_type] = getattr(torch, _name)


def _err(node: Node, message: str) -> AsgnasError:
    return AsgnasError(message, node=node.name, op=node.op_type)


# --------------------------------------------------------------------------------------------------
# construction context


class BuildContext:
    """What an op builder may know at construction: attributes, opset, and the constant inputs."""

    def __init__(self, node: Node, opset: int, frozen: Callable[[Value], np.ndarray | None], live_out: list[bool],
                 stat_buffers: bool = False):
        self.node = node
        self.opset = opset
        self._frozen = frozen
        self.live_out = live_out  # per output: read by a live node or a graph output
        self.stat_buffers = stat_buffers  # BatchNormalization: both running statistics are module buffers

    def attr(self, key: str, default: Any = None) -> Any:
        return self.node.attr(key, default)

    def has(self, index: int) -> bool:
        return index < len(self.node.inputs) and self.node.inputs[index] is not None

    def const(self, index: int) -> np.ndarray | None:
        """The input's value when it is a constant that cannot change (not a trainable parameter)."""
        if not self.has(index):
            return None
        return self._frozen(self.node.inputs[index])

    def error(self, message: str) -> AsgnasError:
        return _err(self.node, message)

    def ints(self, index: int, attr: str | None = None) -> Callable[[list], list[int] | None]:
        """Integer list from attribute ``attr`` (older opsets) or input ``index``; decoded once when constant."""
        if attr is not None and self.attr(attr) is not None:
            value = [int(v) for v in self.attr(attr)]
            return lambda xs: value
        if not self.has(index):
            return lambda xs: None
        arr = self.const(index)
        if arr is not None:
            value = [int(v) for v in np.asarray(arr).reshape(-1)]
            return lambda xs: value
        return lambda xs: [int(v) for v in xs[index].reshape(-1).tolist()]

    def scalar(self, index: int) -> Callable[[list], Any]:
        """A scalar input as a Python number when constant, else the 0-d tensor (``None`` when omitted)."""
        if not self.has(index):
            return lambda xs: None
        arr = self.const(index)
        if arr is not None:
            arr = np.asarray(arr).reshape(-1)
            value = arr[0].item() if arr.size else None
            return lambda xs: value
        return lambda xs: xs[index].reshape(())


BUILDERS: dict[str, Callable[[BuildContext], OpFn]] = {}


def register(*names: str) -> Callable[[Callable[[BuildContext], OpFn]], Callable[[BuildContext], OpFn]]:
    """Decorator: the builder compiles nodes of the op types ``names``."""
    def add(builder: Callable[[BuildContext], OpFn]) -> Callable[[BuildContext], OpFn]:
        for name in names:
            BUILDERS[name] = builder
        return builder

    return add


def supported_ops() -> list[str]:
    """The ONNX op types (default domain) the executor runs."""
    return sorted(BUILDERS)


def positive_axis(axis: int, rank: int) -> int:
    """ONNX's negative axes count from the end."""
    return axis + rank if axis < 0 else axis


def torch_pad_order(begins: Sequence[int], ends: Sequence[int]) -> list[int]:
    """ONNX (begins, ends) over axes 0..n-1 -> F.pad's (last axis first) flat list."""
    order: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        order += [int(b), int(e)]
    return order
