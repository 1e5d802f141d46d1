"""Training's part of `/api/v1/`: runs, starting one for a character, and the characters with their LoRA.

Included by `studio.api_urls` by name, inside the `api` namespace (`api:run`, `api:character-runs`, …).
"""

from __future__ import annotations

from django.urls import path

from training import api, api_artifacts, api_characters

urlpatterns = [
    # Characters with their LoRA: training's extension of the characters API (training/api_characters.py).
    path("characters", api_characters.CharacterWithLoraListApi.as_view(), name="characters"),
    path(
        "characters/<uuid:character_id>",
        api_characters.CharacterWithLoraDetailApi.as_view(),
        name="character",
    ),
    path("characters/<uuid:character_id>/runs", api.TrainingRunStartApi.as_view(), name="character-runs"),
    path("runs", api.TrainingRunListApi.as_view(), name="runs"),
    path("runs/<uuid:run_id>", api.TrainingRunDetailApi.as_view(), name="run"),
    path("runs/<uuid:run_id>/cancel", api.TrainingRunCancelApi.as_view(), name="run-cancel"),
    path("runs/<uuid:run_id>/retry", api.TrainingRunRetryApi.as_view(), name="run-retry"),
    path("runs/<uuid:run_id>/lora", api.TrainingRunLoraApi.as_view(), name="run-lora"),
    path("runs/<uuid:run_id>/samples", api_artifacts.TrainingRunSampleListApi.as_view(), name="run-samples"),
    path(
        "runs/<uuid:run_id>/checkpoints",
        api_artifacts.TrainingRunCheckpointListApi.as_view(),
        name="run-checkpoints",
    ),
    path(
        "runs/<uuid:run_id>/checkpoints/<int:step>/use",
        api_artifacts.TrainingRunCheckpointUseApi.as_view(),
        name="run-checkpoint-use",
    ),
    path("runs/<uuid:run_id>/loss", api_artifacts.TrainingRunLossApi.as_view(), name="run-loss"),
]
