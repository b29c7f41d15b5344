"""Fixtures for the asgnas.optim tests; makes ``optim_testlib`` (this folder) importable in any import mode."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parents[1])):
    if _p not in sys.path:
        sys.path.insert(0, _p)


@pytest.fixture(autouse=True)
def _one_thread():
    """The test models are tiny: one intra-op thread is as fast and far steadier on a busy 2-core machine
    (restored afterwards, so other tests in the same worker are unaffected)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
