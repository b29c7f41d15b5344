"""Did training learn? The train pass's verdict, and the error a diverged training stops with.

A training is "not learning" when either holds (ours; the thresholds are deliberately loose, they catch a model
that learnt nothing, not a weak one):
- the final validation accuracy is below chance + ``CHANCE_MARGIN``, chance being the larger of 1/classes and the
  majority class's share of the validation labels (what always answering one class scores);
- with two or more epochs, the last epoch's mean loss is not below the first's by ``LOSS_DROP`` (relative).
The CLI then exits 1 with the slim model still written; a NaN/inf loss instead stops at once (``TrainingDiverged``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from asgnas.errors import ResultRejected

#: validation accuracy must beat chance by this much (absolute)
CHANCE_MARGIN = 0.05
#: the last epoch's mean loss must be at least this fraction below the first epoch's
LOSS_DROP = 0.01


class TrainingDiverged(ResultRejected):
    """The loss became NaN or infinite: training stops, nothing is written, exit status 1."""


def diverged_message(loss: float, epoch: int, epochs: int, step: int, lr: float) -> str:
    return (f"training diverged: loss {loss} at epoch {epoch}/{epochs}, step {step}; try a lower lr (now {lr:g}) "
            "and check the data for NaN/inf values")


def chance_accuracy(y_val: np.ndarray, num_classes: int) -> float:
    """What a constant answer scores: the larger of 1/classes and the majority class's share."""
    majority = np.bincount(y_val, minlength=num_classes).max() / max(len(y_val), 1)
    return float(max(1.0 / max(num_classes, 1), majority))


def learning_verdict(epochs: Sequence[dict[str, Any]], val_accuracy: float, chance: float) -> dict[str, Any]:
    """``{"verdict": "ok" | "not learning", "reasons": [...], "chance_accuracy"}`` from the per-epoch history
    (``loss`` per row) and the trained model's final validation accuracy."""
    reasons = []
    if val_accuracy < chance + CHANCE_MARGIN:
        reasons.append(f"validation accuracy {val_accuracy:.3f} is within {CHANCE_MARGIN} of chance ({chance:.3f})")
    if len(epochs) >= 2:
        first, last = epochs[0]["loss"], epochs[-1]["loss"]
        if not last < first * (1 - LOSS_DROP):
            reasons.append(f"the loss did not fall ({first:.4f} in epoch 1, {last:.4f} in epoch {len(epochs)})")
    return {"verdict": "not learning" if reasons else "ok", "reasons": reasons, "chance_accuracy": round(chance, 4)}
