"""The package's import structure, read statically (ast): no import cycle between modules and no import from a
lower layer into a higher one.

Every import counts: module level, inside functions (lazy imports for fast start-up or torch-free registration)
and under ``TYPE_CHECKING``. A lazy import hides a circle from Python's import machinery but not from the reader,
who still has to understand both modules together, so it is no exception here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asgnas"

#: What each layer may import from the package (besides itself). ``support`` is the small shared modules
#: (errors, progress, data, runtime) below everything but ``ir``; the entry points (api, cli, demo, the package
#: itself) may import anything.
LAYER_MAY_IMPORT = {
    "errors": set(),
    "ir": {"errors"},
    "support": {"errors", "ir", "support"},
    "passes": {"errors", "ir", "support"},
    "optim": set(),
    "zoo": set(),
    "bridge": {"errors", "ir", "support", "passes", "optim"},
}
SUPPORT = {"progress", "data", "runtime"}
ENTRY_POINTS = {"asgnas", "asgnas.api", "asgnas.cli", "asgnas.demo"}
#: Third-party packages ``asgnas.optim`` may use (the optimizers depend on torch only; numpy for bookkeeping).
OPTIM_THIRD_PARTY = {"torch", "numpy"}

#: Known violations, each with the reason it stays; the test fails on any edge not listed here.
ALLOWED_EDGES: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules, top-level third-party names) that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours: set[str] = set()
    theirs: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the submodule when there is one, else a name of ``pkg``
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            if target.split(".")[0] != "asgnas":
                theirs.add(target.split(".")[0])
                continue
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                ours.add(target)
    return ours, theirs


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    ours, theirs = {}, {}
    for name, path in modules.items():
        ours[name], theirs[name] = _imports(name, path, modules)
    return ours, theirs


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str) -> str | None:
    if module in ENTRY_POINTS:
        return None
    top = module.split(".")[1]
    return "support" if top in SUPPORT else top


def test_the_walker_sees_the_package() -> None:
    ours, theirs = _graph()
    assert len(ours) > 60
    # a module-level, a relative, a lazy (function-local) and a from-package-import-submodule edge
    assert "asgnas.errors" in ours["asgnas.passes.base"]
    assert "asgnas.optim.h2spg" in ours["asgnas.optim"]
    assert "asgnas.bridge.train_pass" in ours["asgnas.cli"]
    assert "asgnas.passes.cost" in ours["asgnas.passes"]
    assert "torch" in theirs["asgnas.optim.hybrid"]


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    ours, _ = _graph()
    graph = {m: {t for t in targets if (m, t) not in ALLOWED_EDGES} for m, targets in ours.items()}
    assert _cycles(graph) == []


def test_no_upward_import() -> None:
    ours, _ = _graph()
    upward = []
    for module, targets in sorted(ours.items()):
        layer = _layer(module)
        if layer is None:
            continue
        for target in sorted(targets):
            target_layer = _layer(target)
            if target_layer != layer and target_layer not in LAYER_MAY_IMPORT[layer] \
                    and (module, target) not in ALLOWED_EDGES:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_optim_depends_on_torch_only() -> None:
    _, theirs = _graph()
    used = set().union(*(names for module, names in theirs.items() if module.startswith("asgnas.optim")))
    assert used - set(sys.stdlib_module_names) - {"__future__"} <= OPTIM_THIRD_PARTY
    assert "torch" in used


def test_ir_needs_neither_torch_nor_onnxruntime() -> None:
    _, theirs = _graph()
    used = set().union(*(names for module, names in theirs.items() if module.startswith("asgnas.ir")))
    assert not used & {"torch", "onnxruntime"}
    assert "onnx" in used
