"""Reading and writing ONNX files: clear errors for bad input, atomic writes, external data both ways."""

from __future__ import annotations

import mmap
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import onnx
from google.protobuf.message import DecodeError

from asgnas.errors import AsgnasError, AsgnasWarning
from asgnas.ir.model import Model, lift, lower, model_nbytes
from asgnas.ir.core import CycleError
from asgnas.ir.validate import check_written
from asgnas.ir.wellformed import check_proto

#: Protobuf cannot serialize a message over 2 GiB; stay well clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def load_model(path: str | os.PathLike, *, check_ops: bool = True) -> Model:
    """Read and lift an ONNX file (with its external data, if any). Raises AsgnasError on bad input."""
    path = Path(path)
    where = str(path)
    if path.is_dir():
        raise AsgnasError("is a directory, not a model file", file=where)
    if not path.is_file():
        raise AsgnasError("no such model file", file=where)
    try:
        proto = _parse(path)
    except DecodeError as err:
        raise AsgnasError(f"not a valid ONNX protobuf ({err})", file=where) from None
    except Exception as err:  # protobuf raises assorted errors on truncated input
        raise AsgnasError(f"cannot parse ONNX model: {err}", file=where) from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise AsgnasError("not an ONNX model (no graph)", file=where)
    _load_external_data(proto, path.parent, where)
    check_proto(proto, where)
    try:
        model = lift(proto)
        model.graph.toposort()
    except CycleError as err:
        raise AsgnasError(str(err), file=where) from None
    except Exception as err:
        raise AsgnasError(f"cannot lift model: {err}", file=where) from None
    model.source = where
    if not proto.ir_version:
        warnings.warn(AsgnasWarning(f"{where}: ir_version is not set; read and written as IR version "
                                    f"{model.ir_version}, the lowest its opsets allow"))
    if check_ops:
        check_model_ops(model)
    return model


def _parse(path: Path) -> onnx.ModelProto:
    """A binary ``.onnx`` file is parsed straight from a read-only memory map: no intermediate copy of the file
    (half the load time of a weight-heavy model). Other names go through ``onnx.load``, which picks the format
    by extension."""
    if path.suffix.lower() != ".onnx" or path.stat().st_size == 0:
        return onnx.load(str(path), load_external_data=False)
    proto = onnx.ModelProto()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with memoryview(mapped) as view:  # released before the map closes; protobuf copies what it keeps
            read = proto.ParseFromString(view)
            size = len(view)
    if read is not None and read != size:
        raise DecodeError(f"parsed {read} of {size} bytes")
    return proto


def _load_external_data(proto: onnx.ModelProto, base_dir: Path, where: str) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [tensor for tensor in all_tensors(proto) if uses_external_data(tensor)]
    if not external:
        return  # the common case: nothing to read (and no second walk over every tensor)
    missing = set()
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        name = info.get("location", "")
        if _outside_folder(name):  # judged on the name alone: whether such a file exists is not ours to tell
            raise AsgnasError(f"external data location '{name}' (tensor {tensor.name}) is not a file inside the "
                              "model's folder", file=where)
        if not (base_dir / name).is_file():
            missing.add(name)
    if missing:
        raise AsgnasError(f"missing external data file(s): {', '.join(sorted(missing))}", file=where)
    try:
        load_external_data_for_model(proto, str(base_dir))
    except Exception as err:
        raise AsgnasError(f"cannot read external data: {err}", file=where) from None


def _outside_folder(location: str) -> bool:
    """Empty, absolute, or climbing out with '..': ONNX allows only relative paths below the model's folder."""
    normal = os.path.normpath(location) if location else ""
    return not normal or os.path.isabs(normal) or normal == ".." or normal.startswith(f"..{os.sep}") or (
        os.path.splitdrive(normal)[0] != "")


def all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes, subgraphs (If/Loop/Scan bodies) included."""
    stack = [proto.graph]
    while stack:
        graph = stack.pop()
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


@lru_cache(maxsize=None)
def _known_op(op_type: str, domain: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, opset, domain)
        return True
    except onnx.defs.SchemaError:
        return False


def check_model_ops(model: Model) -> None:
    """Every default-domain op must exist at the model's opset (custom domains are left to the runtime)."""
    opset = model.opset
    for node in model.graph:
        if node.domain in ("", "ai.onnx") and not _known_op(node.op_type, "", opset):
            raise AsgnasError(
                f"unknown operator for opset {opset}", file=model.source, node=node.name, op=node.op_type
            )


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write a side file (report, DOT, SVG) the way models are written: a temporary file in the same folder, then
    ``os.replace``, so a fault or a signal never leaves a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_model(
    model: Model | onnx.ModelProto,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
) -> Path:
    """Write atomically: a temporary file in the same folder, then ``os.replace``; the file must pass the ONNX
    checker first (or fail it no worse than the model's input file: ``asgnas.ir.validate``).

    ``external_data=None`` chooses by size: models whose constants exceed ~1.8 GB go to ``<name>.data`` beside the
    model (protobuf's 2 GB limit), as torch's dynamo exporter writes them.
    """
    path = Path(path)
    proto = lower(model) if isinstance(model, Model) else model
    if external_data is None:
        nbytes = model_nbytes(model) if isinstance(model, Model) else proto.ByteSize()
        external_data = nbytes > EXTERNAL_DATA_THRESHOLD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp_model = tmp_dir / path.name
        if external_data:
            data_name = f"{path.name}.data"
            onnx.save_model(
                proto,
                str(tmp_model),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            with open(tmp_model, "wb") as handle:
                handle.write(proto.SerializeToString())
        check_written(tmp_model, model.source if isinstance(model, Model) else None)
        if external_data and (tmp_dir / data_name).exists():
            os.replace(tmp_dir / data_name, path.parent / data_name)
        os.replace(tmp_model, path)
    finally:
        for leftover in tmp_dir.iterdir():
            leftover.unlink()
        tmp_dir.rmdir()
    return path
