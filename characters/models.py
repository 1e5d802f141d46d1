from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

TRIGGER_WORD_PATTERN = r"^[a-z][a-z0-9_]{2,31}$"

trigger_word_validator = RegexValidator(
    TRIGGER_WORD_PATTERN,
    "Use 3-32 lowercase letters, digits or underscores, starting with a letter "
    "(a rare token such as 'ohwx_anna' works best).",
)


class Character(models.Model):
    """A person or persona that must look the same in every generated image."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="characters")
    name = models.CharField(max_length=100)
    trigger_word = models.CharField(
        max_length=32,
        validators=[trigger_word_validator],
        help_text="The token that stands for this character in captions and prompts.",
    )
    description = models.TextField(blank=True)
    auto_train = models.BooleanField(
        default=False,
        help_text="Start training by itself once the character has enough reference images.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="character_name_unique_per_owner"),
            # The service compares names ignoring case; this holds it when two creates race.
            models.UniqueConstraint(
                "owner", Lower("name"), name="character_name_unique_per_owner_ignoring_case"
            ),
        ]

    def __str__(self) -> str:
        return self.name


def reference_image_name(character_id: object, sha256: str, extension: str) -> str:
    """`characters/<character id>/images/<sha256>.<ext>`: content-addressed, so names never collide."""
    return f"characters/{character_id}/images/{sha256}{extension}"


def reference_thumbnail_name(character_id: object, sha256: str, *, large: bool = False) -> str:
    return f"characters/{character_id}/thumbnails/{sha256}{'-512' if large else ''}.webp"


def reference_image_path(instance: ReferenceImage, filename: str) -> str:
    """The FileField's upload_to: the same content-addressed name as the ingest service stores."""
    extension = PurePosixPath(filename).suffix.lower() or ".bin"
    return reference_image_name(instance.character_id, instance.sha256, extension)


class ReferenceImage(models.Model):
    """One reference photo of a character, normalised and stripped of metadata."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="images")
    file = models.FileField(upload_to=reference_image_path, max_length=255)
    thumbnail = models.FileField(max_length=255, blank=True)
    # 512 px on the long side, for screens with 2-3 device pixels per CSS pixel; empty for photos added
    # before it existed (pages then offer the 256 px one alone).
    thumbnail_large = models.FileField(max_length=255, blank=True)
    original_filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveBigIntegerField()
    caption = models.TextField(
        blank=True,
        help_text="Optional. Write [trigger] where the character's trigger word goes.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["character", "sha256"], name="reference_image_unique_per_character"
            ),
        ]

    def __str__(self) -> str:
        return self.original_filename
