"""Helpers the channel rules share: shape checks and the common axis relations."""

from __future__ import annotations

from asgnas.ir import Node, Value
from asgnas.passes.pruning.builder import Builder, Unsupported


def need_shape(*values: Value | None) -> None:
    for value in values:
        if value is not None and value.shape is None:
            raise Unsupported(f"unknown shape of {value.name}")


def identity_axes(builder: Builder, src: Value, dst: Value) -> None:
    need_shape(src, dst)
    if src.rank != dst.rank:
        raise Unsupported(f"rank changes from {src.rank} to {dst.rank}")
    for axis in range(src.rank):
        builder.same(builder.k(src, axis), builder.k(dst, axis))


def broadcast_into(builder: Builder, value: Value, out: Value) -> None:
    """Numpy broadcasting: an operand axis equal to the output axis shares its indexing; size 1 broadcasts.
    An operand is never larger than the result, so a symbolic dim against a declared 1 (value_info that does not
    match the data, as some exporters write for the batch) is the same axis too."""
    need_shape(value, out)
    offset = out.rank - value.rank
    if offset < 0:
        raise Unsupported(f"{value.name} has a higher rank than the output")
    for axis, dim in enumerate(value.shape):
        odim = out.shape[axis + offset]
        if dim == 1 and odim != 1:
            continue  # broadcast along this axis: the operand does not depend on the output's index
        symbolic_against_one = isinstance(dim, str) and odim == 1
        if dim is None or odim is None or (dim != odim and not symbolic_against_one):
            raise Unsupported(f"cannot match dim {dim} of {value.name} to {odim}")
        builder.same(builder.k(value, axis), builder.k(out, axis + offset))


def pin_mixed(builder: Builder, node: Node, value: Value, axes: range) -> None:
    """Axes an op mixes (a kernel slides over them): their elements may never go."""
    for axis in axes:
        builder.pin(builder.k(value, axis), None, f"{node.name} ({node.op_type}) mixes elements along this axis")
