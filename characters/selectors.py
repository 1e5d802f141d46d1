"""Owner-scoped reads: another user's character or image simply does not exist (404)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from characters.models import Character, ReferenceImage


def character_list_for(user: Any) -> QuerySet[Character]:
    """The user's characters, newest first, with `image_count` and `cover_image_id` annotated."""
    first_image = ReferenceImage.objects.filter(character=OuterRef("pk")).order_by("created_at", "id")
    return (
        Character.objects.filter(owner=user)
        .annotate(image_count=Count("images"), cover_image_id=Subquery(first_image.values("id")[:1]))
        .order_by("-created_at")
    )


def character_get_for(user: Any, character_id: uuid.UUID | str) -> Character:
    """The user's character with this id, or Http404 (also for other users' characters)."""
    return get_object_or_404(Character, pk=character_id, owner=user)


def reference_image_get_for(
    user: Any, character_id: uuid.UUID | str, image_id: uuid.UUID | str
) -> ReferenceImage:
    """One of the user's images, looked up through its character, or Http404."""
    return get_object_or_404(
        ReferenceImage.objects.select_related("character"),
        pk=image_id,
        character_id=character_id,
        character__owner=user,
    )


def reference_image_list(character: Character) -> QuerySet[ReferenceImage]:
    return character.images.order_by("created_at", "id")
