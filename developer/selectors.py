"""Owner-scoped reads of tokens, endpoints and deliveries: another user's look like missing ones."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from developer.models import ApiToken, WebhookDelivery, WebhookEndpoint
from studio.models import User


def api_token_list_for(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def api_token_get_for(user: User, token_id: uuid.UUID) -> ApiToken:
    """The user's token, or Http404 (also for another user's token)."""
    return get_object_or_404(api_token_list_for(user), pk=token_id)


def webhook_endpoint_list_for(user: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user=user).order_by("-created_at")


def webhook_endpoint_get_for(user: User, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """The user's endpoint, or Http404 (also for another user's endpoint)."""
    return get_object_or_404(webhook_endpoint_list_for(user), pk=endpoint_id)


def webhook_delivery_list(endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.order_by("-created_at")
