"""Line charts as SVG, written by hand: `make bench` draws its plots without a plotting library.

    line_chart(path, title, x_label, y_label, {"series": [(x, y), ...]}, log_x=True, markers=[(x, "label")])
"""
from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

DOCS_PLOTS = Path(__file__).resolve().parents[1] / "docs" / "plots"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 40, 50  # margins; the legend sits in the right one


def _ticks(low: float, high: float, count: int = 5) -> List[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if step * m >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _label(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


def line_chart(path: Path, title: str, x_label: str, y_label: str, series: Dict[str, Sequence[Tuple[float, float]]],
               log_x: bool = False, markers: Sequence[Tuple[float, str]] = (), y_min: Optional[float] = 0.0,
               caption: str = "") -> Path:
    """Writes the chart to `path` (directories made); returns it."""
    points = [p for values in series.values() for p in values]
    xs = [math.log10(x) if log_x else x for x, _ in points] + [math.log10(x) if log_x else x for x, _ in markers]
    x_low, x_high = min(xs), max(xs)
    y_low = y_min if y_min is not None else min(y for _, y in points)
    y_ticks = _ticks(y_low, max(y for _, y in points))
    y_low, y_high = y_ticks[0], y_ticks[-1]
    if log_x:
        x_ticks = [10 ** e for e in range(math.floor(x_low), math.ceil(x_high) + 1)]
        x_ticks = [x for x in sorted({x for x, _ in points} | set(x_ticks)) if x_low <= math.log10(x) <= x_high]
    else:
        x_ticks = _ticks(x_low, x_high)
        x_low, x_high = x_ticks[0], x_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def sx(x: float) -> float:
        v = math.log10(x) if log_x else x
        return LEFT + (v - x_low) / ((x_high - x_low) or 1) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y_low) / ((y_high - y_low) or 1) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(title)}</text>']
    for y in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    for x in x_ticks:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_label(x)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}</text>')
    for i, (x, label) in enumerate(sorted(markers)):  # labels on two rows, so that neighbours do not overlap
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#999" '
                   f'stroke-dasharray="4 3"/>')
        if label:
            out.append(f'<text x="{sx(x) + 3:.1f}" y="{TOP + 12 + 12 * (i % 2)}" fill="#666" font-size="10">'
                       f'{escape(label)}</text>')
    for i, (name, values) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path_points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        out.append(f'<polyline points="{path_points}" fill="none" stroke="{color}" stroke-width="2"/>')
        if len(values) <= 12:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in values]
        legend_y = TOP + 14 + i * 18
        out.append(f'<line x1="{LEFT + plot_w + 12}" x2="{LEFT + plot_w + 32}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{LEFT + plot_w + 36}" y="{legend_y}">{escape(name)}</text>')
    if caption:
        out.append(f'<text x="{LEFT + plot_w + 12}" y="{TOP + plot_h}" fill="#666" font-size="10">{escape(caption)}</text>')
    out.append("</svg>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path
