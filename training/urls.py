"""Training's URLs, mounted at the site root: the pages people use, and the hooks machines call."""

from __future__ import annotations

from django.urls import path

from training import views, webhooks

app_name = "training"

# Pages: login required, owner-scoped (another user's run or character answers 404).
page_urlpatterns = [
    # Under /characters/ beside the character pages; the characters app knows nothing of training.
    path("characters/<uuid:character_id>/train/", views.training_start, name="start"),
    path("runs/", views.training_run_list, name="run-list"),
    path("runs/<uuid:run_id>/", views.training_run_detail, name="run-detail"),
    path("runs/<uuid:run_id>/progress.json", views.training_run_progress, name="run-progress"),
    path("runs/<uuid:run_id>/cancel/", views.training_run_cancel, name="run-cancel"),
    path("runs/<uuid:run_id>/retry/", views.training_run_retry, name="run-retry"),
    path("runs/<uuid:run_id>/lora/", views.training_run_lora, name="run-lora"),
    path("runs/<uuid:run_id>/parts/gallery/", views.training_run_gallery_part, name="run-gallery"),
    path("runs/<uuid:run_id>/parts/chart/", views.training_run_chart_part, name="run-chart"),
    path(
        "runs/<uuid:run_id>/samples/<int:step>/<int:prompt_index>/",
        views.training_run_sample,
        name="run-sample",
    ),
    path("runs/<uuid:run_id>/checkpoints/<int:step>/", views.training_run_checkpoint, name="run-checkpoint"),
    path(
        "runs/<uuid:run_id>/checkpoints/<int:step>/use/",
        views.training_run_checkpoint_use,
        name="run-checkpoint-use",
    ),
]

# Hooks: RunPod's webhook and the GPU worker's callbacks, authenticated by the run's token, not a session.
hook_urlpatterns = [
    path("hooks/runpod/<uuid:run_id>/<str:token>", webhooks.runpod_webhook, name="runpod-webhook"),
    path("hooks/worker/<uuid:run_id>", webhooks.worker_callback, name="worker-callback"),
]

urlpatterns = page_urlpatterns + hook_urlpatterns
