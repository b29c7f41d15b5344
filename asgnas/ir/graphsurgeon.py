"""A bridge to onnx-graphsurgeon: hand a model to a graphsurgeon script and take its graph back.

Both ways go through the ONNX protos with graphsurgeon's public ``import_onnx``/``export_onnx``, so a model that
the script leaves alone comes back bit for bit. graphsurgeon has no place for the model-level fields (metadata, doc
string, domain, model version) nor for node doc strings; ``from_graphsurgeon(graph, like=model)`` takes them from
the model the graph came from (asgnas keeps e.g. ``asgnas.preprocessing`` in the metadata), node doc strings by
node name.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from asgnas.ir.model import Model, lift, lower


def to_graphsurgeon(model: Model) -> gs.Graph:
    """The model as a graphsurgeon graph (a copy: editing it leaves ``model`` as it is)."""
    return gs.import_onnx(lower(model))


def from_graphsurgeon(graph: gs.Graph, like: Model | None = None) -> Model:
    """A graphsurgeon graph lifted into the IR; ``like``: the model whose model-level fields to carry over."""
    proto = gs.export_onnx(graph)
    if like is not None:
        if like.domain:
            proto.domain = like.domain
        proto.model_version = like.model_version
        if like.doc_string:
            proto.doc_string = like.doc_string
        for key, value in like.metadata_props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    model = lift(proto)
    if like is not None:
        docs = {node.name: node.doc_string for node in like.graph if node.doc_string}
        for node in model.graph:
            node.doc_string = node.doc_string or docs.get(node.name, "")
    return model


__all__ = ["from_graphsurgeon", "to_graphsurgeon"]
