"""What a person or an API client sees when a request fails: the studio's own page (or, for programs, the
API's error shape), saying what happened and what to do, for 400, 403, 404 and 500 alike. Django's own
pages (a bare "Bad Request (400)", or the debug pages listing the URL map) are never shown.

Django calls `server_error` for any exception no view handled, still inside the `except` block, so the
exception is known here. A database that cannot be reached (restarting, failing over) is a 503 with
`Retry-After`, not a 500: nothing is wrong with the request, and it will work again shortly. Pages are
rendered without the request's context, because the context (the signed-in user) needs the database.
"""

from __future__ import annotations

import logging
import sys

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader
from django.urls import Resolver404, resolve, reverse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
# Paths read by programs (API clients, RunPod, the GPU worker's callbacks): answered in the error shape.
MACHINE_PREFIXES = ("/api/", "/hooks/")

UNAVAILABLE = (
    "The studio cannot reach its database right now (it may be restarting), so this request may not have "
    f"completed. Try again in {RETRY_AFTER_SECONDS} seconds."
)
FAILED = (
    "Something went wrong on our side and the request was not completed. Try again; if it keeps "
    "happening, tell the studio's staff what you were doing."
)


NOT_FOUND = (
    "There is nothing at this address: it may have been deleted, or the link is mistyped. "
    "Your characters and runs are listed from the home page."
)
FORBIDDEN = "You may not do that. If you think you should, log in again or ask the studio's staff."
CSRF_FAILED = (
    "The form was sent from a page that has expired (or your browser blocks this site's cookies), so nothing "
    "was changed. Go back, reload the page, and send it again."
)
BAD_REQUEST = "The request could not be read, so nothing was changed. Go back and try again."


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 404, "not_found", "Page not found", NOT_FOUND)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 403, "permission_denied", "Not allowed", FORBIDDEN)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _error(request, 403, "csrf_failed", "This page has expired", CSRF_FAILED)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's own limits on a request (too many files or fields, a body too large) say which was hit."""
    if isinstance(exception, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        message = (
            f"More than {limit} files were sent at once, so none was added. "
            f"Choose at most {limit} photos and upload them again."
        )
        return _error(request, 400, "too_many_files", "Too many files", message, back=_upload_page(request))
    if isinstance(exception, RequestDataTooBig):
        message = "The request was larger than the studio accepts, so nothing was changed. Send less at once."
        return _error(request, 413, "request_too_large", "Too much data", message, back=_upload_page(request))
    return _error(request, 400, "bad_request", "Bad request", BAD_REQUEST)


def _upload_page(request: HttpRequest) -> str | None:
    """The character page an upload came from, to go back to."""
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    if match.view_name != "characters:upload":
        return None
    return reverse("characters:detail", args=[match.kwargs["character_id"]])


def server_error(request: HttpRequest) -> HttpResponse:
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = _error(request, 503, "service_unavailable", "Temporarily unavailable", UNAVAILABLE)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return _error(request, 500, "server_error", "Something went wrong", FAILED)


def _error(
    request: HttpRequest, status: int, code: str, title: str, message: str, *, back: str | None = None
) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    try:
        context = {"title": title, "message": message, "back": back, "status": status}
        html = loader.get_template("error.html").render(context)
    except Exception:  # the error page must not fail too (say, a deploy without collected static files)
        logger.exception("the error page could not be rendered; answering in plain text")
        return HttpResponse(f"{title}\n\n{message}\n", status=status, content_type="text/plain")
    return HttpResponse(html, status=status)
