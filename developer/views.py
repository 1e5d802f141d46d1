"""Developer settings pages: API tokens and webhook endpoints with their delivery log.

A new token or signing secret is rendered once in the response to the POST that created it,
never stored readable (tokens) nor shown again (secrets).
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


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        _token, new_token = services.api_token_create(user=request.user, name=form.cleaned_data["name"])  # type: ignore[arg-type]
        form = ApiTokenForm()
    tokens = selectors.api_token_list_for(request.user)  # type: ignore[arg-type]
    context = {"form": form, "tokens": tokens, "new_token": new_token}
    return render(request, "developer/token_list.html", context)


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
    new_secret = None
    if request.method == "POST" and form.is_valid():
        try:
            _, new_secret = services.webhook_endpoint_create(user=request.user, **form.cleaned_data)  # type: ignore[arg-type]
        except ApplicationError as error:
            form.add_error("url" if "url" in error.fields else None, error.message)
        else:
            form = WebhookEndpointForm()
    endpoints = selectors.webhook_endpoint_list_for(request.user)  # type: ignore[arg-type]
    context = {"form": form, "endpoints": endpoints, "new_secret": new_secret}
    return render(request, "developer/webhook_list.html", context)


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
