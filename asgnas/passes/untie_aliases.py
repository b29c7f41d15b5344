"""``untie-aliases``: undo the legacy exporter's initializer de-duplication (``init -> Identity -> torch_name``).

Reads: the IR. Writes: every ``Identity`` of an initializer becomes an initializer of its own (a copy); report key
``untie-aliases``: how many. Run it before ``search-space`` on models from torch's legacy exporter (``train`` does
it itself; so do the analyses, ``search-space`` and its parts): a real weight share in torch exports as one
initializer read by two nodes, never through an Identity.

With ``do_constant_folding=False`` the TorchScript exporter keeps one initializer per *distinct value* and emits
``Identity`` nodes for every other tensor with the same bytes: a fresh BN's ``running_var`` becomes
``Identity(bn.weight)``, every zero bias ``Identity(<first zero bias>)``. That looks like weight sharing but is
not (ANCHORS section 0 item 7): training would tie unrelated tensors, and the group analysis would couple them.
``untie_initializer_aliases`` gives each such Identity output its own initializer copy.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from asgnas.ir import ConstTensor, Graph, Model, Node, Value
from asgnas.passes.base import Pass, PassContext, register_pass


def materialize(graph: Graph, value: Value, array: np.ndarray) -> None:
    """Make ``value`` an initializer holding ``array``, deleting the node that produced it.

    The producer's inputs stay even when nothing reads them any more: callers may still map names to them
    (an executor parameter, a torch name); dropping dead initializers is ``dce``'s job.
    """
    producer = value.producer
    if producer is not None:
        graph.remove_node(producer)  # ``value`` survives: it still has uses (or is a graph output)
        graph.values[value.name] = value
    array = np.array(array, copy=True)
    value.const = ConstTensor(array=array)
    value.dtype = value.const.dtype
    value.shape = tuple(array.shape)


def untie_initializer_aliases(
    model: Model,
    keep_shared: Callable[[Value, Value], bool] | None = None,
) -> dict[str, str]:
    """Replace every ``Identity`` whose input is an initializer by an initializer of its own.

    ``keep_shared(src, out)`` may declare an alias a real sharing: then the readers of ``out`` read ``src``
    directly instead (the Identity goes, the tie stays). Default: every alias is untied (a copy), which is what
    the legacy exporter's aliases are. Identity chains are handled (topological order). Returns
    ``{untied value name: initializer it was copied from}``.
    """
    graph = model.graph
    untied: dict[str, str] = {}
    for node in graph.toposort():
        if not _aliases_initializer(node):
            continue
        src, out = node.inputs[0], node.outputs[0]
        if keep_shared is not None and keep_shared(src, out):
            if graph.is_output(out):
                continue  # a graph output keeps its name: leave the Identity
            graph.replace_all_uses_with(out, src)
            graph.remove_node(node)
            continue
        untied[out.name] = untied.get(src.name, src.name)
        materialize(graph, out, src.const.array)
    return untied


def untie_before_analysis(model: Model) -> int:
    """What the analyses do first, so that ``search-space`` alone finds the real space of a legacy torch export:
    untie its aliases (a copy each). A weight the model really shares is one initializer read by several nodes,
    which stays tied. Returns how many were untied (0 without a walk in topological order when there are none)."""
    if not any(_aliases_initializer(node) for node in model.graph):
        return 0
    return len(untie_initializer_aliases(model))


def _aliases_initializer(node: Node) -> bool:
    return (node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.inputs) == 1
            and node.inputs[0] is not None and node.inputs[0].is_initializer)


@register_pass
class UntieAliasesPass(Pass):
    name = "untie-aliases"
    summary = "give every Identity-aliased initializer its own copy (the legacy exporter's de-duplication)"

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        untied = untie_initializer_aliases(model)
        return {"untied": len(untied)}
