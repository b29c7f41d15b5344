"""What training must know about a model's inputs and trained output, whichever framework exported it.

- ``input_specs``: every graph input's name, dtype and per-sample shape (the data is fitted to or read for these);
- ``image_layout``: NCHW (torch, Caffe2) or NHWC (tf2onnx, jax2onnx) for a single 4-D image input;
- ``logits_head``: the value the loss is taken on: the input of a trailing Softmax / LogSoftmax (Keras and
  Caffe2 heads end in one), else the trained output itself (torch's raw logits). The graph is not changed: the
  executor returns that value (``OnnxModule(outputs=...)``) and the slim model keeps its head as exported;
- ``fitted_dataset``: a data source fitted to those inputs, as the train pass and ``ASGNAS.dataset`` load it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from onnx import TensorProto, helper

from asgnas.data import Dataset, InputSpec, load_dataset, looks_channel_last
from asgnas.errors import AsgnasError
from asgnas.ir import Model, Value

#: ops between a Softmax and the graph output that only move or rename values (tf2onnx, Caffe2 exports)
_PASS_THROUGH = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def input_specs(model: Model) -> list[InputSpec]:
    """The graph inputs as data must feed them; every dim but the batch must be static."""
    specs = []
    for value in model.graph.inputs:
        shape = value.shape
        if not shape or any(not isinstance(d, int) for d in shape[1:]):
            raise AsgnasError(f"train needs a static per-sample shape for input '{value.name}', got {shape}")
        dtype = helper.tensor_dtype_to_np_dtype(value.dtype or TensorProto.FLOAT)
        specs.append(InputSpec(value.name, np.dtype(dtype), tuple(shape[1:])))
    return specs


def image_layout(model: Model) -> str:
    """``"NHWC"`` when the single 4-D input is channel-last, else ``"NCHW"``.

    Channel-last is read from the graph first: the input feeds a Transpose with perm [0, 3, 1, 2] (tf2onnx and
    jax2onnx put one in front of the first Conv); else from the declared shape: [N, H, W, C] with C <= 4 and a
    larger H. An ambiguous shape (e.g. [N, 3, 3, 3]) without the Transpose stays NCHW."""
    inputs = model.graph.inputs
    if len(inputs) != 1 or inputs[0].rank != 4:
        return "NCHW"
    value = inputs[0]
    for node in value.consumers:
        if node.op_type == "Transpose" and list(node.attr("perm", [])) == [0, 3, 1, 2]:
            return "NHWC"
    return "NHWC" if looks_channel_last(tuple(value.shape)) else "NCHW"


@dataclass(frozen=True)
class LogitsHead:
    """The trained output (``output``) and the value the loss reads (``logits``): the input of ``activation``
    (``"Softmax"`` or ``"LogSoftmax"``) along ``axis``, or the output itself when ``activation`` is None."""

    output: str
    logits: str
    activation: str | None
    axis: int

    def forward(self, module: Callable[..., torch.Tensor]) -> Callable[[Any], torch.Tensor]:
        """Class scores of ``module`` (an ``OnnxModule`` returning ``logits``) for a batch: one tensor, or input
        name -> tensor."""
        def run(batch: Any) -> torch.Tensor:
            return self.class_scores(module(**batch) if isinstance(batch, dict) else module(batch))

        return run

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits as [N, classes]: the softmax axis last, unit dims (Caffe2's [N, C, 1, 1]) flattened away."""
        if logits.dim() <= 2:
            return logits
        return logits.movedim(self.axis, -1).reshape(len(logits), -1)


def pick_output(model: Model, name: str) -> Value:
    """The graph output to train: ``name``, or the first output when ``name`` is empty."""
    outputs = model.graph.outputs
    if not name:
        return outputs[0]
    for value in outputs:
        if value.name == name:
            return value
    raise AsgnasError(f"train: output={name} is not a graph output (outputs: {', '.join(v.name for v in outputs)})")


def logits_head(model: Model, output: Value) -> LogitsHead:
    """Walk back from ``output`` through pass-through ops; a Softmax/LogSoftmax there means its input is the logits."""
    value = output
    while value.producer is not None and value.producer.op_type in _PASS_THROUGH:
        value = value.producer.inputs[0]
    node = value.producer
    if node is None or node.op_type not in ("Softmax", "LogSoftmax"):
        return LogitsHead(output.name, output.name, None, -1)
    source = node.inputs[0]
    axis = node.attr("axis", -1 if model.opset >= 13 else 1)
    rank = source.rank
    if axis < 0 and rank is not None:
        axis += rank
    return LogitsHead(output.name, source.name, node.op_type, axis)


def num_classes_of(output: Value) -> int | None:
    """Classes of a [N, C] or [N, C, 1, ...] output (static dims), else None."""
    dims = (output.shape or ())[1:]
    if not dims or not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims) if math.prod(dims[1:]) == 1 else dims[-1]


class ClassScores(torch.nn.Module):
    """An executor returning ``head.logits`` as a module giving ``[N, classes]`` scores: what a loss reads (the
    Python API's ``ASGNAS.from_onnx`` model for a graph with a Softmax/LogSoftmax head)."""

    def __init__(self, executor: torch.nn.Module, head: LogitsHead) -> None:
        super().__init__()
        self.executor, self.head = executor, head

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.head.class_scores(self.executor(*args, **kwargs))


def fitted_dataset(model: Model, spec: str, output: Value, seed: int = 0) -> Dataset:
    """``spec`` (``digits``, ``npz:PATH``, ``synthetic``) loaded for ``model``: fitted to its input shape and image
    layout, several or integer inputs read by name, classes checked against ``output``."""
    specs = input_specs(model)
    return load_dataset(spec, specs[0].shape, num_classes_of(output), seed=seed, layout=image_layout(model),
                        inputs=specs)
