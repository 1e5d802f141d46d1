"""The one representation of a training run: `TrainingRunSerializer` is the API's run document and the
`data` of webhook events, and `run_page_document` is the run page's JSON built from it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from training.artifacts import LOW_NOISE, lora_download_name
from training.base_models import BASE_MODELS
from training.models import TrainingRun
from training.selectors import training_run_endpoint_notice


class RunProgressSerializer(serializers.Serializer):
    step = serializers.IntegerField(source="progress_step")
    total = serializers.IntegerField(source="progress_total")
    percent = serializers.IntegerField(source="progress_percent")
    loss = serializers.FloatField(source="progress_loss", allow_null=True)
    eta_seconds = serializers.IntegerField(source="progress_eta_seconds", allow_null=True)


class RunErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class LowNoiseLoraSerializer(serializers.Serializer):
    filename = serializers.CharField()
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField()


class RunLoraSummarySerializer(serializers.Serializer):
    filename = serializers.CharField(help_text="For a model with two experts (wan22): the high-noise file.")
    bytes = serializers.IntegerField(allow_null=True)
    sha256 = serializers.CharField()
    low_noise = LowNoiseLoraSerializer(
        allow_null=True, help_text="The low-noise expert's file of a wan22 LoRA; null for one-file models."
    )


def low_noise_summary(run: TrainingRun) -> dict[str, Any] | None:
    if not run.lora_low_noise_name:
        return None
    return {
        "filename": lora_download_name(run, LOW_NOISE),
        "bytes": run.lora_low_noise_bytes,
        "sha256": run.lora_low_noise_sha256,
    }


class RunUrlsSerializer(serializers.Serializer):
    get = serializers.URLField()
    cancel = serializers.URLField()
    retry = serializers.URLField()
    lora = serializers.URLField()


class TrainingRunSerializer(serializers.ModelSerializer):
    """A run as GET /runs/<id> shows it; webhook events carry the same document as `data`."""

    character_id = serializers.UUIDField()
    base_model = serializers.ChoiceField(
        choices=list(BASE_MODELS), help_text="The base model the run trains on; its LoRA loads into it."
    )
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    lora = serializers.SerializerMethodField()
    urls = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "character_id",
            "status",
            "base_model",
            "trigger_word",
            "params",
            "progress",
            "error",
            "lora",
            "gpu_type",
            "estimated_cost_usd",
            "cost_usd",
            "cost_state",
            "startup_idle_cost_usd",
            "created_at",
            "submitted_at",
            "started_at",
            "finished_at",
            "urls",
        ]

    @extend_schema_field(RunProgressSerializer)
    def get_progress(self, run: TrainingRun) -> dict[str, Any]:
        return dict(RunProgressSerializer(run).data)

    @extend_schema_field(RunErrorSerializer(allow_null=True))
    def get_error(self, run: TrainingRun) -> dict[str, str] | None:
        if not run.error_code and not run.error_message:
            return None
        return {"code": run.error_code, "message": run.error_message}

    @extend_schema_field(RunLoraSummarySerializer(allow_null=True))
    def get_lora(self, run: TrainingRun) -> dict[str, Any] | None:
        if run.status != TrainingRun.Status.COMPLETED or not run.lora_name:
            return None
        return {
            "filename": lora_download_name(run),
            "bytes": run.lora_bytes,
            "sha256": run.lora_sha256,
            "low_noise": low_noise_summary(run),
        }

    @extend_schema_field(RunUrlsSerializer)
    def get_urls(self, run: TrainingRun) -> dict[str, str]:
        names = {
            "get": "api:run",
            "cancel": "api:run-cancel",
            "retry": "api:run-retry",
            "lora": "api:run-lora",
        }
        return {key: self._absolute(reverse(name, args=[run.pk])) for key, name in names.items()}

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        if request is not None:
            return str(request.build_absolute_uri(path))
        return settings.PUBLIC_BASE_URL + path


def run_page_document(run: TrainingRun) -> dict[str, Any]:
    """What the run page's script needs to redraw itself — status, progress, timeline, error, LoRA — as the
    run document has them, flattened for the page, with its events and the page's own LoRA link."""
    document = TrainingRunSerializer(run, context={}).data
    progress, lora = document["progress"], document["lora"]
    return {
        "id": str(document["id"]),
        "status": document["status"],
        "status_display": run.get_status_display(),
        "is_final": run.is_final,
        "step": progress["step"],
        "total_steps": progress["total"] or int(run.params.get("steps") or 0),
        "percent": progress["percent"],
        "eta_seconds": progress["eta_seconds"],
        "loss": progress["loss"],
        "error": document["error"] if run.error_message else None,
        "events": [
            {
                "at": event.created_at.isoformat(),
                "from": event.from_status,
                "to": event.to_status,
                "to_display": event.get_to_status_display(),
                "source": event.get_source_display(),
            }
            for event in run.events.all()
        ],
        "lora": {**lora, "url": reverse("training:run-lora", args=[run.pk])} if lora else None,
        "notice": training_run_endpoint_notice(run),
    }
