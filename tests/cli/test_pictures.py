"""What a user looks at: draw-groups before and after construction, the training curve, progress, --version/--help.

The SVGs are parsed as XML and searched for the labels and marks a reader relies on. Graphviz renders the group
pictures when its ``dot`` program is installed (CI installs it: .ci/run); without it the DOT text is checked.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from asgnas.bridge.curve import curve_path, phase_spans, training_curve_svg
from asgnas.cli import main
from asgnas.errors import AsgnasError
from asgnas.progress import Progress

SVG = "{http://www.w3.org/2000/svg}"
XLINK_TITLE = "{http://www.w3.org/1999/xlink}title"
HAS_DOT = shutil.which("dot") is not None
CHANNELS_AFTER = re.compile(r"^(\d+) -> (\d+) ch$")


@pytest.fixture(scope="module")
def superresnet(supernet_onnx) -> Path:
    return supernet_onnx("superresnet")


def _texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter(f"{SVG}text")]


def _node_groups(svg: ET.Element) -> dict[str, ET.Element]:
    """Graphviz's ``<g class="node">`` per node name (its ``<title>``)."""
    return {g.find(f"{SVG}title").text: g for g in svg.iter(f"{SVG}g") if g.get("class") == "node"}


def _draw(model: Path, pipeline: str, out: Path) -> Path:
    fmt = "svg" if HAS_DOT else "dot"
    assert main([str(model), "--passes", f"{pipeline}draw-groups{{out={out},format={fmt}}}", "-q"]) == 0
    return out.with_suffix(".svg" if HAS_DOT else ".dot")


def test_draw_groups_labels_are_short_with_line_breaks_tooltips_and_legend(superresnet, tmp_path):
    path = _draw(superresnet, "search-space,", tmp_path / "groups.dot")
    dot = path.with_suffix(".dot").read_text()
    assert "\\\\n" not in dot  # the bug of the issue: an escaped backslash printed a literal \n
    assert '<B>g108 · s2 · Conv +1</B><BR/>160 params · 9.47k MACs<BR/>4 ch, 4 removable' in dot
    if not HAS_DOT:
        pytest.skip("Graphviz's dot is not installed: DOT checked, SVG not rendered")
    svg = ET.parse(path).getroot()
    texts = _texts(svg)
    assert "g108 · s2 · Conv +1" in texts and "160 params · 9.47k MACs" in texts and "4 ch, 4 removable" in texts
    nodes = _node_groups(svg)
    boxes = [t for name, g in nodes.items() if name != "legend" for t in _texts(g)]
    assert not any("\\n" in t or "/blocks" in t for t in boxes)  # no escapes, no node names in the boxes
    assert len(boxes) > 50 and max(len(t) for t in boxes) < 40
    tooltip = next(a.get(XLINK_TITLE) for a in nodes["s2"].iter(f"{SVG}a"))
    assert tooltip.startswith("s2 (chain, 2 nodes):\n") and len(tooltip.splitlines()) == 3  # full node names
    assert "legend" in _texts(nodes["legend"]) and any("removable structure" in t for t in _texts(nodes["legend"]))
    fills = {p.get("fill") for p in nodes["s2"].iter(f"{SVG}polygon")}
    assert "#9ecae1" in fills  # removable: filled
    assert not any(t.get("text-decoration") for t in svg.iter(f"{SVG}text"))  # nothing struck before


def test_draw_groups_after_construct_subnet_marks_what_went(superresnet, tmp_path):
    slim = tmp_path / "slim.onnx"
    assert main([str(superresnet), "--passes", "search-space,zero-groups{fraction=0.4,seed=1},construct-subnet",
                 "-o", str(slim), "-q"]) == 0
    in_pipeline = _draw(superresnet, "search-space,zero-groups{fraction=0.4,seed=1},construct-subnet,",
                        tmp_path / "after.dot")
    dot = in_pipeline.with_suffix(".dot").read_text()
    from_run = tmp_path / "from_run.dot"
    assert main([str(superresnet), "--passes", f"draw-groups{{out={from_run},format=dot,after={slim}}}", "-q"]) == 0
    assert from_run.read_text() == dot  # the same picture from an earlier run's slim model
    assert "<S><B>g110 · s5 · Conv +1</B></S>" in dot and "<S>erased</S>" in dot and "<S>bypassed</S>" in dot
    assert "4 -&gt; 2 ch" in dot and "32 -&gt; 17 ch" in dot
    if not HAS_DOT:
        pytest.skip("Graphviz's dot is not installed: DOT checked, SVG not rendered")
    svg = ET.parse(in_pipeline).getroot()
    nodes = _node_groups(svg)
    erased = nodes["s5"]
    assert {t.get("text-decoration") for t in erased.iter(f"{SVG}text")} == {"line-through"}
    assert {t.get("fill") for t in erased.iter(f"{SVG}text")} == {"#999999"}
    assert "#eeeeee" in {p.get("fill") for p in erased.iter(f"{SVG}polygon")}
    kept = nodes["s1"]
    assert "4 -> 2 ch" in _texts(kept) and not any(t.get("text-decoration") for t in kept.iter(f"{SVG}text"))
    changed = [m.groups() for t in _texts(svg) if (m := CHANNELS_AFTER.match(t))]
    assert len(changed) >= 5 and all(int(after) < int(before) for before, after in changed)
    assert any("erased by construction" in t for t in _texts(nodes["legend"]))


def test_draw_groups_after_an_unrelated_model_fails_with_one_line(superresnet, tmp_path, capsys):
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="unrelated")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])), str(other))
    assert main([str(superresnet), "--passes", f"draw-groups{{out={tmp_path / 'g.dot'},after={other}}}"]) == 2
    assert "shares no node with the drawn model" in capsys.readouterr().err


def test_training_curve_svg_shades_the_phases():
    epochs = [{"epoch": i + 1, "loss": 2.0 - 0.3 * i, "val_accuracy": 0.2 + 0.1 * i,
               "group_sparsity": min(0.25 * i, 0.5)} for i in range(5)]
    schedule = {"total_steps": 100, "warmup_steps": 20, "hard_zero_step": 50}
    assert [(n, a, b) for n, _, a, b in phase_spans(schedule, 5)] == [
        ("warm-up", 0.0, 1.0), ("projection", 1.0, 2.5), ("forced zero", 2.5, 5.0)]
    svg = ET.fromstring(training_curve_svg(epochs, schedule, "h2spg on digits"))
    phases = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "phase"]
    assert [r.get("data-phase") for r in phases] == ["warm-up"] * 2 + ["projection"] * 2 + ["forced zero"] * 2
    widths = {r.get("data-phase"): float(r.get("width")) for r in phases}
    assert widths["projection"] == pytest.approx(1.5 * widths["warm-up"], rel=0.01)
    assert widths["forced zero"] == pytest.approx(2.5 * widths["warm-up"], rel=0.01)
    series = {g.get("data-series"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "series"}
    assert set(series) == {"loss", "val_accuracy", "group_sparsity"}
    for g in series.values():
        assert len(g.find(f"{SVG}polyline").get("points").split()) == 5
    loss_y = [float(p.split(",")[1]) for p in series["loss"].find(f"{SVG}polyline").get("points").split()]
    assert loss_y == sorted(loss_y)  # a falling loss is drawn going down (SVG y grows downwards)
    assert {"h2spg on digits", "warm-up", "projection", "forced zero", "epoch"} <= set(_texts(svg))


def test_train_pass_writes_the_curve_beside_the_report(superresnet, tmp_path):
    rng = np.random.default_rng(0)  # 96 samples: three steps per epoch keep the test fast
    data = tmp_path / "tiny.npz"
    np.savez(data, x=rng.standard_normal((96, 1, 8, 8)).astype(np.float32), y=rng.integers(0, 10, 96))
    report = tmp_path / "r.json"
    assert main([str(superresnet), "--passes", f"search-space{{groups=false}},train{{epochs=2,batch-size=32,"
                 f"data=npz:{data}}}", "--report", str(report), "-q"]) in (0, 1)  # random labels may be
    # flagged "not learning" (exit 1, outputs written): the curve is written either way
    curve = tmp_path / "r.train.svg"
    assert json.loads(report.read_text())["train"]["curve"] == str(curve)
    svg = ET.parse(curve).getroot()
    assert {r.get("data-phase") for r in svg.iter(f"{SVG}rect") if r.get("class") == "phase"} == {
        "warm-up", "projection", "forced zero"}
    loss = next(g for g in svg.iter(f"{SVG}g") if g.get("data-series") == "loss")
    assert len(loss.find(f"{SVG}polyline").get("points").split()) == 2


def test_curve_path_choices(tmp_path):
    assert curve_path("auto", str(tmp_path / "r.json"), str(tmp_path / "s.onnx")) == tmp_path / "r.train.svg"
    assert curve_path("auto", None, str(tmp_path / "s.onnx")) == tmp_path / "s.train.svg"
    assert curve_path("auto", None, None) is None and curve_path("none", "r.json", None) is None
    assert curve_path(str(tmp_path / "c.svg"), None, None) == tmp_path / "c.svg"
    with pytest.raises(AsgnasError, match="no such directory"):
        curve_path(str(tmp_path / "missing" / "c.svg"), None, None)


def test_progress_plain_lines_off_a_terminal_and_nothing_when_quiet(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    lines: list[str] = []
    with Progress(4, "epoch 1/2", lines.append, interval=0) as bar:
        for _ in range(4):
            bar.update(loss=0.5)
    assert len(lines) == 4 and lines[1].startswith("epoch 1/2: 2/4, ")
    assert " step/s, " in lines[1] and "left  loss 0.5" in lines[1]
    with Progress(4, "epoch 1/2", lines.append) as bar:  # the default interval: a short loop prints nothing
        bar.update()
    with Progress(4, "epoch 1/2", None, interval=0) as bar:
        bar.update()
    assert len(lines) == 4


def test_progress_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    lines: list[str] = []
    with Progress(3, "epoch 2/5", lines.append) as bar:
        for _ in range(3):
            bar.update(loss=1.25)
    shown = terminal.getvalue()
    assert shown.startswith("\repoch 2/5:   0%|") and re.search(r"0/3 \[00:00<\?, \?step/s\]", shown)  # rate, time left
    assert shown.endswith("\r")  # cleared at the end: the caller's epoch line follows
    assert lines == []  # the bar replaces the plain lines


def test_version_and_help_list_the_passes(capsys):
    from importlib.metadata import version

    from asgnas.passes import PASS_REGISTRY

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"asgnas-opt {version('asgnas')}"
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "passes (--list-passes adds their options):" in out
    for name in ("search-space", "train", "draw-groups", "construct-subnet", "verify"):
        assert re.search(rf"^  {name} +{re.escape(PASS_REGISTRY[name].summary)}$", out, re.M), name
