"""The REST API: `/api/v1/…` resources, the OpenAPI schema and its Swagger UI.

Anything under `/api/v1/` that matches no route answers 404 in the API's error shape.
"""

from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from characters import api as characters_api
from developer import api as developer_api
from studio.errors import NotFound
from studio.middleware import content_security_policy
from training import api as training_api
from training import api_characters as training_characters_api

REDOC_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; frame-ancestors 'none'"
)


class ApiRouteNotFoundApi(APIView):
    permission_classes = [AllowAny]
    schema = None  # not an operation

    def dispatch_not_found(self, request: Request, *args: object, **kwargs: object) -> Response:
        raise NotFound("There is no such API endpoint. The documentation is at /api/docs/.")

    get = post = put = patch = delete = dispatch_not_found


v1 = [
    path("me", developer_api.MeApi.as_view(), name="me"),
    # Characters with their LoRA: training's extension of the characters API (training/api_characters.py).
    path("characters", training_characters_api.CharacterWithLoraListApi.as_view(), name="characters"),
    path(
        "characters/<uuid:character_id>",
        training_characters_api.CharacterWithLoraDetailApi.as_view(),
        name="character",
    ),
    path(
        "characters/<uuid:character_id>/consent",
        characters_api.CharacterConsentApi.as_view(),
        name="character-consent",
    ),
    path(
        "characters/<uuid:character_id>/dataset-report",
        characters_api.CharacterDatasetReportApi.as_view(),
        name="character-dataset-report",
    ),
    path(
        "characters/<uuid:character_id>/images",
        characters_api.ReferenceImageListApi.as_view(),
        name="character-images",
    ),
    path(
        "characters/<uuid:character_id>/images/<uuid:image_id>",
        characters_api.ReferenceImageDetailApi.as_view(),
        name="character-image",
    ),
    path(
        "characters/<uuid:character_id>/runs",
        training_api.TrainingRunStartApi.as_view(),
        name="character-runs",
    ),
    path("runs", training_api.TrainingRunListApi.as_view(), name="runs"),
    path("runs/<uuid:run_id>", training_api.TrainingRunDetailApi.as_view(), name="run"),
    path("runs/<uuid:run_id>/cancel", training_api.TrainingRunCancelApi.as_view(), name="run-cancel"),
    path("runs/<uuid:run_id>/retry", training_api.TrainingRunRetryApi.as_view(), name="run-retry"),
    path("runs/<uuid:run_id>/lora", training_api.TrainingRunLoraApi.as_view(), name="run-lora"),
    path("tokens", developer_api.ApiTokenListApi.as_view(), name="tokens"),
    path("tokens/<uuid:token_id>/revoke", developer_api.ApiTokenRevokeApi.as_view(), name="token-revoke"),
    path("webhooks", developer_api.WebhookEndpointListApi.as_view(), name="webhooks"),
    path("webhooks/<uuid:endpoint_id>", developer_api.WebhookEndpointDetailApi.as_view(), name="webhook"),
    path(
        "webhooks/<uuid:endpoint_id>/deliveries",
        developer_api.WebhookDeliveryListApi.as_view(),
        name="webhook-deliveries",
    ),
    re_path(r"^.*$", ApiRouteNotFoundApi.as_view()),
]

urlpatterns = [
    path("v1/", include((v1, "api"), namespace="api")),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[AllowAny]), name="api-schema"),
    path(
        "docs/",
        # The split view serves its start-up script as a file, so the page needs no inline script.
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", permission_classes=[AllowAny]),
        name="api-docs",
    ),
    path(
        "redoc/",
        # ReDoc's page starts with an inline script; it alone may run inline code.
        content_security_policy(REDOC_POLICY)(
            SpectacularRedocView.as_view(url_name="api-schema", permission_classes=[AllowAny])
        ),
        name="api-redoc",
    ),
]
