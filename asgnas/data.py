"""Data sources for training passes, all offline: ``digits``, ``npz:PATH``, ``synthetic``.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes; ships with the package);
- ``npz:PATH``: arrays ``x`` and ``y`` (optionally ``x_val``, ``y_val``), e.g. CIFAR-10 or Fashion-MNIST saved
  by the user;
- ``synthetic``: seeded Gaussian class clusters in the model's input shape.
Samples are fitted to the model's declared per-sample input shape: reshaped when the sizes agree (digits' 64 values
feed a 1x8x8 input), else resized spatially (bilinear) and repeated or truncated over channels.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asgnas.errors import AsgnasError


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    name: str


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
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


def _load_npz(path: Path, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation arrays of an ``.npz`` file; a file that is no npz, or holds object (pickled) or
    non-numeric arrays, is bad input."""
    if not path.is_file():
        raise AsgnasError(f"no such data file: {path}")
    try:
        with np.load(path) as arrays:
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
    except AsgnasError:
        raise
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as err:  # no zip, pickled, strings
        raise AsgnasError(f"{path}: not a readable npz of numeric arrays ({' '.join(str(err).split())})") from None
    return x_tr, y_tr, x_va, y_va


def load_dataset(spec: str, sample_shape: tuple[int, ...], num_classes: int | None = None, seed: int = 0,
                 val_fraction: float = 0.2) -> Dataset:
    """``spec`` is ``digits``, ``npz:PATH`` or ``synthetic``; ``sample_shape`` excludes the batch dim."""
    if spec == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise AsgnasError("data=digits needs scikit-learn: pip install 'asgnas[data]' (or scikit-learn)") from None

        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        x = (x - x.mean()) / x.std()
        x_tr, y_tr, x_va, y_va = _split(x, digits.target.astype(np.int64), val_fraction, seed)
        classes = 10
    elif spec.startswith("npz:"):
        x_tr, y_tr, x_va, y_va = _load_npz(Path(spec[4:]), val_fraction, seed)
        classes = int(max(y_tr.max(), y_va.max())) + 1
    elif spec == "synthetic":
        classes = num_classes or 10
        rng = np.random.default_rng(seed)
        size = int(np.prod(sample_shape))
        centers = rng.standard_normal((classes, size)).astype(np.float32)
        y = rng.integers(0, classes, 1200)
        x = centers[y] + 0.8 * rng.standard_normal((len(y), size)).astype(np.float32)
        x_tr, y_tr, x_va, y_va = _split(x.reshape(len(y), *sample_shape), y.astype(np.int64), val_fraction, seed)
    else:
        raise AsgnasError(f"unknown data source '{spec}' (digits, npz:PATH, synthetic)")
    if num_classes is not None and classes > num_classes:
        raise AsgnasError(f"data has {classes} classes but the model outputs {num_classes}")
    return Dataset(fit_to_shape(x_tr, sample_shape), y_tr, fit_to_shape(x_va, sample_shape), y_va,
                   num_classes or classes, spec)
