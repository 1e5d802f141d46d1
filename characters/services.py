"""Every write to characters and their reference images goes through these functions.

Images are checked and normalised (`characters.ingest`) and stored before a short transaction
records them, so no storage call ever runs while a row is locked; stored files are removed
only after the deleting transaction has committed.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from characters import consent
from characters.ingest import ImageRejected, PreparedImage, display_name, prepare_image
from characters.models import (
    Character,
    PhotoAnalysis,
    PhotoConsent,
    ReferenceImage,
    reference_image_name,
    reference_thumbnail_name,
)
from characters.signals import (
    auto_train_enabled,
    character_deleting,
    reference_image_deleting,
    reference_images_added,
)
from runpod_worker.contract import BaseModel
from studio.errors import ApplicationError, Conflict, NotFound
from studio.models import User
from studio.storage import storage_folder_delete

logger = logging.getLogger(__name__)

CHARACTER_FIELDS = frozenset(
    {"name", "trigger_word", "description", "auto_train", "base_model", "is_person", "face_crops"}
)
# Changing these changes what the dataset report says (face checks, crops): it is recomputed.
DATASET_FIELDS = frozenset({"is_person", "face_crops"})
CAPTION_MAX_LENGTH = 1000


@dataclass
class IngestReport:
    """What a batch upload kept and what it refused, file by file."""

    added: list[ReferenceImage] = field(default_factory=list)
    rejected: list[ImageRejected] = field(default_factory=list)


# --- Characters ---------------------------------------------------------------------------


def character_create(
    *,
    owner: User,
    name: str,
    trigger_word: str,
    description: str = "",
    auto_train: bool = False,
    base_model: str = BaseModel.DEFAULT,
    is_person: bool = True,
    face_crops: bool = True,
) -> Character:
    """Create a character for `owner`; its name must be new among the owner's characters."""
    character = Character(
        owner=owner,
        name=name.strip(),
        trigger_word=trigger_word.strip(),
        description=description.strip(),
        auto_train=auto_train,
        base_model=base_model,
        is_person=is_person,
        face_crops=face_crops,
    )
    _validate(character)
    try:
        character.save()
    except IntegrityError as error:  # a concurrent create with the same name won the race
        raise _name_taken(character.name) from error
    return character


def character_update(*, character: Character, **fields: object) -> Character:
    """Change the given fields (`CHARACTER_FIELDS`) of a character."""
    unknown = set(fields) - CHARACTER_FIELDS
    if unknown:
        raise TypeError(f"character_update() cannot change {sorted(unknown)}")
    turned_on = bool(fields.get("auto_train")) and not character.auto_train
    dataset_changed = any(getattr(character, name) != fields[name] for name in DATASET_FIELDS & set(fields))
    for name, value in fields.items():
        setattr(character, name, value.strip() if isinstance(value, str) else value)
    _validate(character)
    update_fields = [*fields, "updated_at"]
    if dataset_changed:
        character.dataset_changed_at = timezone.now()
        update_fields.append("dataset_changed_at")
    try:
        character.save(update_fields=update_fields)
    except IntegrityError as error:
        raise _name_taken(character.name) from error
    if turned_on:
        transaction.on_commit(partial(_send_auto_train_enabled, character.pk))
    if dataset_changed:
        # Crops are made (or not) during a photo's analysis: every photo is analysed again.
        PhotoAnalysis.objects.filter(image__character=character).update(analyser="")
        _analyse_after_commit(character.pk)
    return character


def character_delete(*, character: Character) -> None:
    """Erase a character: its photos, face crops, face analyses (embeddings), dataset report and consent
    rows, and every stored file under `characters/<id>/`, which go once the deletion has committed.

    Listeners of `character_deleting` run first (training cancels a run in progress), outside the delete.
    """
    character_deleting.send(sender=Character, character=character)
    folder = f"characters/{character.pk}/"
    names = _stored_names(character.images.all())
    character.delete()
    transaction.on_commit(partial(_delete_character_files, folder, names))


# --- Consent ------------------------------------------------------------------------------


def character_consent_record(
    *, character: Character, given_by: User, basis: str, wording_version: str = consent.CURRENT_VERSION
) -> PhotoConsent:
    """Record that `given_by` agreed to the consent statement for this character's photos (replacing an
    earlier agreement); uploading photos needs one."""
    if wording_version not in consent.WORDINGS:
        raise ApplicationError(
            f"There is no consent statement {wording_version!r}; agree to the current one "
            f"({consent.CURRENT_VERSION}).",
            code="unknown_consent_version",
        )
    if basis not in consent.BASES:
        message = "Say whether you are the person in the photos or have their permission."
        raise ApplicationError(message, code="invalid", fields={"basis": [message]})
    if given_by.pk != character.owner_id:
        raise ApplicationError(
            "Only the character's owner can give consent for its photos.", code="not_owner"
        )
    record, _ = PhotoConsent.objects.update_or_create(
        character=character,
        defaults={
            "given_by": given_by,
            "given_at": timezone.now(),
            "wording_version": wording_version,
            "basis": basis,
        },
    )
    return record


def _require_consent(character: Character, filename: str) -> None:
    if not PhotoConsent.objects.filter(character_id=character.pk).exists():
        raise ImageRejected(
            filename,
            "photos of a person need your consent first: agree to the consent statement for this "
            "character, then upload again.",
            code="consent_required",
        )


def _visible_name(name: str) -> str:
    """The name in NFC, stripped; refused when nothing of it can be seen (zero-width and other invisible
    characters alone would give a character nobody can tell apart or click on)."""
    name = unicodedata.normalize("NFC", name).strip()
    if not any(unicodedata.category(char)[0] in "LNPS" for char in name):
        message = "Give the character a name with letters or digits a person can see."
        raise ApplicationError(message, code="invalid", fields={"name": [message]})
    return name


def _validate(character: Character) -> None:
    character.name = _visible_name(character.name)
    try:
        character.full_clean(validate_constraints=False)
    except ValidationError as error:
        fields = {
            name: [str(message) for message in messages] for name, messages in error.message_dict.items()
        }
        first = next(iter(fields.values()))[0]
        raise ApplicationError(first, code="invalid", fields=fields) from error
    # "anna" beside "Anna" would be two characters nobody can tell apart in a list.
    others = Character.objects.filter(owner_id=character.owner_id, name__iexact=character.name)
    taken = others.exclude(pk=character.pk).first()
    if taken is not None:
        raise _name_taken(taken.name)


def _name_taken(name: str) -> Conflict:
    message = f"You already have a character called “{name}”. Choose another name."
    return Conflict(message, code="name_taken", fields={"name": [message]})


# --- Reference images ---------------------------------------------------------------------


def reference_image_add(*, character: Character, upload: UploadedFile) -> ReferenceImage:
    """Check, normalise and store one upload as a reference image of `character`.

    Raises ImageRejected naming the file and the reason.
    """
    image = _reference_image_ingest(character=character, upload=upload)
    _announce_images_added(character)
    return image


def reference_images_upload(*, character: Character, uploads: Iterable[UploadedFile]) -> IngestReport:
    """What the web page and the API call: like `reference_images_add_many`, once the character's
    consent is recorded. Without it every file is refused with code `consent_required`."""
    if PhotoConsent.objects.filter(character_id=character.pk).exists():
        return reference_images_add_many(character=character, uploads=uploads)
    report = IngestReport()
    for upload in uploads:
        try:
            _require_consent(character, display_name(upload.name or ""))
        except ImageRejected as rejected:
            report.rejected.append(rejected)
        finally:
            upload.close()
    return report


def reference_images_add_many(*, character: Character, uploads: Iterable[UploadedFile]) -> IngestReport:
    """Add each upload in turn, keeping the good ones and reporting each refusal.

    Uploads are handled one at a time and closed once handled, so a large batch never sits in
    memory and its temporary files go as soon as possible.
    """
    report = IngestReport()
    for upload in uploads:
        try:
            report.added.append(_reference_image_ingest(character=character, upload=upload))
        except ImageRejected as rejected:
            report.rejected.append(rejected)
        finally:
            upload.close()
    if report.added:
        _announce_images_added(character)
    return report


def reference_image_update_caption(*, image: ReferenceImage, caption: str) -> ReferenceImage:
    """Replace an image's caption (empty means the trainer uses the trigger word alone)."""
    caption = caption.strip()
    if len(caption) > CAPTION_MAX_LENGTH:
        message = f"Keep the caption under {CAPTION_MAX_LENGTH} characters (it has {len(caption)})."
        raise ApplicationError(message, code="caption_too_long", fields={"caption": [message]})
    image.caption, image.caption_auto = caption, False
    image.save(update_fields=["caption", "caption_auto", "updated_at"])
    return image


def reference_images_update_captions(*, character: Character, captions: dict[Any, str]) -> int:
    """Replace the captions of the character's images given by id, all or none; returns how many changed.

    Ids of images no longer in the character (deleted meanwhile) are skipped.
    """
    cleaned = {str(image_id): caption.strip() for image_id, caption in captions.items()}
    for caption in cleaned.values():
        if len(caption) > CAPTION_MAX_LENGTH:
            message = f"Keep each caption under {CAPTION_MAX_LENGTH} characters (one has {len(caption)})."
            raise ApplicationError(message, code="caption_too_long")
    changed = []
    now = timezone.now()  # bulk_update does not apply auto_now
    with transaction.atomic():
        for image in character.images.select_for_update().filter(pk__in=list(cleaned)):
            if image.caption != cleaned[str(image.pk)]:
                image.caption, image.caption_auto, image.updated_at = cleaned[str(image.pk)], False, now
                changed.append(image)
        ReferenceImage.objects.bulk_update(changed, ["caption", "caption_auto", "updated_at"])
    return len(changed)


def reference_images_fill_captions(*, character: Character, captions: dict[str, str]) -> int:
    """Give the character's photos without a caption the ones a captioner wrote (by sha256), marked as
    written by it; a photo its owner captioned meanwhile keeps theirs. Returns how many were filled.

    Idempotent: a second call finds those photos captioned and changes nothing."""
    cleaned = {sha: _short(" ".join(caption.split())) for sha, caption in captions.items() if caption.strip()}
    filled = []
    now = timezone.now()  # bulk_update does not apply auto_now
    with transaction.atomic():
        for image in character.images.select_for_update().filter(sha256__in=list(cleaned), caption=""):
            image.caption, image.caption_auto, image.updated_at = cleaned[image.sha256], True, now
            filled.append(image)
        ReferenceImage.objects.bulk_update(filled, ["caption", "caption_auto", "updated_at"])
    return len(filled)


def _short(caption: str) -> str:
    """At most CAPTION_MAX_LENGTH characters, cut at a word (the worker keeps to it; nothing makes it)."""
    if len(caption) <= CAPTION_MAX_LENGTH:
        return caption
    return caption[:CAPTION_MAX_LENGTH].rsplit(" ", 1)[0]


def reference_image_delete(*, image: ReferenceImage) -> None:
    """Delete a reference image with its face analysis (embedding) and crop; its stored files go once
    the deletion has committed, and the character's dataset report is recomputed.

    Listeners of `reference_image_deleting` may refuse first (a run still training on the photo)."""
    with transaction.atomic():
        # The lock orders this against an analysis being recorded for the image (characters.analysis),
        # so the crop that analysis stored is either seen here or removed by it.
        locked = ReferenceImage.objects.select_for_update().filter(pk=image.pk).first()
        if locked is None:
            return
        reference_image_deleting.send(sender=ReferenceImage, image=locked)
        names = _stored_names([locked])
        locked.delete()
        Character.objects.filter(pk=image.character_id).update(dataset_changed_at=timezone.now())
    transaction.on_commit(partial(_delete_files, names))
    _analyse_after_commit(image.character_id)


def _reference_image_ingest(*, character: Character, upload: UploadedFile) -> ReferenceImage:
    filename = display_name(upload.name or "")
    if character.images.count() >= settings.TRAINING_MAX_IMAGES:  # refuse before any decoding
        raise _too_many_images(filename)
    prepared = prepare_image(upload, filename=filename, size=upload.size or 0)
    try:
        stored = _store(character, prepared)
    finally:
        prepared.close()
    try:
        return _reference_image_record(character=character, prepared=prepared, stored=stored)
    except BaseException:
        _delete_files(list(stored))
        raise


def _store(character: Character, prepared: PreparedImage) -> tuple[str, str, str]:
    """Save the image and its two thumbnails; returns their storage names."""
    names = (
        (reference_image_name(character.pk, prepared.sha256, prepared.extension), prepared.image),
        (reference_thumbnail_name(character.pk, prepared.sha256), prepared.thumbnail),
        (reference_thumbnail_name(character.pk, prepared.sha256, large=True), prepared.thumbnail_large),
    )
    saved: list[str] = []
    try:
        for name, content in names:
            saved.append(default_storage.save(name, File(content, name=name)))
    except Exception as error:
        logger.exception("Could not store %s for character %s", names[0][0], character.pk)
        _delete_files(saved)
        raise ImageRejected(
            prepared.original_filename,
            "the file storage is not answering, so the image was not saved. Try again in a minute.",
            code="storage_unavailable",
        ) from error
    return saved[0], saved[1], saved[2]


def _reference_image_record(
    *, character: Character, prepared: PreparedImage, stored: tuple[str, str, str]
) -> ReferenceImage:
    name = prepared.original_filename
    try:
        with transaction.atomic():
            # The row lock serialises concurrent uploads to one character, so the count and the
            # duplicate check below cannot both pass for two requests at once.
            locked = Character.objects.select_for_update().filter(pk=character.pk).first()
            if locked is None:
                raise NotFound("This character was deleted while the upload was running.")
            if locked.images.count() >= settings.TRAINING_MAX_IMAGES:
                raise _too_many_images(name)
            existing = locked.images.filter(sha256=prepared.sha256).first()
            if existing is not None:
                raise _duplicate(name, existing)
            locked.dataset_changed_at = timezone.now()
            locked.save(update_fields=["dataset_changed_at"])
            return ReferenceImage.objects.create(
                character=locked,
                file=stored[0],
                thumbnail=stored[1],
                thumbnail_large=stored[2],
                original_filename=name,
                sha256=prepared.sha256,
                width=prepared.width,
                height=prepared.height,
                bytes=prepared.bytes,
            )
    except IntegrityError as error:  # only without row locks (SQLite): the constraint decides
        raise ImageRejected(name, "this image is already in the character.", code="duplicate") from error


def _too_many_images(filename: str) -> ImageRejected:
    return ImageRejected(
        filename,
        f"the character already has {settings.TRAINING_MAX_IMAGES} images, the most it can hold. "
        "Delete some before adding more.",
        code="too_many_images",
    )


def _duplicate(filename: str, existing: ReferenceImage) -> ImageRejected:
    return ImageRejected(
        filename,
        f"this image is already in the character (as {existing.original_filename}).",
        code="duplicate",
    )


def _announce_images_added(character: Character) -> None:
    transaction.on_commit(partial(_send_images_added, character.pk))
    _analyse_after_commit(character.pk)


def _analyse_after_commit(character_id: object) -> None:
    """Queue the face analysis and dataset report once the change is committed (never in the request)."""

    def enqueue() -> None:
        from characters import tasks  # tasks call services: imported late to keep the import one-way

        try:
            tasks.analyse_character_photos.delay(str(character_id))
        except Exception:  # a broker outage must not fail the upload; the report sweep queues it later
            logger.exception("could not queue the face analysis of character %s", character_id)

    transaction.on_commit(enqueue)


def _send_auto_train_enabled(character_id: object) -> None:
    for receiver, result in auto_train_enabled.send_robust(sender=Character, character_id=character_id):
        if isinstance(result, Exception):
            logger.error("auto_train_enabled receiver %r failed", receiver, exc_info=result)


def _send_images_added(character_id: object) -> None:
    # A failing listener (say, the training hook while its queue is down) must not fail an upload.
    for receiver, result in reference_images_added.send_robust(sender=Character, character_id=character_id):
        if isinstance(result, Exception):
            logger.error("reference_images_added receiver %r failed", receiver, exc_info=result)


# --- Stored files -------------------------------------------------------------------------


def _stored_names(images: Iterable[ReferenceImage]) -> list[str]:
    images = list(images)
    names: list[str] = []
    for image in images:
        names.extend(
            name for name in (image.file.name, image.thumbnail.name, image.thumbnail_large.name) if name
        )
    crops = PhotoAnalysis.objects.filter(image__in=images).exclude(crop="").values_list("crop", flat=True)
    names.extend(crops)
    return names


def _delete_files(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except Exception:  # an orphaned file is better than a failed request; log it for cleanup
            logger.exception("Could not delete stored file %s", name)


def _delete_character_files(folder: str, names: list[str]) -> None:
    """Delete the known files, then anything else left in the character's folder."""
    _delete_files(names)
    try:
        storage_folder_delete(folder)
    except Exception:
        logger.exception("Could not empty the storage folder %s", folder)
