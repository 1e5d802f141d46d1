"""Budget advice fits the run the user chose: the fast preset only when it is not chosen and would fit,
otherwise the most steps that fit, otherwise waiting for the next month."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from training.budget import Budget, affordable_steps, budget_advice
from training.presets import PRESETS
from training.selectors import training_cost_estimate

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def budget_with(remaining: Decimal, steps: int) -> Budget:
    return Budget(
        limit=remaining,
        spent=Decimal("0"),
        reserved=Decimal("0"),
        estimate=training_cost_estimate(steps=steps),
    )


def test_the_most_affordable_steps_cost_no_more_than_what_is_left() -> None:
    remaining = training_cost_estimate(steps=450)

    steps = affordable_steps(remaining)

    assert training_cost_estimate(steps=steps) <= remaining < training_cost_estimate(steps=steps + 1)


def test_a_balanced_run_over_budget_is_advised_the_fast_preset_when_it_fits() -> None:
    fast = training_cost_estimate(steps=PRESETS["fast"]["steps"])

    advice = budget_advice(budget=budget_with(fast, 1500), preset="balanced", steps=1500, now=NOW)

    assert advice.startswith(f"Choose the fast preset (about ${fast:.2f})")


@pytest.mark.parametrize("preset", ["fast", None])
def test_with_the_fast_preset_or_custom_steps_the_advice_is_fewer_steps(preset: str | None) -> None:
    remaining = training_cost_estimate(steps=400)

    advice = budget_advice(budget=budget_with(remaining, 600), preset=preset, steps=600, now=NOW)

    assert advice.startswith("Set at most 400 steps under Advanced settings")
    assert "fast preset" not in advice


def test_when_not_even_the_shortest_run_fits_the_advice_is_to_wait_for_next_month() -> None:
    advice = budget_advice(budget=budget_with(Decimal("0.05"), 600), preset="fast", steps=600, now=NOW)

    assert advice == (
        "What is left ($0.05) does not cover even the shortest run. Wait until 1 January, when the budget "
        "starts again, or ask staff to raise it."
    )


@pytest.mark.parametrize("base_model", ["qwen-image", "wan22"])
def test_the_advice_for_a_slower_model_is_reckoned_at_that_models_cost(base_model: str) -> None:
    remaining = training_cost_estimate(steps=400, base_model=base_model)
    fast = training_cost_estimate(steps=PRESETS["fast"]["steps"], base_model=base_model)
    budget = Budget(
        limit=remaining,
        spent=Decimal("0"),
        reserved=Decimal("0"),
        estimate=training_cost_estimate(steps=1500, base_model=base_model),
        base_model=base_model,
    )

    advice = budget_advice(budget=budget, preset="balanced", steps=1500, now=NOW)

    assert fast > remaining  # the fast preset would not fit this model: not advised
    assert advice.startswith("Set at most 400 steps under Advanced settings"), advice
    assert affordable_steps(remaining, base_model=base_model) == 400
