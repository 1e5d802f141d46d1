"""Owner-scoped reads of tokens, endpoints and deliveries: another user's look like missing ones."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from developer.models import ApiToken, WebhookDelivery, WebhookEndpoint
from studio.errors import NotFound
from studio.models import User


def api_token_list_for(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def api_token_get_for(user: User, token_id: uuid.UUID) -> ApiToken:
    token = api_token_list_for(user).filter(pk=token_id).first()
    if token is None:
        raise NotFound("This API token does not exist.")
    return token


def webhook_endpoint_list_for(user: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user=user).order_by("-created_at")


def webhook_endpoint_get_for(user: User, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = webhook_endpoint_list_for(user).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("This webhook endpoint does not exist.")
    return endpoint


def webhook_delivery_list(endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.order_by("-created_at")
