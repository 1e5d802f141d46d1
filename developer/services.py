"""Every write to API tokens and webhook endpoints goes through here, and every webhook event is recorded
here as one delivery per endpoint. Sending a delivery (its attempts, retries and the sweep's claim) is
`developer.deliveries`, which the delivery tasks run."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from developer import webhooks
from developer.models import ApiToken, WebhookDelivery, WebhookEndpoint
from developer.tasks import deliver_webhook
from studio.errors import ApplicationError
from studio.models import User
from training.models import Checkpoint, Sample, TrainingRun
from training.serializers import CheckpointSerializer, SampleSerializer, TrainingRunSerializer

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "cls_"  # noqa: S105  (a public marker that makes leaked tokens easy to scan for)
# Recording every request's use would write on every call; a minute is precise enough to read.
TOKEN_USE_RESOLUTION = timedelta(minutes=1)
MAX_ENDPOINTS_PER_USER = 10

EVENT_TYPES = {
    "training": "training_run.started",
    "completed": "training_run.completed",
    "failed": "training_run.failed",
    "cancelled": "training_run.cancelled",
}
ARTIFACT_EVENT_TYPES = {"sample": "run.sample.created", "checkpoint": "run.checkpoint.created"}
_EVENT_NAMESPACE = uuid.UUID("6f1c1d1e-8d53-4b0e-9a57-2f3c9b1e7a10")


# --- API tokens ---------------------------------------------------------------------------


def api_token_hash(raw: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token for `user`; returns it with the raw value, which is never stored or shown again."""
    name = name.strip()
    if not name:
        message = "Give the token a name that says where it is used."
        raise ApplicationError(message, code="invalid", fields={"name": [message]})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=raw[:12], token_hash=api_token_hash(raw)
    )
    return token, raw


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Revoke a token; requests with it fail from now on. Revoking twice keeps the first time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


def api_token_record_use(*, token: ApiToken) -> None:
    """Note that the token was used, at most once a minute per token."""
    now = timezone.now()
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOKEN_USE_RESOLUTION)
    ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)


# --- Webhook endpoints --------------------------------------------------------------------


def webhook_endpoint_create(*, user: User, url: str, description: str = "") -> tuple[WebhookEndpoint, str]:
    """Register an endpoint for `user`; returns it with its signing secret, shown only this once."""
    url = url.strip()
    webhooks.check_url_is_public(url)  # resolves DNS: done before any transaction
    if WebhookEndpoint.objects.filter(user=user).count() >= MAX_ENDPOINTS_PER_USER:
        raise ApplicationError(
            f"You can register up to {MAX_ENDPOINTS_PER_USER} webhook endpoints. Delete one first.",
            code="too_many_endpoints",
        )
    secret = webhooks.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        user=user, url=url, description=description.strip()[:200], secret=secret
    )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    """Change an endpoint's URL, description or whether it receives events."""
    changed: list[str] = []
    if url is not None and url.strip() != endpoint.url:
        webhooks.check_url_is_public(url.strip())
        endpoint.url = url.strip()
        changed.append("url")
    if description is not None:
        endpoint.description = description.strip()[:200]
        changed.append("description")
    if active is not None:
        endpoint.active = active
        changed.append("active")
    if changed:
        endpoint.save(update_fields=[*changed, "updated_at"])
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint with its delivery log; pending attempts find nothing and stop."""
    endpoint.delete()


# --- Events and deliveries ----------------------------------------------------------------


def webhook_events_record(
    *, run_id: uuid.UUID | str, status: str, changed_at: datetime | None = None
) -> list[WebhookDelivery]:
    """Record one delivery per active endpoint of the run's owner and queue them after commit.

    The event id comes from the run and status, so a repeated signal records nothing new. The payload's
    `timestamp` is when the change happened (`changed_at`, else now); its `data` is the run as it is now.
    """
    event_type = EVENT_TYPES.get(status)
    if event_type is None:
        return []
    run = TrainingRun.objects.select_related("character").filter(pk=run_id).first()
    if run is None:
        return []
    endpoints = list(WebhookEndpoint.objects.filter(user_id=run.character.owner_id, active=True))
    if not endpoints:
        return []
    event_id = f"msg_{uuid.uuid5(_EVENT_NAMESPACE, f'{run.pk}:{status}').hex}"
    timestamp = (changed_at or timezone.now()).isoformat()
    payload = {"type": event_type, "timestamp": timestamp, "data": _run_data(run)}
    return _deliveries_create(endpoints=endpoints, event_id=event_id, event_type=event_type, payload=payload)


def webhook_artifact_event_record(*, run_id: uuid.UUID, kind: str, artifact_id: int) -> list[WebhookDelivery]:
    """One delivery per active endpoint of the run's owner for a verified sample or checkpoint; the event
    id comes from the artifact, so a repeated signal records nothing new. `data` is the sample's or
    checkpoint's document as GET /runs/<id>/samples or /checkpoints lists it (its links expire)."""
    event_type = ARTIFACT_EVENT_TYPES.get(kind)
    artifact: Sample | Checkpoint | None = None
    if kind == "sample":
        artifact = (
            Sample.objects.select_related("run__character").filter(pk=artifact_id, run_id=run_id).first()
        )
    elif kind == "checkpoint":
        artifact = (
            Checkpoint.objects.select_related("run__character").filter(pk=artifact_id, run_id=run_id).first()
        )
    if event_type is None or artifact is None:
        return []
    endpoints = list(WebhookEndpoint.objects.filter(user_id=artifact.run.character.owner_id, active=True))
    if not endpoints:
        return []
    event_id = f"msg_{uuid.uuid5(_EVENT_NAMESPACE, f'{run_id}:{kind}:{artifact_id}').hex}"
    serializer = SampleSerializer if isinstance(artifact, Sample) else CheckpointSerializer
    data = json.loads(json.dumps(serializer(artifact, context={}).data, default=str))
    payload = {"type": event_type, "timestamp": timezone.now().isoformat(), "data": data}
    return _deliveries_create(endpoints=endpoints, event_id=event_id, event_type=event_type, payload=payload)


def _run_data(run: TrainingRun) -> dict[str, Any]:
    # The same document as GET /api/v1/runs/<id>, so receivers parse one shape.
    return json.loads(json.dumps(TrainingRunSerializer(run, context={}).data, default=str))


def _deliveries_create(
    *, endpoints: list[WebhookEndpoint], event_id: str, event_type: str, payload: dict[str, Any]
) -> list[WebhookDelivery]:
    created: list[WebhookDelivery] = []
    with transaction.atomic():
        for endpoint in endpoints:
            delivery, is_new = WebhookDelivery.objects.get_or_create(
                endpoint=endpoint,
                event_id=event_id,
                defaults={"event_type": event_type, "payload": payload, "next_attempt_at": timezone.now()},
            )
            if is_new:
                created.append(delivery)
                transaction.on_commit(partial(_enqueue_delivery, delivery.pk))
    return created


def _enqueue_delivery(delivery_id: uuid.UUID) -> None:
    """Queues a delivery's task after commit; a broker outage must not fail the change that caused it."""
    try:
        deliver_webhook.delay(str(delivery_id))
    except Exception:  # any broker error: the delivery is due, and the sweep queues it
        logger.exception("could not queue webhook delivery %s; the sweep will send it", delivery_id)
