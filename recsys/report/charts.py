"""The report's charts, drawn by matplotlib and returned as inline SVG text.

No pyplot: each chart is its own ``Figure`` rendered by the SVG backend, so drawing keeps no
global state and needs no display. Text is drawn as paths (``svg.fonttype = "path"``), so the
SVG needs no font from anywhere; each chart's ids get a prefix of their own, so several charts
inline in one page never resolve each other's references.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Sequence

import matplotlib

MODEL_COLOUR = "#1f6feb"
BASELINE_COLOUR = "#d9822b"
OTHER_COLOUR = "#8b949e"
WARN_COLOUR = "#cf222e"
STYLE = {
    "svg.fonttype": "path",
    "svg.hashsalt": "recsys-report",  # the same figures give the same file
    "text.parse_math": False,  # an item named "Bono $50 $100" is a name, not mathtext
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_chart_ids = itertools.count(1)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def to_svg(figure) -> str:
    """``figure`` as an ``<svg>`` element to put inline in HTML (no XML prolog, no metadata,
    ids prefixed to be unique in the page)."""
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    prefix = f"c{next(_chart_ids)}-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    return text.replace("<svg ", '<svg role="img" ', 1)


def interval_chart(rows: Sequence[tuple[str, float, float | None, float | None, str]], xlabel: str, title: str) -> str:
    """Horizontal points with 95% error bars, one row per (label, mean, low, high, colour), top row first."""
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.5, 0.9 + 0.34 * len(rows))
        axes = figure.add_subplot()
        for y, (label, mean, low, high, colour) in enumerate(reversed(rows)):
            if low is not None and high is not None:
                axes.errorbar(mean, y, xerr=[[mean - low], [high - mean]], fmt="o", color=colour, capsize=3, markersize=5)
            else:
                axes.plot(mean, y, "o", color=colour, markersize=5)
        axes.set_yticks(range(len(rows)), [row[0] for row in reversed(rows)])
        axes.set_ylim(-0.6, len(rows) - 0.4)
        axes.set_xlabel(xlabel)
        axes.set_title(title, loc="left", fontsize=10)
        axes.grid(axis="y", visible=False)
    return to_svg(figure)


def bar_chart(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str, percent: bool = True, colour: str = MODEL_COLOUR) -> str:
    """Horizontal bars, first label on top; ``percent``: values are shares, labelled as %."""
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.5, 0.9 + 0.26 * max(len(labels), 1))
        axes = figure.add_subplot()
        shown = [100 * v for v in values] if percent else list(values)
        positions = range(len(labels))[::-1]
        bars = axes.barh(list(positions), shown, color=colour, height=0.7)
        axes.set_yticks(list(positions), [_short(label) for label in labels])
        axes.bar_label(bars, labels=[f"{v:.1f}%" if percent else f"{v:,.0f}" for v in shown], padding=3, fontsize=8)
        axes.set_xlim(0, max(shown, default=1) * 1.15 or 1)
        axes.set_xlabel(xlabel)
        axes.set_title(title, loc="left", fontsize=10)
        axes.grid(axis="y", visible=False)
    return to_svg(figure)


def trend_chart(labels: Sequence[str], model, baseline, degraded: Sequence[bool], title: str) -> str:
    """The model's and the best baseline's NDCG over runs (oldest left) with their 95% bands;
    ``model``/``baseline``: one Interval (or None) per run; degraded runs marked."""
    with matplotlib.rc_context(STYLE):
        figure = _figure(7.5, 3.2)
        axes = figure.add_subplot()
        x = list(range(len(labels)))
        for series, colour, name in ((model, MODEL_COLOUR, "model (two_stage)"), (baseline, BASELINE_COLOUR, "best baseline")):
            points = [(i, p) for i, p in zip(x, series) if p is not None]
            if not points:
                continue
            xs = [i for i, _ in points]
            axes.plot(xs, [p.mean for _, p in points], "-o", color=colour, label=name, markersize=4)
            banded = [(i, p) for i, p in points if p.low is not None and p.high is not None]
            if banded:
                axes.fill_between([i for i, _ in banded], [p.low for _, p in banded], [p.high for _, p in banded], color=colour, alpha=0.15, linewidth=0)
        marks = [(i, p.mean) for i, p, bad in zip(x, model, degraded) if bad and p is not None]
        if marks:
            axes.plot([i for i, _ in marks], [m for _, m in marks], "x", color=WARN_COLOUR, markersize=9, label="degraded run")
        step = max(1, len(labels) // 8)
        axes.set_xticks(x[::step], [labels[i] for i in x[::step]], rotation=20, ha="right")
        axes.set_xlim(-0.5, len(labels) - 0.5)
        axes.set_ylabel("NDCG@k (held out)")
        axes.set_title(title, loc="left", fontsize=10)
        axes.legend(loc="best", fontsize=8, frameon=False)
    return to_svg(figure)


def _short(label: str, width: int = 42) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
