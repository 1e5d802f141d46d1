"""Would a start succeed? The checks `training_run_start` makes, read-only, so a page can show the refusal
(and disable the button) before the click instead of after it. The service still decides: a page only
foresees the answer, and a start racing another one is refused by the service."""

from __future__ import annotations

from django.conf import settings

from characters.models import Character
from training.budget import Budget, budget_advice
from training.models import TrainingRun


def training_start_refusal(
    *, character: Character, budget: Budget, preset: str | None, steps: int
) -> str | None:
    """Why a run of `character` with these settings would be refused now, or None when it would start."""
    count = character.images.count()
    minimum, maximum = settings.TRAINING_MIN_IMAGES, settings.TRAINING_MAX_IMAGES
    if count < minimum:
        return (
            f"Training needs at least {minimum} reference photos and {character.name} has {count}. "
            f"Add {minimum - count} more, then come back."
        )
    if count > maximum:
        return f"Training takes at most {maximum} photos and {character.name} has {count}. Delete some first."
    if TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES).exists():
        return f"{character.name} is already training. Wait for that run to finish, or cancel it, first."
    if not budget.enough:
        left = budget.remaining or 0
        over = f"This run would cost about ${budget.estimate:.2f} and ${left:.2f} of your budget is left."
        return f"{over} {budget_advice(budget=budget, preset=preset, steps=steps)}"
    return None
