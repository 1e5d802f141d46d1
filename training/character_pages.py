"""Training's parts of the character pages (registered in `TrainingConfig.ready`; characters/page_parts.py).

Each card on the list page gets its LoRA status, read for every character in one query; a character's page
gets the training panel: current LoRA, the run in progress, the history and Train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Q
from django.template import Context
from django.utils.html import format_html
from django.utils.safestring import SafeString

from characters.models import Character
from characters.selectors import character_identity_check
from training.artifacts import lora_download_name
from training.models import TrainingRun
from training.preflight import auto_train_waiting
from training.selectors import character_current_lora, current_lora_run_id, training_run_list_for

HISTORY_LENGTH = 10


@dataclass(frozen=True)
class CharacterTraining:
    """What a character page shows of training: the current LoRA's run and the run in progress."""

    lora: TrainingRun | None = None
    active: TrainingRun | None = None


def training_by_character(character_ids: list[Any]) -> dict[Any, CharacterTraining]:
    """Each character's active run and current LoRA (as `character_current_lora` picks it), in one query."""
    if not character_ids:
        return {}
    runs = TrainingRun.objects.filter(character_id__in=character_ids).filter(
        Q(status__in=TrainingRun.ACTIVE_STATUSES) | Q(pk=current_lora_run_id(OuterRef("character_id")))
    )
    found: dict[Any, dict[str, TrainingRun]] = {}
    for run in runs:
        kind = "lora" if run.is_final else "active"
        found.setdefault(run.character_id, {})[kind] = run
    return {character_id: CharacterTraining(**kinds) for character_id, kinds in found.items()}


def lora_status_card_part(context: Context, characters: list[Character]) -> dict[Any, SafeString]:
    """The list page: each card's LoRA status, or its run in progress."""
    by_character = training_by_character([character.pk for character in characters])
    return {
        character.pk: _render(
            context,
            "training/_lora_status.html",
            {"training": by_character.get(character.pk, CharacterTraining())},
        )
        for character in characters
    }


def training_panel(context: Context, character: Character, image_count: int) -> SafeString:
    """The detail page's training card: current LoRA, the run in progress, the history, and Train."""
    runs = list(training_run_list_for(context["user"], character=character)[: HISTORY_LENGTH + 1])
    lora = character_current_lora(character)
    active = next((run for run in runs if not run.is_final), None)
    # Read whenever nothing trains (not only with enough photos), so the page's queries stay the same.
    refusal = character_identity_check(character).refusal if active is None else None
    panel = _render(
        context,
        "training/_character_panel.html",
        {
            "character": character,
            "lora": lora,
            "lora_filename": lora_download_name(lora) if lora else "",
            "active": active,
            "runs": runs[:HISTORY_LENGTH],
            "more_runs": len(runs) > HISTORY_LENGTH,
            "image_count": image_count,
            "min_images": settings.TRAINING_MIN_IMAGES,
            "missing_images": max(0, settings.TRAINING_MIN_IMAGES - image_count),
            # Why Train would be refused by the face check, and why auto-train has not started.
            "identity_refusal": refusal,
            "auto_train_waiting": auto_train_waiting(character) if not runs else None,
        },
    )
    # The page's script replaces this element by its id after an upload (static/js/upload.js).
    return format_html('<div id="training-panel">{}</div>', panel)


def _render(context: Context, template_name: str, values: dict[str, Any]) -> SafeString:
    """A template drawn as an inclusion tag draws it: its own values, the page's CSRF token, nothing else."""
    assert context.template is not None
    template = context.template.engine.get_template(template_name)
    own = context.new(values)
    csrf_token = context.get("csrf_token")
    if csrf_token is not None:
        own["csrf_token"] = csrf_token
    return SafeString(template.render(own))
