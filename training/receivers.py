"""Training's answers to other apps' signals (connected in `TrainingConfig.ready`)."""

from __future__ import annotations

import uuid
from typing import Any

from characters.models import Character
from studio.errors import Conflict
from training.models import TrainingEvent, TrainingRun
from training.services import training_run_autostart, training_run_cancel


def start_training_when_sheet_complete(sender: Any, *, character_id: uuid.UUID, **kwargs: Any) -> None:
    """Auto-train: the character's first run starts once it has enough reference images, or once
    auto-train is turned on for a character that already has them."""
    training_run_autostart(character_id=character_id)


def cancel_runs_of_deleting_character(sender: Any, *, character: Character, **kwargs: Any) -> None:
    """A character about to be deleted stops training first, so no GPU keeps billing for it."""
    active = TrainingRun.objects.filter(character=character, status__in=TrainingRun.ACTIVE_STATUSES)
    for run in active:
        try:
            training_run_cancel(run=run, source=TrainingEvent.Source.SYSTEM)
        except Conflict:
            continue  # it ended on its own meanwhile
