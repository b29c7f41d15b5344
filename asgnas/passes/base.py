"""Pass infrastructure: ``Pass``, its typed options, the registry, and the context a pipeline shares.

A pass is a unit in the LLVM/MLIR sense: it has a registered name, a one-line summary, typed options, and a
``run(model, ctx)`` that returns its results (a JSON-able dict, reported under the pass's ``report_key``).
A pass declares the analyses it ``requires`` (the pass manager provides them before ``run``: read them with
``AnalysisManager(model).get(key)``) and those it ``preserves`` (default: none; analysis passes preserve
``ALL_ANALYSES``); rewrite passes change the IR and must leave it valid (``asgnas.passes.analysis_manager``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.analysis_manager import Preserved

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One pass option: ``name`` as written in a pipeline (``pass{name=value}``)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None  # smallest accepted value of a numeric option

    def parse(self, text: str, pass_name: str) -> Any:
        try:
            if self.type is bool:
                lowered = text.lower()
                if lowered not in _TRUE | _FALSE:
                    raise ValueError(text)
                value: Any = lowered in _TRUE
            else:
                value = self.type(text)
        except ValueError:
            raise AsgnasError(
                f"option '{self.name}' expects {self.type.__name__}, got '{text}'", pass_name=pass_name
            ) from None
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison below
            raise AsgnasError(f"option '{self.name}' must be a finite number, got '{text}'", pass_name=pass_name)
        if self.choices is not None and value not in self.choices:
            allowed = "|".join(str(c) for c in self.choices)
            raise AsgnasError(f"option '{self.name}' must be one of {allowed}, got '{text}'", pass_name=pass_name)
        if self.minimum is not None and not isinstance(value, str) and value < self.minimum:  # str: a keyword (auto)
            raise AsgnasError(f"option '{self.name}' must be >= {self.minimum:g}, got '{text}'", pass_name=pass_name)
        return value


@dataclass(frozen=True)
class ValidationData:
    """Held-out data a pass trained with, published so a later pass can measure the model it builds on it."""

    x: Any
    y: Any
    output: str | None  # the model output the accuracy is read from
    report_key: str  # whose results receive ``val_accuracy_slim``


@dataclass
class PassContext:
    """What the passes of one pipeline share besides the IR."""

    input_model: Model | None = None  # the pipeline's input, untouched (default reference of ``verify``)
    checkpoints: dict[str, Model] = field(default_factory=dict)  # named snapshots, e.g. "group-sparse"
    reference_name: str | None = None  # checkpoint ``verify`` compares against by default
    results: dict[str, Any] = field(default_factory=dict)  # report key -> latest results (top level of the report)
    validation: ValidationData | None = None  # published by ``train``; construct-subnet measures the slim model
    # why the result is doubtful though every pass ran (train's "not learning"): outputs are written, exit status 1
    failures: list[str] = field(default_factory=list)
    quiet: bool = False
    log: Callable[[str], None] = print
    writes_files: bool = True  # False on the ranks other than 0 of a multi-process run: rank 0 alone writes
    report_path: str | None = None  # the CLI's --report and -o: passes write side files beside them (train's curve)
    output_path: str | None = None

    def checkpoint(self, name: str, model: Model, *, as_reference: bool = False) -> None:
        self.checkpoints[name] = model.copy()
        if as_reference:
            self.reference_name = name

    def reference(self) -> Model:
        if self.reference_name is not None:
            return self.checkpoints[self.reference_name]
        if self.input_model is None:
            raise AsgnasError("no reference model in this pipeline")
        return self.input_model


class Pass:
    """Base class. Subclasses set ``name``, ``summary``, ``options``, and implement ``run``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    #: analyses (registered keys) the pass manager computes, or finds cached, before ``run``
    requires: ClassVar[tuple[str, ...]] = ()
    #: analyses that stay valid after this pass: none by default (a rewrite); ``ALL_ANALYSES`` for analysis passes
    preserves: ClassVar[Preserved] = frozenset()

    def __init__(self, **values: Any) -> None:
        known = {o.name: o for o in self.options}
        for key in values:
            if key not in known:
                raise AsgnasError(f"unknown option '{key}' (known: {', '.join(known) or 'none'})", pass_name=self.name)
        self.config = {o.name: values.get(o.name, o.default) for o in self.options}

    @classmethod
    def from_text_options(cls, raw: dict[str, str]) -> "Pass":
        known = {o.name: o for o in cls.options}
        parsed = {}
        for key, text in raw.items():
            if key not in known:
                raise AsgnasError(f"unknown option '{key}' (known: {', '.join(known) or 'none'})", pass_name=cls.name)
            parsed[key] = known[key].parse(text, cls.name)
        return cls(**parsed)

    @property
    def report_key(self) -> str:
        return self.name

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any] | None:
        raise NotImplementedError

    def describe(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.config.items() if v is not None)
        return f"{self.name}{{{opts}}}" if opts else self.name


PASS_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by name to pipelines and ``--list-passes``."""
    if cls.name in PASS_REGISTRY:
        raise ValueError(f"pass {cls.name} registered twice")
    PASS_REGISTRY[cls.name] = cls
    return cls
