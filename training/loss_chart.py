"""The run page's loss chart, drawn on the server as one SVG: no chart library, no script, nothing fetched
from another site.

Series are lists of `[step, value]` pairs as the run stores them (training loss, and validation loss where
AI Toolkit logs it). Each is drawn twice: the raw points faint, and a smoothed line over them. The smoothing
is AI Toolkit's own loss graph's: a zero-phase (forward-backward), bias-corrected exponential moving
average, each pass weighted by how many points it has seen (`emaPass`/`emaWithNulls` in
ui/src/components/JobLossGraph.tsx:45-99 at 27a03a91), with its default slider position, 80, which it
turns into alpha = 1 - 0.8 * 0.98 = 0.216 (same file, lines 147-148 and 251-252). Like its graph, the
average runs over the points, not the steps; our points are already downsampled by the worker, so a point
stands for a few steps.

The drawing scales with its `viewBox`. Text scales with it too, so one drawing cannot read well both on a
1280 px screen and on a 390 px phone: the page draws a `WIDE` and a `NARROW` chart and its stylesheet
shows the one that fits (`.loss-chart-wide` / `.loss-chart-narrow`). Both carry a `<title>` and a
`<desc>` that says in words what the lines show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

# AI Toolkit's loss graph's default: slider 80 of 100 -> alpha = 1 - 0.8 * 0.98.
SMOOTHING_ALPHA = 1.0 - 0.80 * 0.98
# More points than this are thinned before drawing (each kept bucket keeps its lowest and highest value,
# so spikes stay visible); the smoothing always runs over every point.
MAX_DRAWN_POINTS = 400
# A series with this few points (validation loss, or any loss early in a run) also marks each point, as AI
# Toolkit's graph marks a sparse series (JobLossGraph.tsx:301-305 and 323): a smoothed line over three
# points says little on its own.
MARKED_POINTS = 60

Point = tuple[float, float]


@dataclass(frozen=True)
class Layout:
    """One drawing size, in viewBox units; `font` is the tick labels' size in the same units."""

    width: int
    height: int
    font: int
    x_ticks: int
    y_ticks: int
    left: int
    name: str


# At most about 72rem of page minus padding: drawn near 1:1.4 on a desktop, labels about 12-16 px.
WIDE = Layout(width=720, height=300, font=12, x_ticks=8, y_ticks=5, left=52, name="wide")
# A 390 px phone leaves about 326 px for the chart: labels of about 11.5 px.
NARROW = Layout(width=340, height=240, font=12, x_ticks=4, y_ticks=4, left=44, name="narrow")

TOP, RIGHT, BOTTOM = 28, 20, 30
SERIES_STYLE = {
    # Blue and orange: told apart with every common colour blindness, and the site's accent blue.
    "loss": ("Training loss", "#0a58ca"),
    "val_loss": ("Validation loss", "#b35900"),
    # Green, apart from both losses (`training.likeness_chart`).
    "likeness": ("Likeness", "#1a7f37"),
}


# ============================================================================================ data


def clean(series: Iterable[Sequence[float]] | None) -> list[Point]:
    """The finite `[step, value]` pairs of a stored series, in step order, one value per step (the last)."""
    by_step: dict[float, float] = {}
    for pair in series or ():
        try:
            step, value = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            continue
        if math.isfinite(step) and math.isfinite(value):
            by_step[step] = value
    return sorted(by_step.items())


def _ema_pass(values: Sequence[float], alpha: float, *, reverse: bool) -> tuple[list[float], list[float]]:
    """One direction of AI Toolkit's `emaPass`: the bias-corrected average and its confidence weight."""
    averages, weights = [0.0] * len(values), [0.0] * len(values)
    order = range(len(values) - 1, -1, -1) if reverse else range(len(values))
    accumulator = 0.0
    for seen, index in enumerate(order, start=1):
        accumulator = alpha * values[index] + (1 - alpha) * accumulator
        weight = 1 - (1 - alpha) ** seen
        averages[index], weights[index] = accumulator / weight, weight
    return averages, weights


def smooth(values: Sequence[float], alpha: float = SMOOTHING_ALPHA) -> list[float]:
    """AI Toolkit's `emaWithNulls` without nulls: forward and backward averages blended by their weights,
    so the line neither lags behind the points nor starts pinned to the first one."""
    forward, forward_weights = _ema_pass(values, alpha, reverse=False)
    backward, backward_weights = _ema_pass(values, alpha, reverse=True)
    blended = []
    for f, wf, b, wb in zip(forward, forward_weights, backward, backward_weights, strict=True):
        blended.append((wf * f + wb * b) / (wf + wb) if wf + wb > 0 else (f + b) / 2)
    return blended


def thin(points: Sequence[Point], limit: int = MAX_DRAWN_POINTS) -> list[Point]:
    """At most about `limit` points: consecutive buckets each keep their lowest and highest point, in
    step order, so a thinned line keeps its spikes."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / (limit // 2))
    kept: list[Point] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        low = min(bucket, key=lambda point: point[1])
        high = max(bucket, key=lambda point: point[1])
        kept.extend(sorted({low, high}))
    return kept


# ============================================================================================ scales


def nice_ticks(low: float, high: float, count: int) -> list[float]:
    """About `count` round values (steps of 1, 2 or 5 times a power of ten) covering low..high."""
    if high <= low:
        high = low + (abs(low) or 1.0) * 0.1
    raw_step = (high - low) / max(count - 1, 1)
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    first = math.floor(low / step + 1e-9) * step
    ticks = [round(first, 12)]
    while ticks[-1] < high - 1e-12:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


def format_value(value: float) -> str:
    """Tick and summary numbers as AI Toolkit's graph writes them (`formatNum`, JobLossGraph.tsx:13-24)."""
    if value == 0:
        return "0"
    size = abs(value)
    if size < 1e-3 or size >= 1e6:
        return f"{value:.2e}"
    if size >= 1000:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.3f}"
    if size >= 1:
        return f"{value:.4f}"
    return f"{value:.4g}"


def format_step(step: float) -> str:
    return f"{step / 1000:g}k" if step >= 10_000 else f"{step:.0f}"


@dataclass(frozen=True)
class Frame:
    """Maps steps and values into the plot area of a layout."""

    layout: Layout
    x_ticks: list[float]
    y_ticks: list[float]

    @property
    def plot(self) -> tuple[float, float, float, float]:
        return self.layout.left, TOP, self.layout.width - RIGHT, self.layout.height - BOTTOM

    def x(self, step: float) -> float:
        left, _, right, _ = self.plot
        low, high = self.x_ticks[0], self.x_ticks[-1]
        return left + (step - low) / (high - low) * (right - left)

    def y(self, value: float) -> float:
        _, top, _, bottom = self.plot
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return bottom - (value - low) / (high - low) * (bottom - top)


def _frame(layout: Layout, series: list[list[Point]], total_steps: int | None) -> Frame:
    steps = [step for points in series for step, _ in points]
    values = [value for points in series for _, value in points]
    last_step = max(max(steps), float(total_steps or 0))
    x_ticks = nice_ticks(0.0, last_step, layout.x_ticks)
    y_ticks = nice_ticks(min(values), max(values), layout.y_ticks)
    return Frame(layout=layout, x_ticks=x_ticks, y_ticks=y_ticks)


# ============================================================================================ drawing


def path_data(frame: Frame, points: Sequence[Point]) -> str:
    coordinates = " ".join(f"{frame.x(step):.1f},{frame.y(value):.1f}" for step, value in points)
    return f"M{coordinates}"


def axes(frame: Frame, y_format: Callable[[float], str] = format_value) -> list[str]:
    left, _, right, bottom = frame.plot
    font = frame.layout.font
    parts = ['<g class="axes" fill="#57606a" stroke="none">']
    for value in frame.y_ticks:
        y = frame.y(value)
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de" stroke-width="1"'
            ' vector-effect="non-scaling-stroke"/>'
            f'<text x="{left - 6}" y="{y + font * 0.35:.1f}" text-anchor="end">{y_format(value)}</text>'
        )
    for step in frame.x_ticks:
        x = frame.x(step)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#57606a"'
            ' stroke-width="1" vector-effect="non-scaling-stroke"/>'
            f'<text x="{x:.1f}" y="{bottom + 4 + font}" text-anchor="middle">{format_step(step)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="#57606a" stroke-width="1"'
        ' vector-effect="non-scaling-stroke"/></g>'
    )
    return parts


def legend(frame: Frame, keys: list[str]) -> str:
    font, x = frame.layout.font, float(frame.layout.left)
    parts = ['<g class="legend">']
    for key in keys:
        label, colour = SERIES_STYLE[key]
        parts.append(
            f'<line x1="{x:.0f}" x2="{x + 16:.0f}" y1="{TOP - 14}" y2="{TOP - 14}" stroke="{colour}"'
            ' stroke-width="2.5" vector-effect="non-scaling-stroke"/>'
            f'<text x="{x + 21:.0f}" y="{TOP - 14 + font * 0.35:.1f}" fill="#1b1f24">{label}</text>'
        )
        x += 21 + len(label) * font * 0.56 + 14
    parts.append("</g>")
    return "".join(parts)


def _series(frame: Frame, key: str, points: list[Point]) -> str:
    _, colour = SERIES_STYLE[key]
    smoothed = list(zip([step for step, _ in points], smooth([value for _, value in points]), strict=True))
    if len(points) == 1:  # one point draws no line: a dot
        step, value = points[0]
        return f'<circle cx="{frame.x(step):.1f}" cy="{frame.y(value):.1f}" r="3" fill="{colour}"/>'
    stroke = f'fill="none" stroke="{colour}" vector-effect="non-scaling-stroke" stroke-linejoin="round"'
    raw = f'<path class="raw" d="{path_data(frame, thin(points))}" {stroke} stroke-width="1" '
    raw += 'stroke-opacity="0.3"/>'
    if len(points) <= MARKED_POINTS:
        raw += f'<g class="marks" fill="{colour}" fill-opacity="0.55">'
        raw += "".join(f'<circle cx="{frame.x(s):.1f}" cy="{frame.y(v):.1f}" r="2.5"/>' for s, v in points)
        raw += "</g>"
    line = f'<path class="smoothed" d="{path_data(frame, thin(smoothed))}" {stroke} stroke-width="2.25"/>'
    return f'<g class="series series-{key}">{raw}{line}</g>'


def describe(loss: list[Point], val_loss: list[Point], total_steps: int | None) -> str:
    """The chart in words, for a screen reader: what each line did from its first step to its last."""
    sentences = []
    for key, points in (("loss", loss), ("val_loss", val_loss)):
        if not points:
            continue
        label, _ = SERIES_STYLE[key]
        smoothed = smooth([value for _, value in points])
        (first_step, first), (last_step, last) = points[0], points[-1]
        sentences.append(
            f"{label}: {format_value(first)} at step {first_step:.0f}, {format_value(last)} at step "
            f"{last_step:.0f} (smoothed {format_value(smoothed[0])} to {format_value(smoothed[-1])}), "
            f"lowest {format_value(min(value for _, value in points))}, {len(points)} points."
        )
    if total_steps:
        sentences.append(f"The run has {total_steps} steps.")
    return " ".join(sentences)


def loss_chart_svg(
    *,
    loss: Iterable[Sequence[float]] | None,
    val_loss: Iterable[Sequence[float]] | None = None,
    total_steps: int | None = None,
    layout: Layout = WIDE,
    title: str = "Loss by step",
) -> str | None:
    """The chart as SVG markup, or None while there is nothing to draw (no finite loss point yet).

    Every value in the markup is a number this function formatted or text it escaped, so the result may be
    placed in a page as it is.
    """
    loss_points, val_points = clean(loss), clean(val_loss)
    if not loss_points:
        return None
    present = [key for key, points in (("loss", loss_points), ("val_loss", val_points)) if points]
    frame = _frame(layout, [loss_points, val_points], total_steps)
    ident = f"loss-chart-{layout.name}"
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {layout.width} {layout.height}" '
        f'class="loss-chart-{layout.name}" role="img" aria-labelledby="{ident}-title {ident}-desc" '
        f'font-family="system-ui, -apple-system, sans-serif" font-size="{layout.font}" '
        'preserveAspectRatio="xMidYMid meet">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(describe(loss_points, val_points, total_steps))}</desc>',
        *axes(frame),
        legend(frame, present),
    ]
    if val_points:
        body.append(_series(frame, "val_loss", val_points))
    body.append(_series(frame, "loss", loss_points))
    body.append("</svg>")
    return "".join(body)
