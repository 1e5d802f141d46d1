"""API for characters and their reference images. Reads go through owner-scoped selectors, so
another user's character or image answers 404; writes go through one service each."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from characters import consent, services
from characters.models import Character, PhotoConsent, ReferenceImage
from characters.selectors import (
    character_get_for,
    character_has_consent,
    character_list_for,
    dataset_report_get,
    dataset_report_is_current,
    reference_image_get_for,
    reference_image_list,
)
from runpod_worker.contract import BaseModel
from studio.api import ErrorSerializer, page_query_parameters, paginated_response, paginated_schema
from studio.api_parsers import JSONParser
from studio.errors import ApplicationError, NotFound
from studio.transfer import download_url

# The multipart part name photos are uploaded under, here and on the character page's form.
UPLOAD_PART = "files"
# Image links in responses stay valid long enough to render a page of thumbnails.
IMAGE_URL_TTL_SECONDS = 3600


class CharacterSerializer(serializers.ModelSerializer):
    image_count = serializers.SerializerMethodField()

    class Meta:
        model = Character
        fields = [
            "id",
            "name",
            "trigger_word",
            "description",
            "auto_train",
            "base_model",
            "is_person",
            "face_crops",
            "image_count",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.IntegerField())
    def get_image_count(self, character: Character) -> int:
        annotated = getattr(character, "image_count", None)
        return int(annotated) if annotated is not None else character.images.count()


class ReferenceImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField(help_text="A short-lived link to the stored image.")
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = ReferenceImage
        fields = [
            "id",
            "original_filename",
            "sha256",
            "width",
            "height",
            "bytes",
            "caption",
            "caption_auto",
            "url",
            "thumbnail_url",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.URLField())
    def get_url(self, image: ReferenceImage) -> str:
        return download_url(str(image.file.name), ttl=IMAGE_URL_TTL_SECONDS)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, image: ReferenceImage) -> str | None:
        if not image.thumbnail.name:
            return None
        return download_url(image.thumbnail.name, ttl=IMAGE_URL_TTL_SECONDS)


class ImageRejectionSerializer(serializers.Serializer):
    filename = serializers.CharField()
    code = serializers.CharField(help_text="e.g. `not_an_image`, `too_small`, `duplicate`.")
    message = serializers.CharField()


class ImageUploadResultSerializer(serializers.Serializer):
    added = ReferenceImageSerializer(many=True)
    rejected = ImageRejectionSerializer(many=True)


# --- Characters ---------------------------------------------------------------------------


class CharacterListApi(APIView):
    # What a character looks like in answers; training's API adds its LoRA (training.api_characters).
    output_serializer: type[CharacterSerializer] = CharacterSerializer

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        trigger_word = serializers.CharField(max_length=32)
        description = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)
        auto_train = serializers.BooleanField(required=False, default=False)
        base_model = serializers.ChoiceField(
            choices=list(BaseModel.SUPPORTED),
            required=False,
            default=BaseModel.DEFAULT,
            help_text="What its LoRAs are trained on unless a run says otherwise; auto-train uses it.",
        )
        is_person = serializers.BooleanField(required=False, default=True)
        face_crops = serializers.BooleanField(required=False, default=True)

        class Meta:
            ref_name = "CharacterCreateInput"

    @extend_schema(
        operation_id="characters_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(CharacterSerializer),
        tags=["characters"],
    )
    def get(self, request: Request) -> Response:
        return paginated_response(
            queryset=character_list_for(request.user),
            serializer_class=self.output_serializer,
            request=request,
            view=self,
            page_context=self.page_context,
        )

    def page_context(self, characters: list[Character]) -> dict[str, Any]:
        """What the output serializer reads for a whole page at once (see training.api_characters)."""
        return {}

    @extend_schema(
        operation_id="characters_create",
        request=InputSerializer,
        responses={201: CharacterSerializer, 409: ErrorSerializer},
        tags=["characters"],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        character = services.character_create(owner=request.user, **serializer.validated_data)  # type: ignore[arg-type]
        return Response(self.output_serializer(character).data, status=status.HTTP_201_CREATED)


class CharacterDetailApi(APIView):
    output_serializer: type[CharacterSerializer] = CharacterSerializer

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100, required=False)
        trigger_word = serializers.CharField(max_length=32, required=False)
        description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
        auto_train = serializers.BooleanField(required=False)
        base_model = serializers.ChoiceField(choices=list(BaseModel.SUPPORTED), required=False)
        is_person = serializers.BooleanField(required=False)
        face_crops = serializers.BooleanField(required=False)

        class Meta:
            ref_name = "CharacterUpdateInput"

    @extend_schema(operation_id="characters_read", responses=CharacterSerializer, tags=["characters"])
    def get(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        return Response(self.output_serializer(character).data)

    @extend_schema(
        operation_id="characters_update",
        request=InputSerializer,
        responses={200: CharacterSerializer, 409: ErrorSerializer},
        tags=["characters"],
    )
    def patch(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if serializer.validated_data:
            character = services.character_update(character=character, **serializer.validated_data)
        return Response(self.output_serializer(character).data)

    @extend_schema(operation_id="characters_delete", responses={204: None}, tags=["characters"])
    def delete(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        services.character_delete(character=character)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Reference images ---------------------------------------------------------------------


class ReferenceImageListApi(APIView):
    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        files = serializers.ListField(
            # Empty and broken files are the service's to refuse, one by one, not the whole batch.
            child=serializers.FileField(allow_empty_file=True, use_url=False),
            min_length=1,
            max_length=settings.DATA_UPLOAD_MAX_NUMBER_FILES,
            help_text="One or more JPEG, PNG or WebP photos, each sent as a `files` part.",
        )

        class Meta:
            ref_name = "ReferenceImageUploadInput"

    @extend_schema(
        operation_id="characters_images_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(ReferenceImageSerializer),
        tags=["images"],
    )
    def get(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        return paginated_response(
            queryset=reference_image_list(character),
            serializer_class=ReferenceImageSerializer,
            request=request,
            view=self,
            ordering="created_at",
        )

    @extend_schema(
        operation_id="characters_images_upload",
        request={"multipart/form-data": InputSerializer},
        responses={201: ImageUploadResultSerializer},
        tags=["images"],
        description=(
            "Adds every acceptable file and reports each refused one. 201 when at least one file was "
            "added (refusals listed in `rejected`); 400 `images_rejected` when none was."
        ),
    )
    def post(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        _check_part_names(request)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        if not character_has_consent(character):
            raise ApplicationError(
                "Photos of a person need the owner's consent first: agree to the consent statement with "
                f"PUT /api/v1/characters/{character.pk}/consent, then upload.",
                code="consent_required",
            )
        report = services.reference_images_upload(
            character=character, uploads=serializer.validated_data["files"]
        )
        rejected = [_rejection(item) for item in report.rejected]
        if not report.added:
            messages = [item["message"] for item in rejected]
            raise ApplicationError(
                "None of the files could be added: " + " ".join(messages),
                code="images_rejected",
                fields={"files": messages},
            )
        data = {"added": report.added, "rejected": rejected}
        return Response(ImageUploadResultSerializer(data).data, status=status.HTTP_201_CREATED)


def _check_part_names(request: Request) -> None:
    """Files sent under another part name (the web form's old `images`, a typo) are named in the refusal,
    rather than answered "files: this field is required" as if nothing had been sent."""
    others = sorted(name for name in request.FILES if name != UPLOAD_PART)
    if others and UPLOAD_PART not in request.FILES:
        sent = ", ".join(f"`{name}`" for name in others)
        message = (
            f"Send the photos as parts named `{UPLOAD_PART}`; this request's file parts are named {sent}."
        )
        raise ApplicationError(message, code="invalid", fields={UPLOAD_PART: [message]})


def _rejection(rejected: Any) -> dict[str, str]:
    return {"filename": rejected.filename, "code": rejected.code, "message": rejected.message}


class ReferenceImageDetailApi(APIView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    class InputSerializer(serializers.Serializer):
        caption = serializers.CharField(allow_blank=True, max_length=services.CAPTION_MAX_LENGTH)

        class Meta:
            ref_name = "ReferenceImageUpdateInput"

    @extend_schema(operation_id="characters_images_read", responses=ReferenceImageSerializer, tags=["images"])
    def get(self, request: Request, character_id: uuid.UUID, image_id: uuid.UUID) -> Response:
        image = reference_image_get_for(request.user, character_id, image_id)
        return Response(ReferenceImageSerializer(image).data)

    @extend_schema(
        operation_id="characters_images_update",
        request=InputSerializer,
        responses=ReferenceImageSerializer,
        tags=["images"],
    )
    def patch(self, request: Request, character_id: uuid.UUID, image_id: uuid.UUID) -> Response:
        image = reference_image_get_for(request.user, character_id, image_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        image = services.reference_image_update_caption(image=image, **serializer.validated_data)
        return Response(ReferenceImageSerializer(image).data)

    @extend_schema(operation_id="characters_images_delete", responses={204: None}, tags=["images"])
    def delete(self, request: Request, character_id: uuid.UUID, image_id: uuid.UUID) -> Response:
        image = reference_image_get_for(request.user, character_id, image_id)
        services.reference_image_delete(image=image)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Consent ------------------------------------------------------------------------------


class ConsentSerializer(serializers.ModelSerializer):
    given_by = serializers.CharField(source="given_by.username")
    statement = serializers.SerializerMethodField(help_text="The exact wording that was agreed to.")

    class Meta:
        model = PhotoConsent
        fields = ["given_by", "given_at", "wording_version", "basis", "statement"]

    @extend_schema_field(serializers.CharField())
    def get_statement(self, record: PhotoConsent) -> str:
        return consent.WORDINGS[record.wording_version]


class CharacterConsentApi(APIView):
    """The consent statement the owner agrees to before uploading photos of the character."""

    class InputSerializer(serializers.Serializer):
        basis = serializers.ChoiceField(
            choices=list(consent.BASES.items()),
            help_text="`self`: I am the person shown; `permission`: the person shown gave me permission.",
        )
        wording_version = serializers.CharField(
            default=consent.CURRENT_VERSION, help_text="The statement's version (GET shows the current one)."
        )

        class Meta:
            ref_name = "ConsentInput"

    @extend_schema(
        operation_id="characters_consent_read",
        responses={200: ConsentSerializer, 404: ErrorSerializer},
        tags=["characters"],
        description="The recorded consent; 404 `no_consent` (with the current statement) when there is none.",
    )
    def get(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        record = PhotoConsent.objects.filter(character=character).select_related("given_by").first()
        if record is None:
            raise NotFound(
                "No consent is recorded for this character. Current statement "
                f"({consent.CURRENT_VERSION}): {consent.WORDINGS[consent.CURRENT_VERSION]}",
                code="no_consent",
            )
        return Response(ConsentSerializer(record).data)

    @extend_schema(
        operation_id="characters_consent_record",
        request=InputSerializer,
        responses={200: ConsentSerializer},
        tags=["characters"],
    )
    def put(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        record = services.character_consent_record(
            character=character,
            given_by=request.user,  # type: ignore[arg-type]
            **serializer.validated_data,
        )
        return Response(ConsentSerializer(record).data)


# --- Dataset report -----------------------------------------------------------------------


class FlagSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="e.g. `no_face`, `multiple_faces`, `blurry`, `other_person`.")
    message = serializers.CharField()


class FaceSerializer(serializers.Serializer):
    box = serializers.ListField(
        child=serializers.FloatField(), help_text="left, top, right, bottom as fractions of width and height"
    )
    score = serializers.FloatField()
    yaw = serializers.FloatField(help_text="About 0 facing the camera; beyond ±0.25 a three-quarter view.")


class ReportPhotoSerializer(serializers.Serializer):
    image_id = serializers.UUIDField()
    original_filename = serializers.CharField()
    analysed = serializers.BooleanField()
    faces = FaceSerializer(many=True)
    flags = FlagSerializer(many=True)
    distance = serializers.FloatField(
        allow_null=True, help_text="From the set's medoid face; same person < 0.6."
    )
    crop_url = serializers.URLField(allow_null=True)


class DatasetReportSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["pending", "current", "outdated"],
        help_text="`pending`: not computed yet; `outdated`: photos changed since, an update is on its way.",
    )
    score = serializers.IntegerField(allow_null=True)
    photo_count = serializers.IntegerField()
    with_face = serializers.IntegerField()
    usable = serializers.IntegerField()
    medoid_image_id = serializers.UUIDField(allow_null=True)
    warnings = FlagSerializer(many=True)
    photos = ReportPhotoSerializer(many=True)
    computed_at = serializers.DateTimeField(allow_null=True)


class CharacterDatasetReportApi(APIView):
    @extend_schema(
        operation_id="characters_dataset_report",
        responses=DatasetReportSerializer,
        tags=["characters"],
        description="The face check of the character's photos: per photo faces, boxes and flags; for the set "
        "one identity, duplicates, variety, warnings and a 0-100 score.",
    )
    def get(self, request: Request, character_id: uuid.UUID) -> Response:
        character = character_get_for(request.user, character_id)
        return Response(DatasetReportSerializer(dataset_report_document(character)).data)


def dataset_report_document(character: Character) -> dict[str, Any]:
    report = dataset_report_get(character)
    verdicts = report.photos if report is not None else {}
    images = reference_image_list(character).select_related("analysis")
    status = (
        "pending"
        if report is None
        else "current"
        if dataset_report_is_current(character, report)
        else "outdated"
    )
    return {
        "status": status,
        "score": report.score if report else None,
        "photo_count": len(images),
        "with_face": report.with_face if report else 0,
        "usable": report.usable if report else 0,
        "medoid_image_id": report.medoid_id if report else None,
        "warnings": report.warnings if report else [],
        "photos": [_report_photo(image, verdicts.get(str(image.pk))) for image in images],
        "computed_at": report.computed_at if report else None,
    }


def _report_photo(image: ReferenceImage, verdict: dict[str, Any] | None) -> dict[str, Any]:
    analysis = getattr(image, "analysis", None)
    crop = analysis.crop.name if analysis is not None and analysis.crop else None
    return {
        "image_id": image.pk,
        "original_filename": image.original_filename,
        "analysed": analysis is not None,
        "faces": [
            {"box": f["box"], "score": f["score"], "yaw": f["yaw"]}
            for f in (analysis.faces if analysis else [])
        ],
        "flags": (verdict or {}).get("flags", []),
        "distance": (verdict or {}).get("distance"),
        "crop_url": download_url(crop, ttl=IMAGE_URL_TTL_SECONDS) if crop else None,
    }
