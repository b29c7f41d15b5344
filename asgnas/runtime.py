"""onnxruntime helpers: sessions on the best available provider and seeded random inputs of declared shapes.

Imported only by the commands that execute models (verify, the shape-inference fallback, benchmarks).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from asgnas.data import NamedInputs
from asgnas.errors import AsgnasError
from asgnas.ir import Model, lower
from asgnas.progress import Progress

# onnxruntime's load errors name the op as "domain:Op(version) is not a registered function/op" or the node as
# "... for node with name 'n'"; both are picked out so the one-line error can name node and op.
_ORT_UNREGISTERED = re.compile(r"(?:[\w.]+:)?(\w+)\(-?\d+\) is not a registered")
_ORT_NODE = re.compile(r"node (?:with )?name '([^']*)'|node\. Name:'([^']*)'")
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def providers(device: str = "auto") -> list[str]:
    """CUDA when asked for or present (onnxruntime-gpu), else CPU."""
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model: Model | onnx.ModelProto | bytes | str, device: str = "auto", threads: int = 0
            ) -> ort.InferenceSession:
    """An onnxruntime session; a model onnxruntime refuses (unregistered custom op, unsupported opset) raises
    AsgnasError naming the node and op where onnxruntime's message allows."""
    if isinstance(model, Model):
        model = lower(model)
    proto = model if isinstance(model, onnx.ModelProto) else None
    if proto is not None:
        model = proto.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_FATAL_ONLY
    if threads:
        options.intra_op_num_threads = threads
    try:
        sess = Session(model, sess_options=options, providers=providers(device))
    except Exception as err:  # onnxruntime's pybind errors (Fail, InvalidGraph, NotImplemented) share no base
        raise _session_error(str(err), proto) from None
    sess.proto = proto
    return sess


#: onnxruntime logs its errors (and warnings) itself before raising them; ours are the one line the user sees
_ORT_FATAL_ONLY = 4
ort.set_default_logger_severity(_ORT_FATAL_ONLY)


class Session(ort.InferenceSession):
    """An ``InferenceSession`` whose run errors (a shape that does not fit, a bad index in the data) are
    AsgnasErrors naming the node and op, like its load errors."""

    proto: onnx.ModelProto | None = None

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> list[Any]:
        try:
            return super().run(output_names, input_feed, run_options)
        except Exception as err:
            raise _session_error(str(err), self.proto, action="run") from None


def _session_error(message: str, proto: onnx.ModelProto | None, action: str = "load") -> AsgnasError:
    message = _ORT_PREFIX.sub("", " ".join(message.split()))
    node = op = None
    if found := _ORT_NODE.search(message):
        node = found.group(1) or found.group(2)
        op = next((n.op_type for n in proto.graph.node if n.name == node), None) if proto is not None else None
    elif found := _ORT_UNREGISTERED.search(message):
        op = found.group(1)
        if proto is not None:
            node = next((n.name for n in proto.graph.node if n.op_type == op), None)
    what = "cannot run the model" if action == "load" else "failed running the model"
    return AsgnasError(f"onnxruntime {what}: {message}", node=node, op=op)


def random_feeds(
    inputs: Sequence[tuple[str, int, Sequence[int | str | None] | None]],
    seed: int = 0,
    symbolic_dim: int = 1,
) -> dict[str, np.ndarray]:
    """Seeded inputs for ``(name, onnx elem type, shape)`` triples; symbolic/unknown dims become ``symbolic_dim``."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, elem_type, shape in inputs:
        dims = [d if isinstance(d, int) and d > 0 else symbolic_dim for d in (shape or ())]
        dtype = helper.tensor_dtype_to_np_dtype(elem_type or onnx.TensorProto.FLOAT)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(dims).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, dims).astype(np.bool_)
        else:
            feeds[name] = rng.integers(0, 4, dims).astype(dtype)
    return feeds


def model_feeds(model: Model, seed: int = 0, symbolic_dim: int = 1) -> dict[str, np.ndarray]:
    return random_feeds([(v.name, v.dtype, v.shape) for v in model.graph.inputs], seed, symbolic_dim)


def onnx_accuracy(model: Model, x: np.ndarray | NamedInputs, y: np.ndarray, batch_size: int = 256,
                  output: str | None = None, log: Callable[[str], None] | None = None) -> float:
    """Validation accuracy measured in onnxruntime (the deployed runtime), batch by batch or one by one, on
    ``output`` (default: the first); ``x`` holds one input's samples or, as ``NamedInputs``, every input's;
    ``log``: progress over the batches (``asgnas.progress``), None for none."""
    sess = session(model, device="auto")
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    usable = len(x) - len(x) % step if step == fixed else len(x)  # a fixed batch drops the remainder

    wanted = {i.name for i in sess.get_inputs()}  # a slim model may no longer read every input

    def feeds(i: int) -> dict[str, np.ndarray]:
        if not isinstance(x, NamedInputs):
            return {name: x[i:i + step]}
        return {k: v for k, v in x[i:i + step].arrays.items() if k in wanted}

    correct = 0
    with Progress(-(-usable // step), "accuracy in onnxruntime", log, unit="batch") as bar:
        for i in range(0, usable, step):
            scores = sess.run([output] if output else None, feeds(i))[0]
            if scores.ndim > 2 and math.prod(scores.shape[2:]) == 1:  # Caffe2-style [N, C, 1, 1]
                scores = scores.reshape(len(scores), -1)
            correct += int((scores.argmax(-1) == y[i:i + step]).sum())
            bar.update()
    return correct / max(usable, 1)


def latency_ms(model: Model | str, batch: int = 1, repeat: int = 30, threads: int = 1) -> float:
    """Median latency (ms) of one inference on seeded inputs of the declared shapes, warm session."""
    if isinstance(model, str):
        from asgnas.ir import load_model

        model = load_model(model)
    sess = session(model, device="cpu", threads=threads)
    return 1e3 * median_run_seconds(sess, model_feeds(model, seed=0, symbolic_dim=batch), repeat)


def median_run_seconds(sess: Any, feeds: dict[str, np.ndarray], repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``sess.run`` on ``feeds`` after ``warmup`` untimed runs."""
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
