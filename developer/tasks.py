from __future__ import annotations

from celery import shared_task
from django.conf import settings

from developer.services import webhook_delivery_attempt


@shared_task(bind=True, max_retries=len(settings.WEBHOOK_RETRY_DELAYS_SECONDS), acks_late=True)
def deliver_webhook(self, delivery_id: str) -> None:  # type: ignore[no-untyped-def]
    """Send one webhook delivery; on failure try again after a growing pause, a bounded number of times."""
    outcome = webhook_delivery_attempt(delivery_id=delivery_id)
    if outcome.retry:
        delays = settings.WEBHOOK_RETRY_DELAYS_SECONDS
        raise self.retry(countdown=delays[min(outcome.attempt, len(delays)) - 1])
