"""Owner-scoped reads: another user's character or image simply does not exist (404)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.shortcuts import get_object_or_404

from characters.analysis import photo_input
from characters.faces.dataset import PhotoInput
from characters.faces.flags import FLAG_SUMMARIES, Flag
from characters.faces.photo import VERSION as ANALYSER_VERSION
from characters.models import Character, DatasetReport, PhotoAnalysis, PhotoConsent, ReferenceImage


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


# --- Identity: consent, dataset report, face crops ----------------------------------------


@dataclass(frozen=True)
class IdentityCheck:
    """What training's start and confirm pages need from the dataset report.

    `refusal` is a message when training must not start (most photos of a person show no face), else
    None; `warnings` are the report's warnings to show beside the start button; `current` says whether
    the report reflects the photos as they are now (False while the analysis runs).
    """

    refusal: str | None
    warnings: list[dict[str, str]]
    current: bool
    score: int | None


def character_has_consent(character: Character) -> bool:
    return PhotoConsent.objects.filter(character_id=character.pk).exists()


def character_page_get_for(user: Any, character_id: uuid.UUID | str) -> Character:
    """`character_get_for`, with its dataset report and consent record read in the same query (the
    character page shows both)."""
    return get_object_or_404(
        Character.objects.select_related("dataset_report", "consent__given_by"), pk=character_id, owner=user
    )


def dataset_report_get(character: Character) -> DatasetReport | None:
    if Character.dataset_report.is_cached(character):  # read with the character (character_page_get_for)
        return getattr(character, "dataset_report", None)
    return DatasetReport.objects.filter(character_id=character.pk).select_related("medoid").first()


@dataclass(frozen=True)
class FlagCount:
    code: str
    label: str
    photos: int


def dataset_report_worst_flags(report: DatasetReport | None, *, limit: int = 4) -> list[FlagCount]:
    """The report's photo flags, worst first (`FLAG_SUMMARIES` order), each with how many photos have it."""
    if report is None:
        return []
    counts: dict[str, int] = {}
    for verdict in report.photos.values():
        for flag in verdict.get("flags", []):
            counts[flag["code"]] = counts.get(flag["code"], 0) + 1
    return [
        FlagCount(code=flag.value, label=label, photos=counts[flag.value])
        for flag, label in FLAG_SUMMARIES.items()
        if flag.value in counts
    ][:limit]


def dataset_report_is_current(character: Character, report: DatasetReport | None) -> bool:
    """True when the report was computed from the character's photos and switches as they are now."""
    if report is None or report.analyser != ANALYSER_VERSION:
        return False
    changed_at = (
        Character.objects.filter(pk=character.pk).values_list("dataset_changed_at", flat=True).first()
    )
    return changed_at is None or (report.dataset_as_of is not None and report.dataset_as_of >= changed_at)


def character_identity_check(character: Character) -> IdentityCheck:
    """Training start calls this: refuse only when most analysed photos of a person show no face
    (CHARACTERS_NO_FACE_REFUSAL_SHARE); a character marked "not a person" is never refused. A report
    still being computed refuses nothing: the photos are judged by the report that exists."""
    report = dataset_report_get(character)
    if report is None:
        return IdentityCheck(refusal=None, warnings=[], current=False, score=None)
    current = dataset_report_is_current(character, report)
    return IdentityCheck(
        refusal=_no_face_refusal(character, report),
        warnings=list(report.warnings),
        current=current,
        score=report.score,
    )


@dataclass(frozen=True)
class FaceCropFile:
    """A photo's face-centred crop as a training dataset takes it: stored where, its checksum and size."""

    image: ReferenceImage
    name: str
    sha256: str
    bytes: int


def character_face_crops(character: Character) -> list[tuple[ReferenceImage, str]]:
    """Each photo with a face-centred crop, and the crop's storage name, for the training dataset
    (empty when the character's face crops are off or it is not a person)."""
    return [(analysis.image, str(analysis.crop.name)) for analysis in _face_crop_analyses(character)]


def character_face_crop_files(character: Character) -> list[FaceCropFile]:
    """The crops `character_face_crops` lists, with the checksum and size a training run sends the worker;
    a crop stored before its checksum was recorded is left out until the photo is analysed again."""
    return [
        FaceCropFile(analysis.image, str(analysis.crop.name), analysis.crop_sha256, analysis.crop_bytes)
        for analysis in _face_crop_analyses(character)
        if analysis.crop_sha256 and analysis.crop_bytes is not None
    ]


def _face_crop_analyses(character: Character) -> QuerySet[PhotoAnalysis]:
    if not (character.is_person and character.face_crops):
        return PhotoAnalysis.objects.none()
    return (
        PhotoAnalysis.objects.filter(image__character=character)
        .exclude(crop="")
        .select_related("image")
        .order_by("image__created_at", "image__id")
    )


def character_likeness_references(
    character: Character, *, sha256s: Collection[str] | None = None
) -> list[PhotoInput]:
    """The analysed photos with a face that are not flagged as someone else (of those with these
    `sha256s`, when given: the photos a run trained on), as the likeness of generated images needs them.
    Their `embedding` is biometric data: read it to score, never keep a copy."""
    report = dataset_report_get(character)
    others = _photos_flagged(report, Flag.OTHER_PERSON) if report is not None else set()
    analyses = PhotoAnalysis.objects.filter(image__character=character, embedding__isnull=False)
    if sha256s is not None:
        analyses = analyses.filter(image__sha256__in=list(sha256s))
    images = ReferenceImage.objects.filter(pk__in=analyses.values("image_id")).select_related("analysis")
    return [
        photo_input(image) for image in images.order_by("created_at", "id") if str(image.pk) not in others
    ]


def _no_face_refusal(character: Character, report: DatasetReport) -> str | None:
    """Judged on the photos the character has now: a report computed before the latest uploads counts those
    it has not seen as unknown, so it neither refuses for photos since deleted nor names a wrong total."""
    if not character.is_person or report.photo_count == 0:
        return None
    photos = {str(pk) for pk in character.images.values_list("pk", flat=True)}
    without = sum(
        1
        for key, verdict in report.photos.items()
        if key in photos
        and any(flag["code"] in (Flag.NO_FACE, Flag.BLANK) for flag in verdict.get("flags", []))
    )
    if not photos or without / len(photos) <= settings.CHARACTERS_NO_FACE_REFUSAL_SHARE:
        return None
    return (
        f"{without} of {len(photos)} photos show no face, so the LoRA would have no face to learn. "
        "Replace them with photos of the person's face, or, if this character is not a person, turn "
        "“Is a person” off in its settings."
    )


def _photos_flagged(report: DatasetReport, flag: Flag) -> set[str]:
    return {
        key
        for key, verdict in report.photos.items()
        if any(f["code"] == flag for f in verdict.get("flags", []))
    }
