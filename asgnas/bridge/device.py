"""Which torch device a run uses: its own module so that both the training loop and the process-group setup
(``distributed.py``) can ask without importing each other."""

from __future__ import annotations

import torch

from asgnas.errors import AsgnasError


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AsgnasError("device=cuda asked for, but torch sees no CUDA device")
    return torch.device(device)
