from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.views.generic import TemplateView

from studio import health, transfer

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("transfer/<str:token>", transfer.transfer_view, name="transfer"),
    path("admin/", admin.site.urls),
]
