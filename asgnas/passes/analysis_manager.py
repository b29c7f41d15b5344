"""Analyses computed on demand, cached, and invalidated by what a rewrite preserves (after MLIR's AnalysisManager).

An analysis is registered by key (``register_analysis``) with the function that computes it and the analyses it
``requires`` (computed first, read back through the manager). ``AnalysisManager(model).get(key)`` returns the cached
result or computes it; ``store`` caches a result computed by other means (an analysis pass run with its options, the
exporter's ``param_map``, ``cost``) beside them. The cache is the IR's plain ``model.analyses`` dict, so a manager is
a cheap view: any two over one model agree. Nothing else should write or drop entries of that dict.

Passes declare ``requires`` (provided by the ``PassManager`` before ``run``) and ``preserves``: after a pass, every
cached analysis it does not preserve is dropped, and so is every analysis built on a dropped one (it ``requires``
or ``stores`` it). A rewrite preserves nothing unless it says so; an analysis pass preserves ``ALL_ANALYSES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Container

from asgnas.ir import Model


class _AllAnalyses:
    """``preserves`` of a pass that leaves every analysis valid (it contains every key)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ALL_ANALYSES"


ALL_ANALYSES = _AllAnalyses()
#: what a pass may declare in ``preserves``: a set of analysis keys, or ``ALL_ANALYSES``
Preserved = Container[str]


@dataclass(frozen=True)
class AnalysisInfo:
    key: str
    compute: Callable[[Model, "AnalysisManager"], Any]
    #: analyses computed before this one (its ``compute`` reads them through the manager); dropping one drops it
    requires: tuple[str, ...] = ()
    #: further keys ``compute`` stores itself (``search_space`` stores its three parts): all must be cached too
    stores: tuple[str, ...] = ()


ANALYSIS_REGISTRY: dict[str, AnalysisInfo] = {}


def register_analysis(key: str, compute: Callable[[Model, "AnalysisManager"], Any], *,
                      requires: tuple[str, ...] = (), stores: tuple[str, ...] = ()) -> None:
    """Make ``key`` computable on demand. ``compute(model, manager)`` returns the result; the manager caches it."""
    if key in ANALYSIS_REGISTRY:
        raise ValueError(f"analysis {key} registered twice")
    ANALYSIS_REGISTRY[key] = AnalysisInfo(key, compute, tuple(requires), tuple(stores))


class AnalysisManager:
    """The analyses of one model: ``get`` computes on demand and caches in ``model.analyses``."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def cached(self, key: str) -> Any | None:
        """The cached result of ``key``, or None (never computes)."""
        return self.model.analyses.get(key)

    def get(self, key: str) -> Any:
        """The result of analysis ``key``: cached (with its ``requires`` and ``stores``), or computed now (its
        ``requires`` first) and cached."""
        info = ANALYSIS_REGISTRY.get(key)
        if info is None:
            raise LookupError(f"no analysis registered as '{key}' (known: {', '.join(sorted(ANALYSIS_REGISTRY))})")
        cache = self.model.analyses
        if key in cache and all(dep in cache for dep in info.requires + info.stores):
            return cache[key]
        # a requirement or part went missing (popped by hand): what was built on the old result goes too
        self._drop({key})
        for required in info.requires:
            self.get(required)
        result = cache[key] = info.compute(self.model, self)
        return result

    def store(self, key: str, result: Any) -> None:
        """Cache ``result`` as ``key``, computed by other means on the IR as it is (an analysis pass run with its
        options, ``search_space``'s parts, the exporter's ``param_map``); what is cached beside it stays."""
        self.model.analyses[key] = result

    def forget(self, *keys: str) -> None:
        """Drop ``keys`` (the IR changed under them) and every analysis built on them, cached or not."""
        self._drop(set(keys))

    def invalidate(self, preserved: Preserved) -> None:
        """Drop every cached analysis not in ``preserved``, and every one built on a dropped one."""
        self._drop({key for key in self.model.analyses if key not in preserved})

    def _drop(self, dropped: set[str]) -> None:
        """Drop ``dropped`` and, to a fixed point, every cached analysis that ``requires`` or ``stores`` one."""
        cache = self.model.analyses
        grew = bool(dropped)
        while grew:
            built_on = {key for key in cache if key not in dropped and key in ANALYSIS_REGISTRY
                        and dropped.intersection(ANALYSIS_REGISTRY[key].requires + ANALYSIS_REGISTRY[key].stores)}
            dropped |= built_on
            grew = bool(built_on)
        for key in dropped:
            cache.pop(key, None)
