"""Sending a webhook delivery: one claimed attempt at a time, its retries, and the sweep's claim of lost ones.

The delivery tasks (`developer.tasks`) run these; `developer.services` records the deliveries and queues
the tasks, and nothing here imports either, so the imports run one way: services -> tasks -> deliveries.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from developer import webhooks
from developer.models import WebhookDelivery
from studio.errors import ApplicationError
from studio.sweeps import lock_overdue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptOutcome:
    attempt: int  # 0 when nothing was sent
    retry_in: float | None  # seconds until the next attempt is due; None when there is none


NOTHING_SENT = AttemptOutcome(attempt=0, retry_in=None)


def max_attempts() -> int:
    return 1 + len(settings.WEBHOOK_RETRY_DELAYS_SECONDS)


def attempt_lease() -> timedelta:
    """How long a claimed attempt holds its delivery: past it, the attempt is taken for dead."""
    # The POST's connect and read timeouts, and as long again for the DNS checks before it and the
    # write after it.
    connect, read = webhooks.timeouts()
    return timedelta(seconds=connect + read + settings.WEBHOOK_TIMEOUT_SECONDS)


def webhook_delivery_attempt(*, delivery_id: uuid.UUID | str) -> AttemptOutcome:
    """Send a due pending delivery once and record the outcome: delivered, failed, or due again later.

    The attempt is claimed first with a conditional update that takes only a due delivery and makes it
    due again only after `attempt_lease()`: duplicate tasks never send early nor two at once, and an
    attempt whose worker died is sent again once the lease has run out.
    """
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return NOTHING_SENT
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery.pk,
        status=WebhookDelivery.Status.PENDING,
        attempts=delivery.attempts,
        next_attempt_at__lte=now,
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_attempt_at=now + attempt_lease())
    if not claimed:
        return NOTHING_SENT
    attempt = delivery.attempts + 1
    result = _send(delivery)
    final = result.ok or attempt >= max_attempts() or not delivery.endpoint.active
    retry_in = None if final else _retry_delay(attempt)
    _record(delivery, attempt, result, retry_in=retry_in)
    return AttemptOutcome(attempt=attempt, retry_in=retry_in)


def _retry_delay(attempt: int) -> float:
    delays = settings.WEBHOOK_RETRY_DELAYS_SECONDS
    return float(delays[min(attempt, len(delays)) - 1])


def _send(delivery: WebhookDelivery) -> webhooks.PostResult:
    endpoint = delivery.endpoint
    if not endpoint.active:
        return webhooks.PostResult(ok=False, status_code=None, error="The endpoint is disabled.")
    try:
        webhooks.check_url_is_public(endpoint.url)
    except ApplicationError as error:
        return webhooks.PostResult(ok=False, status_code=None, error=error.message)
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    headers = webhooks.sign(endpoint.secret, delivery.event_id, int(timezone.now().timestamp()), body)
    return webhooks.post(endpoint.url, headers, body)


def _record(
    delivery: WebhookDelivery, attempt: int, result: webhooks.PostResult, *, retry_in: float | None
) -> None:
    now = timezone.now()
    if result.ok:
        status = WebhookDelivery.Status.DELIVERED
    else:
        status = WebhookDelivery.Status.PENDING if retry_in is not None else WebhookDelivery.Status.FAILED
    # Only the latest claim records: an attempt that outlived its lease lost the delivery to another.
    WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, attempts=attempt
    ).update(
        status=status,
        last_status_code=result.status_code,
        last_error=result.error,
        delivered_at=now if result.ok else None,
        next_attempt_at=None if retry_in is None else now + timedelta(seconds=retry_in),
    )
    if not result.ok:
        logger.info(
            "Webhook %s to endpoint %s failed (attempt %d): %s",
            delivery.event_id, delivery.endpoint_id, attempt, result.error,
        )  # fmt: skip


def webhook_deliveries_claim_overdue(
    *, now: datetime | None = None, batch_size: int | None = None
) -> list[uuid.UUID]:
    """Takes a bounded batch of pending deliveries due for longer than a sweep interval — their task was
    lost — and makes each due now, so the next sweep leaves it to the task the caller queues.

    Rows are locked with SKIP LOCKED, so two sweeps running at once never take the same delivery, and the
    work is two queries whatever the number of deliveries.
    """
    now = timezone.now() if now is None else now
    limit = batch_size or settings.WEBHOOK_SWEEP_BATCH_SIZE
    overdue_since = now - timedelta(seconds=settings.WEBHOOK_SWEEP_INTERVAL_SECONDS)
    with transaction.atomic():
        pending = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING)
        overdue = lock_overdue(pending, overdue_since=overdue_since, limit=limit)
        delivery_ids = list(overdue.values_list("pk", flat=True))
        if delivery_ids:
            WebhookDelivery.objects.filter(pk__in=delivery_ids).update(next_attempt_at=now)
    return delivery_ids
