"""Developer settings pages: API tokens and webhook endpoints with their delivery log.

A new token or signing secret is shown once: the POST that creates it keeps it in the session and redirects,
and the next page view takes it out of the session and shows it. Reloading that page therefore neither
shows it again nor creates another (a POST answered with a page would be sent again by a reload).
"""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from developer import selectors, services
from developer.forms import ApiTokenForm, WebhookEndpointForm
from studio.errors import ApplicationError

NEW_TOKEN_KEY = "developer:new-token"  # noqa: S105 - a session key, not a secret
NEW_SECRET_KEY = "developer:new-secret"  # noqa: S105 - a session key, not a secret


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _token, raw = services.api_token_create(user=request.user, name=form.cleaned_data["name"])  # type: ignore[arg-type]
        request.session[NEW_TOKEN_KEY] = raw
        return redirect("developer:tokens")
    tokens = selectors.api_token_list_for(request.user)  # type: ignore[arg-type]
    context = {"form": form, "tokens": tokens, "new_token": request.session.pop(NEW_TOKEN_KEY, None)}
    return render(request, "developer/token_list.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: uuid.UUID) -> HttpResponse:
    token = selectors.api_token_get_for(request.user, token_id)  # type: ignore[arg-type]
    services.api_token_revoke(token=token)
    messages.success(request, f"Revoked “{token.name}”. Requests with it are refused from now on.")
    return redirect("developer:tokens")


@login_required
@require_http_methods(["GET", "POST"])
def webhook_list(request: HttpRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            _, secret = services.webhook_endpoint_create(user=request.user, **form.cleaned_data)  # type: ignore[arg-type]
        except ApplicationError as error:
            form.add_error("url" if "url" in error.fields else None, error.message)
        else:
            request.session[NEW_SECRET_KEY] = secret
            return redirect("developer:webhooks")
    endpoints = selectors.webhook_endpoint_list_for(request.user)  # type: ignore[arg-type]
    context = {"form": form, "endpoints": endpoints, "new_secret": request.session.pop(NEW_SECRET_KEY, None)}
    return render(request, "developer/webhook_list.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def webhook_detail(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
    deliveries = selectors.webhook_delivery_list(endpoint)[:100]
    return render(request, "developer/webhook_detail.html", {"endpoint": endpoint, "deliveries": deliveries})


@login_required
@require_POST
def webhook_toggle(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
    services.webhook_endpoint_update(endpoint=endpoint, active=not endpoint.active)
    state = "receives events again" if endpoint.active else "is paused"
    messages.success(request, f"{endpoint.url} {state}.")
    return redirect("developer:webhook", endpoint_id=endpoint.pk)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, endpoint_id: uuid.UUID) -> HttpResponse:
    endpoint = selectors.webhook_endpoint_get_for(request.user, endpoint_id)  # type: ignore[arg-type]
    services.webhook_endpoint_delete(endpoint=endpoint)
    messages.success(request, f"Deleted the webhook endpoint {endpoint.url}.")
    return redirect("developer:webhooks")
