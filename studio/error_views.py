"""What a person or an API client sees when a request fails on our side.

Django calls `server_error` for any exception no view handled, still inside the `except` block, so the
exception is known here. A database that cannot be reached (restarting, failing over) is a 503 with
`Retry-After`, not a 500: nothing is wrong with the request, and it will work again shortly. The page is
rendered without the request's context, because the context (the signed-in user) needs the database.
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

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


def server_error(request: HttpRequest) -> HttpResponse:
    if isinstance(sys.exc_info()[1], (OperationalError, InterfaceError)):
        response = _error(request, 503, "service_unavailable", "Temporarily unavailable", UNAVAILABLE)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return _error(request, 500, "server_error", "Something went wrong", FAILED)


def _error(request: HttpRequest, status: int, code: str, title: str, message: str) -> HttpResponse:
    if request.path.startswith(MACHINE_PREFIXES):
        return JsonResponse({"error": {"code": code, "message": message}}, status=status)
    try:
        html = loader.get_template("error.html").render({"title": title, "message": message})
    except Exception:  # the error page must not fail too (say, a deploy without collected static files)
        logger.exception("the error page could not be rendered; answering in plain text")
        return HttpResponse(f"{title}\n\n{message}\n", status=status, content_type="text/plain")
    return HttpResponse(html, status=status)
