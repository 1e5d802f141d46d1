from __future__ import annotations

from django.urls import path

from training import webhooks

app_name = "training"

urlpatterns = [
    path("hooks/runpod/<uuid:run_id>/<str:token>", webhooks.runpod_webhook, name="runpod-webhook"),
    path("hooks/worker/<uuid:run_id>", webhooks.worker_callback, name="worker-callback"),
]
