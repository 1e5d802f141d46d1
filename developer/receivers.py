"""Turns run status changes into webhook events; the training app never has to know about us."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.dispatch import receiver

from training.signals import training_run_status_changed

logger = logging.getLogger(__name__)


@receiver(training_run_status_changed, dispatch_uid="developer.webhook_events")
def record_webhook_events(sender: Any, *, run_id: uuid.UUID, to_status: str, **kwargs: Any) -> None:
    from developer.services import webhook_events_record

    try:
        webhook_events_record(run_id=run_id, status=to_status)
    except Exception:  # a webhook problem must never break the run's own state change
        logger.exception("Could not record webhook events for run %s", run_id)
