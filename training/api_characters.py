"""The API's characters with their LoRA: training's part of `/api/v1/characters`, so that `characters` never
imports `training` (as `training.admin` extends the character admin). `training.api_urls` routes the character
endpoints to these views; they answer as `characters.api`'s and add `lora_status`, the current `lora` (with
links to its run and its download) and the run in progress."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers

from characters.api import CharacterDetailApi, CharacterListApi, CharacterSerializer
from characters.models import Character
from studio.api import ErrorSerializer, page_query_parameters, paginated_schema
from training.artifacts import lora_download_name
from training.base_models import BASE_MODELS
from training.character_pages import CharacterTraining, training_by_character
from training.models import TrainingRun

LORA_STATUSES = [
    ("none", "No LoRA and nothing training"),
    ("training", "No LoRA yet; a run is in progress"),
    ("ready", "A LoRA is ready (a newer run may be in progress)"),
]


class CharacterLoraUrlsSerializer(serializers.Serializer):
    run = serializers.URLField(help_text="The run that trained it (GET /runs/<id>).")
    download = serializers.URLField(help_text="A short-lived download link for it (GET /runs/<id>/lora).")


class CharacterLoraSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    base_model = serializers.ChoiceField(
        choices=list(BASE_MODELS), help_text="The base model this LoRA was trained on and loads into."
    )
    filename = serializers.CharField(help_text="The name to save the .safetensors file as.")
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField()
    trained_at = serializers.DateTimeField(allow_null=True)
    urls = CharacterLoraUrlsSerializer()


class CharacterActiveRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=TrainingRun.Status.choices)
    percent = serializers.IntegerField()
    url = serializers.URLField()


class CharacterWithLoraSerializer(CharacterSerializer):
    lora_status = serializers.SerializerMethodField()
    lora = serializers.SerializerMethodField(help_text="The current LoRA: the latest completed run's.")
    active_run = serializers.SerializerMethodField(help_text="The run in progress, if any.")

    class Meta(CharacterSerializer.Meta):
        fields = [*CharacterSerializer.Meta.fields, "lora_status", "lora", "active_run"]

    @extend_schema_field(serializers.ChoiceField(choices=LORA_STATUSES))
    def get_lora_status(self, character: Character) -> str:
        training = self._training(character)
        return "ready" if training.lora else "training" if training.active else "none"

    @extend_schema_field(CharacterLoraSerializer(allow_null=True))
    def get_lora(self, character: Character) -> dict[str, Any] | None:
        run = self._training(character).lora
        if run is None:
            return None
        return {
            "run_id": run.pk,
            "base_model": run.base_model,
            "filename": lora_download_name(run),
            "bytes": run.lora_bytes,
            "sha256": run.lora_sha256,
            "trained_at": run.finished_at,
            "urls": {"run": self._url("api:run", run), "download": self._url("api:run-lora", run)},
        }

    @extend_schema_field(CharacterActiveRunSerializer(allow_null=True))
    def get_active_run(self, character: Character) -> dict[str, Any] | None:
        run = self._training(character).active
        if run is None:
            return None
        return {
            "id": run.pk,
            "status": run.status,
            "percent": run.progress_percent,
            "url": self._url("api:run", run),
        }

    def _training(self, character: Character) -> CharacterTraining:
        known: dict[Any, CharacterTraining] | None = self.context.get("training")
        if known is None:
            known = training_by_character([character.pk])
        return known.get(character.pk, CharacterTraining())

    def _url(self, name: str, run: TrainingRun) -> str:
        path = reverse(name, args=[run.pk])
        request = self.context.get("request")
        return str(request.build_absolute_uri(path)) if request is not None else path


@extend_schema_view(
    get=extend_schema(
        operation_id="characters_list",
        parameters=page_query_parameters(),
        responses=paginated_schema(CharacterWithLoraSerializer),
        tags=["characters"],
    ),
    post=extend_schema(
        operation_id="characters_create",
        request=CharacterListApi.InputSerializer,
        responses={201: CharacterWithLoraSerializer, 409: ErrorSerializer},
        tags=["characters"],
    ),
)
class CharacterWithLoraListApi(CharacterListApi):
    output_serializer = CharacterWithLoraSerializer

    def page_context(self, characters: list[Character]) -> dict[str, Any]:
        return {"training": training_by_character([character.pk for character in characters])}


@extend_schema_view(
    get=extend_schema(
        operation_id="characters_read", responses=CharacterWithLoraSerializer, tags=["characters"]
    ),
    patch=extend_schema(
        operation_id="characters_update",
        request=CharacterDetailApi.InputSerializer,
        responses={200: CharacterWithLoraSerializer, 409: ErrorSerializer},
        tags=["characters"],
    ),
)
class CharacterWithLoraDetailApi(CharacterDetailApi):
    output_serializer = CharacterWithLoraSerializer
