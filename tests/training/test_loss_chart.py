"""The run page's loss chart: a pure function from the stored series to SVG markup."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import pytest

from training.loss_chart import (
    NARROW,
    SMOOTHING_ALPHA,
    WIDE,
    clean,
    loss_chart_svg,
    nice_ticks,
    smooth,
    thin,
)

SVG = "{http://www.w3.org/2000/svg}"
UPSTREAM = json.loads((Path(__file__).parent / "fixtures" / "loss_smoothing_aitoolkit.json").read_text())


def falling(count: int, *, start: int = 1, every: int = 10) -> list[list[float]]:
    return [[start + index * every, 0.3 + 0.3 * math.exp(-index / 20)] for index in range(count)]


def parse(svg: str | None) -> ElementTree.Element:
    assert svg is not None
    return ElementTree.fromstring(svg)  # noqa: S314 (our own markup)


def path_points(element: ElementTree.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", element.get("d", ""))]


def test_the_smoothing_is_ai_toolkits_own_zero_phase_average() -> None:
    assert pytest.approx(UPSTREAM["alpha"]) == SMOOTHING_ALPHA

    ours = smooth(UPSTREAM["values"])

    assert ours == pytest.approx(UPSTREAM["smoothed"], abs=1e-12)


def test_the_smoothed_line_neither_lags_nor_starts_at_the_first_point() -> None:
    values = [1.0] + [0.2] * 30

    smoothed = smooth(values)

    assert smoothed[0] < 0.9  # a one-sided average would start at 1.0
    assert smoothed[-1] == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("series", [None, [], [[10, float("nan")]], [[10, "x"]], [[10]], [["a", 1.0]]])
def test_nothing_is_drawn_before_the_first_finite_loss_point(series: object) -> None:
    assert loss_chart_svg(loss=series) is None  # type: ignore[arg-type]


def test_pairs_that_are_not_finite_numbers_are_left_out_and_the_rest_sorted_by_step() -> None:
    series = [[30, 0.3], [10, 0.5], [20, float("inf")], [None, 0.1], [20, 0.4], [10, 0.45]]

    assert clean(series) == [(10.0, 0.45), (20.0, 0.4), (30.0, 0.3)]


def test_the_chart_scales_with_its_view_box_and_names_itself_for_screen_readers() -> None:
    svg = parse(loss_chart_svg(loss=falling(50), total_steps=1000, title="Loss of Anna's run"))

    assert svg.get("viewBox") == f"0 0 {WIDE.width} {WIDE.height}"
    assert svg.get("width") is None and svg.get("height") is None  # the page's CSS sizes it
    assert svg.get("role") == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    assert title.text == "Loss of Anna's run"
    assert desc.text is not None
    assert "Training loss: 0.6 at step 1, 0.3" in desc.text
    assert "The run has 1000 steps." in desc.text


def test_raw_points_are_faint_under_a_smoothed_line() -> None:
    svg = parse(loss_chart_svg(loss=falling(50)))

    raw = svg.find(f".//{SVG}path[@class='raw']")
    line = svg.find(f".//{SVG}path[@class='smoothed']")
    assert raw is not None and line is not None
    assert float(raw.get("stroke-opacity", "1")) <= 0.35
    assert float(line.get("stroke-width", "0")) > float(raw.get("stroke-width", "0"))
    assert len(path_points(raw)) == 50
    assert len(path_points(line)) == 50


def test_validation_loss_gets_its_own_lines_and_a_place_in_the_legend() -> None:
    svg_text = loss_chart_svg(loss=falling(50), val_loss=[[250, 0.5], [500, 0.42], [750, 0.4]])

    svg = parse(svg_text)
    assert svg.find(f".//{SVG}g[@class='series series-val_loss']") is not None
    legend = "".join(svg.find(f".//{SVG}g[@class='legend']").itertext())  # type: ignore[union-attr]
    assert "Training loss" in legend and "Validation loss" in legend
    assert "Validation loss: 0.5 at step 250, 0.4 at step 750" in "".join(svg.itertext())


def test_without_validation_loss_the_legend_names_only_the_training_loss() -> None:
    svg = parse(loss_chart_svg(loss=falling(5)))

    legend = "".join(svg.find(f".//{SVG}g[@class='legend']").itertext())  # type: ignore[union-attr]
    assert legend == "Training loss"
    assert svg.find(f".//{SVG}g[@class='series series-val_loss']") is None


def test_a_single_point_is_drawn_as_a_dot() -> None:
    svg = parse(loss_chart_svg(loss=[[1, 0.52]], total_steps=1500))

    assert svg.find(f".//{SVG}circle") is not None
    assert svg.find(f".//{SVG}path[@class='raw']") is None


def test_while_training_the_step_axis_runs_to_the_runs_last_step() -> None:
    svg = parse(loss_chart_svg(loss=falling(10), total_steps=1500))

    labels = [text.text for text in svg.iterfind(f".//{SVG}g[@class='axes']/{SVG}text")]
    assert "1500" in labels
    line = svg.find(f".//{SVG}path[@class='smoothed']")
    assert line is not None
    right_edge = WIDE.width - 12
    assert max(x for x, _ in path_points(line)) < right_edge / 4  # 91 of 1500 steps: the left sixth


@pytest.mark.parametrize("layout", [WIDE, NARROW], ids=["wide", "narrow"])
def test_every_point_lies_inside_the_drawing(layout: object) -> None:
    series = [*falling(300), [3001, 1.9]]  # a late spike sets the top of the scale
    svg = parse(loss_chart_svg(loss=series, val_loss=[[1000, 0.2]], layout=layout))  # type: ignore[arg-type]

    for path in svg.iterfind(f".//{SVG}path"):
        for x, y in path_points(path):
            assert 0 <= x <= layout.width  # type: ignore[attr-defined]
            assert 0 <= y <= layout.height  # type: ignore[attr-defined]


def test_the_narrow_drawing_is_for_a_phone_and_names_its_own_ids() -> None:
    wide = parse(loss_chart_svg(loss=falling(5)))
    narrow = parse(loss_chart_svg(loss=falling(5), layout=NARROW))

    assert narrow.get("viewBox") == f"0 0 {NARROW.width} {NARROW.height}"
    assert NARROW.width <= 390
    assert {wide.get("aria-labelledby")} & {narrow.get("aria-labelledby")} == set()
    assert narrow.get("class") == "loss-chart-narrow"


@pytest.mark.parametrize(
    ("low", "high", "count"), [(0.31, 0.62, 5), (0, 1500, 8), (0.0012, 0.0019, 4), (5, 5, 4), (0, 37, 4)]
)
def test_ticks_are_round_numbers_that_cover_the_data(low: float, high: float, count: int) -> None:
    ticks = nice_ticks(low, high, count)

    assert ticks[0] <= low and ticks[-1] >= high
    assert 2 <= len(ticks) <= count + 2
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1
    mantissa = steps.pop() / 10 ** math.floor(math.log10(ticks[1] - ticks[0]))
    assert round(mantissa, 6) in {1, 2, 2.5, 5}


def test_a_long_series_is_thinned_for_drawing_and_keeps_its_spikes() -> None:
    points = [(float(step), 0.4) for step in range(5000)]
    points[2345] = (2345.0, 3.0)

    kept = thin(points, limit=400)

    assert len(kept) <= 402
    assert (2345.0, 3.0) in kept
    assert kept == sorted(kept)


def test_a_long_series_draws_a_bounded_number_of_points() -> None:
    svg = loss_chart_svg(loss=falling(6000, every=1))

    assert svg is not None
    assert len(svg) < 40_000
    assert len(path_points(parse(svg).find(f".//{SVG}path[@class='raw']"))) <= 402  # type: ignore[arg-type]


def test_text_in_the_chart_is_escaped() -> None:
    svg = loss_chart_svg(loss=falling(3), title='<script>alert("x")</script> & co')

    assert svg is not None
    assert "<script>" not in svg
    assert parse(svg).find(f"{SVG}title").text == '<script>alert("x")</script> & co'  # type: ignore[union-attr]


def test_a_sparse_series_marks_each_of_its_points_and_a_dense_one_does_not() -> None:
    svg = parse(loss_chart_svg(loss=falling(200), val_loss=[[250, 0.5], [500, 0.42], [750, 0.4]]))

    val_marks = svg.findall(f".//{SVG}g[@class='series series-val_loss']//{SVG}circle")
    loss_marks = svg.findall(f".//{SVG}g[@class='series series-loss']//{SVG}circle")
    assert len(val_marks) == 3
    assert loss_marks == []
