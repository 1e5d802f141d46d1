"""Web pages for characters and their reference images. Each view reads through an owner-scoped
selector (another user's things answer 404) and writes through one service."""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from characters import consent, services
from characters.forms import CaptionForm, CaptionsForm, CharacterForm, ConsentForm
from characters.ingest import LARGE_THUMBNAIL_SIZE, MAX_BYTES, ImageRejected
from characters.models import Character, ReferenceImage
from characters.selectors import (
    character_get_for,
    character_has_consent,
    character_list_for,
    character_page_get_for,
    dataset_report_get,
    dataset_report_is_current,
    dataset_report_worst_flags,
    reference_image_get_for,
    reference_image_list,
)
from studio.errors import ApplicationError

# The same part name as the API's upload (`files`), so one name works everywhere.
UPLOAD_FIELD = "files"


@login_required
@require_GET
def character_list(request: HttpRequest) -> HttpResponse:
    characters = character_list_for(request.user)
    return render(request, "characters/character_list.html", {"characters": characters})


@login_required
@require_http_methods(["GET", "POST"])
def character_create(request: HttpRequest) -> HttpResponse:
    form = CharacterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            character = services.character_create(owner=request.user, **form.cleaned_data)  # type: ignore[arg-type]
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"Created {character.name}. Now add reference photos.")
            return redirect("characters:detail", character_id=character.pk)
    return _render_form(request, form, character=None)


@login_required
@require_GET
def character_detail(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_page_get_for(request.user, character_id)
    images = list(reference_image_list(character))
    report = dataset_report_get(character)
    context = {
        "character": character,
        "images": images,
        "report": report,
        "worst_flags": dataset_report_worst_flags(report),
        "consent": getattr(character, "consent", None),
        "min_images": settings.TRAINING_MIN_IMAGES,
        "max_images": settings.TRAINING_MAX_IMAGES,
        "max_upload_mb": MAX_BYTES // (1024 * 1024),
        "max_upload_bytes": MAX_BYTES,
        "upload_field": UPLOAD_FIELD,
    }
    return render(request, "characters/character_detail.html", context)


# A LoRA answers to the trigger word it was trained with (each training run records its own).
TRIGGER_WORD_CHANGE_HINT = (
    "A rare token that stands for the character in captions. Changing it applies to training from now on: "
    "LoRAs already trained keep the trigger word they were trained with."
)


@login_required
@require_http_methods(["GET", "POST"])
def character_edit(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_get_for(request.user, character_id)
    initial = {name: getattr(character, name) for name in services.CHARACTER_FIELDS}
    form = CharacterForm(request.POST or None, initial=initial)
    form.fields["trigger_word"].help_text = TRIGGER_WORD_CHANGE_HINT
    if request.method == "POST" and form.is_valid():
        try:
            services.character_update(character=character, **form.cleaned_data)
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, f"Saved {character.name}.")
            return redirect("characters:detail", character_id=character.pk)
    return _render_form(request, form, character=character)


@login_required
@require_http_methods(["GET", "POST"])
def character_delete(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    character = character_get_for(request.user, character_id)
    if request.method == "POST":
        name = character.name
        services.character_delete(character=character)
        messages.success(request, f"Deleted {name} and all of its images.")
        return redirect("characters:list")
    image_count = character.images.count()
    return render(
        request,
        "characters/character_confirm_delete.html",
        {"character": character, "image_count": image_count},
    )


@login_required
@require_POST
def reference_images_upload(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """Add the posted files. Answers JSON to the upload script, an HTML report to a plain form."""
    character = character_get_for(request.user, character_id)
    uploads = request.FILES.getlist(UPLOAD_FIELD)
    if not character_has_consent(character):
        return _consent_first(request, character)
    if not uploads:
        message = "Choose at least one JPEG, PNG or WebP image to upload."
        if request.FILES:  # sent under another name: a page from before the form's part was renamed
            message = (
                f"The photos came under another name than `{UPLOAD_FIELD}`. Reload the page and upload again."
            )
        if _wants_json(request):
            return JsonResponse({"message": message, "added": [], "rejected": []}, status=400)
        messages.error(request, message)
        return redirect("characters:detail", character_id=character.pk)
    report = services.reference_images_upload(character=character, uploads=uploads)
    status = 400 if report.rejected and not report.added else 200
    image_count = character.images.count()
    if _wants_json(request):
        return JsonResponse(_report_as_json(character, report, image_count), status=status)
    context = {"character": character, "report": report, "image_count": image_count}
    return render(request, "characters/upload_result.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def character_consent(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """The consent statement the owner agrees to before the first upload (and may agree to again)."""
    character = character_get_for(request.user, character_id)
    form = ConsentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.character_consent_record(
                character=character,
                given_by=request.user,  # type: ignore[arg-type]
                basis=form.cleaned_data["basis"],
                wording_version=form.cleaned_data["wording_version"],
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, "Consent recorded. You can upload photos now.")
            return redirect("characters:detail", character_id=character.pk)
    context = {
        "character": character,
        "form": form,
        "wording": consent.WORDINGS[consent.CURRENT_VERSION],
        "version": consent.CURRENT_VERSION,
        "existing": getattr(character, "consent", None),
    }
    return render(request, "characters/consent.html", context, status=400 if form.errors else 200)


@login_required
@require_GET
def character_dataset_report(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """The dataset report alone: each photo with its face boxes and flags, the set's warnings and score."""
    character = character_get_for(request.user, character_id)
    report = dataset_report_get(character)
    context = {
        "character": character,
        "report": report,
        "report_current": dataset_report_is_current(character, report),
        "entries": _report_entries(character, report),
    }
    return render(request, "characters/dataset_report.html", context)


@login_required
@require_POST
def reference_image_caption(
    request: HttpRequest, character_id: uuid.UUID, image_id: uuid.UUID
) -> HttpResponse:
    image = reference_image_get_for(request.user, character_id, image_id)
    form = CaptionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"{image.original_filename}: {form.errors['caption'][0]}")
    else:
        try:
            services.reference_image_update_caption(image=image, caption=form.cleaned_data["caption"])
        except ApplicationError as error:
            messages.error(request, f"{image.original_filename}: {error.message}")
        else:
            messages.success(request, f"Saved the caption of {image.original_filename}.")
    return redirect(_image_anchor(image))


@login_required
@require_http_methods(["GET", "POST"])
def reference_image_captions(request: HttpRequest, character_id: uuid.UUID) -> HttpResponse:
    """Every photo's caption on one page, with one caption to apply to them all."""
    character = character_get_for(request.user, character_id)
    images = list(reference_image_list(character))
    form = CaptionsForm(request.POST or None, images=images)
    if request.method == "POST" and form.is_valid():
        try:
            count = services.reference_images_update_captions(character=character, captions=form.captions())
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, f"Saved the captions of {count} photo{'s' if count != 1 else ''}.")
            return redirect(reverse("characters:detail", args=[character.pk]) + "#images-heading")
    context = {"character": character, "form": form, "rows": form.rows()}
    return render(request, "characters/captions.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def reference_image_delete(
    request: HttpRequest, character_id: uuid.UUID, image_id: uuid.UUID
) -> HttpResponse:
    image = reference_image_get_for(request.user, character_id, image_id)
    try:
        services.reference_image_delete(image=image)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Deleted {image.original_filename}.")
    return redirect("characters:detail", character_id=character_id)


@login_required
@require_GET
def reference_image_thumbnail(
    request: HttpRequest, character_id: uuid.UUID, image_id: uuid.UUID
) -> FileResponse:
    image = reference_image_get_for(request.user, character_id, image_id)
    if request.GET.get("size") == str(LARGE_THUMBNAIL_SIZE) and image.thumbnail_large.name:
        return _stored_file(image.thumbnail_large.name)
    return _stored_file(image.thumbnail.name or image.file.name)


@login_required
@require_GET
def reference_image_file(request: HttpRequest, character_id: uuid.UUID, image_id: uuid.UUID) -> FileResponse:
    image = reference_image_get_for(request.user, character_id, image_id)
    return _stored_file(image.file.name)


def _consent_first(request: HttpRequest, character: Character) -> HttpResponse:
    url = reverse("characters:consent", args=[character.pk])
    message = (
        f"Photos of a person need your consent first: agree to the consent statement at {url}, then upload."
    )
    if _wants_json(request):
        body = {
            "message": message,
            "code": "consent_required",
            "consent_url": url,
            "added": [],
            "rejected": [],
        }
        return JsonResponse(body, status=400)
    messages.error(request, message)
    return redirect(url)


def _report_entries(character: Character, report: Any) -> list[dict[str, Any]]:
    """Each photo with its analysis (face boxes) and its verdict in the report, in upload order."""
    verdicts = report.photos if report is not None else {}
    entries = []
    for image in reference_image_list(character).select_related("analysis"):
        analysis = getattr(image, "analysis", None)
        entries.append(
            {
                "image": image,
                "faces": [_box_style(face["box"]) for face in (analysis.faces if analysis else [])],
                "verdict": verdicts.get(str(image.pk)),
                "analysed": analysis is not None,
            }
        )
    return entries


def _box_style(box: list[float]) -> str:
    left, top, right, bottom = box
    width, height = (right - left) * 100, (bottom - top) * 100
    return f"left:{left * 100:.1f}%;top:{top * 100:.1f}%;width:{width:.1f}%;height:{height:.1f}%"


def _render_form(request: HttpRequest, form: CharacterForm, *, character: Character | None) -> HttpResponse:
    status = 400 if form.errors else 200
    context = {"form": form, "character": character}
    return render(request, "characters/character_form.html", context, status=status)


def _stored_file(name: str | None) -> FileResponse:
    """Stream a stored file to its owner; the caller has already checked ownership."""
    if not name or not default_storage.exists(name):
        raise Http404("The stored file is missing.")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    response = FileResponse(default_storage.open(name, "rb"), content_type=content_type)
    # An image id always names the same bytes, so browsers may keep it; only this user may.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _image_anchor(image: ReferenceImage) -> str:
    return reverse("characters:detail", args=[image.character_id]) + f"#image-{image.pk}"


def _report_as_json(character: Character, report: services.IngestReport, image_count: int) -> dict[str, Any]:
    return {
        "added": [
            {
                "id": str(image.pk),
                "filename": image.original_filename,
                "width": image.width,
                "height": image.height,
                "thumbnail_url": reverse("characters:thumbnail", args=[character.pk, image.pk]),
            }
            for image in report.added
        ],
        "rejected": [_rejection_as_json(rejected) for rejected in report.rejected],
        "image_count": image_count,
    }


def _rejection_as_json(rejected: ImageRejected) -> dict[str, str]:
    return {"filename": rejected.filename, "code": rejected.code, "message": rejected.message}
