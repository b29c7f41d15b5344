"""Bypassing a joint left with one operand: when the kept operand may be broadcast by the erased one, the joint
becomes an ``Expand`` to its output shape, which must then be static. The analysis and the construction share
this rule, so that what the analysis calls removable the construction builds."""

from __future__ import annotations

from asgnas.ir import Value


def may_broadcast(out: Value, keep: Value) -> bool:
    """Can ``keep`` be smaller than the joint's result ``out`` (the dropped operand broadcast it)? A dim of 1 in
    ``keep`` against a dim of ``out`` not known to be 1 may be; unknown ranks count as equal shapes."""
    if out.shape is None or keep.shape is None:
        return False
    if len(out.shape) != len(keep.shape):
        return True
    return any(
        (isinstance(o, int) and isinstance(k, int) and o != k) or (k == 1 and o != 1)
        for o, k in zip(out.shape, keep.shape)
    )


def bypass_problem(joint_out: Value, keep: Value) -> str:
    """Why the joint producing ``joint_out`` cannot be bypassed to ``keep`` (empty when it can)."""
    if may_broadcast(joint_out, keep) and not all(isinstance(d, int) for d in joint_out.shape):
        return (f"bypassing joint {joint_out.producer.name if joint_out.producer else joint_out.name} to "
                f"{keep.name} needs an Expand to its output shape, which is not static")
    return ""
