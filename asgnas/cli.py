"""``asgnas-opt``: run a pass pipeline over an ONNX model.

    asgnas-opt MODEL.onnx --passes "p1,p2{key=value}" [-o OUT.onnx] [--report REPORT.json] [--print-ir-after-all]
    asgnas-opt --list-passes

Exit status: 0 success, 1 ``verify`` found a difference above its tolerance, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from asgnas.errors import AsgnasError

PROG = "asgnas-opt"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and status 2, like every other bad input
        raise AsgnasError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog=PROG, description="Compiler-style passes over ONNX models.")
    parser.add_argument("model", nargs="?", help="input ONNX file (never modified)")
    parser.add_argument("--passes", "-p", help='pipeline, e.g. "shape-infer,cost,verify{rtol=1e-5}"')
    parser.add_argument("-o", "--output", help="write the resulting model here (atomically)")
    parser.add_argument("--report", help="write a JSON report of every pass here")
    parser.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    parser.add_argument("--print-ir-after-all", action="store_true", help="print the IR after each pass")
    parser.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                        help="write weights to OUT.onnx.data (auto: only above 1.8 GB)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def _register_all_passes() -> None:
    import asgnas.bridge.train_pass  # noqa: F401  (the train pass lives above the pass layer: it needs torch)
    import asgnas.passes  # noqa: F401


def list_passes() -> str:
    from asgnas.passes import PASS_REGISTRY

    _register_all_passes()

    width = max(len(name) for name in PASS_REGISTRY)
    lines = []
    for name in sorted(PASS_REGISTRY):
        cls = PASS_REGISTRY[name]
        lines.append(f"{name:<{width}}  {cls.summary}")
        for option in cls.options:
            setting = f"{option.name}={option.default}"
            lines.append(f"{'':<{width}}    {setting:<20} {option.help}")
    return "\n".join(lines)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _write_json_atomically(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=str)
    os.replace(tmp, path)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_passes:
        print(list_passes())
        return 0
    if not args.model:
        raise AsgnasError("no input model given")
    if not args.passes:
        raise AsgnasError("no --passes given (see --list-passes)")
    model_path = Path(args.model)
    if args.output and _same_file(model_path, Path(args.output)):
        raise AsgnasError("refusing to overwrite the input model; choose another -o", file=args.model)

    from asgnas.ir import load_model, save_model
    from asgnas.passes import PassContext, PassManager, VerifyFailed, parse_pipeline

    _register_all_passes()
    passes = parse_pipeline(args.passes)  # before loading: a typo fails fast
    model = load_model(model_path)
    manager = PassManager(passes, print_ir_after_all=args.print_ir_after_all)
    ctx = PassContext(quiet=args.quiet, log=(lambda _: None) if args.quiet else print)
    status = 0
    try:
        report = manager.run(model, ctx)
    except VerifyFailed as err:
        report, status = manager.report, 1
        print(f"{PROG}: {err.with_context(file=str(model_path))}", file=sys.stderr)
    finally:
        if args.report:
            _write_json_atomically(manager.report, Path(args.report))
    if args.output and status == 0:
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        save_model(model, args.output, external_data=external)
    if not args.quiet:
        summary = ", ".join(f"{p['name']} {p['seconds']:.3f}s" for p in report["passes"])
        print(f"{PROG}: {model_path}: {summary}" + (f" -> {args.output}" if args.output and status == 0 else ""))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except AsgnasError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
