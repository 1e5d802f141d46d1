"""Training's part of the character pages, so that `characters` never imports `training`.

{% load training_tags %}
{% characters_with_training characters as rows %}   list page: one query for every character
{% for character, training in rows %}{% lora_status training %}{% endfor %}
{% character_training_panel character image_count %}   detail page: LoRA, active run, history, Train
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django import template
from django.conf import settings
from django.db.models import OuterRef, Q, Subquery

from characters.models import Character
from training.artifacts import lora_download_name
from training.models import TrainingRun
from training.selectors import RunCharge, character_current_lora, training_run_charge, training_run_list_for

register = template.Library()

HISTORY_LENGTH = 10


@dataclass(frozen=True)
class CharacterTraining:
    """What a character page shows of training: the current LoRA's run and the run in progress."""

    lora: TrainingRun | None = None
    active: TrainingRun | None = None


@register.simple_tag
def characters_with_training(characters: Iterable[Character]) -> list[tuple[Character, CharacterTraining]]:
    """Pairs each character with its training state, reading every character's runs in one query."""
    characters = list(characters)
    by_character = training_by_character([character.pk for character in characters])
    return [(character, by_character.get(character.pk, CharacterTraining())) for character in characters]


def training_by_character(character_ids: list[Any]) -> dict[Any, CharacterTraining]:
    """Each character's active run and current LoRA (as `character_current_lora` picks it), in one query."""
    if not character_ids:
        return {}
    latest_completed = (
        TrainingRun.objects.filter(character_id=OuterRef("character_id"), status=TrainingRun.Status.COMPLETED)
        .order_by("-finished_at", "-created_at")
        .values("pk")[:1]
    )
    runs = TrainingRun.objects.filter(character_id__in=character_ids).filter(
        Q(status__in=TrainingRun.ACTIVE_STATUSES) | Q(pk=Subquery(latest_completed))
    )
    found: dict[Any, dict[str, TrainingRun]] = {}
    for run in runs:
        kind = "lora" if run.status == TrainingRun.Status.COMPLETED else "active"
        found.setdefault(run.character_id, {})[kind] = run
    return {character_id: CharacterTraining(**kinds) for character_id, kinds in found.items()}


@register.filter
def duration(seconds: int | None) -> str:
    """42 -> "42 s", 754 -> "12 min 34 s", 7260 -> "2 h 1 min": an ETA a person reads at a glance."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@register.inclusion_tag("training/_lora_status.html")
def lora_status(training: CharacterTraining) -> dict[str, Any]:
    return {"training": training}


@register.inclusion_tag("training/_character_panel.html", takes_context=True)
def character_training_panel(
    context: template.Context, character: Character, image_count: int
) -> dict[str, Any]:
    """The detail page's training card: current LoRA, the run in progress, the history, and Train."""
    runs = list(training_run_list_for(context["user"], character=character)[: HISTORY_LENGTH + 1])
    lora = character_current_lora(character)
    return {
        "character": character,
        "lora": lora,
        "lora_filename": lora_download_name(lora, character.trigger_word) if lora else "",
        "active": next((run for run in runs if not run.is_final), None),
        "runs": runs[:HISTORY_LENGTH],
        "more_runs": len(runs) > HISTORY_LENGTH,
        "image_count": image_count,
        "min_images": settings.TRAINING_MIN_IMAGES,
        "missing_images": max(0, settings.TRAINING_MIN_IMAGES - image_count),
    }


@register.simple_tag
def run_charge(run: TrainingRun) -> RunCharge:
    """What the run counts against its owner's budget (`training_run_charge`), for a cost column."""
    return training_run_charge(run)
