"""The train pass under torchrun: 2 CPU processes (gloo) choose the sub-network a single process chooses for the same
global batches, and rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from onnx import TensorProto, helper, numpy_helper

from asgnas.cli import main

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

PIPELINE = ("search-space,train{{data=npz:{data},epochs=3,target-sparsity=2,batch-size=39,lr=0.1,quiet=true}},"
            "construct-subnet,verify")

#: torchrun runs the CLI through this, which logs (rank, what) for every file the CLI writes
LAUNCHER = textwrap.dedent("""
    import os, sys
    import asgnas.cli as cli
    import asgnas.ir as ir

    def logged(write, what):
        def call(*args, **kwargs):
            with open(os.environ["WRITES_LOG"], "a") as log:
                log.write(f"{os.environ['RANK']} {what}\\n")
            return write(*args, **kwargs)
        return call

    ir.save_model = logged(ir.save_model, "model")
    cli._write_json_atomically = logged(cli._write_json_atomically, "report")
    sys.exit(cli.main(sys.argv[1:]))
""")


def _branchy_net_with_bn() -> onnx.ModelProto:
    """Conv+BN stem, three summed Conv+BN branches (the removal structures), pooled linear head; symbolic batch.
    BatchNorm everywhere: the ranks' batch statistics must be the global batch's."""
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def tensor(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(x: str, out: str, cin: int, k: int, name: str) -> None:
        weight = tensor(f"{name}.w", rng.normal(0, (2.0 / (cin * k * k)) ** 0.5, (8, cin, k, k)))
        nodes.append(helper.make_node("Conv", [x, weight, tensor(f"{name}.b", np.zeros(8))], [f"{name}.c"],
                                      pads=[k // 2] * 4, name=name))
        stats = [tensor(f"{name}.{s}", v) for s, v in (("g", 1 + 0.1 * rng.normal(size=8)),
                                                        ("beta", 0.1 * rng.normal(size=8)),
                                                        ("mean", np.zeros(8)), ("var", np.ones(8)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.c", *stats], [out], name=f"{name}.bn"))

    conv_bn("x", "s", 1, 3, "stem")
    nodes.append(helper.make_node("Relu", ["s"], ["sr"]))
    for name, k in (("a", 3), ("b", 1), ("c", 3)):
        conv_bn("sr", name, 8, k, name)
    nodes += [helper.make_node("Sum", ["a", "b", "c"], ["abc"]), helper.make_node("Relu", ["abc"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", tensor("head.w", rng.normal(0, 0.5, (4, 8))),
                                        tensor("head.b", np.zeros(4))], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _clusters(path: Path) -> None:
    """4 classes of Gaussian clusters; 190 training samples: batches of 39 (shards of 19 and 20), the last of 34."""
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 1, 8, 8))
    y = rng.integers(0, 4, 250)
    x = (centers[y] + 0.8 * rng.normal(size=(250, 1, 8, 8))).astype(np.float32)
    np.savez(path, x=x[:190], y=y[:190], x_val=x[190:], y_val=y[190:])


def _selection(report: dict) -> tuple[list[int], list[int]]:
    return report["train"]["redundant_groups"], report["train"]["zero_groups"]


#: seconds the two ranks may take: a few alone, minutes on a loaded 2-core machine (the ranks, torchrun's agent and
#: the test's own process share the cores)
TORCHRUN_TIMEOUT_S = 600


@dataclass
class RankLog:
    stdout: str
    stderr: str


def _torchrun(script: Path, args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[int, RankLog]]:
    """``torchrun --standalone --nproc_per_node=2 script args``: its status, and each rank's stdout and stderr, kept
    apart (``--redirects``) so a failure shows which rank said what; torchrun's own stderr is rank -1.
    A rank's internal error prints its traceback (ASGNAS_TRACEBACK)."""
    logs = tmp_path / "rank-logs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2]), "ASGNAS_TRACEBACK": "1",
           **env}
    try:
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              f"--log-dir={logs}", "--redirects=3", str(script), *args],
                             capture_output=True, text=True, env=env, timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"environment: torchrun with 2 ranks did not finish in {TORCHRUN_TIMEOUT_S} s; the machine is too "
                    "loaded for this test (it takes seconds alone)")
    ranks = {int(folder.name): RankLog(*((folder / f"{s}.log").read_text(errors="replace")
                                         if (folder / f"{s}.log").is_file() else "" for s in ("stdout", "stderr")))
             for folder in logs.glob("*/attempt_*/[0-9]*")}
    ranks[-1] = RankLog(run.stdout, run.stderr)
    return run.returncode, ranks


def _failure(status: int, ranks: dict[int, RankLog]) -> str:
    """Why torchrun failed, for the assertion message: whether a rank reported an asgnas error (ours) or none did
    (torchrun, gloo or a signal such as an out-of-memory kill: the environment, unless a traceback says otherwise),
    then each rank's stderr tail and torchrun's verdict (which rank, exit code or signal)."""
    reported = [line for r, log in ranks.items() if r >= 0 for line in log.stderr.splitlines()
                if line.startswith("asgnas-opt: ") and not line.startswith("asgnas-opt: warning:")]
    lines = [f"torchrun exited {status}; " + (f"asgnas reported: {reported[0]}" if reported else
             "no rank reported an asgnas error: the environment stopped it (torchrun, gloo, a signal) unless a "
             "traceback below goes through asgnas")]
    for r, log in sorted(ranks.items()):
        text = log.stderr[log.stderr.find("Failures:"):] if r < 0 and "Failures:" in log.stderr else log.stderr
        lines.append(f"--- {'torchrun' if r < 0 else f'rank {r}'} stderr (tail) ---")
        lines.append(text[-1500:])
    return "\n".join(lines)


def test_two_processes_choose_the_single_process_subnetwork(tmp_path):
    model, data = tmp_path / "net.onnx", tmp_path / "clusters.npz"
    onnx.save(_branchy_net_with_bn(), model)
    _clusters(data)
    pipeline = PIPELINE.format(data=data)

    single = tmp_path / "single"
    single.mkdir()
    assert main([str(model), "--passes", pipeline, "-o", str(single / "slim.onnx"),
                 "--report", str(single / "r.json"), "-q"]) == 0
    reference = json.loads((single / "r.json").read_text())

    out = tmp_path / "ddp"
    out.mkdir()
    launcher, writes = tmp_path / "launch.py", tmp_path / "writes.log"
    launcher.write_text(LAUNCHER)
    status, ranks = _torchrun(launcher, [str(model), "--passes", pipeline, "-o", str(out / "slim.onnx"),
                                         "--report", str(out / "r.json")], tmp_path, {"WRITES_LOG": str(writes)})
    assert status == 0, _failure(status, ranks)
    assert sorted(p.name for p in out.iterdir()) == ["r.json", "r.train.svg", "slim.onnx"]
    assert sorted(writes.read_text().splitlines()) == ["0 model", "0 report"]  # rank 1 wrote nothing
    assert [ranks[r].stdout.count("asgnas-opt: ") for r in (0, 1)] == [1, 0]  # one summary line: rank 0 alone logs

    report = json.loads((out / "r.json").read_text())
    assert report["train"]["processes"] == 2 and reference["train"]["processes"] == 1
    assert len(_selection(reference)[0]) == 2
    assert _selection(report) == _selection(reference)
    for ours, theirs in zip(report["train"]["epochs"], reference["train"]["epochs"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert ours["train_accuracy"] == theirs["train_accuracy"]
        assert ours["val_accuracy"] == theirs["val_accuracy"]
    assert report["verify"]["ok"] and report["verify"]["reference"] == "group-sparse"
    after = report["cost"]["after"]["params"]
    assert after == reference["cost"]["after"]["params"] < report["cost"]["before"]["params"]
    onnx.checker.check_model(onnx.load(str(out / "slim.onnx")), full_check=True)


def _finish_with(rank: int, port: int, statuses: list[int], out: str) -> None:
    # the ranks meet at the test's store (as torchrun's workers meet at its agent's): no rank binds a port
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    from asgnas.bridge.distributed import finish

    Path(out, str(rank)).write_text(str(finish(statuses[rank])))


def test_every_rank_ends_with_the_highest_status(tmp_path):
    """E.g. rank 0 alone failed to write ``-o`` (exit 2): rank 1 exits 2 as well, not 0."""
    # a store on a port the system picks and this process holds: a port found free and released could be taken
    # by a concurrent test before rank 0 binds it
    store = dist.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)
    mp.spawn(_finish_with, args=(store.port, [2, 0], str(tmp_path)), nprocs=2)
    assert [(tmp_path / r).read_text() for r in "01"] == ["2", "2"]
