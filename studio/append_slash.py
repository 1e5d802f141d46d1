"""APPEND_SLASH without its two failures: Django's CommonMiddleware answers a POST to a URL missing its
trailing slash with a RuntimeError (a 500) when DEBUG is on, and with a 301 otherwise, after which browsers
and HTTP clients repeat the request as a GET and the form's data is lost (django/middleware/common.py,
`get_full_path_with_slash` and `process_response`). Here a request that carries a body is redirected with
308 Permanent Redirect, which keeps its method and body (RFC 9110 §15.4.9); GET and HEAD keep Django's 301.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseBase, HttpResponsePermanentRedirect
from django.http.response import HttpResponseRedirectBase
from django.middleware import common
from django.utils.http import escape_leading_slashes

SAFE_METHODS = ("GET", "HEAD")


class HttpResponsePermanentRedirectKeepingMethod(HttpResponseRedirectBase):
    status_code = 308


class CommonMiddleware(common.CommonMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if response.status_code == 404 and self.should_redirect_with_slash(request):
            location = escape_leading_slashes(request.get_full_path(force_append_slash=True))
            if request.method in SAFE_METHODS:
                return HttpResponsePermanentRedirect(location)
            return HttpResponsePermanentRedirectKeepingMethod(location)
        return super().process_response(request, response)
