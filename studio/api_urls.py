"""The REST API: `/api/v1/…` resources, the OpenAPI schema and its Swagger UI.

Each app owns its resources' routes in its own `api_urls` module, included here by name so that the project
imports no app. Anything under `/api/v1/` that matches no route answers 404 in the API's error shape.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.errors import NotFound
from studio.middleware import content_security_policy

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


# The apps' routes share the `api` namespace; the catch-all comes last.
v1: list[URLPattern | URLResolver] = [
    path("", include("developer.api_urls")),
    path("", include("training.api_urls")),
    path("", include("characters.api_urls")),
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
