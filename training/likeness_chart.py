"""The run page's likeness chart: each checkpoint's likeness to the character (`training.services.likeness`)
by step, drawn on the server as SVG with the loss chart's own scales, axes and legend (`training.loss_chart`).

The vertical axis is fixed at 0-100 %, with dlib's same-person line (likeness 50 %, distance 0.6) drawn
dashed: a checkpoint above it draws someone its face model takes for the character. A checkpoint whose
samples mostly copy a training photo is drawn hollow (it is never chosen), and the checkpoint in use is
ringed. Like the loss chart there is a `WIDE` and a `NARROW` drawing, and a `<desc>` in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from characters.faces.likeness import SAME_PERSON_LIKENESS
from training.loss_chart import SERIES_STYLE, WIDE, Frame, Layout, axes, legend, nice_ticks, path_data

PERCENT_TICKS = [0.0, 0.25, 0.5, 0.75, 1.0]


@dataclass(frozen=True)
class LikenessPoint:
    step: int
    score: float  # 0 to 1
    faces: int
    samples: int
    copying: bool
    current: bool  # the LoRA the character uses


def percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def describe(points: Sequence[LikenessPoint]) -> str:
    """The chart in words, for a screen reader."""
    parts = [
        f"step {point.step}: {percent(point.score)}, a face in {point.faces} of {point.samples} samples"
        + (", copies training photos" if point.copying else "")
        + (", in use" if point.current else "")
        for point in points
    ]
    return f"Likeness by checkpoint ({percent(SAME_PERSON_LIKENESS)} is the same-person line): " + "; ".join(
        parts
    )


def likeness_chart_svg(
    points: Sequence[LikenessPoint],
    *,
    total_steps: int | None,
    layout: Layout = WIDE,
    title: str = "Likeness by checkpoint",
) -> str | None:
    """The chart as SVG markup, or None before any checkpoint is scored. Every value in the markup is a
    number formatted here or text escaped here."""
    if not points:
        return None
    points = sorted(points, key=lambda point: point.step)
    last = max(float(points[-1].step), float(total_steps or 0))
    frame = Frame(layout=layout, x_ticks=nice_ticks(0.0, last, layout.x_ticks), y_ticks=PERCENT_TICKS)
    ident = f"likeness-chart-{layout.name}"
    _, colour = SERIES_STYLE["likeness"]
    left, _, right, _ = frame.plot
    line_y = frame.y(SAME_PERSON_LIKENESS)
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {layout.width} {layout.height}" '
        f'class="likeness-chart-{layout.name}" role="img" aria-labelledby="{ident}-title {ident}-desc" '
        f'font-family="system-ui, -apple-system, sans-serif" font-size="{layout.font}" '
        'preserveAspectRatio="xMidYMid meet">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(describe(points))}</desc>',
        *axes(frame, y_format=percent),
        legend(frame, ["likeness"]),
        f'<g class="same-person"><line x1="{left}" x2="{right}" y1="{line_y:.1f}" y2="{line_y:.1f}" '
        'stroke="#57606a" stroke-width="1.5" stroke-dasharray="6 4" vector-effect="non-scaling-stroke"/>'
        f'<text x="{right}" y="{line_y - 5:.1f}" text-anchor="end" fill="#57606a">same person</text></g>',
    ]
    if len(points) > 1:
        body.append(
            f'<path class="likeness-line" d="{path_data(frame, [(p.step, p.score) for p in points])}" '
            f'fill="none" stroke="{colour}" stroke-width="2.25" stroke-linejoin="round" '
            'vector-effect="non-scaling-stroke"/>'
        )
    for point in points:
        x, y = frame.x(point.step), frame.y(point.score)
        fill = "#ffffff" if point.copying else colour
        body.append(
            f'<circle class="checkpoint-mark{" copying" if point.copying else ""}" cx="{x:.1f}" cy="{y:.1f}" '
            f'r="4" fill="{fill}" stroke="{colour}" stroke-width="2"/>'
        )
        if point.current:
            body.append(
                f'<circle class="in-use" cx="{x:.1f}" cy="{y:.1f}" r="8" fill="none" stroke="#1b1f24" '
                'stroke-width="1.5"/>'
            )
    body.append("</svg>")
    return "".join(body)
