"""Training's answers to other apps' signals (connected in `TrainingConfig.ready`)."""

from __future__ import annotations

import uuid
from typing import Any

from training.services import training_run_autostart


def start_training_when_sheet_complete(sender: Any, *, character_id: uuid.UUID, **kwargs: Any) -> None:
    """Auto-train: the character's first run starts once it has enough reference images."""
    training_run_autostart(character_id=character_id)
