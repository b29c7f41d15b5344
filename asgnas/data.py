"""Data sources for training passes, all offline: ``digits``, ``npz:PATH``, ``synthetic``.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; ships with the package);
- ``npz:PATH``: arrays ``x`` and ``y`` (optionally ``x_val``, ``y_val``), e.g. CIFAR-10 or Fashion-MNIST saved
  by the user; for a model with several inputs or integer inputs (token ids, attention masks), one array per
  graph input named after it (``input_ids``, ``attention_mask``; optionally ``input_ids_val``, ...) plus ``y``;
- ``synthetic``: seeded Gaussian class clusters in the model's input shape.
Image samples are fitted to the model's declared per-sample input shape and layout (``fit_to_layout``): used as
is when already in it, else reshaped when the sizes agree (digits' 64 values feed a 1x8x8 input), else resized
spatially (bilinear) and repeated or truncated over channels, then transposed for an NHWC model.
``Dataset.preprocessing`` records what was applied, so that whoever deploys the model feeds it the same inputs.
"""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

import numpy as np

from asgnas.errors import AsgnasError


class NamedInputs:
    """Samples of several graph inputs, indexed together: ``inputs[idx]`` picks the same samples of each array."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: Any) -> "NamedInputs":
        return NamedInputs({name: array[index] for name, array in self.arrays.items()})


Samples = Union[np.ndarray, NamedInputs]


@dataclass(frozen=True)
class InputSpec:
    """A graph input as the data must feed it: name, numpy dtype and per-sample shape (batch dim dropped)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass
class Dataset:
    x_train: Samples
    y_train: np.ndarray
    x_val: Samples
    y_val: np.ndarray
    num_classes: int
    name: str
    preprocessing: dict[str, Any] = field(default_factory=dict)  # what was applied to the source data


def _split(x: Samples, y: np.ndarray, val_fraction: float, seed: int) -> tuple[Any, ...]:
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def fit_to_shape(x: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Bring samples ``x[N, ...]`` to ``sample_shape`` (reshape when sizes agree, else resize + channel repeat)."""
    x = x.astype(np.float32, copy=False)
    if int(np.prod(x.shape[1:])) == int(np.prod(sample_shape)):
        return x.reshape((len(x), *sample_shape))
    if len(sample_shape) != 3:
        raise AsgnasError(f"cannot fit samples of shape {x.shape[1:]} to the model's input {sample_shape}")
    import torch

    images = x.reshape(len(x), -1, *x.shape[-2:]) if x.ndim >= 3 else None
    if images is None:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise AsgnasError(f"cannot fit samples of shape {x.shape[1:]} to the model's input {sample_shape}")
        images = x.reshape(len(x), 1, side, side)
    channels, height, width = sample_shape
    resized = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(images)), size=(height, width),
                                              mode="bilinear", align_corners=False).numpy()
    repeat = -(-channels // resized.shape[1])
    return np.ascontiguousarray(np.tile(resized, (1, repeat, 1, 1))[:, :channels])


#: largest last dim of 4-D [N, H, W, C] samples or inputs read as channel-last images (grey, RGB, RGBA)
_MAX_IMAGE_CHANNELS = 4


def looks_channel_last(shape: tuple) -> bool:
    """One guess for samples and declared model inputs alike: [N, H, W, C] with C <= 4 below a larger H is
    channel-last; symbolic dims never are."""
    if len(shape) != 4 or not all(isinstance(d, int) for d in (shape[1], shape[3])):
        return False
    return shape[3] <= _MAX_IMAGE_CHANNELS < shape[1]


def fit_to_layout(x: np.ndarray, sample_shape: tuple[int, ...], layout: str = "NCHW") -> tuple[np.ndarray, dict]:
    """Fit channel-first, channel-last (4-D, at most 4 channels and a larger height: ``source_layout`` "NHWC" in
    the steps) or flat samples ``x[N, ...]`` to a model input of per-sample ``sample_shape`` laid out
    as ``layout``: ``"NCHW"`` (torch, Caffe2) or ``"NHWC"`` (tf2onnx, jax2onnx; ``sample_shape`` is then
    ``(H, W, C)``). Samples already of ``sample_shape`` are used as is. Returns the samples and what was done:
    ``{"layout", "resize" (e.g. "8x8 -> 16x16 bilinear") or None, "channels" (e.g. "1 -> 3 repeated") or None}``.
    """
    steps: dict[str, Any] = {"layout": layout, "resize": None, "channels": None}
    if tuple(x.shape[1:]) == tuple(sample_shape):
        return x.astype(np.float32, copy=False), steps
    if looks_channel_last(x.shape):  # channel-last images (e.g. Keras' datasets)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        steps["source_layout"] = "NHWC"
    nhwc = layout == "NHWC" and len(sample_shape) == 3
    target = (sample_shape[2], sample_shape[0], sample_shape[1]) if nhwc else tuple(sample_shape)
    if int(np.prod(x.shape[1:])) != int(np.prod(target)) and len(target) == 3:
        side = int(round(np.sqrt(np.prod(x.shape[1:])))) if x.ndim == 2 else None
        height, width = (side, side) if side else x.shape[-2:]
        channels = 1 if side else int(np.prod(x.shape[1:-2]))
        if (height, width) != tuple(target[1:]):
            steps["resize"] = f"{height}x{width} -> {target[1]}x{target[2]} bilinear"
        if channels != target[0]:
            steps["channels"] = f"{channels} -> {target[0]} " + ("repeated" if target[0] > channels else "truncated")
    fitted = fit_to_shape(x, target)
    return (np.ascontiguousarray(fitted.transpose(0, 2, 3, 1)) if nhwc else fitted), steps


def _check_pairs(path: Path, x_name: str, x: np.ndarray, y_name: str, y: np.ndarray) -> None:
    if x.ndim < 2:
        raise AsgnasError(f"{path}: '{x_name}' must hold samples as [N, ...], got shape {x.shape}")
    if len(x) != len(y) or len(x) == 0:
        raise AsgnasError(f"{path}: '{x_name}' holds {len(x)} samples but '{y_name}' {len(y)} labels "
                          "(need as many labels as samples, at least one)")
    if not np.isfinite(x).all():
        raise AsgnasError(f"{path}: '{x_name}' holds NaN or Inf values")
    if y.min() < 0:
        raise AsgnasError(f"{path}: '{y_name}' holds negative class labels (expected 0..C-1)")


@contextmanager
def _npz(path: Path) -> Iterator[Any]:
    """The arrays of an ``.npz`` file; a file that is no npz, or holds object (pickled) or non-numeric arrays, is
    bad input (read errors surface where the body reads an array, so they are caught around it too)."""
    if not path.is_file():
        raise AsgnasError(f"no such data file: {path}")
    try:
        with np.load(path) as arrays:
            yield arrays
    except AsgnasError:
        raise
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:  # no zip, pickled, strings
        raise AsgnasError(f"{path}: not a readable npz of numeric arrays ({' '.join(str(err).split())})") from None


def _load_npz(path: Path, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation arrays ``x``, ``y`` (``x_val``, ``y_val``) of an ``.npz`` file."""
    with _npz(path) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise AsgnasError(f"{path}: expected arrays 'x' and 'y' (and optionally 'x_val', 'y_val')")
        x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64).reshape(-1)
        _check_pairs(path, "x", x, "y", y)
        if "x_val" in arrays and "y_val" in arrays:
            x_tr, y_tr = x, y
            x_va, y_va = arrays["x_val"].astype(np.float32), arrays["y_val"].astype(np.int64).reshape(-1)
            _check_pairs(path, "x_val", x_va, "y_val", y_va)
        else:
            x_tr, y_tr, x_va, y_va = _split(x, y, val_fraction, seed)
    return x_tr, y_tr, x_va, y_va


def load_dataset(spec: str, sample_shape: tuple[int, ...], num_classes: int | None = None, seed: int = 0,
                 val_fraction: float = 0.2, *, layout: str = "NCHW",
                 inputs: Sequence[InputSpec] | None = None) -> Dataset:
    """``spec`` is ``digits``, ``npz:PATH`` or ``synthetic``; ``sample_shape`` excludes the batch dim; ``layout``
    is the model's image layout (``fit_to_layout``). ``inputs``: the model's graph inputs; several of them, or an
    integer one, are read from npz arrays named after them (``NamedInputs``)."""
    if inputs is not None and (len(inputs) > 1 or not np.issubdtype(inputs[0].dtype, np.floating)):
        return _load_named_inputs(spec, inputs, num_classes, seed, val_fraction)
    if spec == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise AsgnasError("data=digits needs scikit-learn: pip install 'asgnas[data]' (or scikit-learn)") from None

        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        mean, std = float(x.mean()), float(x.std())
        x = (x - mean) / std
        source = {"source": "scikit-learn digits: 8x8 images, pixel values 0..16",
                  "normalize": "(pixel / 16 - mean) / std", "mean": mean, "std": std}
        x_tr, y_tr, x_va, y_va = _split(x, digits.target.astype(np.int64), val_fraction, seed)
        classes = 10
    elif spec.startswith("npz:"):
        path = Path(spec[4:])
        x_tr, y_tr, x_va, y_va = _load_npz(path, val_fraction, seed)
        classes = int(max(y_tr.max(), y_va.max())) + 1
        source = {"source": f"npz {path.name}", "normalize": None}
    elif spec == "synthetic":
        classes = num_classes or 10
        rng = np.random.default_rng(seed)
        size = int(np.prod(sample_shape))
        centers = rng.standard_normal((classes, size)).astype(np.float32)
        y = rng.integers(0, classes, 1200)
        x = centers[y] + 0.8 * rng.standard_normal((len(y), size)).astype(np.float32)
        x_tr, y_tr, x_va, y_va = _split(x.reshape(len(y), *sample_shape), y.astype(np.int64), val_fraction, seed)
        source = {"source": "synthetic Gaussian class clusters", "normalize": None}
    else:
        raise AsgnasError(f"unknown data source '{spec}' (digits, npz:PATH, synthetic)")
    _check_classes(classes, num_classes)
    x_tr, steps = fit_to_layout(x_tr, sample_shape, layout)
    x_va, _ = fit_to_layout(x_va, sample_shape, layout)
    return Dataset(x_tr, y_tr, x_va, y_va, num_classes or classes, spec, {**source, **steps})


def _check_classes(classes: int, num_classes: int | None) -> None:
    if num_classes is not None and classes > num_classes:
        raise AsgnasError(f"data has {classes} classes but the model outputs {num_classes}")


def _load_named_inputs(spec: str, inputs: Sequence[InputSpec], num_classes: int | None, seed: int,
                       val_fraction: float) -> Dataset:
    """npz arrays named after the graph inputs (plus ``y``; optionally ``<name>_val`` and ``y_val``), each cast to
    its input's dtype and used as is: its per-sample shape must be the input's."""
    names = [i.name for i in inputs]
    if not spec.startswith("npz:"):
        raise AsgnasError(f"a model with inputs {', '.join(names)} (several, or integer) trains on npz:PATH data "
                          "holding one array per input, named after it, plus 'y'")
    path = Path(spec[4:])
    with _npz(path) as arrays:
        missing = [n for n in [*names, "y"] if n not in arrays]
        if missing:
            raise AsgnasError(f"{path}: missing arrays {', '.join(missing)} (one per graph input: "
                              f"{', '.join(names)}, and labels 'y')")

        def read(suffix: str) -> tuple[NamedInputs, np.ndarray]:
            x, y = {}, arrays["y" + suffix]  # an npz array is read from the zip on every index: once here
            for spec_ in inputs:
                array = arrays[spec_.name + suffix]
                if tuple(array.shape[1:]) != spec_.shape:
                    raise AsgnasError(f"{path}: '{spec_.name}{suffix}' holds samples of shape {array.shape[1:]}, "
                                      f"the graph input takes {spec_.shape}")
                x[spec_.name] = array.astype(spec_.dtype, copy=False)
                _check_pairs(path, spec_.name + suffix, array, "y" + suffix, y)
            return NamedInputs(x), y.astype(np.int64).reshape(-1)

        x_tr, y_tr = read("")
        if all(f"{n}_val" in arrays for n in [*names, "y"]):
            x_va, y_va = read("_val")
        else:
            x_tr, y_tr, x_va, y_va = _split(x_tr, y_tr, val_fraction, seed)
    classes = int(max(y_tr.max(), y_va.max())) + 1
    _check_classes(classes, num_classes)
    return Dataset(x_tr, y_tr, x_va, y_va, num_classes or classes, spec,
                   {"source": f"npz {path.name}", "normalize": None, "inputs": names, "used_as_is": True})
