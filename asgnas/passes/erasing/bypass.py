"""Bypassing a joint left with one operand: when the kept operand may be broadcast by the erased one, the joint
becomes an ``Expand``. Expand broadcasts both ways, so its target names only the dims the kept operand is
broadcast along (its 1s, and leading dims it lacks); every other entry is 1 and the kept operand's own size, known
or not, passes through. Those named dims must be static. The analysis and the construction share this rule, so
that what the analysis calls removable the construction builds."""

from __future__ import annotations

from asgnas.ir import Node, Value

Dim = int | str | None


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


def expand_target(out: Value, keep: Value) -> list[Dim]:
    """The ``Expand`` target that turns ``keep`` into ``out``: ``out``'s dim where ``keep`` is 1, unknown (it may be
    1 at run time) or lacks the axis (it is broadcast there), else 1. Entries that are not ints make the bypass
    unbuildable."""
    lead = len(out.shape) - len(keep.shape)
    if lead < 0:  # declared shapes that contradict each other: no target to trust
        return [None]
    return [o if axis < lead or keep.shape[axis - lead] in (1, None) else 1 for axis, o in enumerate(out.shape)]


def bypass_problem(joint_out: Value, keep: Value) -> str:
    """Why the joint producing ``joint_out`` cannot be bypassed to ``keep`` (empty when it can)."""
    if may_broadcast(joint_out, keep) and not all(isinstance(d, int) for d in expand_target(joint_out, keep)):
        return (f"bypassing joint {joint_out.producer.name if joint_out.producer else joint_out.name} to "
                f"{keep.name} needs an Expand along dims that are not static")
    return ""


def lone_keep_problems(joint: Node, segment_of: dict[str, int]) -> dict[int, str]:
    """For each operand of ``joint`` (keyed by the segment producing it, -1 for a graph input): why the joint
    could not become that operand alone, when structures erased together leave it only that one."""
    out = joint.outputs[0]
    problems: dict[int, str] = {}
    for value in {id(v): v for v in joint.inputs if v is not None}.values():
        if problem := bypass_problem(out, value):
            producer = -1 if value.producer is None else segment_of.get(value.producer.name, -1)
            problems[producer] = f"{problem} (node {joint.name}, op {joint.op_type})"
    return problems
