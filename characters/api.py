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

from characters import services
from characters.models import Character, ReferenceImage
from characters.selectors import (
    character_get_for,
    character_list_for,
    reference_image_get_for,
    reference_image_list,
)
from studio.api import ErrorSerializer, page_query_parameters, paginated_response, paginated_schema
from studio.api_parsers import JSONParser
from studio.errors import ApplicationError
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
    # What a character looks like in answers; training's API adds its LoRA (training.api).
    output_serializer: type[CharacterSerializer] = CharacterSerializer

    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        trigger_word = serializers.CharField(max_length=32)
        description = serializers.CharField(required=False, default="", allow_blank=True, max_length=5000)
        auto_train = serializers.BooleanField(required=False, default=False)

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
        """What the output serializer reads for a whole page at once (nothing here; see training.api)."""
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
        report = services.reference_images_add_many(
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
