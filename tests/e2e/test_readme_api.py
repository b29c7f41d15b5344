"""The README's Python API example runs as written (its `epochs = 10` cut to 2 to keep the test fast)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "\nepochs = 10\n" in code
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: one thread is as fast and steadier on a busy machine
    torch.manual_seed(0)
    namespace: dict = {}
    try:
        exec(compile(code.replace("\nepochs = 10\n", "\nepochs = 2\n"), str(README), "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    metrics, summary = namespace["metrics"], namespace["summary"]
    assert metrics["num_zero_groups"] == metrics["target_count"] >= 1
    assert metrics["projected_groups"] + metrics["forced_zero_groups"] == metrics["target_count"]
    assert f"{metrics['projected_groups']} projected, {metrics['forced_zero_groups']} forced" in capsys.readouterr().out
    assert summary["params_after"] < summary["params_before"] and summary["max_abs_diff"] < 1e-4
    assert (tmp_path / "out" / "slim.onnx").is_file()
