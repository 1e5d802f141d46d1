"""Announcing status changes: `training_run_status_changed` after each change commits, at least once.

The TrainingEvent is the announcement's outbox: a change is announced right after its commit; one still
unannounced a minute later was lost with its process, and the sweep announces it; an announcement a
receiver failed is tried again after a delay doubling per failure up to an hour, and given up after
ANNOUNCE_MAX_ATTEMPTS failures (about 7 hours).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from training.models import TrainingEvent, TrainingRun
from training.signals import training_run_status_changed

logger = logging.getLogger("training.services")

ANNOUNCE_RETRY = (timedelta(minutes=1), timedelta(hours=1))
ANNOUNCE_MAX_ATTEMPTS = 12


def announce(event: TrainingEvent) -> bool:
    """Sends `training_run_status_changed` for one change and marks it announced once every receiver ran;
    after a receiver failed it is due again later (receivers are idempotent)."""
    results = training_run_status_changed.send_robust(
        sender=TrainingRun,
        run_id=event.run_id,
        from_status=event.from_status,
        to_status=event.to_status,
        changed_at=event.created_at,
    )
    failed = [(receiver, result) for receiver, result in results if isinstance(result, Exception)]
    for receiver, error in failed:
        logger.error("training_run_status_changed receiver %r failed", receiver, exc_info=error)
    unannounced = TrainingEvent.objects.filter(pk=event.pk, announced_at__isnull=True)
    now = timezone.now()
    if not failed:
        unannounced.update(announced_at=now)
        return True
    attempts = event.announce_attempts + 1
    first, cap = ANNOUNCE_RETRY
    unannounced.update(
        announce_attempts=attempts, announce_due_at=now + min(cap, first * 2 ** (attempts - 1))
    )
    return False


def training_events_announce_overdue(*, now: datetime | None = None, batch_size: int | None = None) -> int:
    """Announces a bounded batch of status changes due to be announced again — lost with their process,
    or a receiver failed — earliest due first, and returns how many it announced. A failed one is pushed
    back, so it never holds up the rest. Two sweeps at once may announce one change twice, which receivers
    absorb."""
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    overdue = (
        TrainingEvent.objects.filter(announced_at__isnull=True, announce_due_at__lte=now)
        .order_by("announce_due_at")
        .only("id", "run_id", "from_status", "to_status", "created_at", "announce_attempts")[:limit]
    )
    announced = 0
    for event in overdue:
        if event.announce_attempts >= ANNOUNCE_MAX_ATTEMPTS:
            logger.error(
                "run %s: its change to %s could not be announced (%d failed attempts); given up",
                event.run_id, event.to_status, event.announce_attempts,
            )  # fmt: skip
            TrainingEvent.objects.filter(pk=event.pk).update(announced_at=now)
        elif announce(event):
            announced += 1
    return announced
