"""One error shape for the whole API: `{"error": {"code", "message", "fields"?}}`.

Services raise `ApplicationError`; DRF raises its own exceptions for parsing, authentication,
permissions, throttling and serializer validation. Both end up here, so a client handles one
shape with a stable `code` whatever went wrong.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from studio.api_rate_limit import RateLimited
from studio.errors import ApplicationError

# DRF's own codes, renamed where theirs would read oddly to a client.
_CODES = {
    "not_authenticated": "not_authenticated",
    "authentication_failed": "authentication_failed",
    "permission_denied": "permission_denied",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "rate_limited",
    "parse_error": "malformed_request",
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render any known error in the API's shape; anything else stays a 500 for the logs."""
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response({"error": exc.as_dict()}, status=exc.http_status)
    if isinstance(exc, RequestDataTooBig):
        exc = _TooLarge()
    elif isinstance(exc, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        exc = exceptions.ParseError(f"Send at most {limit} files in one request; split the upload.")
    elif isinstance(exc, SuspiciousOperation):
        # Django's own request limits (too many files or fields, hostile multipart): a client error.
        exc = exceptions.ParseError(f"The request was refused: {exc}")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Nothing with this id exists in your account.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None
    set_rollback()
    body = _error_body(exc)
    if isinstance(exc, RateLimited):
        body["error"]["rate_limit"] = exc.reached.as_dict()
    response = Response(body, status=exc.status_code)
    for header, value in _headers(exc).items():
        response[header] = value
    return response


class _TooLarge(exceptions.APIException):
    status_code = 413
    default_code = "request_too_large"
    default_detail = "The request body is larger than this API accepts. Send less data per request."


def error_response(error: ApplicationError) -> Response:
    return Response({"error": error.as_dict()}, status=error.http_status)


def _error_body(exc: exceptions.APIException) -> dict[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.values()))[0] if fields else "The request is not valid."
        message = (
            first
            if list(fields) == ["non_field_errors"]
            else "Some fields are not valid: "
            + (", ".join(name for name in fields if name != "non_field_errors"))
        )
        body: dict[str, Any] = {"code": "invalid", "message": message}
        if fields:
            body["fields"] = fields
        return {"error": body}
    code = _CODES.get(str(exc.default_code), str(exc.default_code))
    return {"error": {"code": code, "message": _message(exc)}}


def _message(exc: exceptions.APIException) -> str:
    if isinstance(exc, exceptions.NotAuthenticated):
        return "Send an API token as `Authorization: Bearer <token>` (create one under Developer settings)."
    if isinstance(exc, RateLimited):
        return exc.reached.message
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        return f"Too many requests of this kind. Try again in {int(wait) + 1} seconds."
    detail = exc.detail
    return str(detail if not isinstance(detail, list | dict) else exc.default_detail)


def _headers(exc: exceptions.APIException) -> dict[str, str]:
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = str(exc.auth_header)  # type: ignore[attr-defined]
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.reached.retry_after)
        return headers
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        headers["Retry-After"] = str(int(wait) + 1)
    return headers


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as `{"field.sub.0": ["message", ...]}`."""
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        for name, value in detail.items():
            fields.update(_flatten(value, f"{prefix}.{name}" if prefix else str(name)))
        return fields
    if isinstance(detail, list) and detail and all(isinstance(item, str) for item in detail):
        return {prefix or "non_field_errors": [str(item) for item in detail]}
    if isinstance(detail, list):
        fields = {}
        for index, value in enumerate(detail):
            fields.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return fields
    return {prefix or "non_field_errors": [str(detail)]}
