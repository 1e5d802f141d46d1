"""Writes of the face analysis: one photo's analysis (and face crop), and the character's dataset report.

Run by Celery (`characters.tasks`) on the CPU, never in a request. Every step is idempotent: a photo
whose analysis is current is skipped, and the report is recomputed from whatever analyses exist, so a
task run twice, or two tasks for one character at once, leave the same rows behind.

Embeddings are biometric data: they live in `PhotoAnalysis` rows, which the database deletes with
their photo (CASCADE); a photo deleted while its analysis runs takes the new crop with it (below).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from characters.faces import photo as face_photo
from characters.faces.dataset import PhotoInput, assess_dataset
from characters.faces.flags import DatasetWarning, Flag, warning_message
from characters.models import Character, DatasetReport, PhotoAnalysis, ReferenceImage, face_crop_name
from characters.signals import dataset_report_refreshed

logger = logging.getLogger(__name__)

EMBEDDING_DTYPE = np.float32


def character_photos_analyse(*, character: Character, budget_seconds: float) -> bool:
    """Analyse the character's photos that have no current analysis, for at most about `budget_seconds`.

    Returns True when none is left (the report can be computed), False when time ran out first.
    """
    deadline = time.monotonic() + budget_seconds
    for image in _images_to_analyse(character):
        if time.monotonic() >= deadline:
            return False
        photo_analysis_run(image=image, character=character)
    return True


def photo_analysis_run(*, image: ReferenceImage, character: Character) -> PhotoAnalysis | None:
    """Analyse one photo and store the result (and its face crop); None when the photo went meanwhile."""
    try:
        with default_storage.open(str(image.file.name), "rb") as stream:
            content = stream.read()
    except OSError:  # gone with its photo meanwhile, or lost: recorded as unreadable if the photo remains
        content = b""
    facts = _analyse(image, content)
    crop = _store_crop(image, character, facts, content) if facts is not None else None
    try:
        return _record(image, facts, crop)
    except BaseException:
        if crop is not None:
            default_storage.delete(crop.name)
        raise


def dataset_report_refresh(*, character: Character) -> DatasetReport:
    """Recompute the character's dataset report from its photos' current analyses, and say so
    (`dataset_report_refreshed`) once it is committed."""
    as_of = Character.objects.filter(pk=character.pk).values_list("dataset_changed_at", flat=True).first()
    images = list(character.images.select_related("analysis").order_by("created_at", "id"))
    inputs = [photo_input(image) for image in images if _current(image)]
    assessment = assess_dataset(
        inputs, is_person=character.is_person, minimum_good=settings.TRAINING_MIN_IMAGES
    )
    if len(inputs) < len(images):
        pending = DatasetWarning.ANALYSIS_PENDING
        assessment.warnings.insert(0, {"code": pending.value, "message": warning_message(pending)})
    medoid = next((image for image in images if str(image.pk) == assessment.medoid), None)
    report, _ = DatasetReport.objects.update_or_create(
        character=character,
        defaults={
            "dataset_as_of": as_of,
            "computed_at": timezone.now(),
            "analyser": face_photo.VERSION,
            "score": assessment.score,
            "photo_count": len(images),
            "with_face": assessment.with_face,
            "usable": assessment.usable,
            "medoid": medoid,
            "photos": {
                key: {"flags": v.flags, "distance": v.distance} for key, v in assessment.photos.items()
            },
            "warnings": assessment.warnings,
            "poses": assessment.poses,
        },
    )
    transaction.on_commit(partial(dataset_report_refreshed.send, sender=Character, character_id=character.pk))
    return report


def embedding_of(analysis: PhotoAnalysis) -> np.ndarray | None:
    if analysis.embedding is None:
        return None
    return np.frombuffer(bytes(analysis.embedding), dtype=EMBEDDING_DTYPE)


def _images_to_analyse(character: Character) -> list[ReferenceImage]:
    images = character.images.select_related("analysis").order_by("created_at", "id")
    return [image for image in images if not _current(image)]


def _current(image: ReferenceImage) -> bool:
    analysis = getattr(image, "analysis", None)
    return analysis is not None and analysis.analyser == face_photo.VERSION


def _analyse(image: ReferenceImage, content: bytes) -> face_photo.PhotoFacts | None:
    """The photo's facts, or None when its stored file cannot be read as an image."""
    try:
        return face_photo.analyse_photo(
            io.BytesIO(content),
            training_resolution=settings.CHARACTERS_TRAINING_RESOLUTION,
            min_face_pixels=settings.CHARACTERS_MIN_FACE_PIXELS,
        )
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        logger.warning(
            "photo %s of character %s could not be read for the face check", image.pk, image.character_id
        )
        return None


@dataclass(frozen=True)
class StoredCrop:
    """A face crop in storage, with the checksum the training worker verifies its download by."""

    name: str
    sha256: str
    bytes: int


def _store_crop(
    image: ReferenceImage, character: Character, facts: face_photo.PhotoFacts, content: bytes
) -> StoredCrop | None:
    if not (character.is_person and character.face_crops):
        return None
    made = face_photo.face_crop(
        io.BytesIO(content), facts, resolution=settings.CHARACTERS_TRAINING_RESOLUTION
    )
    if made is None:
        return None
    buffer = io.BytesIO()
    made.save(buffer, "JPEG", quality=95)
    data = buffer.getvalue()
    crop = StoredCrop(face_crop_name(character.pk, image.sha256), hashlib.sha256(data).hexdigest(), len(data))
    if _already_stored(image, crop):
        # Left in place: a training run may have frozen this crop and its worker be downloading it now.
        return crop
    default_storage.delete(crop.name)  # a crop left by an earlier analysis is replaced, not renamed beside it
    return replace(crop, name=default_storage.save(crop.name, ContentFile(data, name=crop.name)))


def _already_stored(image: ReferenceImage, crop: StoredCrop) -> bool:
    recorded = PhotoAnalysis.objects.filter(image_id=image.pk, crop=crop.name, crop_sha256=crop.sha256)
    return recorded.exists() and default_storage.exists(crop.name)


def _record(
    image: ReferenceImage, facts: face_photo.PhotoFacts | None, crop: StoredCrop | None
) -> PhotoAnalysis | None:
    crop_name = crop.name if crop is not None else ""
    with transaction.atomic():
        # Locked as reference_image_delete locks it: either the delete saw this crop, or this sees no image.
        if not ReferenceImage.objects.select_for_update().filter(pk=image.pk).exists():
            if crop_name:
                transaction.on_commit(lambda: default_storage.delete(crop_name))
            return None
        previous = PhotoAnalysis.objects.filter(image_id=image.pk).values_list("crop", flat=True).first()
        try:
            analysis, _ = PhotoAnalysis.objects.update_or_create(
                image_id=image.pk, defaults=_fields(facts, crop)
            )
        except IntegrityError:  # another task recorded it first; its result is as good as this one
            return PhotoAnalysis.objects.filter(image_id=image.pk).first()
        if previous and previous != crop_name:  # face crops were turned off: the old crop goes
            transaction.on_commit(partial(default_storage.delete, previous))
    return analysis


def _fields(facts: face_photo.PhotoFacts | None, crop: StoredCrop | None) -> dict[str, Any]:
    now = timezone.now()
    if facts is None:
        return {
            "analyser": face_photo.VERSION,
            "analysed_at": now,
            "flags": [Flag.UNREADABLE.value],
            "faces": [],
        }
    return {
        "analyser": face_photo.VERSION,
        "analysed_at": now,
        "faces": facts.faces,
        "embedding": facts.embedding.astype(EMBEDDING_DTYPE).tobytes()
        if facts.embedding is not None
        else None,
        "phash": facts.phash,
        "face_phash": facts.face_phash,
        "blur": facts.blur,
        "brightness": facts.brightness,
        "face_pixels": facts.face_pixels,
        "yaw": facts.yaw,
        "background": facts.background,
        "flags": [flag.value for flag in facts.flags],
        "crop": crop.name if crop is not None else "",
        "crop_sha256": crop.sha256 if crop is not None else "",
        "crop_bytes": crop.bytes if crop is not None else None,
    }


def photo_input(image: ReferenceImage) -> PhotoInput:
    """The photo's stored measurements (`image.analysis`), as the report and likeness compare them."""
    analysis = image.analysis
    return PhotoInput(
        key=str(image.pk),
        name=image.original_filename,
        flags=tuple(analysis.flags),
        embedding=embedding_of(analysis),
        phash=analysis.phash,
        face_phash=analysis.face_phash,
        yaw=analysis.yaw,
        background=tuple(analysis.background),
        face_pixels=analysis.face_pixels,
    )
