"""Training-only scalar gates that make parameter-free branches erasable (beyond the paper, issue 6 item 5).

The paper cannot search operations without trainable variables (PAPER_SPEC 6: skip-connect, pooling on DARTS
edges): a removal structure must own variables that H2SPG can drive to zero. ``gate-branches`` gives every such
branch one variable of its own, a scalar gate ``g`` = 1 multiplied into the branch right in front of its
erase-joint, so the erasing analysis sees an ordinary removal structure (``Mul`` by a zeroed initializer kills the
output, spec 2.4 Z1) whose only parameter is the gate. ``fold-gates`` removes them again once training is over;
``construct-subnet`` runs it, so a slim model never carries a gate.

``gate-branches`` reads the IR and its erasing analysis (segment graph). For every data operand of an Add/Sum
erase-joint whose producing segment is *not* already a removal structure (a pool + BN(affine=False) branch, an
identity skip, an earlier joint's output that also feeds others, a residual shortcut; an inner Add whose only
reader is the next Add of the same sum is part of that sum, not a branch) it inserts ``Mul(operand, <joint>.in<slot>.asgnas_gate)``
with a float initializer of shape [1] set to 1, in the operand's dtype. A producing segment without trainable
variables of its own grows by the Mul and becomes one structure (pool and BN go with the gate); a segment whose
tensor also feeds other consumers stays, and the new [Mul] segment is the edge alone (an identity skip). Graph
inputs and non-float operands are left alone. Validity (the joint keeping at least one operand, outputs staying
reachable) is the oracle's job as for every structure. Writes: the gated IR; drops every analysis. Report key
``gate-branches`` = ``{"gates": n, "names": [...]}``. Idempotent: an operand that is already a gate is skipped.

``fold-gates`` reads the gate initializers (recognised by the ``.asgnas_gate`` name suffix, so a gated model saved
and reloaded still folds). A gate exactly 1 goes with its Mul (the Mul's input feeds its consumers); a gate exactly
0 that is still there (``construct-subnet`` erases zero structures unless the set is invalid) is kept and counted;
any other value raises AsgnasError: it would change the function. Writes: the IR without 1-gates; report key
``fold-gates`` = ``{"folded", "zero_kept"}``.

Why gates stay exactly 1 during training: ``pin_gates`` (used by the ``train`` pass, ``gates=true``) hooks the
optimizer so that after every step each gate not chosen as redundant by H2SPG is set back to 1. The gate still
receives its real gradient, so H2SPG's saliency score sees it (for a scalar the cosine term is +-1: it says which
way the loss wants the gate to go), and a redundant gate takes H2SPG's penalty/projection steps to exactly zero.
Zeroing the gates' gradients instead would keep them at 1 too, but gives every gate a cosine of 0 and a
magnitude of 1, far less redundant-looking than any conv group: they would never be chosen. A per-group lr of 0
would also zero the penalty step, which uses the same lr (``hybrid._pass2``).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
from onnx import TensorProto, helper

from asgnas.errors import AsgnasError
from asgnas.ir import Model, Node, Value
from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.base import Pass, PassContext, register_pass

GATE_SUFFIX = ".asgnas_gate"
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_GATED_JOINTS = ("Add", "Sum")  # Sub's right operand and Concat operands are not gated (not needed by DARTS)


def is_gate_name(name: str) -> bool:
    return name.endswith(GATE_SUFFIX)


def is_gate(node: Node) -> bool:
    """A gate Mul: ``Mul(x, g)`` with ``g`` an initializer named ``*.asgnas_gate``."""
    if node.op_type != "Mul" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return False
    gate = node.inputs[1]
    return gate is not None and gate.is_initializer and is_gate_name(gate.name)


def gate_initializers(model: Model) -> list[Value]:
    return [v for v in model.graph.initializers() if is_gate_name(v.name)]


def gate_branches(model: Model) -> list[str]:
    """Insert a gate in front of every Add/Sum operand that is not already a removal structure; gate names."""
    from asgnas.passes.erasing import analyze_erasing

    analysis = analyze_erasing(model)
    sg = analysis.graph
    removable = {g.space for g in analysis.groups if g.removable}
    graph = model.graph
    nodes = {n.name: n for n in graph}
    names: list[str] = []
    for seg in sg.segments:
        if seg.kind != "joint" or seg.op not in _GATED_JOINTS:
            continue
        joint = nodes[seg.nodes[0]]
        for slot, value in enumerate(list(joint.inputs)):
            if value is None or value.producer is None or value.producer.name not in sg.by_node:
                continue  # absent, a graph input or a constant side chain: nothing to gate
            if is_gate(value.producer):
                continue  # already gated
            producer = sg.segments[sg.by_node[value.producer.name]]
            if producer.id in removable and producer.nodes[-1] == value.producer.name:
                continue  # a parameterised branch: already a removal structure of its own
            if producer.kind == "joint" and producer.op in _GATED_JOINTS and len(value.uses) == 1:
                continue  # Add(Add(a, b), c): the inner Add is part of the same sum, its operands get the gates
            if value.dtype not in _FLOAT_TYPES:
                continue
            dtype = helper.tensor_dtype_to_np_dtype(value.dtype)
            gate = graph.add_initializer(f"{joint.name}.in{slot}{GATE_SUFFIX}", np.ones([1], dtype=dtype))
            gated = graph.add_value(f"{value.name}.gated", value.dtype, value.shape)
            graph.add_node("Mul", [value, gate], [gated], name=f"{joint.name}.in{slot}.gate_mul")
            joint.set_input(slot, gated)
            names.append(gate.name)
    if names:
        graph.reorder()  # the Muls were appended at the end
    AnalysisManager(model).invalidate(frozenset())  # called outside a pipeline too (train{gates=true})
    return names


def check_gates(model: Model) -> None:
    """Raise AsgnasError for a gate that is neither exactly 0 nor exactly 1 (folding it would change outputs)."""
    for gate in gate_initializers(model):
        array = np.asarray(gate.const.array)
        if array.any() and not np.all(array == 1):
            raise AsgnasError(
                f"gate {gate.name} is {array.reshape(-1).tolist()}, neither 0 nor 1: folding it would change the "
                "model (gates must be trained with train{gates=true}, which pins unselected gates to 1)"
            )


def fold_gates(model: Model) -> dict[str, int]:
    """Remove every gate equal to 1 (its Mul's input feeds the consumers); keep zero gates; raise on others."""
    check_gates(model)
    graph = model.graph
    folded = zero_kept = 0
    for node in graph:
        if not is_gate(node):
            continue
        gate = node.inputs[1]
        array = np.asarray(gate.const.array)
        if array.size and np.all(array == 1):
            source, out = node.inputs[0], node.outputs[0]
            if graph.is_output(out):
                # the output keeps its name: an Identity stands in (no gate, no multiply)
                graph.remove_node(node)
                graph.add_node("Identity", [source], [out], name=f"{node.name}.folded")
            else:
                graph.replace_all_uses_with(out, source)
                graph.remove_node(node)
            if not gate.uses and not graph.is_output(gate):
                graph.values.pop(gate.name, None)
            folded += 1
        else:
            zero_kept += 1  # contributes zero; construct-subnet erases it unless the zero set is invalid
    if folded:
        graph.reorder()
        AnalysisManager(model).invalidate(frozenset())
    return {"folded": folded, "zero_kept": zero_kept}


def pin_gates(optimizer: Any, groups: Iterable[Any], param_for_initializer: Mapping[str, Any]) -> int:
    """After every ``optimizer.step()``, set each gate parameter not in a redundant group back to exactly 1.

    ``groups``: the search-space groups the optimizer was built on (their ``params`` name initializers);
    redundancy comes from ``optimizer.redundant_group_ids`` (empty before H2SPG's selection, and for optimizers
    without it every gate stays 1). Returns the number of pinned gate parameters.
    """
    import torch

    owners: dict[str, list[int]] = {}
    for group in groups:
        for piece in group.params:
            if is_gate_name(piece.initializer):
                owners.setdefault(piece.initializer, []).append(int(group.id))
    gates = [(param_for_initializer[name], owners.get(name, [])) for name in param_for_initializer
             if is_gate_name(name)]
    if not gates:
        return 0

    @torch.no_grad()
    def _pin(opt: Any, args: Any, kwargs: Any) -> None:
        redundant = set(getattr(opt, "redundant_group_ids", ()) or ())
        for param, ids in gates:
            if not redundant.intersection(ids):
                param.fill_(1.0)

    optimizer.register_step_post_hook(_pin)
    return len(gates)


@register_pass
class GateBranchesPass(Pass):
    name = "gate-branches"
    summary = "training-only scalar gate (=1) on every parameter-free Add/Sum operand, so it becomes erasable"

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        names = gate_branches(model)
        return {"gates": len(names), "names": names}


@register_pass
class FoldGatesPass(Pass):
    name = "fold-gates"
    summary = "remove every gate equal to 1 (construct-subnet runs this); a gate neither 0 nor 1 is an error"

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        return fold_gates(model)
