"""What every API view shares: the error schema, cursor pagination and the schema generator.

Views are `<Entity><Action>Api` APIViews with nested Input/Output serializers; they validate,
call one service or selector, and serialize. See docs/API.md for the conventions clients see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Model, QuerySet
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# --- Errors in the schema -----------------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable reason, e.g. `active_run_exists`.")
    message = serializers.CharField(help_text="What happened and what to do next, for people.")
    # The metaclass takes declared fields off the class, so this does not shadow Serializer.fields.
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages per input field (dotted paths for nested fields).",
    )


class RateLimitSerializer(serializers.Serializer):
    scope = serializers.CharField(help_text="Which limit, e.g. `training_run_start`.")
    limit = serializers.IntegerField(help_text="How many counted requests the window allows.")
    window_seconds = serializers.IntegerField(help_text="The sliding window's length.")
    counts = serializers.CharField(help_text="What is counted, e.g. accepted run starts (refusals are not).")
    resets_at = serializers.DateTimeField(help_text="When the next request will be accepted.")
    retry_after_seconds = serializers.IntegerField(help_text="The same as the Retry-After header.")


class ErrorDetailWithLimitSerializer(ErrorDetailSerializer):
    rate_limit = RateLimitSerializer(required=False, help_text="Only on 429 `rate_limited`.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailWithLimitSerializer()


class StudioAutoSchema(AutoSchema):
    """Documents the error responses every operation can give, in the one error shape."""

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                responses[code] = self._get_response_for_code(ErrorSerializer, code, direction=direction)
        return responses

    def _error_codes(self) -> list[str]:
        codes = ["400", "401", "403"]
        if "{" in self.path:
            codes.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            codes.append("415")
        if getattr(self.view, "throttle_scope", None):
            codes.append("429")
        return codes


# --- Pagination ---------------------------------------------------------------------------


class StudioCursorPagination(CursorPagination):
    """Cursor pages (`next`/`previous` links) stay correct while new rows arrive, like Replicate's."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = "-created_at"

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound as error:  # a bad cursor is bad input, not a missing thing
            raise exceptions.ValidationError({"cursor": ["This cursor is not valid."]}) from error

    def get_page_size(self, request: Request) -> int:
        if self.page_size_query_param in request.query_params:
            field = serializers.IntegerField(min_value=1, max_value=self.max_page_size)
            try:
                return int(field.run_validation(request.query_params[self.page_size_query_param]))
            except exceptions.ValidationError as error:
                raise exceptions.ValidationError({self.page_size_query_param: error.detail}) from error
        return self.page_size


def paginated_response(
    *,
    queryset: QuerySet[Any],
    serializer_class: type[serializers.BaseSerializer[Any]],
    request: Request,
    view: APIView,
    ordering: str = "-created_at",
    context: dict[str, Any] | None = None,
    page_context: Callable[[list[Any]], dict[str, Any]] | None = None,
) -> Response:
    """One page of `queryset`; `page_context(page)` adds to the serializer's context what the page's rows
    need read at once (one query for the page instead of one per row)."""
    paginator = StudioCursorPagination()
    paginator.ordering = ordering
    page: list[Model] = paginator.paginate_queryset(queryset, request, view=view) or []
    context = {**(context or {"request": request}), **(page_context(page) if page_context else {})}
    data = serializer_class(page, many=True, context=context).data
    return paginator.get_paginated_response(data)


def paginated_schema(serializer_class: type[serializers.BaseSerializer[Any]]) -> Any:
    """The list envelope for the schema: `{"next", "previous", "results": [...]}`."""
    name = serializer_class.__name__.removesuffix("Serializer")
    return type(
        f"Paginated{name}ListSerializer",
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )


def page_query_parameters() -> list[Any]:
    from drf_spectacular.utils import OpenApiParameter

    return [
        OpenApiParameter("cursor", str, description="The `next` or `previous` cursor of a page."),
        OpenApiParameter(
            "page_size",
            {"type": "integer", "minimum": 1, "maximum": StudioCursorPagination.max_page_size},
            description="Items per page, 1-100 (default 20).",
        ),
    ]
