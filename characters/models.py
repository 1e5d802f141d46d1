from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower

from runpod_worker.contract import BaseModel

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
    base_model = models.CharField(
        max_length=32,
        default=BaseModel.DEFAULT,
        choices=[(key, key) for key in BaseModel.SUPPORTED],
        help_text="The base model its LoRAs are trained on unless a run says otherwise (auto-train uses it).",
    )
    training_provider = models.CharField(
        max_length=16,
        default="serverless",
        choices=[("serverless", "Serverless (RunPod endpoint)"), ("pod", "Pod (AI Toolkit UI)")],
        help_text="Where auto-train trains it: a pod only for an owner staff enabled pods for.",
    )
    is_person = models.BooleanField(
        default=True,
        help_text="Off for a style, an object or a drawn character: its photos are not checked for one "
        "person's face, and photos without faces never stop training.",
    )
    face_crops = models.BooleanField(
        default=True,
        help_text="Add a crop around the face of each photo to the training set (for people).",
    )
    # Moved forward whenever a photo comes or goes or the two switches above change: a dataset report
    # computed from an earlier state is out of date.
    dataset_changed_at = models.DateTimeField(null=True, blank=True, editable=False)
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
    # True while the caption is the one a training run's captioner wrote for this photo, sent without one;
    # the owner editing it makes it theirs.
    caption_auto = models.BooleanField(
        default=False, help_text="The caption was written by the captioner of a training run."
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


def face_crop_name(character_id: object, sha256: str) -> str:
    return f"characters/{character_id}/crops/{sha256}.jpg"


class PhotoConsent(models.Model):
    """The statement its owner agreed to before the first photo of a character was uploaded.

    One per character (a new agreement replaces the old one); it goes when the character is erased.
    """

    character = models.OneToOneField(Character, on_delete=models.CASCADE, related_name="consent")
    given_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    given_at = models.DateTimeField()
    wording_version = models.CharField(max_length=32)
    # Which case of the statement was affirmed: the uploader is the person shown, or has their consent.
    basis = models.CharField(
        max_length=16, choices=[("self", "I am the person"), ("permission", "I have permission")]
    )

    def __str__(self) -> str:
        return f"consent {self.wording_version} for {self.character_id}"


class PhotoAnalysis(models.Model):
    """What the face analysis found in one reference photo. Holds its face embedding (biometric data),
    so it exists only with its photo: deleting the photo deletes it."""

    image = models.OneToOneField(ReferenceImage, on_delete=models.CASCADE, related_name="analysis")
    analyser = models.CharField(max_length=64, help_text="Models and rules version that produced this.")
    analysed_at = models.DateTimeField()
    faces = models.JSONField(default=list, help_text="Boxes as fractions of width and height, largest first.")
    embedding = models.BinaryField(null=True, blank=True, editable=False)  # 128 float32 of the main face
    phash = models.CharField(max_length=16, blank=True)
    face_phash = models.CharField(max_length=16, blank=True)
    blur = models.FloatField(null=True, blank=True)
    brightness = models.FloatField(default=0.0)
    face_pixels = models.PositiveIntegerField(null=True, blank=True)
    yaw = models.FloatField(null=True, blank=True)
    background = models.JSONField(default=list)
    flags = models.JSONField(default=list)
    crop = models.FileField(max_length=255, blank=True)
    # What a training run sends the worker with the crop, which verifies its download by the checksum.
    crop_sha256 = models.CharField(max_length=64, blank=True)
    crop_bytes = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "photo analyses"

    def __str__(self) -> str:
        return f"analysis of {self.image_id}"


class DatasetReport(models.Model):
    """The character's photos judged together; recomputed (by Celery) whenever photos come and go."""

    character = models.OneToOneField(Character, on_delete=models.CASCADE, related_name="dataset_report")
    dataset_as_of = models.DateTimeField(null=True, blank=True)  # the character's dataset_changed_at it saw
    computed_at = models.DateTimeField()
    analyser = models.CharField(max_length=64)
    score = models.PositiveSmallIntegerField(default=0)
    photo_count = models.PositiveIntegerField(default=0)
    with_face = models.PositiveIntegerField(default=0)
    usable = models.PositiveIntegerField(default=0)
    medoid = models.ForeignKey(
        ReferenceImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    photos = models.JSONField(default=dict, help_text="Per photo id: flags (code, message) and distance.")
    warnings = models.JSONField(default=list)
    poses = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"dataset report of {self.character_id}"
