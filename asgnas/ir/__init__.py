"""The IR: lift ONNX into ``Model``/``Graph``/``Node``/``Value``, edit it, lower it back."""

from asgnas.ir.core import IMPLICIT_USE, ConstTensor, CycleError, Graph, Node, Shape, Value
from asgnas.ir.io import check_model_ops, load_model, save_model
from asgnas.ir.model import Model, lift, lower, model_nbytes
from asgnas.ir.printer import format_graph, format_model, format_node

__all__ = [
    "IMPLICIT_USE",
    "ConstTensor",
    "CycleError",
    "Graph",
    "Model",
    "Node",
    "Shape",
    "Value",
    "check_model_ops",
    "format_graph",
    "format_model",
    "format_node",
    "lift",
    "load_model",
    "lower",
    "model_nbytes",
    "save_model",
]
