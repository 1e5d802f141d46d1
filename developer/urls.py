from __future__ import annotations

from django.urls import path

from developer import views

app_name = "developer"

urlpatterns = [
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/<uuid:token_id>/revoke/", views.token_revoke, name="token-revoke"),
    path("webhooks/", views.webhook_list, name="webhooks"),
    path("webhooks/<uuid:endpoint_id>/", views.webhook_detail, name="webhook"),
    path("webhooks/<uuid:endpoint_id>/toggle/", views.webhook_toggle, name="webhook-toggle"),
    path("webhooks/<uuid:endpoint_id>/delete/", views.webhook_delete, name="webhook-delete"),
]
