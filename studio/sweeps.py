"""What every beat sweep that re-queues lost work shares: taking the overdue rows, at most a batch."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


def lock_overdue(pending: QuerySet[M], *, overdue_since: datetime, limit: int) -> QuerySet[M]:
    """The rows of `pending` whose `next_attempt_at` passed before `overdue_since` (their task was lost),
    oldest first, at most `limit`, locked with SKIP LOCKED so two sweeps never take the same row.

    Evaluate it inside the caller's transaction.
    """
    return (
        pending.select_for_update(skip_locked=True)
        .filter(next_attempt_at__lt=overdue_since)
        .order_by("next_attempt_at")[:limit]
    )
