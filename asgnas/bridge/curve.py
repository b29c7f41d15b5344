"""The training curve as a small standalone SVG: loss above; validation accuracy and group sparsity below.

Computed from what the ``train`` pass reports (``epochs``: per-epoch ``loss``, ``val_accuracy``,
``group_sparsity``; ``schedule``: ``total_steps``, ``warmup_steps``, ``hard_zero_step``): the report of an
earlier run can be drawn again. The x axis counts epochs; the optimizer's phases are
shaded behind both panels: warm-up (plain training), projection (the chosen groups are driven to zero) and
forced zero (from the safeguard step on, the chosen groups are held exactly zero while the rest trains).
Written by hand (no plotting library): a few dozen SVG elements, readable in any browser.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from asgnas.errors import AsgnasError

WIDTH, LEFT, RIGHT = 640, 56, 16
PANEL_HEIGHT, TOP, GAP, BOTTOM = 150, 62, 34, 40
PHASES = (("warm-up", "#fdf1d6"), ("projection", "#dcebf7"), ("forced zero", "#e3f2df"))
SERIES = {"loss": "#d62728", "val_accuracy": "#1f77b4", "group_sparsity": "#2ca02c"}


def phase_spans(schedule: Mapping[str, int], num_epochs: int) -> list[tuple[str, str, float, float]]:
    """(name, colour, start epoch, end epoch) of each non-empty phase."""
    steps_per_epoch = max(schedule["total_steps"], 1) / max(num_epochs, 1)
    bounds = [0.0, schedule["warmup_steps"] / steps_per_epoch, schedule["hard_zero_step"] / steps_per_epoch,
              float(num_epochs)]
    bounds = [min(max(b, 0.0), float(num_epochs)) for b in bounds]
    return [(name, colour, bounds[i], bounds[i + 1]) for i, (name, colour) in enumerate(PHASES)
            if bounds[i + 1] > bounds[i]]


def _polyline(points: Sequence[tuple[float, float]], colour: str, name: str) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in points)
    return (f'<g class="series" data-series="{name}"><polyline points="{coords}" fill="none" stroke="{colour}" '
            f'stroke-width="2"/>{dots}</g>')


def training_curve_svg(epochs: Sequence[Mapping[str, Any]], schedule: Mapping[str, int], title: str = "") -> str:
    """The SVG text for a run's per-epoch history and its step schedule."""
    n = len(epochs)
    plot_width = WIDTH - LEFT - RIGHT
    height = TOP + 2 * PANEL_HEIGHT + GAP + BOTTOM
    panels = {"loss": TOP, "fraction": TOP + PANEL_HEIGHT + GAP}

    def x_of(epoch: float) -> float:
        return LEFT + plot_width * epoch / max(n, 1)

    losses = [float(e["loss"]) for e in epochs if e.get("loss") is not None]
    loss_top = max(losses, default=1.0) * 1.1 or 1.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="11">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title or "training")}</text>']
    for name, colour, start, end in phase_spans(schedule, n):
        for top in panels.values():
            parts.append(f'<rect class="phase" data-phase="{name}" x="{x_of(start):.1f}" y="{top}" '
                         f'width="{x_of(end) - x_of(start):.1f}" height="{PANEL_HEIGHT}" fill="{colour}"/>')
        parts.append(f'<text x="{(x_of(start) + x_of(end)) / 2:.1f}" y="{TOP - 6}" text-anchor="middle" '
                     f'fill="#555">{name}</text>')
    for panel, (top, y_max, label) in {"loss": (panels["loss"], loss_top, "loss"),
                                       "fraction": (panels["fraction"], 1.0, "fraction")}.items():
        parts.append(f'<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" fill="none" '
                     f'stroke="#888"/>')
        for tick in (0.0, 0.5, 1.0):
            y = top + PANEL_HEIGHT * (1 - tick)
            parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{tick * y_max:.2g}</text>')
        parts.append(f'<text x="14" y="{top + PANEL_HEIGHT / 2:.1f}" text-anchor="middle" '
                     f'transform="rotate(-90 14 {top + PANEL_HEIGHT / 2:.1f})">{label}</text>')

        def y_of(value: float, top: int = top, y_max: float = y_max) -> float:
            return top + PANEL_HEIGHT * (1 - value / y_max)

        for key in (("loss",) if panel == "loss" else ("val_accuracy", "group_sparsity")):
            points = [(x_of(i + 1), y_of(float(e[key]))) for i, e in enumerate(epochs) if e.get(key) is not None]
            parts.append(_polyline(points, SERIES[key], key))
    axis_y = panels["fraction"] + PANEL_HEIGHT
    for epoch in range(0, n + 1, max(1, n // 10)):
        parts.append(f'<text x="{x_of(epoch):.1f}" y="{axis_y + 14}" text-anchor="middle">{epoch}</text>')
    parts.append(f'<text x="{LEFT + plot_width / 2:.1f}" y="{axis_y + 30}" text-anchor="middle">epoch</text>')
    for i, (key, colour) in enumerate(SERIES.items()):
        x = LEFT + 130 * i
        parts.append(f'<line x1="{x}" y1="32" x2="{x + 18}" y2="32" stroke="{colour}" stroke-width="3"/>'
                     f'<text x="{x + 22}" y="36">{key.replace("_", " ")}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"



def curve_path(option: str, report_path: str | None, output_path: str | None) -> Path | None:
    """Where ``train{curve=...}`` writes: ``auto`` -> beside ``--report`` (``r.json`` -> ``r.train.svg``), else
    beside ``-o``, else nowhere; ``none`` -> nowhere; anything else is the path itself. Its folder must exist."""
    if option == "none":
        return None
    if option != "auto":
        path = Path(option)
    elif report_path or output_path:
        anchor = Path(report_path or output_path)
        path = anchor.with_name(f"{anchor.stem}.train.svg")
    else:
        return None
    if not path.parent.is_dir():
        raise AsgnasError(f"train: cannot write the training curve: no such directory: {path.parent}", file=str(path))
    return path
