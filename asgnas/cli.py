"""``asgnas-opt``: run a pass pipeline over an ONNX model.

    asgnas-opt MODEL.onnx --passes "p1,p2{key=value}" [-o OUT.onnx] [--report REPORT.json] [--print-ir-after-all]
    asgnas-opt --list-passes | --list-ops | --explain-op OP | --version | --help (the passes' one-line summaries)

Exit status: 0 success; 1 the result is not to be trusted: ``verify`` found a difference above its tolerance or
training diverged (no model written), or training did not learn (the model is still written, the verdict in the
report); 2 bad input (one line on stderr); 3 internal error (one line; ``ASGNAS_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

from asgnas.bridge.distributed import finish, rank, world_size
from asgnas.errors import AsgnasError, AsgnasWarning, ResultRejected

PROG = "asgnas-opt"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and status 2, like every other bad input
        raise AsgnasError(message)

    def format_help(self) -> str:  # the pass list only when help is shown: registering them imports every pass
        return f"{super().format_help()}\npasses (--list-passes adds their options):\n{pass_summaries()}\n"


def version() -> str:
    """The installed distribution's version (package metadata); the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("asgnas")
    except PackageNotFoundError:
        from asgnas import __version__

        return __version__


def pass_summaries() -> str:
    """One line per registered pass: name and summary (``--help``; ``--list-passes`` adds the options)."""
    from asgnas.passes import PASS_REGISTRY

    _register_all_passes()
    width = max(len(name) for name in PASS_REGISTRY)
    return "\n".join(f"  {name:<{width}}  {PASS_REGISTRY[name].summary}" for name in sorted(PASS_REGISTRY))


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Compiler-style passes over ONNX models.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "example:\n"
            f'  {PROG} model.onnx --passes "search-space,zero-groups{{fraction=0.5}},construct-subnet,verify" '
            "-o slim.onnx --report r.json\n"
            "exit status: 0 ok, 1 verify found a difference or training diverged (no model written) or did not\n"
            "learn (model written), 2 bad input (one line on stderr), 3 internal error"
        ),
    )
    parser.add_argument("model", nargs="?", help="input ONNX file (never modified)")
    parser.add_argument("--passes", "-p", help='pipeline, e.g. "shape-infer,cost,verify{rtol=1e-5}"')
    parser.add_argument("-o", "--output", help="write the resulting model here (atomically; the folder must exist)")
    parser.add_argument("--report", help="write a JSON report of every pass here (the folder must exist)")
    parser.add_argument("--list-passes", action="store_true", help="list the registered passes and exit")
    parser.add_argument("--list-ops", action="store_true", help="list the ONNX ops asgnas knows and exit")
    parser.add_argument("--explain-op", metavar="OP", help="say what asgnas does with ONNX op OP and exit")
    parser.add_argument("--print-ir-after-all", action="store_true", help="print the IR after each pass")
    parser.add_argument("--external-data", choices=("auto", "yes", "no"), default="auto",
                        help="write weights to OUT.onnx.data (auto: only above 1.8 GB)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
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


class InternalError(Exception):
    """An unexpected exception inside a pass: a bug, reported as one line with the pass that raised it."""

    def __init__(self, pass_name: str | None, err: BaseException) -> None:
        self.pass_name, self.err = pass_name, err
        where = f"pass {pass_name}: " if pass_name else ""
        super().__init__(f"{where}{type(err).__name__}: {err}")


def _emit(text: str) -> None:
    """print() that outlives a closed stdout (`| head`): later output is dropped and the job still finishes."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that writes (and the final flush) after a closed pipe do not raise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _input_files(model_path: Path) -> list[Path]:
    """The input model and the external-data files it names (the proto alone is read: weights stay on disk)."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    from asgnas.ir.io import all_tensors

    files = [model_path]
    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # unreadable: load_model reports it properly later
        return files
    for tensor in all_tensors(proto):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location:
                files.append(model_path.parent / location)
    return files


def _check_no_clobbering(model_path: Path, output: str | None, report: str | None) -> None:
    """No output may land on the input (model or external data) or on another output."""
    targets = [(flag, Path(path)) for flag, path in (("-o", output), ("--report", report)) if path]
    if output:
        targets.append(("-o", Path(f"{output}.data")))  # where external data would go
    if output and report and any(_same_file(path, Path(report)) for flag, path in targets if flag == "-o"):
        raise AsgnasError("refusing to overwrite: --report names a file that -o writes (the model or its "
                          "external data OUT.data)", file=report)
    if not any(path.exists() for _, path in targets):
        return  # nothing there yet to collide with: no need to read the input here
    for known in _input_files(model_path):
        for flag, path in targets:
            if _same_file(known, path):
                raise AsgnasError(f"refusing to overwrite the input model's file {known}; choose another {flag}",
                                  file=str(model_path))


def _check_writable_dir(path: Path) -> None:
    """Fail before any pass runs (training may take minutes) when an output could not be written."""
    if path.is_dir():
        raise AsgnasError("cannot write here: is a directory (name a file)", file=str(path))
    parent = path.parent
    if parent.is_dir():
        return
    problem = "not a directory" if parent.exists() or any(p.is_file() for p in parent.parents) else "no such directory"
    raise AsgnasError(f"cannot write here: {problem}: {parent}", file=str(path))


def _strict_json(value: Any) -> Any:
    """Reports must be standard JSON: NaN/inf (e.g. an optimizer metric before it is defined) become null."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json_atomically(data: dict, path: Path) -> None:
    from asgnas.ir.io import write_text_atomically

    write_text_atomically(path, json.dumps(_strict_json(data), indent=2, default=str, allow_nan=False))


def _write_error(path: str, err: OSError) -> AsgnasError:
    return AsgnasError(f"cannot write: {err.strerror or err}", file=path)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_passes:
        _emit(list_passes())
        return 0
    if args.list_ops or args.explain_op:
        from asgnas.passes.op_registry import explain_op, list_ops

        _emit(explain_op(args.explain_op) if args.explain_op else list_ops())
        return 0
    if not args.model:
        raise AsgnasError("no input model given")
    if not args.passes:
        raise AsgnasError("no --passes given (see --list-passes)")
    for flag, value in (("-o", args.output), ("--report", args.report)):
        if value == "":
            raise AsgnasError(f"{flag} needs a file name, got an empty one")
    primary = rank() == 0  # under torchrun every rank runs the pipeline; rank 0 alone logs and writes
    if not primary:
        _silence_stdout()
    model_path = Path(args.model)
    _check_no_clobbering(model_path, args.output, args.report)
    for out in filter(None, (args.output, args.report)):
        _check_writable_dir(Path(out))

    from asgnas.ir import load_model, save_model
    from asgnas.passes import PassContext, PassManager, parse_pipeline

    _register_all_passes()
    passes = parse_pipeline(args.passes)  # before loading: a typo fails fast
    model = load_model(model_path)
    manager = PassManager(passes, print_ir_after_all=args.print_ir_after_all, printer=_emit)
    ctx = PassContext(quiet=args.quiet, log=(lambda _: None) if args.quiet else _emit, writes_files=primary,
                      report_path=args.report, output_path=args.output)
    status = 0
    try:
        report = manager.run(model, ctx)
    except ResultRejected as err:  # verify's mismatch, diverged training: no model
        report, status = manager.report, 1
        print(f"{PROG}: {_one_line(str(err.with_context(file=str(model_path))))}", file=sys.stderr)
    except (AsgnasError, BrokenPipeError):
        raise
    except MemoryError:  # what the model asks for does not fit this machine (e.g. astronomical dims)
        raise AsgnasError("out of memory", file=str(model_path)) from None
    except Exception as err:
        done = len(manager.report.get("passes", ()))
        raise InternalError(passes[done].name if done < len(passes) else None, err) from err
    finally:
        if args.report and primary:
            try:
                _write_json_atomically(manager.report, Path(args.report))
            except OSError as err:
                raise _write_error(args.report, err) from None
    if args.output and status == 0 and primary:
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        try:
            save_model(model, args.output, external_data=external)
        except OSError as err:
            raise _write_error(args.output, err) from None
    written = bool(args.output) and status == 0
    if status == 0 and ctx.failures:  # e.g. training did not learn: the model is written, the status says so
        status = 1
        for reason in ctx.failures:
            print(f"{PROG}: {_one_line(reason)}", file=sys.stderr)
    if not args.quiet:
        summary = ", ".join(f"{p['name']} {p['seconds']:.3f}s" for p in report["passes"])
        _emit(f"{PROG}: {model_path}: {summary}" + (f" -> {args.output}" if written else ""))
    return status


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Our warnings are one line like our errors; other libraries' keep Python's format."""
    if issubclass(category, AsgnasWarning):
        print(f"{PROG}: warning: {_one_line(str(message))}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


class Terminated(BaseException):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so that every ``finally`` removes its temporary files."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    shown_by, warnings.showwarning = warnings.showwarning, _show_warning
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        status = finish(_main(argv))  # under torchrun: every rank ends with the same status
        if world_size() > 1:
            _exit_without_teardown(status)
        return status
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 143
    finally:
        warnings.showwarning = shown_by
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _exit_without_teardown(status: int) -> None:
    """End a torchrun rank now. Its outputs are written (atomically) and the process group is left, but the
    interpreter's teardown can still abort the process (SIGABRT, "terminate called without an active exception":
    a C++ thread of torch's distributed runtime destroyed while running), which torchrun then reports as a failure
    of the whole job; nothing that teardown would do is needed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _main(argv: Sequence[str] | None) -> int:
    try:
        return run(argv)
    except AsgnasError as err:
        if rank() == 0:  # under torchrun the other ranks met the same input
            print(f"{PROG}: error: {_one_line(str(err))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed while a pass printed outside _emit: the job did not finish
        _silence_stdout()
        return 141
    except Exception as err:
        internal = err if isinstance(err, InternalError) else InternalError(None, err)
        if os.environ.get("ASGNAS_TRACEBACK"):
            raise internal.err
        print(f"{PROG}: internal error (a bug; ASGNAS_TRACEBACK=1 shows where): {_one_line(str(internal))}",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
