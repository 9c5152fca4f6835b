"""Charts as server-rendered SVG: no script, no chart library, every bar a link.

Plain Python returning ``markupsafe.Markup``. Every value placed in the SVG is escaped.
Charts carry a ``<title>`` per bar (a native tooltip) and a text summary for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 200
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 44, 22, 8


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    success: int
    failure: int
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Point:
    label: str
    values: tuple[float | None, ...]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == 0 else f"{value:,.1f}"


def _open(title: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(title)}"><title>{escape(title)}</title>')  # fmt: skip


def _axis(top: float, unit: str) -> str:
    parts = []
    for fraction in (0, 0.5, 1):
        y = HEIGHT - PAD_BOTTOM - fraction * (HEIGHT - PAD_BOTTOM - PAD_TOP)
        text = _number(top * fraction)
        parts.append(f'<line class="grid" x1="{PAD_LEFT}" x2="{WIDTH}" y1="{y:.1f}" '
                     f'y2="{y:.1f}"/><text class="axis" x="{PAD_LEFT - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end">{escape(text + unit)}</text>')  # fmt: skip
    return "".join(parts)


#: About how wide an axis label's character is (11 px text), in viewBox units.
CHAR_WIDTH = 7


def _labels(labels: Sequence[str], slot: float) -> str:
    # At most 8 labels, and far enough apart not to overlap ("2026-11-28 00:00 CET" is wide).
    widest = max((len(label) for label in labels), default=0) * CHAR_WIDTH + 8
    every = max(1, len(labels) // 8, math.ceil(widest / slot) if slot > 0 else 1)
    out = []
    for i, label in enumerate(labels):
        if i % every == 0:
            x = PAD_LEFT + slot * (i + 0.5)
            out.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}" '
                       f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
    return "".join(out)


def stacked_bars(bars: Sequence[Bar], title: str) -> Markup:
    """Successes and failures per bucket, stacked; each bar links to its runs."""
    if not bars:
        return Markup('<p class="muted">No data in this range.</p>')
    top = _nice_max(max(b.success + b.failure for b in bars))
    slot = (WIDTH - PAD_LEFT) / len(bars)
    inner = HEIGHT - PAD_BOTTOM - PAD_TOP
    out = [_open(title), _axis(top, "")]
    for i, bar in enumerate(bars):
        x = PAD_LEFT + slot * i + slot * 0.1
        w = max(slot * 0.8, 1)
        ok_h = inner * bar.success / top
        bad_h = inner * bar.failure / top
        base = HEIGHT - PAD_BOTTOM
        tip = f"{bar.label}: {bar.success} succeeded, {bar.failure} failed"
        rects = (f'<rect class="ok" x="{x:.1f}" y="{base - ok_h:.1f}" width="{w:.1f}" '
                 f'height="{ok_h:.1f}"/><rect class="bad" x="{x:.1f}" '
                 f'y="{base - ok_h - bad_h:.1f}" width="{w:.1f}" height="{bad_h:.1f}"/>'
                 f'<title>{escape(tip)}</title>')  # fmt: skip
        if bar.href and bar.success + bar.failure:
            out.append(f'<a href="{escape(bar.href)}" aria-label="{escape(tip)}">{rects}</a>')
        else:
            out.append(f"<g>{rects}</g>")
    out.append(_labels([b.label for b in bars], slot))
    out.append("</svg>")
    return Markup("".join(out))


def lines(points: Sequence[Point], series: Sequence[str], title: str, unit: str) -> Markup:
    """One line per series (e.g. p50 and p95 duration); gaps where a bucket had no data."""
    known = [v for p in points for v in p.values if v is not None]
    if not known:
        return Markup('<p class="muted">No durations in this range.</p>')
    top = _nice_max(max(known))
    slot = (WIDTH - PAD_LEFT) / len(points)
    inner = HEIGHT - PAD_BOTTOM - PAD_TOP
    out = [_open(title), _axis(top, unit)]
    for s, name in enumerate(series):
        path, pen_down = [], False
        for i, point in enumerate(points):
            value = point.values[s]
            if value is None:
                pen_down = False
                continue
            x = PAD_LEFT + slot * (i + 0.5)
            y = HEIGHT - PAD_BOTTOM - inner * value / top
            path.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
            out.append(f'<circle class="s{s}" cx="{x:.1f}" cy="{y:.1f}" r="2.5">'
                       f'<title>{escape(f"{point.label} {name}: {_number(value)}{unit}")}</title>'
                       f"</circle>")  # fmt: skip
        out.append(f'<path class="s{s}" d="{" ".join(path)}"/>')
    legend = "".join(f'<text class="legend s{s}" x="{PAD_LEFT + 8 + 90 * s}" y="{PAD_TOP + 12}">'
                     f"{escape(name)}</text>" for s, name in enumerate(series))  # fmt: skip
    out += [legend, _labels([p.label for p in points], slot), "</svg>"]
    return Markup("".join(out))


def sparkline(values: Sequence[int], failures: Sequence[int]) -> Markup:
    """A tiny bar trend for table rows: runs per bucket, failures marked."""
    if not values or not any(values):
        return Markup('<span class="muted">–</span>')
    w, h, top = 70, 18, max(values)
    slot = w / len(values)
    bars = []
    for i, (runs, bad) in enumerate(zip(values, failures)):
        bh = max(1.0, h * runs / top) if runs else 0
        cls = "bad" if bad else "ok"
        bars.append(f'<rect class="{cls}" x="{i * slot:.1f}" y="{h - bh:.1f}" '
                    f'width="{max(slot - 1, 1):.1f}" height="{bh:.1f}"/>')  # fmt: skip
    label = f"{sum(values)} runs, {sum(failures)} failed"
    return Markup(f'<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
                  f'role="img" aria-label="{escape(label)}">{"".join(bars)}</svg>')  # fmt: skip
