"""Turns run status changes into webhook events; the training app never has to know about us."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.dispatch import receiver

from training.signals import training_run_artifact_created, training_run_status_changed


@receiver(training_run_status_changed, dispatch_uid="developer.webhook_events")
def record_webhook_events(
    sender: Any, *, run_id: uuid.UUID, to_status: str, changed_at: datetime | None = None, **kwargs: Any
) -> None:
    # Idempotent (one event id per run and status); an error reaches the sender, which logs it and leaves
    # the change for the sweep to announce again, while the run's own change stands.
    from developer.services import webhook_events_record

    webhook_events_record(run_id=run_id, status=to_status, changed_at=changed_at)


@receiver(training_run_artifact_created, dispatch_uid="developer.webhook_artifact_events")
def record_webhook_artifact_events(
    sender: Any, *, run_id: uuid.UUID, kind: str, artifact_id: int, **kwargs: Any
) -> None:
    # Idempotent (one event id per sample or checkpoint); an error reaches the sender, which announces the
    # artifact again later.
    from developer.services import webhook_artifact_event_record

    webhook_artifact_event_record(run_id=run_id, kind=kind, artifact_id=artifact_id)
