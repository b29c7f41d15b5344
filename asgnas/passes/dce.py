"""``dce``: dead-code elimination.

Reads: the IR. Writes: removes nodes no graph output depends on, then initializers nobody reads (value infos of
removed values go with them). Graph inputs are the model's interface and are kept even when unused.
"""

from __future__ import annotations

from typing import Any

from asgnas.ir import Graph, Model
from asgnas.passes.base import Pass, PassContext, register_pass


def eliminate_dead_code(graph: Graph) -> tuple[int, int]:
    """Remove dead nodes and unused constants. Returns (nodes removed, initializers removed)."""
    live = graph.live_nodes()
    dead = [n for n in graph.toposort() if n not in live]
    for node in reversed(dead):  # consumers first, so producers' outputs lose their last uses
        graph.remove_node(node)
    outputs = {id(v) for v in graph.outputs}
    unused = [v for v in graph.values.values() if v.is_initializer and not v.uses and id(v) not in outputs]
    for value in unused:
        graph.remove_value(value)
    # values with neither producer nor uses nor data (stale value infos) go too
    inputs = {id(v) for v in graph.inputs}
    for name, value in list(graph.values.items()):
        if value.producer is None and value.const is None and not value.uses and id(value) not in inputs | outputs:
            del graph.values[name]
    return len(dead), len(unused)


@register_pass
class DeadCodeEliminationPass(Pass):
    name = "dce"
    summary = "remove nodes, initializers and value infos that no graph output depends on"

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        nodes, initializers = eliminate_dead_code(model.graph)
        return {"removed_nodes": nodes, "removed_initializers": initializers}
