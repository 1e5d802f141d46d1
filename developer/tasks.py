from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from developer.deliveries import webhook_deliveries_claim_overdue, webhook_delivery_attempt

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=len(settings.WEBHOOK_RETRY_DELAYS_SECONDS), acks_late=True)
def deliver_webhook(self, delivery_id: str) -> None:  # type: ignore[no-untyped-def]
    """Sends one delivery attempt; after a failure, the next when it is due, a bounded number of times."""
    outcome = webhook_delivery_attempt(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)


@shared_task
def sweep_webhook_deliveries() -> int:
    """Beat: queues again a bounded batch of pending deliveries whose task was lost."""
    overdue = webhook_deliveries_claim_overdue()
    for delivery_id in overdue:
        deliver_webhook.delay(str(delivery_id))
    if overdue:
        ids = ", ".join(map(str, overdue))
        logger.info("webhook sweep: queued %d lost delivery(ies) again: %s", len(overdue), ids)
    return len(overdue)
