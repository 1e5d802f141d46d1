"""`Idempotency-Key` for API operations that create things (starting a run, retrying one).

    run, replayed = idempotent_create(
        user=user, scope="training_run_start", key=key, fingerprint=request_fingerprint(...),
        create=lambda: training_run_start(...), load=lambda run_id: training_run_get_for(user, run_id),
    )

The same key with the same request returns the resource the first request created, also
while both requests are in flight: the key row is inserted in the creating transaction, so a
concurrent insert of the same key waits for it and then replays. A request that failed leaves
no key behind, so retrying it tries again. Keys are remembered for
`settings.API_IDEMPOTENCY_KEY_TTL`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request

from studio.errors import ApplicationError
from studio.models import IdempotencyKey, User

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class _HasUUID(Protocol):
    pk: Any


T = TypeVar("T", bound=_HasUUID)


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    http_status = 422


def idempotency_key_from(request: Request) -> str | None:
    """The request's key, or None when it sent none; a malformed key is a 400."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        message = f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters, e.g. a UUID."
        raise ApplicationError(message, code="invalid_idempotency_key")
    return key


def request_fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def idempotent_create(
    *,
    user: User,
    scope: str,
    key: str | None,
    fingerprint: str,
    create: Callable[[], T],
    load: Callable[[uuid.UUID], T],
) -> tuple[T, bool]:
    """Create once per key: returns the resource and whether it is a replay of an earlier request."""
    if key is None:
        return create(), False
    with transaction.atomic():
        expired = timezone.now() - settings.API_IDEMPOTENCY_KEY_TTL
        IdempotencyKey.objects.filter(user=user, scope=scope, key=key, created_at__lt=expired).delete()
        record, is_new = _claim(user=user, scope=scope, key=key, fingerprint=fingerprint)
        if not is_new:
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReused(
                    f"This {HEADER} was already used for a different request. "
                    "Use a new key for every new request."
                )
            assert record.resource_id is not None  # set in the same transaction that inserted it
            return load(record.resource_id), True
        resource = create()
        record.resource_id = resource.pk
        record.save(update_fields=["resource_id"])
        return resource, False


def _claim(*, user: User, scope: str, key: str, fingerprint: str) -> tuple[IdempotencyKey, bool]:
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(user=user, scope=scope, key=key, request_hash=fingerprint)
            return record, True
    except IntegrityError:
        # Either an earlier request, or a concurrent one whose commit our insert just waited for.
        return IdempotencyKey.objects.get(user=user, scope=scope, key=key), False
