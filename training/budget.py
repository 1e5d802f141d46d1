"""A user's monthly GPU budget as it stands, what one more run would leave of it, and advice that fits the
run the user chose when it does not fit (the fast preset only when it is not already chosen and would fit;
otherwise the most steps that would)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from runpod_worker.contract import BaseModel
from studio.models import User
from training.presets import PRESETS
from training.selectors import month_start, training_cost_estimate, user_reserved_spend, user_spend_this_month

MIN_STEPS, MAX_STEPS = 100, 6000  # runpod_worker.contract.TrainingParams: steps 100-6000
FAST = "fast"


@dataclass(frozen=True)
class Budget:
    """The user's monthly GPU budget as it stands, and what one more run would leave of it."""

    limit: Decimal | None
    spent: Decimal
    reserved: Decimal
    estimate: Decimal
    base_model: str = BaseModel.DEFAULT  # the model `estimate` is for: advice is reckoned at its cost

    @property
    def remaining(self) -> Decimal | None:
        return None if self.limit is None else max(Decimal("0"), self.limit - self.spent - self.reserved)

    @property
    def remaining_after(self) -> Decimal | None:
        return None if self.remaining is None else self.remaining - self.estimate

    @property
    def enough(self) -> bool:
        return self.remaining_after is None or self.remaining_after >= 0


def user_budget(user: User, *, steps: int, base_model: str = BaseModel.DEFAULT) -> Budget:
    return Budget(
        limit=user.monthly_gpu_budget_usd,
        spent=user_spend_this_month(user),
        reserved=user_reserved_spend(user),
        estimate=training_cost_estimate(steps=steps, base_model=base_model),
        base_model=base_model,
    )


def affordable_steps(remaining: Decimal, *, base_model: str = BaseModel.DEFAULT) -> int:
    """The most steps of `base_model` whose estimate `remaining` covers (0 when not even the start-up time
    is covered): the estimate grows with the steps, so a bisection over the contract's range finds it."""
    low, high = 0, MAX_STEPS
    while low < high:
        middle = (low + high + 1) // 2
        if training_cost_estimate(steps=middle, base_model=base_model) <= remaining:
            low = middle
        else:
            high = middle - 1
    return low


def budget_advice(*, budget: Budget, preset: str | None, steps: int, now: datetime | None = None) -> str:
    """What the user can do about a run the budget cannot cover, for the run they chose."""
    remaining = budget.remaining or Decimal("0")
    fast_steps = int(PRESETS[FAST]["steps"])
    fewer = min(affordable_steps(remaining, base_model=budget.base_model), steps - 1)
    renews = f"until {_next_month(now):%-d %B}, when the budget starts again, or ask staff to raise it."
    fast_cost = training_cost_estimate(steps=fast_steps, base_model=budget.base_model)
    if preset != FAST and steps > fast_steps and fast_cost <= remaining:
        return f"Choose the fast preset (about ${fast_cost:.2f}), wait {renews}"
    if fewer >= MIN_STEPS:
        return f"Set at most {fewer} steps under Advanced settings, wait {renews}"
    return f"What is left (${remaining:.2f}) does not cover even the shortest run. Wait {renews}"


def _next_month(now: datetime | None) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
