"""Honest evidence for ``tools/reproduce.py``: train / validation / test splits and the validation-only choice.

- Test images are held out once (``test_seed``), the same for every training seed, so nothing chosen on any
  seed's validation split ever sees them; the rest is split per seed into train and validation.
- ``digits``: 60 / 20 / 20 of the 1,797 images as [N, 1, 8, 8], scaled to [0, 1] and standardized with the
  training split's mean and std (what ``asgnas.data`` does on the whole set). ``npz:PATH``: its arrays as they
  are; ``x_test``/``y_test`` and ``x_val``/``y_val`` when present, else cut from ``x``/``y`` in the same
  proportions.
- The split is written as npz files the ``train`` pass reads (``data=npz:``): ``train.npz`` holds ``x``, ``y``,
  ``x_val``, ``y_val``; ``test.npz`` holds the test split (as both pairs), so the tool's own onnxruntime evaluation
  loads it through the same loader and fits it to the model's input the way training does.
- ``select_candidate``: among a net's candidates, the largest params + MACs reduction whose validation accuracy is
  within ``tolerance`` of the full baseline's validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from asgnas.errors import AsgnasError

VAL_FRACTION = 0.2
TEST_FRACTION = 0.2


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``train.npz`` (train + validation, for the train pass) and ``test.npz`` (for evaluation)."""
        folder.mkdir(parents=True, exist_ok=True)
        train, test = folder / "train.npz", folder / "test.npz"
        np.savez(train, x=self.x_train, y=self.y_train, x_val=self.x_val, y_val=self.y_val)
        np.savez(test, x=self.x_test, y=self.y_test, x_val=self.x_test, y_val=self.y_test)
        return train, test


def split_indices(n: int, seed: int, test_seed: int = 0, val_fraction: float = VAL_FRACTION,
                  test_fraction: float = TEST_FRACTION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint (train, val, test) index arrays covering ``range(n)``: test drawn with ``test_seed`` alone,
    validation from the rest with ``seed``; a fraction of 0 gives an empty split."""
    test = np.sort(np.random.default_rng(test_seed).permutation(n)[:int(round(n * test_fraction))])
    rest = np.setdiff1d(np.arange(n), test)
    rest = rest[np.random.default_rng(seed).permutation(len(rest))]
    n_val = int(round(n * val_fraction))
    return np.sort(rest[n_val:]), np.sort(rest[:n_val]), test


def make_splits(spec: str, seed: int, test_seed: int = 0) -> Splits:
    """The splits of ``digits`` or ``npz:PATH`` for one training seed (see the module docstring)."""
    if spec == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
        train, val, test = split_indices(len(x), seed, test_seed)
        mean, std = x[train].mean(), x[train].std()
        x = ((x - mean) / std).reshape(-1, 1, 8, 8)  # images in NCHW, the zoo nets' layout
        return Splits(x[train], y[train], x[val], y[val], x[test], y[test])
    if not spec.startswith("npz:"):
        raise AsgnasError(f"reproduce: data must be digits or npz:PATH, got '{spec}'")
    with np.load(spec[4:]) as arrays:
        data = {name: arrays[name] for name in arrays.files}
    if "x" not in data or "y" not in data:
        raise AsgnasError(f"{spec[4:]}: expected arrays 'x' and 'y' (optionally 'x_val'/'y_val', 'x_test'/'y_test')")
    x, y = data["x"].astype(np.float32), data["y"].astype(np.int64).reshape(-1)
    has_val, has_test = "x_val" in data and "y_val" in data, "x_test" in data and "y_test" in data
    train, val, test = split_indices(len(x), seed, test_seed, 0.0 if has_val else VAL_FRACTION,
                                     0.0 if has_test else TEST_FRACTION)
    x_val, y_val = _pair(data, "val") if has_val else (x[val], y[val])
    x_test, y_test = _pair(data, "test") if has_test else (x[test], y[test])
    return Splits(x[train], y[train], x_val, y_val, x_test, y_test)


def _pair(data: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    return data[f"x_{split}"].astype(np.float32), data[f"y_{split}"].astype(np.int64).reshape(-1)


def select_candidate(candidates: Sequence[dict], baseline_val_acc: float, tolerance: float = 0.01) -> int:
    """Index of the chosen candidate, from validation figures only (``acc_val``, ``params_kept``, ``macs_kept``):
    among the candidates whose validation accuracy is at least ``baseline_val_acc - tolerance``, the one keeping the
    least ``params_kept + macs_kept`` (rounded to 0.01: sizes that close count as equal, and then the more accurate
    one wins, then the earlier in the grid); when none is within tolerance, the most accurate one (earlier on
    ties)."""
    if not candidates:
        raise ValueError("select_candidate needs at least one candidate")
    within = [i for i, c in enumerate(candidates) if c["acc_val"] >= baseline_val_acc - tolerance - 1e-12]
    if within:
        kept = lambda c: round(c["params_kept"] + c["macs_kept"], 2)  # noqa: E731
        return min(within, key=lambda i: (kept(candidates[i]), -candidates[i]["acc_val"], i))
    return max(range(len(candidates)), key=lambda i: (candidates[i]["acc_val"], -i))
