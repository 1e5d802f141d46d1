"""Would a start or a retry succeed? The checks `training_run_start` and `training_run_retry` make,
read-only, so a page can show the refusal (and offer no button) before the click instead of after it.
The service still decides: a page only foresees the answer, and a start racing another one is refused
by the service."""

from __future__ import annotations

from django.conf import settings

from characters.models import Character
from characters.selectors import character_identity_check, dataset_report_get, dataset_report_is_current
from training import gpu_pools
from training.budget import Budget, budget_advice, user_budget
from training.dataset import is_face_crop, run_changed_face_crops
from training.models import TrainingRun
from training.time_limits import time_limit_refusal


def training_start_refusal(
    *, character: Character, budget: Budget, preset: str | None, steps: int, base_model: str | None = None
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
    if identity := character_identity_check(character).refusal:
        return identity
    if training := _already_training(character):
        return training
    model = base_model or character.base_model
    if no_pool := gpu_pools.pool_refusal(model):
        return no_pool
    if too_long := time_limit_refusal(steps=steps, base_model=model):
        return too_long
    if not budget.enough:
        left = budget.remaining or 0
        over = f"This run would cost about ${budget.estimate:.2f} and ${left:.2f} of your budget is left."
        return f"{over} {budget_advice(budget=budget, preset=preset, steps=steps)}"
    return None


def training_retry_refusal(run: TrainingRun) -> str | None:
    """Why repeating `run` (same photos, settings and trigger word) would be refused now, with what to do
    instead, or None when Retry would start it."""
    if not run.is_final or run.status == TrainingRun.Status.COMPLETED:
        return "Only a failed or cancelled run can be retried."
    character = run.character
    if identity := character_identity_check(character).refusal:
        return identity
    missing = training_run_missing_images(run)
    if missing:
        return (
            f"{missing} of this run's photos have since been deleted, so it cannot be repeated exactly. "
            f"Train {character.name} again with the photos it has now."
        )
    if run_changed_face_crops(run):
        return (
            f"This run's face crops have changed since (face crops turned off, or the photos checked again), "
            f"so it cannot be repeated exactly. Train {character.name} again with the photos it has now."
        )
    if training := _already_training(character):
        return training
    if no_pool := gpu_pools.pool_refusal(run.base_model):
        return no_pool
    steps = int(run.params["steps"])
    if too_long := time_limit_refusal(steps=steps, base_model=run.base_model):
        return f"{too_long} Train again from the training form with fewer steps."
    budget = user_budget(character.owner, steps=steps, base_model=run.base_model)
    if not budget.enough:
        left = budget.remaining or 0
        advice = budget_advice(budget=budget, preset=None, steps=steps)
        return (
            f"Repeating it would cost about ${budget.estimate:.2f} and ${left:.2f} of your budget is left. "
            f"Train again from the training form instead: {advice[0].lower()}{advice[1:]}"
        )
    return None


def face_check_pending(character: Character) -> bool:
    """A person's photos changed since the face check last saw them: auto-train waits for the check, whose
    refusal and face crops a start needs (a start by hand goes ahead on the report there is)."""
    return character.is_person and not dataset_report_is_current(character, dataset_report_get(character))


def auto_train_waiting(character: Character) -> str | None:
    """Why auto-train has not started the first run of a character with enough photos, or None."""
    if not character.auto_train or character.images.count() < settings.TRAINING_MIN_IMAGES:
        return None
    if TrainingRun.objects.filter(character=character).exists():
        return None
    if refusal := character_identity_check(character).refusal:
        return f"Auto-train is on but does not start: {refusal}"
    if face_check_pending(character):
        return "Auto-train starts once the face check of the new photos is done, in a minute or two."
    return None


def training_run_missing_images(run: TrainingRun) -> int:
    """How many of the photos frozen in the run's manifest the character no longer has (its face crops are
    `training.dataset.run_changed_face_crops`')."""
    current = set(run.character.images.values_list("sha256", flat=True))
    return sum(1 for item in run.manifest if not is_face_crop(item) and item["sha256"] not in current)


def _already_training(character: Character) -> str | None:
    if TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES).exists():
        return f"{character.name} is already training. Wait for that run to finish, or cancel it, first."
    return None
