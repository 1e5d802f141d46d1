"""The characters app's part of `/api/v1/`: consent, the dataset report and reference images.

`/characters` and `/characters/<id>` themselves are answered by training's extension of these views
(`training.api_urls`), which adds each character's LoRA. Included by `studio.api_urls` by name, inside the
`api` namespace (`api:character-images`, …).
"""

from __future__ import annotations

from django.urls import path

from characters import api

urlpatterns = [
    path(
        "characters/<uuid:character_id>/consent", api.CharacterConsentApi.as_view(), name="character-consent"
    ),
    path(
        "characters/<uuid:character_id>/dataset-report",
        api.CharacterDatasetReportApi.as_view(),
        name="character-dataset-report",
    ),
    path(
        "characters/<uuid:character_id>/images",
        api.ReferenceImageListApi.as_view(),
        name="character-images",
    ),
    path(
        "characters/<uuid:character_id>/images/<uuid:image_id>",
        api.ReferenceImageDetailApi.as_view(),
        name="character-image",
    ),
]
