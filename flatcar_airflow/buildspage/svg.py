"""Charts and badges as SVG text, drawn on the server (pure functions).

INPUTS:  numbers per build (step durations, success or failure), oldest first; a badge's words.
OUTPUTS: SVG documents (strings) to inline in a page or serve as ``image/svg+xml``.

Why hand-drawn SVG and not a charting library: the page must render with no network (no CDN) and no
JavaScript build, in a browser embedded in Airflow's UI and on a wall screen. What it needs is a line per
step over a few dozen builds, a bar per nightly and a badge: a few ``<polyline>``, ``<circle>`` and
``<rect>`` elements. A JavaScript library shipped in the package (Chart.js, uPlot: 50-200 kB) would add a
front-end dependency to keep up to date and draw nothing until its script runs; server-side Python
libraries (pygal, matplotlib) are heavy for the api-server and pygal's default output loads its tooltip
script from a CDN. Plain SVG is testable as text, accessible (``<title>`` on every point gives the
browser's own tooltip) and costs well under a millisecond per chart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["PALETTE", "STATE_COLOURS", "badge", "duration_chart", "human_duration", "success_chart"]

#: Colour-blind friendly categorical colours (Okabe and Ito), then greys.
PALETTE = (
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000",
    "#7f7f7f", "#8c564b", "#17becf", "#9467bd", "#bcbd22", "#1f77b4", "#ff7f0e", "#2ca02c",
)  # fmt: skip
#: Airflow's own state colours, so a cell reads the same as the grid.
STATE_COLOURS = {
    "success": "#008000",
    "failed": "#ff0000",
    "upstream_failed": "#ffa500",
    "skipped": "#ff69b4",
    "running": "#32cd32",
    "queued": "#808080",
    "up_for_retry": "#ffd700",
    "removed": "#d3d3d3",
}


def human_duration(seconds: float | None) -> str:
    """``1 h 02 min``, ``3 min 07 s``, ``42 s``; an em dash for no value."""
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    return f"{secs} s"


#: Steps of the y axis (seconds): round to a person reading durations.
_TICKS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _axis(value: float) -> tuple[float, float]:
    """``(top, step)`` of the y axis: at most five steps of a round duration covering ``value``."""
    if value <= 0:
        return 1.0, 0.25
    step = next((tick for tick in _TICKS if value / tick <= 5), None)
    if step is None:
        step = _TICKS[-1] * math.ceil(value / _TICKS[-1] / 5)
    return step * math.ceil(value / step), float(step)


def _label(tag: str) -> str:
    """A build's short name on an axis: ``11-21`` for a nightly of 2026-11-21, else the tag's tail."""
    match = re.search(r"-(\d{4})(\d{2})(\d{2})-(\d{4})\Z", tag)
    return f"{match.group(2)}-{match.group(3)}" if match else tag[-10:]


def duration_chart(
    tags: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    element_id: str = "durations",
    width: int = 900,
    height: int = 320,
) -> str:
    """Each series' duration (seconds) per build, oldest build left; a point per build and series.

    ``tags`` are the builds (x), ``series`` maps a name (a task id) to one value per tag (None: the step
    did not run in that build, which leaves a gap in its line).
    """
    left, right, top, bottom = 64, 180, 16, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    y_max, y_step = _axis(max(values, default=0.0))
    count = max(len(tags), 1)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / count)

    def y(v: float) -> float:
        return top + plot_h - plot_h * v / y_max

    parts = [
        f'<svg id="{escape(element_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="Step durations of the last {len(tags)} builds">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for tick in range(round(y_max / y_step) + 1):
        gy = y(tick * y_step)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{gy:.1f}" y2="{gy:.1f}" stroke="#e5e5e5"/>')
        parts.append(
            f'<text x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end" font-size="11">'
            f"{escape(human_duration(tick * y_step))}</text>"
        )
    # A label every ~60 px, and always the newest build's.
    every = max(1, math.ceil(len(tags) / max(plot_w // 60, 1)))
    for i, tag in enumerate(tags):
        if (len(tags) - 1 - i) % every == 0:
            parts.append(
                f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="10">'
                f"{escape(_label(tag))}</text>"
            )
    for number, (name, vs) in enumerate(series.items()):
        colour = PALETTE[number % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                segments.append([])
            else:
                segments[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for segment in segments:
            if len(segment) > 1:
                parts.append(
                    f'<polyline class="series" data-series="{escape(name)}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.5" points="{" ".join(segment)}"/>'
                )
        for i, v in enumerate(vs):
            if v is not None:
                parts.append(
                    f'<circle class="point" data-tag="{escape(tags[i])}" data-series="{escape(name)}" '
                    f'data-seconds="{v:.1f}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(name)} of {escape(tags[i])}: {escape(human_duration(v))}</title>"
                    "</circle>"
                )
        ly = top + 12 + 15 * number
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + plot_w + 26}" y="{ly + 1}" font-size="11">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def success_chart(
    builds: Sequence[tuple[str, str | None]],
    *,
    element_id: str = "success-rate",
    width: int = 900,
    height: int = 140,
) -> str:
    """A bar per build (green success, red failure, grey other), oldest left, and the success rate."""
    left, top, bottom = 64, 24, 20
    plot_w, plot_h = width - left - 180, height - top - bottom
    finished = [state for _, state in builds if state in ("success", "failed")]
    rate = (sum(state == "success" for state in finished) / len(finished)) if finished else None
    caption = (
        f"each build's state, oldest left: {sum(s == 'failed' for s in finished)} of {len(builds)} failed"
    )
    parts = [
        f'<svg id="{escape(element_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(caption)}" data-rate="{"" if rate is None else f"{rate:.4f}"}">',
        f'<text x="{left}" y="14" font-size="12">{escape(caption)}</text>',
    ]
    count = max(len(builds), 1)
    bar_w = plot_w / count
    for i, (tag, state) in enumerate(builds):
        colour = {"success": STATE_COLOURS["success"], "failed": STATE_COLOURS["failed"]}.get(
            state or "", "#bbbbbb"
        )
        parts.append(
            f'<rect class="bar" data-tag="{escape(tag)}" data-state="{escape(state or "")}" '
            f'x="{left + i * bar_w + 1:.1f}" y="{top}" width="{max(bar_w - 2, 1):.1f}" height="{plot_h}" '
            f'fill="{colour}"><title>{escape(tag)}: {escape(state or "unknown")}</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _text_width(text: str) -> int:
    # Verdana 11px averages about 6.5 px a character: shields.io's badges use the same estimate.
    return int(len(text) * 6.5) + 10


def badge(label: str, message: str, colour: str) -> str:
    """A flat status badge ``label | message`` (the shields.io look), self-contained SVG."""
    lw, mw = _text_width(label), _text_width(message)
    width = lw + mw
    label, message = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{label}: {message}"><title>{label}: {message}</title>'
        f'<rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{escape(colour)}"/>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2:.1f}" y="14">{label}</text>'
        f'<text x="{lw + mw / 2:.1f}" y="14">{message}</text></g></svg>'
    )
