"""Pipelines: parse ``"p1,p2{key=value,key=value}"`` and run the passes in order with timing and a report."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from asgnas.errors import AsgnasError
from asgnas.ir import Model, format_model
from asgnas.passes.analysis_manager import AnalysisManager
from asgnas.passes.base import PASS_REGISTRY, Pass, PassContext


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``{...}``."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise AsgnasError(f"unbalanced '}}' in pipeline '{text}'")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise AsgnasError(f"unbalanced '{{' in pipeline '{text}'")
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_pipeline(text: str) -> list[Pass]:
    """``"shape-infer,cost,verify{rtol=1e-5}"`` -> pass instances. Unknown names/options raise AsgnasError."""
    passes = []
    for item in _split_top_level(text):
        name, _, rest = item.partition("{")
        name = name.strip()
        if rest and not rest.endswith("}"):
            raise AsgnasError(f"malformed options '{{{rest}'", pass_name=name)
        cls = PASS_REGISTRY.get(name)
        if cls is None:
            raise AsgnasError(f"unknown pass (see --list-passes)", pass_name=name)
        raw: dict[str, str] = {}
        for assignment in filter(None, (a.strip() for a in rest[:-1].split(","))) if rest else ():
            key, eq, value = assignment.partition("=")
            if not eq:
                raise AsgnasError(f"option '{assignment}' is not key=value", pass_name=name)
            raw[key.strip()] = value.strip()
        passes.append(cls.from_text_options(raw))
    if not passes:
        raise AsgnasError("empty pass pipeline")
    return passes


class PassManager:
    """Runs passes over one model, collecting ``{"name", "seconds", <report_key>: results}`` per pass."""

    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        print_ir_after_all: bool = False,
        printer: Callable[[str], None] = print,
    ) -> None:
        self.passes = list(passes)
        self.print_ir_after_all = print_ir_after_all
        self.printer = printer
        self.report: dict[str, Any] = {}

    def run(self, model: Model, ctx: PassContext | None = None) -> dict[str, Any]:
        ctx = ctx or PassContext()
        if ctx.input_model is None:
            ctx.input_model = model.copy()
        report: dict[str, Any] = {"model": model.source, "passes": []}
        self.report = report  # stays readable when a pass fails (the CLI still writes it)
        analyses = AnalysisManager(model)
        for pass_ in self.passes:
            start = time.perf_counter()
            try:
                for key in pass_.requires:
                    analyses.get(key)
                results = pass_.run(model, ctx)
            except AsgnasError as err:
                entry = {"name": pass_.name, "seconds": round(time.perf_counter() - start, 6), "error": str(err)}
                if pass_.report_key in ctx.results:
                    entry[pass_.report_key] = report[pass_.report_key] = ctx.results[pass_.report_key]
                report["passes"].append(entry)
                raise err.with_context(pass_name=pass_.name, file=model.source)
            seconds = time.perf_counter() - start
            analyses.invalidate(pass_.preserves)
            entry: dict[str, Any] = {"name": pass_.name, "seconds": round(seconds, 6)}
            if results is not None:
                entry[pass_.report_key] = results
                ctx.results[pass_.report_key] = results
            report.update(ctx.results)  # a pass may publish extra keys too (construct-subnet: "cost")
            report["passes"].append(entry)
            if self.print_ir_after_all:
                self.printer(f"// ----- IR after {pass_.describe()} -----\n{format_model(model)}")
        return report
