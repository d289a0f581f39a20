"""Side-by-side bars as inline SVG: the reference's share and the current share of each bin.

Bins are drawn at equal widths whatever their range (the reference's numeric bins are quantiles
with open ends, so drawn to scale the outer two would be infinite): the reference bars of a
numeric column are then about level, and drift shows as the current bars leaving them. Every
label is escaped; the full label and both shares are in each bin's tooltip (``<title>``).
"""

from __future__ import annotations

import math
from html import escape

import numpy as np

# Wider than this many bins, the smallest categories are drawn as one bar (the tooltip says which).
MAX_BARS = 30
WIDTH, HEIGHT = 520, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 58
LABEL_CHARS = 14


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros(counts.size)


def limit_bars(labels: list[str], reference: np.ndarray, current: np.ndarray,
               max_bars: int = MAX_BARS) -> tuple[list[str], np.ndarray, np.ndarray]:
    """At most ``max_bars`` bins: the largest (by the larger of the two shares) kept in order,
    the rest summed into one last bar."""
    if len(labels) <= max_bars:
        return labels, reference, current
    weight = np.maximum(reference, current)
    keep = np.sort(np.argsort(-weight, kind="stable")[:max_bars - 1])
    rest = np.setdiff1d(np.arange(len(labels)), keep)
    kept = [labels[i] for i in keep] + [f"{rest.size} more"]
    return (kept, np.append(reference[keep], reference[rest].sum()), np.append(current[keep], current[rest].sum()))


def bars_svg(labels: list[str], reference: np.ndarray | None, current: np.ndarray, *, name: str,
             edges: np.ndarray | None = None) -> str:
    """An SVG of each bin's reference share (when there is a reference) beside its current share;
    a numeric column's inner ``edges`` are written under the bin boundaries (else each bin's label)."""
    ref = reference if reference is not None else np.zeros(current.size)
    labels, ref, cur = limit_bars(labels, ref, current)
    if len(labels) != current.size:
        edges = None   # bins were merged: label them by name
    k = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = float(max(ref.max(initial=0.0), cur.max(initial=0.0)))
    top = _nice_ceiling(top) if top > 0 else 1.0
    group = plot_w / max(k, 1)
    bar = group * (0.38 if reference is not None else 0.7)
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" data-feature="{escape(name)}" '
             f'aria-label="{escape(f"distribution of {name}")}">']
    for fraction in (0.0, 0.5, 1.0):   # gridlines with their share
        y = TOP + plot_h * (1 - fraction)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{_axis_percent(top * fraction)}</text>')
    label_every = max(1, math.ceil(k / 16))
    for i, label in enumerate(labels):
        x0 = LEFT + i * group + (group - (2 * bar if reference is not None else bar)) / 2
        tip = escape(f"{label}: reference {_percent(ref[i], 1)}, current {_percent(cur[i], 1)}"
                     if reference is not None else f"{label}: {_percent(cur[i], 1)}")
        parts.append(f"<g><title>{tip}</title>")
        if reference is not None:
            parts.append(_bar("ref", x0, bar, ref[i] / top, plot_h))
            x0 += bar
        parts.append(_bar("cur", x0, bar, cur[i] / top, plot_h) + "</g>")
        if edges is None and i % label_every == 0:
            parts.append(_tick_label(LEFT + (i + 0.5) * group, TOP + plot_h, label))
    if edges is not None and edges.size + 1 == k:   # numbers: each edge under the boundary it is
        for i, edge in enumerate(edges.tolist(), start=1):
            x = LEFT + i * group
            parts.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + plot_h}" y2="{TOP + plot_h + 4}"/>')
            if i % label_every == 0:
                parts.append(_tick_label(x, TOP + plot_h, compact_number(edge)))
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _tick_label(x: float, axis_y: float, label: str) -> str:
    y = axis_y + 12
    short = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" transform="rotate(-35 {x:.1f} {y:.1f})">'
            f"{escape(short)}</text>")


def compact_number(x: float) -> str:
    """3 significant digits, thousands and millions as k and M: ``11.7k``, ``-0.25``, ``1.2e-05``."""
    magnitude = abs(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if 1e3 * scale > magnitude >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _bar(css: str, x: float, width: float, fraction: float, plot_h: float) -> str:
    h = max(plot_h * float(fraction), 0.0)
    return (f'<rect class="{css}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{max(width - 1, 1):.1f}" '
            f'height="{h:.1f}"/>')


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``x`` (a readable top for the share axis)."""
    base = 10.0 ** math.floor(math.log10(x))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * base >= x - 1e-12:
            return min(step * base, 1.0)
    return 1.0


def _axis_percent(x: float) -> str:
    text = f"{100 * x:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def _percent(x: float, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%"
