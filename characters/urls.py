from __future__ import annotations

from django.urls import path

from characters import views

app_name = "characters"

urlpatterns = [
    path("", views.character_list, name="list"),
    path("new/", views.character_create, name="create"),
    path("<uuid:character_id>/", views.character_detail, name="detail"),
    path("<uuid:character_id>/edit/", views.character_edit, name="edit"),
    path("<uuid:character_id>/delete/", views.character_delete, name="delete"),
    path("<uuid:character_id>/consent/", views.character_consent, name="consent"),
    path("<uuid:character_id>/report/", views.character_dataset_report, name="report"),
    path("<uuid:character_id>/images/", views.reference_images_upload, name="upload"),
    path("<uuid:character_id>/captions/", views.reference_image_captions, name="captions"),
    path(
        "<uuid:character_id>/images/<uuid:image_id>/caption/", views.reference_image_caption, name="caption"
    ),
    path(
        "<uuid:character_id>/images/<uuid:image_id>/delete/",
        views.reference_image_delete,
        name="image_delete",
    ),
    path(
        "<uuid:character_id>/images/<uuid:image_id>/thumbnail",
        views.reference_image_thumbnail,
        name="thumbnail",
    ),
    path("<uuid:character_id>/images/<uuid:image_id>/file", views.reference_image_file, name="image_file"),
]
