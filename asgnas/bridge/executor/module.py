"""``OnnxModule``: the compiled graph as a ``torch.nn.Module`` (state, forward, write_back)."""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from asgnas.errors import AsgnasError
from asgnas.ir import Graph, Model, Node, Value
from asgnas.passes.untie_aliases import materialize

from .registry import BUILDERS, BuildContext, OpFn

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}

#: Input slots that configure an op rather than carry learnable data (never trainable by default).
_CONFIG_SLOTS: dict[str, frozenset[int]] = {
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Clip": frozenset({1, 2}),
    "Pad": frozenset({1, 2, 3}),
    "Dropout": frozenset({1, 2}),
    "Range": frozenset({0, 1, 2}),
    "ConstantOfShape": frozenset({0}),
    "BatchNormalization": frozenset({3, 4}),  # running statistics: buffers, updated by BN itself
}

_BN_STAT_SLOTS = (3, 4)


def _is_float(value: Value) -> bool:
    return value.const is not None and value.const.dtype in _FLOAT_TYPES


def _read_as_data(value: Value, depth: int = 0) -> bool:
    """Some node reads ``value`` (directly or through Identity) at a data slot, not a configuration slot."""
    for node, index in value.uses:
        if node.op_type == "Identity" and depth < 16:
            if any(_read_as_data(out, depth + 1) for out in node.outputs):
                return True
        elif index not in _CONFIG_SLOTS.get(node.op_type, ()):
            return True
    return False


def default_trainable(value: Value) -> bool:
    """A float initializer of rank >= 1 read as data by some node (not only as a scale/pad/clip setting or a
    BN running statistic, also through Identity aliases)."""
    if not value.is_initializer or not _is_float(value) or len(value.const.shape) == 0:
        return False
    return _read_as_data(value)


_NAME_CHARS = re.compile(r"[^0-9A-Za-z_]")


def _unique_key(container: nn.Module, name: str, taken: set[str]) -> str:
    key = _NAME_CHARS.sub("_", name) or "t"
    if key[0].isdigit():
        key = "_" + key
    base, i = key, 0
    while key in taken or hasattr(container, key):
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


def _to_tensor(array: np.ndarray) -> Tensor:
    array = np.asarray(array)
    if array.dtype == np.bool_ or array.dtype.kind in "iufc":
        return torch.from_numpy(np.array(array, copy=True))
    raise TypeError(f"constant of numpy dtype {array.dtype} cannot become a torch tensor")


class _BnStat:
    """Where one BatchNormalization running statistic lives and how ``write_back`` returns it."""

    __slots__ = ("node", "slot", "key", "initializer", "original")

    def __init__(self, node: str, slot: int, key: str, initializer: str | None, original: np.ndarray | None):
        self.node = node
        self.slot = slot
        self.key = key
        self.initializer = initializer  # the BN's own initializer, or None for a private copy
        self.original = original  # value at construction (private copies are only written back when changed)


class OnnxModule(nn.Module):
    """Run ``model``'s graph in torch; float initializers are ``nn.Parameter``s.

    ``trainable(value)`` picks which float initializers become parameters (default: ``default_trainable``);
    the others are frozen buffers. Running statistics of BatchNormalization are buffers in ``stats``; when a
    statistic is not a BN-exclusive initializer (an ``Identity`` alias of another tensor, a tensor shared with
    another node) the node gets a private copy, so training never writes through an alias.

    ``forward(*inputs, **named_inputs)`` takes the graph inputs in order (or by name; numpy arrays are accepted)
    and returns one tensor, or a tuple for several graph outputs. ``outputs`` names the values to return
    instead of the graph outputs (e.g. the logits a trailing Softmax reads); the graph is not changed.
    """

    def __init__(self, model: Model, trainable: Callable[[Value], bool] | None = None,
                 outputs: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        graph = model.graph
        trainable = trainable or default_trainable
        self.params = nn.Module()
        self.stats = nn.Module()
        self.consts = nn.Module()
        self.input_names = [v.name for v in graph.inputs]
        self.output_names = list(outputs) if outputs else [v.name for v in graph.outputs]
        for name in self.output_names:
            if name not in graph.values:
                raise AsgnasError(f"no value {name!r} to return", file=model.source)

        live = graph.live_nodes()
        executed = _executed_nodes(model, live)
        bound: dict[str, tuple[str, str]] = {}  # env name -> (container, key)
        bn_stat_inputs = self._untie_bn_stats(graph, executed, bound)
        frozen_arrays = self._bind_constants(_values_read(graph, executed, self.output_names), trainable, bound)
        self._bound = list(bound.items())
        self._steps = _compile_steps(model, executed, live, bound, bn_stat_inputs, frozen_arrays,
                                     set(self.output_names))
        _check_every_read_is_available(model, executed, set(bound) | set(self.input_names), self.output_names)

    def _untie_bn_stats(self, graph: Graph, executed: list[Node],
                        bound: dict[str, tuple[str, str]]) -> dict[tuple[str, int], str]:
        """BN running statistics become ``stats`` buffers: exclusive initializers are updated in place, everything
        else gets a private copy. Returns (node, slot) -> the env name a copied statistic is read under."""
        bn_stat_inputs: dict[tuple[str, int], str] = {}  # (node, slot) -> env name it reads
        self._stats: list[_BnStat] = []
        stat_keys: set[str] = set()
        for node in executed:
            if node.op_type != "BatchNormalization":
                continue
            for slot in _BN_STAT_SLOTS:
                v = node.inputs[slot] if slot < len(node.inputs) else None
                if v is None:
                    continue
                exclusive = v.is_initializer and all(u is node and i == slot for u, i in v.uses)
                if exclusive and not graph.is_output(v):
                    key = _unique_key(self.stats, v.name, stat_keys)
                    self.stats.register_buffer(key, _to_tensor(v.const.array))
                    bound[v.name] = ("stats", key)
                    self._stats.append(_BnStat(node.name, slot, key, v.name, None))
                    continue
                source = _constant_source(v)
                if source is None:
                    continue  # computed statistics: read at run time, never updated
                key = _unique_key(self.stats, f"{node.name}_{'running_mean' if slot == 3 else 'running_var'}",
                                  stat_keys)
                self.stats.register_buffer(key, _to_tensor(source))
                env_name = f"\x00{key}"
                bound[env_name] = ("stats", key)
                bn_stat_inputs[(node.name, slot)] = env_name
                self._stats.append(_BnStat(node.name, slot, key, None, np.array(source, copy=True)))
        return bn_stat_inputs

    def _bind_constants(self, read: dict[str, Value], trainable: Callable[[Value], bool],
                        bound: dict[str, tuple[str, str]]) -> dict[str, np.ndarray]:
        """Every constant read and not bound yet becomes a parameter (``trainable``) or a frozen buffer.
        Returns the frozen arrays by value name (builders decode them once)."""
        self._param_keys: dict[str, str] = {}  # initializer -> key in self.params
        param_keys: set[str] = set()
        const_keys: set[str] = set()
        frozen_arrays: dict[str, np.ndarray] = {}
        for name, v in read.items():
            if name in bound or v.const is None:
                continue
            if v.is_initializer and _is_float(v) and trainable(v):
                key = _unique_key(self.params, name, param_keys)
                self.params.register_parameter(key, nn.Parameter(_to_tensor(v.const.array)))
                self._param_keys[name] = key
                bound[name] = ("params", key)
            else:
                key = _unique_key(self.consts, name, const_keys)
                self.consts.register_buffer(key, _to_tensor(v.const.array), persistent=False)
                bound[name] = ("consts", key)
                frozen_arrays[name] = v.const.array
        return frozen_arrays

    def extra_repr(self) -> str:
        return (f"nodes={len(self._steps)}, params={len(self._param_keys)}, bn_stats={len(self._stats)}, "
                f"inputs={self.input_names}, outputs={self.output_names}")

    # --- maps -------------------------------------------------------------------------------------
    @property
    def param_for_initializer(self) -> dict[str, nn.Parameter]:
        """Initializer name -> its ``nn.Parameter`` (the objects the optimizer sees)."""
        params = dict(self.params.named_parameters(recurse=False, remove_duplicate=False))
        return {init: params[key] for init, key in self._param_keys.items()}

    @property
    def stat_for_initializer(self) -> dict[str, Tensor]:
        """BN running-statistic initializer -> its buffer (statistics held as private copies are not listed)."""
        buffers = dict(self.stats.named_buffers(recurse=False, remove_duplicate=False))
        return {s.initializer: buffers[s.key] for s in self._stats if s.initializer is not None}

    @property
    def initializer_for_param(self) -> dict[str, str]:
        """Qualified parameter name (as in ``named_parameters()``) -> initializer name."""
        return {f"params.{key}": init for init, key in self._param_keys.items()}

    def initializer_of(self, param: Tensor) -> str:
        """The initializer a parameter came from (by identity)."""
        for init, p in self.param_for_initializer.items():
            if p is param:
                return init
        raise KeyError("not a parameter of this OnnxModule")

    # --- execution --------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        if len(args) > len(self.input_names):
            raise AsgnasError(f"model has {len(self.input_names)} inputs, got {len(args)}")
        env: dict[str, Any] = {}
        # looked up per call, not cached: Module.to() replaces buffer objects
        containers = {"params": dict(self.params.named_parameters(recurse=False, remove_duplicate=False)),
                      "stats": dict(self.stats.named_buffers(recurse=False, remove_duplicate=False)),
                      "consts": dict(self.consts.named_buffers(recurse=False, remove_duplicate=False))}
        for name, (container, key) in self._bound:
            env[name] = containers[container][key]
        for name, value in zip(self.input_names, args):
            env[name] = value
        for name, value in kwargs.items():
            if name not in self.input_names:
                raise AsgnasError(f"unknown input {name!r}; inputs are {self.input_names}")
            env[name] = value
        for name in self.input_names:
            if name not in env:
                raise AsgnasError(f"missing input {name!r}")
            if isinstance(env[name], np.ndarray):
                env[name] = torch.from_numpy(env[name])
        training = self.training
        for fn, inputs, outputs, free in self._steps:
            result = fn([None if n is None else env[n] for n in inputs], training)
            if isinstance(result, Tensor):
                env[outputs[0]] = result
            else:
                for name, tensor in zip(outputs, result):
                    env[name] = tensor
            for name in free:
                del env[name]
        results = tuple(env[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    # --- back to the IR ---------------------------------------------------------------------------
    @torch.no_grad()
    def write_back(self, model: Model | None = None) -> Model:
        """Copy trained parameters and BN running statistics into ``model``'s initializers (default: the model
        this module was built from) and return it.

        A BN statistic that was a private copy (an alias of another tensor) and changed gets an initializer of
        its own in the graph, replacing the alias, so the saved model carries what was learnt.
        """
        model = model if model is not None else self.model
        graph = model.graph
        values = graph.values

        def put(init: str, tensor: Tensor) -> None:
            v = values.get(init)
            if v is None or not v.is_initializer:
                raise AsgnasError(f"write_back: model has no initializer {init!r}", file=model.source)
            if tuple(v.const.shape) != tuple(tensor.shape):
                raise AsgnasError(f"write_back: initializer {init!r} has shape {v.const.shape}, "
                                  f"the module {tuple(tensor.shape)}", file=model.source)
            dtype = helper.tensor_dtype_to_np_dtype(v.const.dtype)
            v.const.array = tensor.detach().cpu().numpy().astype(dtype, copy=True)

        for init, param in self.param_for_initializer.items():
            put(init, param)
        nodes = {n.name: n for n in graph} if any(s.initializer is None for s in self._stats) else {}
        for stat in self._stats:
            tensor = self.stats.get_buffer(stat.key)
            if stat.initializer is not None:
                put(stat.initializer, tensor)
                continue
            array = tensor.detach().cpu().numpy()
            if np.array_equal(array, stat.original):
                continue
            node = nodes.get(stat.node)
            if node is None:
                raise AsgnasError(f"write_back: model has no node {stat.node!r}", file=model.source)
            current = node.inputs[stat.slot]
            dtype = helper.tensor_dtype_to_np_dtype(current.dtype or TensorProto.FLOAT)
            array = array.astype(dtype)
            if (current.is_initializer and not graph.is_output(current)
                    and all(u is node and i == stat.slot for u, i in current.uses)):
                current.const.array = array  # already its own (an earlier write_back untied it)
            elif (current.producer is not None and current.producer.op_type == "Identity"
                    and len(current.uses) == 1 and not graph.is_output(current)):
                materialize(graph, current, array)  # the alias becomes the BN's own initializer
            else:
                suffix = "running_mean" if stat.slot == 3 else "running_var"
                fresh = graph.add_initializer(f"{node.name}.{suffix}", array)
                node.set_input(stat.slot, fresh)
        return model


def _constant_source(value: Value) -> np.ndarray | None:
    """The constant behind ``value``, looking through Identity chains."""
    while value.const is None and value.producer is not None and value.producer.op_type == "Identity":
        value = value.producer.inputs[0]
    return None if value.const is None else value.const.array


def _executed_nodes(model: Model, live: set[Node]) -> list[Node]:
    """Live nodes in topological order, less lifted Constants; an unsupported op fails here, naming it."""
    order = [n for n in model.graph.toposort() if n in live]
    executed = [n for n in order if not (n.op_type == "Constant" and n.outputs[0].const is not None)]
    missing = [n for n in executed if n.domain not in ("", "ai.onnx") or n.op_type not in BUILDERS]
    if missing:
        node = missing[0]
        where = f"domain {node.domain!r} " if node.domain not in ("", "ai.onnx") else ""
        raise AsgnasError(
            f"operator {where}{node.op_type} is not supported by the torch executor "
            f"({len(missing)} unsupported node(s))",
            file=model.source, node=node.name, op=node.op_type,
        )
    return executed


def _values_read(graph: Graph, executed: list[Node], output_names: list[str]) -> dict[str, Value]:
    """Values every executed node (or a returned output) reads, by name, in first-read order."""
    read: dict[str, Value] = {}
    for node in executed:
        for v in node.inputs:
            if v is not None:
                read.setdefault(v.name, v)
    for name in output_names:
        read.setdefault(name, graph.values[name])
    return read


def _compile_steps(model: Model, executed: list[Node], live: set[Node], bound: dict[str, tuple[str, str]],
                   bn_stat_inputs: dict[tuple[str, int], str], frozen_arrays: dict[str, np.ndarray],
                   graph_outputs: set[str]) -> list[tuple[OpFn, list[str | None], list[str], list[str]]]:
    """One (fn, input names, output names, names free after it) per executed node."""

    def frozen(value: Value) -> np.ndarray | None:
        return frozen_arrays.get(value.name)

    readers: dict[str, int] = {}
    for position, node in enumerate(executed):
        for v in node.inputs:
            if v is not None:
                readers[v.name] = position
    steps: list[tuple[OpFn, list[str | None], list[str], list[str]]] = []
    for position, node in enumerate(executed):
        live_out = [bool(v.uses) and any(u in live for u, _ in v.uses) or v.name in graph_outputs
                    for v in node.outputs]
        stat_buffers = node.op_type == "BatchNormalization" and all(
            bound.get(bn_stat_inputs.get((node.name, slot), ""), ("",))[0] == "stats"
            or bound.get(node.inputs[slot].name, ("",))[0] == "stats"
            for slot in _BN_STAT_SLOTS)
        ctx = BuildContext(node, model.opset, frozen, live_out, stat_buffers)
        try:
            fn = BUILDERS[node.op_type](ctx)
        except AsgnasError as err:
            raise err.with_context(file=model.source, node=node.name, op=node.op_type) from None
        except Exception as err:  # a malformed attribute: name the node
            raise AsgnasError(f"cannot compile node: {err}", file=model.source, node=node.name,
                              op=node.op_type) from None
        inputs = []
        for slot, v in enumerate(node.inputs):
            if v is None:
                inputs.append(None)
            else:
                inputs.append(bn_stat_inputs.get((node.name, slot), v.name))
        while inputs and inputs[-1] is None:
            inputs.pop()
        free = sorted({v.name for v in node.inputs if v is not None and readers.get(v.name) == position
                       and v.name not in graph_outputs and v.name not in bound})
        steps.append((fn, inputs, [v.name for v in node.outputs], free))
    return steps


def _check_every_read_is_available(model: Model, executed: list[Node], given: set[str],
                                   output_names: list[str]) -> None:
    """Every value read must come from somewhere: a dangling name fails now, not at the first forward."""
    available = given | {v.name for n in executed for v in n.outputs}
    for node in executed:
        for v in node.inputs:
            if v is not None and v.name not in available:
                raise AsgnasError(f"input {v.name!r} has no producer, initializer or graph input",
                                  file=model.source, node=node.name, op=node.op_type)
    for name in output_names:
        if name not in available:
            raise AsgnasError(f"graph output {name!r} has no producer", file=model.source)
