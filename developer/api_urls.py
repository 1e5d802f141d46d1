"""Developer settings' part of `/api/v1/`: who am I, API tokens and webhook endpoints.

Included by `studio.api_urls` by name, inside the `api` namespace (`api:tokens`, `api:webhook`, …).
"""

from __future__ import annotations

from django.urls import path

from developer import api

urlpatterns = [
    path("me", api.MeApi.as_view(), name="me"),
    path("tokens", api.ApiTokenListApi.as_view(), name="tokens"),
    path("tokens/<uuid:token_id>/revoke", api.ApiTokenRevokeApi.as_view(), name="token-revoke"),
    path("webhooks", api.WebhookEndpointListApi.as_view(), name="webhooks"),
    path("webhooks/<uuid:endpoint_id>", api.WebhookEndpointDetailApi.as_view(), name="webhook"),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries",
        api.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
]
