"""onnxruntime helpers: sessions on the best available provider and seeded random inputs of declared shapes.

Imported only by the commands that execute models (verify, the shape-inference fallback, benchmarks).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from asgnas.ir import Model, lower


def providers(device: str = "auto") -> list[str]:
    """CUDA when asked for or present (onnxruntime-gpu), else CPU."""
    available = ort.get_available_providers()
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model: Model | onnx.ModelProto | bytes | str, device: str = "auto", threads: int = 0) -> ort.InferenceSession:
    if isinstance(model, Model):
        model = lower(model)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, sess_options=options, providers=providers(device))


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


def onnx_accuracy(model: Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Validation accuracy measured in onnxruntime (the deployed runtime), batch by batch or one by one."""
    sess = session(model, device="auto")
    name = sess.get_inputs()[0].name
    fixed = sess.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch_size
    usable = len(x) - len(x) % step if step == fixed else len(x)  # a fixed batch drops the remainder
    correct = sum(
        int((sess.run(None, {name: x[i:i + step]})[0].argmax(-1) == y[i:i + step]).sum())
        for i in range(0, usable, step)
    )
    return correct / max(usable, 1)


def latency_ms(model: Model | str, batch: int = 1, repeat: int = 30, threads: int = 1) -> float:
    """Median latency (ms) of one inference on seeded inputs of the declared shapes, warm session."""
    if isinstance(model, str):
        from asgnas.ir import load_model

        model = load_model(model)
    sess = session(model, device="cpu", threads=threads)
    feeds = model_feeds(model, seed=0, symbolic_dim=batch)
    for _ in range(3):
        sess.run(None, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))
