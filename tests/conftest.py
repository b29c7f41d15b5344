"""Shared pytest fixtures for the asgnas test-suite.

Fixtures
--------
``onnx_path(name: str, exporter: str = "legacy") -> pathlib.Path``
    (session scope) exports zoo case ``name`` once per test session (per xdist
    worker) into a session tmp dir and returns the cached path.  Treat the file
    as read-only: copy it (or ``onnx.load`` it) before modifying.
``zoo -> dict[str, ModelCase]``
    the zoo (``tests/models.py: ZOO``).
``ort_run(path_or_model, feeds) -> list[np.ndarray]``
    onnxruntime CPU run, see ``models.ort_run``.
``seeded_inputs(path_or_model, seed=0) -> dict[str, np.ndarray]``
    random feeds from declared input shapes (symbolic dims -> 2).

The helpers are plain functions in ``tests/models.py``; import them directly
with ``from models import ZOO, export_onnx, ort_run, ...`` (or
``from tests.models import ...`` - both names refer to the same module object).

Markers
-------
``slow``: tests that take more than ~5 s (deselect with ``-m "not slow"``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

# Make the zoo importable as both ``models`` and ``tests.models`` regardless of
# pytest's import mode or whether tests/ becomes a package, and make sure both
# names resolve to ONE module object (so the ZOO dict is not duplicated).
_TESTS_DIR = Path(__file__).resolve().parent
for _p in (str(_TESTS_DIR), str(_TESTS_DIR.parent)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

_early = sys.modules.get("models")  # imported as plain ``models`` before this conftest ran?
if _early is not None and Path(getattr(_early, "__file__", "") or "").resolve() == _TESTS_DIR / "models.py":
    sys.modules.setdefault("tests.models", _early)
import tests.models as _zoo  # noqa: E402

sys.modules.setdefault("models", _zoo)

from tests.models import EXPORTERS, ZOO, ModelCase, export_onnx, ort_run, seeded_inputs  # noqa: E402

OnnxPathFactory = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: test takes more than ~5 s; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> OnnxPathFactory:
    """Factory ``onnx_path(name, exporter="legacy") -> Path`` with a session cache.

    Each (case, exporter) pair is exported at most once per session.  Raises
    ``KeyError`` for an unknown case and ``ValueError`` for an unknown exporter.
    Asking for ``"dynamo"`` on a case without the ``dynamo_ok`` tag still tries
    the export (so a test can assert on the failure), but callers normally
    filter with ``case_names(all_of={"dynamo_ok"})``.
    """
    root = tmp_path_factory.mktemp("zoo_onnx")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str = "legacy") -> Path:
        if exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
        key = (name, exporter)
        if key not in cache:
            cache[key] = export_onnx(ZOO[name], root / f"{name}.{exporter}.onnx", exporter)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def supernet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory ``supernet_onnx(name) -> Path``: ``asgnas.zoo`` super-network ``name`` at its tiny size, built under
    ``torch.manual_seed(0)`` and exported once per session (read-only, like ``onnx_path``)."""
    root = tmp_path_factory.mktemp("supernets_seed0")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            import torch

            from asgnas.bridge.export import export_torch_model
            from asgnas.zoo import build

            torch.manual_seed(0)
            net = build(name, "tiny")
            cache[name] = root / f"{name}.onnx"
            export_torch_model(net, net.example_input(1), cache[name])
        return cache[name]

    return get


@pytest.fixture(scope="session")
def zoo() -> dict[str, ModelCase]:
    """The shared model zoo (name -> ModelCase)."""
    return ZOO


@pytest.fixture(scope="session", name="ort_run")
def _ort_run_fixture() -> Callable:
    """``ort_run(path_or_model, feeds) -> list[np.ndarray]`` (onnxruntime CPU)."""
    return ort_run


@pytest.fixture(scope="session", name="seeded_inputs")
def _seeded_inputs_fixture() -> Callable:
    """``seeded_inputs(path_or_model, seed=0) -> dict[str, np.ndarray]``."""
    return seeded_inputs


@pytest.fixture(autouse=True, scope="session")
def _latency_cache_in_a_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The latency pass caches under ``$ASGNAS_CACHE``: tests keep out of the user's ``~/.cache`` (and its old
    entries, measured by another version, never answer a test)."""
    previous = os.environ.get("ASGNAS_CACHE")
    os.environ["ASGNAS_CACHE"] = str(tmp_path_factory.mktemp("asgnas-cache"))
    yield
    if previous is None:
        os.environ.pop("ASGNAS_CACHE", None)
    else:
        os.environ["ASGNAS_CACHE"] = previous
