"""The ONNX checker on what we write: a written model passes it for its own IR version, or fails it no worse
than the input did.

"No worse" is judged by the checker's own verdict: it stops at the first problem it finds, so the result may
only fail with the input's message (that problem is still there and nothing we made comes before it). The
messages are compared without the checker's "==> Context:" tail, which names the node: lifting names unnamed
nodes, so the same problem on the same node may read differently there.
A result failing where its input passed is our bug; failing differently from a failing input is refused as bad
input, since no one can tell whether the rewrite made it worse.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from asgnas.errors import AsgnasError, AsgnasWarning


class InvalidModelWritten(RuntimeError):
    """A rewrite produced a model the ONNX checker rejects from an input it accepts (a bug: exit 3)."""


def checker_error(path: Path, *, binary: bool = True) -> str | None:
    """The checker's complaint about the model file at ``path`` (external data beside it), or None.
    ``binary=False`` reads the file as ``onnx.load`` does (format by extension), as inputs are read."""
    try:
        if binary or path.suffix.lower() == ".onnx":
            onnx.checker.check_model(str(path))  # by path: external data and models over 2 GB work
        else:
            onnx.checker.check_model(onnx.load(str(path), load_external_data=False))
    except Exception as err:  # ValidationError, and the parse errors of a file the checker cannot read at all
        return " ".join(str(err).split())
    return None


def _problem_kind(message: str) -> str:
    return message.split("==> Context:")[0].strip()


def check_written(path: Path, source: str | None) -> None:
    """Raise unless the model just written at ``path`` may replace nothing worse than ``source`` (its input)."""
    problem = checker_error(path)
    if problem is None:
        return
    before = checker_error(Path(source), binary=False) if source and Path(source).is_file() else None
    if before is None:
        raise InvalidModelWritten(f"the rewritten model fails the ONNX checker: {problem}")
    if _problem_kind(before) != _problem_kind(problem):
        raise AsgnasError(
            f"the rewritten model fails the ONNX checker ({problem}); the input already failed it ({before})",
            file=source,
        )
    warnings.warn(AsgnasWarning(f"{source}: the input fails the ONNX checker ({before}); written as it was"))
