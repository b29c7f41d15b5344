"""Bridge tests run torch single-threaded: the models are tiny, and on a shared 2-core machine OpenMP's spinning
threads turn every small op into a wait for a descheduled sibling (seconds per forward under load)."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_torch() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
