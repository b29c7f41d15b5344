"""The relation builder the operator rules write into, and the reshape factorisation they share.

Vocabulary (see the package docstring for the whole picture):
- an *axis key* is one axis of one value ``(value, axis)`` (or a *virtual* axis a rule invents, e.g. the
  GroupNorm groups); every key has a static size or ``None`` (symbolic);
- ``same(a, b)``: the two axes are indexed identically (channel c of a is channel c of b); these unions form the
  level-1 *spaces* (a union-find over keys);
- ``link(a, ia, b, ib)``: element ``ia[k]`` of a goes with element ``ib[k]`` of b (Concat offsets, Slice, Gather);
- ``product(target, atoms)``: the target axis is the row-major product of the atom axes (Reshape/Flatten,
  grouped convolutions, depthwise multipliers); resolved later by choosing one atom that carries the channel;
- ``pin(key, idx, reason)``: these elements must never be removed (graph I/O, unknown ops, normalisations over
  the axis, ...);
- ``role(value, axis, role)``: how a constant is treated when channels go (param: zeroed and sliced; consumer:
  input columns, sliced; stat: running statistics, sliced);
- ``stem(value, axis)``: the axis is the output-channel axis of a stem (its rows are the group's parameters);
- ``consume(...)``: a place where a removed channel's value is summed into something that stays (a stem's input
  columns, an activation contraction); the zero analysis checks the channel is exactly zero there or folds it.
Rules never touch the IR: they only describe it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from asgnas.ir import Model, Node, Value

#: roles of constant members, strongest first (a constant used in two ways keeps the strongest)
ROLE_ORDER = ("param", "consumer", "stat", "const")


class Unsupported(Exception):
    """Raised by a rule for an attribute value or input it does not handle: the node gets pinned."""


class UnionFind:
    """Union-find over dense ints with path halving; ``union`` keeps the smaller id as the root."""

    __slots__ = ("parent",)

    def __init__(self, n: int = 0) -> None:
        self.parent = list(range(n))

    def add(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return ra


@dataclass
class Link:
    a: int
    ia: np.ndarray
    b: int
    ib: np.ndarray


@dataclass
class Product:
    node: str
    op: str
    target: int
    atoms: list[int]  # outermost first; sizes multiply to the target's size


@dataclass
class Consume:
    """A removed channel of ``value`` (along ``key``) is summed into ``node``'s output."""

    node: Node
    value: Value
    key: int
    kind: str  # "conv" | "gemm" | "matmul" (foldable into a bias) | "dense" (must be 0) | "contract"
    weight: tuple[str, int] | None = None  # (initializer, axis) whose slices are the removed columns
    other: Value | None = None  # contract: the other operand (exact if either side is zero)
    foldable: bool = True
    why_not: str = ""


class Builder:
    """Collects the relations of every node; ``analysis.py`` turns them into spaces and groups."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.graph = model.graph
        self.uf = UnionFind()
        self.keys: dict[tuple[str, int], int] = {}
        self.key_value: list[Value | None] = []
        self.key_axis: list[int] = []
        self.key_label: list[str] = []  # virtual keys: what they are
        self.key_size: list[int | None] = []
        self.key_symbol: list[str | None] = []
        self.links: list[Link] = []
        self.products: list[Product] = []
        self.pins: list[tuple[int, np.ndarray | None, str]] = []
        self.roles: dict[int, str] = {}
        self.stem_keys: list[int] = []
        self.consumes: list[Consume] = []
        self.virtual_keys: dict[tuple[str, str], int] = {}
        self._view_cache: dict[str, tuple[Value, tuple[int, ...]] | None] = {}

    # --- keys -------------------------------------------------------------------------------------
    def k(self, value: Value, axis: int) -> int:
        """The key of ``value``'s axis (negative axes count from the end). The rank must be known."""
        if axis >= 0:  # the common case, a key made before (only valid axes ever get one)
            key = self.keys.get((value.name, axis))
            if key is not None:
                return key
        rank = value.rank
        if rank is None:
            raise Unsupported(f"value {value.name} has unknown rank")
        if not -rank <= axis < rank:
            raise Unsupported(f"axis {axis} out of range for {value.name} of rank {rank}")
        axis %= rank
        ident = (value.name, axis)
        key = self.keys.get(ident)
        if key is None:
            dim = value.shape[axis]
            key = self._new_key(value, axis, "", dim if isinstance(dim, int) else None,
                                dim if isinstance(dim, str) else None)
            self.keys[ident] = key
        return key

    def virtual(self, node: Node, label: str, size: int) -> int:
        """A fresh axis invented by a rule (e.g. the groups of a GroupNormalization), remembered by name."""
        key = self._new_key(None, -1, f"{node.name}:{label}", size, None)
        self.virtual_keys[(node.name, label)] = key
        return key

    def _new_key(self, value: Value | None, axis: int, label: str, size: int | None, symbol: str | None) -> int:
        key = self.uf.add()
        self.key_value.append(value)
        self.key_axis.append(axis)
        self.key_label.append(label)
        self.key_size.append(size)
        self.key_symbol.append(symbol)
        return key

    def size(self, key: int) -> int | None:
        return self.key_size[key]

    def describe(self, key: int) -> str:
        value = self.key_value[key]
        return f"{value.name}[axis {self.key_axis[key]}]" if value is not None else self.key_label[key]

    # --- relations --------------------------------------------------------------------------------
    def same(self, a: int, b: int) -> None:
        sa, sb = self.key_size[a], self.key_size[b]
        if sa is not None and sb is not None and sa != sb:
            raise Unsupported(f"{self.describe(a)} ({sa}) and {self.describe(b)} ({sb}) differ in size")
        if (sa is None) != (sb is None):
            # a symbolic axis meeting a static one: keep them apart, neither may change
            self.pin(a, None, f"{self.describe(a)} meets an axis of unknown size")
            self.pin(b, None, f"{self.describe(b)} meets an axis of unknown size")
            return
        self.uf.union(a, b)

    def same_axes(self, a: Value, ia: int, b: Value, ib: int) -> None:
        self.same(self.k(a, ia), self.k(b, ib))

    def link(self, a: int, ia: np.ndarray, b: int, ib: np.ndarray) -> None:
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        if ia.shape != ib.shape:
            raise Unsupported("link of different lengths")
        sa, sb = self.key_size[a], self.key_size[b]
        if sa is None or sb is None:
            raise Unsupported(f"{self.describe(a)} or {self.describe(b)} has unknown size")
        if ia.size and (ia.min() < 0 or ia.max() >= sa or ib.min() < 0 or ib.max() >= sb):
            raise Unsupported("link index out of range")
        self.links.append(Link(a, ia, b, ib))

    def product(self, node: Node, target: int, atoms: Sequence[int]) -> None:
        atoms = [a for a in atoms if self.key_size[a] != 1]
        total = self.key_size[target]
        sizes = [self.key_size[a] for a in atoms]
        if total is None or any(s is None for s in sizes) or int(np.prod(sizes, dtype=np.int64)) != total:
            raise Unsupported(f"cannot factor {self.describe(target)} into {sizes}")
        if len(atoms) == 1:
            self.same(target, atoms[0])
        elif atoms:
            self.products.append(Product(node.name, node.op_type, target, list(atoms)))

    def pin(self, key: int, idx: np.ndarray | None, reason: str) -> None:
        self.pins.append((key, None if idx is None else np.asarray(idx, dtype=np.int64), reason))

    def pin_value(self, value: Value | None, reason: str) -> None:
        if value is None or value.rank is None:
            return
        for axis in range(value.rank):
            self.pin(self.k(value, axis), None, reason)

    def pin_node(self, node: Node, reason: str) -> None:
        """Nothing that touches ``node`` may change: every axis of every input and output."""
        for value in [*node.inputs, *node.outputs, *node.implicit_inputs]:
            self.pin_value(value, reason)

    def stem(self, value: Value, axis: int) -> None:
        self.stem_keys.append(self.k(value, axis))

    def consume(self, node: Node, value: Value, axis: int, kind: str, **extra) -> None:
        self.consumes.append(Consume(node, value, self.k(value, axis), kind, **extra))

    # --- constants ----------------------------------------------------------------------------------
    def view(self, value: Value | None) -> tuple[Value, tuple[int, ...]] | None:
        """The constant behind ``value`` through Identity/Transpose chains: ``(constant, perm)`` where axis i of
        ``value`` is axis ``perm[i]`` of the constant; None when ``value`` is computed from activations."""
        if value is None:
            return None
        if value.name in self._view_cache:
            return self._view_cache[value.name]
        result = None
        if value.const is not None:
            result = (value, tuple(range(len(value.const.shape))))
        else:
            node = value.producer
            if node is not None and node.domain in ("", "ai.onnx") and node.inputs and node.inputs[0] is not None:
                inner = self.view(node.inputs[0]) if node.op_type in ("Identity", "Transpose") else None
                if inner is not None:
                    const, perm = inner
                    if node.op_type == "Identity":
                        result = inner
                    else:
                        order = node.attr("perm") or list(range(len(perm)))[::-1]
                        result = (const, tuple(perm[p] for p in order))
        self._view_cache[value.name] = result
        return result

    def role(self, value: Value | None, axis: int, role: str) -> None:
        """Mark the constant behind ``value`` (axis ``axis`` of ``value``) with ``role``."""
        view = self.view(value)
        if view is None:
            return
        const, perm = view
        if const.rank is None:
            return
        key = self.k(const, perm[axis % len(perm)])
        old = self.roles.get(key)
        if old is None or ROLE_ORDER.index(role) < ROLE_ORDER.index(old):
            self.roles[key] = role

    def const_array(self, value: Value | None) -> np.ndarray | None:
        return None if value is None or value.const is None else value.const.array


# --------------------------------------------------------------------------------------------------
# reshape factorisation


def reshape_blocks(src: Sequence, dst: Sequence) -> list[tuple[list[int], list[int]]]:
    """Split a reshape ``src -> dst`` into blocks of axes with equal products (size-1 axes are left out).

    Symbolic dims must map one to one (the same symbol on both sides). Raises ``Unsupported`` otherwise.
    """
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    n, m = len(src), len(dst)
    while True:
        while i < n and src[i] == 1:
            i += 1
        while j < m and dst[j] == 1:
            j += 1
        if i == n and j == m:
            return blocks
        if i == n or j == m:
            raise Unsupported(f"reshape {tuple(src)} -> {tuple(dst)} does not factor")
        a, b = src[i], dst[j]
        if not isinstance(a, int) or not isinstance(b, int):
            if a == b and a is not None:
                blocks.append(([i], [j]))
                i += 1
                j += 1
                continue
            raise Unsupported(f"reshape {tuple(src)} -> {tuple(dst)} mixes unknown dims")
        ins, outs, pa, pb = [i], [j], a, b
        while pa != pb:
            if pa < pb:
                i += 1
                if i == n or not isinstance(src[i], int):
                    raise Unsupported(f"reshape {tuple(src)} -> {tuple(dst)} does not factor")
                pa *= src[i]
                ins.append(i)
            else:
                j += 1
                if j == m or not isinstance(dst[j], int):
                    raise Unsupported(f"reshape {tuple(src)} -> {tuple(dst)} does not factor")
                pb *= dst[j]
                outs.append(j)
        blocks.append((ins, outs))
        i += 1
        j += 1


def block_atoms(sizes_a: Sequence[int], sizes_b: Sequence[int]) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """Common refinement of two row-major factorisations of one extent.

    Returns ``(atom sizes, atoms of each a-axis, atoms of each b-axis)``, atoms outermost first. The boundaries
    of both sides must form a divisibility chain (``(6, 4) -> (4, 6)`` does not, and raises ``Unsupported``).
    """

    def strides(sizes: Sequence[int]) -> list[int]:
        out, acc = [], 1
        for s in reversed(sizes):
            out.append(acc)
            acc *= s
        return out[::-1]  # stride of each axis, outermost first

    total = int(np.prod(sizes_a, dtype=np.int64))
    points = sorted({*strides(sizes_a), *strides(sizes_b), total})
    for lo, hi in zip(points, points[1:]):
        if hi % lo:
            raise Unsupported(f"reshape {tuple(sizes_a)} -> {tuple(sizes_b)} regroups elements")
    # atom t spans strides [points[t], points[t+1]); list atoms outermost first
    atom_lo = points[:-1][::-1]
    atom_size = [points[t + 1] // points[t] for t in range(len(points) - 1)][::-1]

    def cover(sizes: Sequence[int]) -> list[list[int]]:
        res = []
        for size, stride in zip(sizes, strides(sizes)):
            res.append([t for t, lo in enumerate(atom_lo) if stride <= lo < stride * size])
        return res

    return atom_size, cover(sizes_a), cover(sizes_b)


def relate_reshape(b: Builder, node: Node, src: Value, dst: Value) -> None:
    """Relate the axes of ``src`` and ``dst`` (same elements, different shape) through shared atoms."""
    if src.shape is None or dst.shape is None:
        raise Unsupported("unknown shape")
    for ins, outs in reshape_blocks(src.shape, dst.shape):
        if len(ins) == 1 and len(outs) == 1:
            b.same(b.k(src, ins[0]), b.k(dst, outs[0]))
            continue
        sizes_a = [src.shape[i] for i in ins]
        sizes_b = [dst.shape[j] for j in outs]
        atom_size, cover_a, cover_b = block_atoms(sizes_a, sizes_b)
        atoms = [b.virtual(node, f"atom{ins[0]}.{t}", s) for t, s in enumerate(atom_size)]
        for value, axes, covers in ((src, ins, cover_a), (dst, outs, cover_b)):
            for axis, cov in zip(axes, covers):
                b.product(node, b.k(value, axis), [atoms[t] for t in cov])
