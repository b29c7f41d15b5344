"""asgnas: automated search-space generation NAS over ONNX.

Layers, one direction only: ``asgnas.ir`` <- ``asgnas.passes`` <- ``asgnas.optim`` / ``asgnas.cli`` / bridge.
Heavy modules (torch, onnxruntime) are imported lazily by the commands that need them.
"""

__version__ = "0.1.0"

from asgnas.errors import AsgnasError

__all__ = ["ASGNAS", "AsgnasError", "__version__"]


def __getattr__(name: str):
    if name == "ASGNAS":  # imports torch: only when asked for
        from asgnas.api import ASGNAS

        return ASGNAS
    raise AttributeError(f"module 'asgnas' has no attribute {name!r}")
