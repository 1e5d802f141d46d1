"""The one representation of a training run: `TrainingRunSerializer` is the API's run document and the
`data` of webhook events, and `run_page_document` is the run page's JSON built from it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from studio.transfer import download_url
from training.artifacts import LOW_NOISE, lora_download_name
from training.base_models import BASE_MODELS
from training.models import Checkpoint, Sample, TrainingRun
from training.run_watch import likeness_comparing, watch_versions
from training.selectors import run_has_lora, training_run_endpoint_notice


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
    step = serializers.IntegerField(
        allow_null=True, help_text="The checkpoint chosen as the run's LoRA; null: the final one."
    )
    chosen_by = serializers.ChoiceField(
        choices=TrainingRun.LoraChoice.choices,
        help_text="final: the run's final LoRA, as trained; likeness: the studio chose the checkpoint whose "
        "samples look most like the character without copying its photos; owner: chosen by its owner.",
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
    samples = serializers.URLField()
    checkpoints = serializers.URLField()
    loss = serializers.URLField()


class TrainingRunSerializer(serializers.ModelSerializer):
    """A run as GET /runs/<id> shows it; webhook events carry the same document as `data`."""

    character_id = serializers.UUIDField()
    base_model = serializers.ChoiceField(
        choices=list(BASE_MODELS), help_text="The base model the run trains on; its LoRA loads into it."
    )
    progress = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    lora = serializers.SerializerMethodField()
    log_tail = serializers.SerializerMethodField(
        help_text="A failed run's last lines of trainer output (secrets and signed URLs removed), oldest "
        "first; null otherwise."
    )
    urls = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "character_id",
            "status",
            "provider",
            "base_model",
            "trigger_word",
            "params",
            "progress",
            "error",
            "log_tail",
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

    @extend_schema_field(serializers.ListField(child=serializers.CharField(), allow_null=True))
    def get_log_tail(self, run: TrainingRun) -> list[str] | None:
        return run.log_tail.split("\n") if run.log_tail else None

    @extend_schema_field(RunLoraSummarySerializer(allow_null=True))
    def get_lora(self, run: TrainingRun) -> dict[str, Any] | None:
        if not run_has_lora(run):
            return None
        return {
            "filename": lora_download_name(run),
            "bytes": run.lora_bytes,
            "sha256": run.lora_sha256,
            "low_noise": low_noise_summary(run),
            "step": run.lora_step,
            "chosen_by": run.lora_choice,
        }

    @extend_schema_field(RunUrlsSerializer)
    def get_urls(self, run: TrainingRun) -> dict[str, str]:
        names = {
            "get": "api:run",
            "cancel": "api:run-cancel",
            "retry": "api:run-retry",
            "lora": "api:run-lora",
            "samples": "api:run-samples",
            "checkpoints": "api:run-checkpoints",
            "loss": "api:run-loss",
        }
        return {key: self._absolute(reverse(name, args=[run.pk])) for key, name in names.items()}

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        if request is not None:
            return str(request.build_absolute_uri(path))
        return settings.PUBLIC_BASE_URL + path


def run_page_document(run: TrainingRun) -> dict[str, Any]:
    """What the run page's script needs to redraw itself — status, progress, timeline, error, LoRA — as the
    run document has them, flattened for the page, with its events, the page's own LoRA link and the
    versions of its gallery and loss chart (`training.run_watch.watch_versions`); `comparing` while a
    completed run's checkpoints are still being compared by likeness."""
    document = TrainingRunSerializer(run, context={}).data
    progress, lora = document["progress"], document["lora"]
    return {
        "id": str(document["id"]),
        "status": document["status"],
        "status_display": run.get_status_display(),
        "is_final": run.is_final,
        "comparing": likeness_comparing(run),
        "step": progress["step"],
        "total_steps": progress["total"] or int(run.params.get("steps") or 0),
        "percent": progress["percent"],
        "eta_seconds": progress["eta_seconds"],
        "loss": progress["loss"],
        "error": document["error"] if run.error_message else None,
        # Shown under the error to the run's owner (the only one the page is served to) and in the admin.
        "log_tail": document["log_tail"],
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
        "watch": watch_versions(run),
    }


# --- Samples, checkpoints and loss --------------------------------------------------------------------

# Links to images and checkpoints in these documents stay valid this long: long enough to render a page.
ARTIFACT_URL_TTL_SECONDS = 15 * 60


def _link(name: str) -> str | None:
    return download_url(name, ARTIFACT_URL_TTL_SECONDS) if name else None


class SampleLikenessSerializer(serializers.Serializer):
    score = serializers.FloatField(
        help_text="0 to 1: 1 - distance / 1.2 between its face's descriptor and the mean of the photos'; 0.5 "
        "is dlib's same-person line (distance 0.6). 0 when no face was found or the sample is a copy."
    )
    face_found = serializers.BooleanField()
    copy_of = serializers.CharField(
        allow_null=True, help_text="The training photo it nearly copies (same picture or same face)."
    )


class CheckpointLikenessSerializer(serializers.Serializer):
    score = serializers.FloatField(help_text="The median of its samples' scores (misses count as 0).")
    samples = serializers.IntegerField()
    faces = serializers.IntegerField(help_text="Samples that showed a face.")
    copies = serializers.IntegerField(help_text="Samples that nearly copy a training photo.")
    copying = serializers.BooleanField(
        help_text="At least half its samples with a face copy a training photo: never chosen by likeness."
    )


class SampleSerializer(serializers.ModelSerializer):
    """A sample image rendered while the run trained, verified in storage (links expire in 15 minutes)."""

    run_id = serializers.UUIDField()
    image_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField(help_text="256 px WebP; null if none could be made.")
    thumbnail_large_url = serializers.SerializerMethodField(help_text="512 px WebP; null if none.")

    class Meta:
        model = Sample
        fields = ["run_id", "step", "prompt_index", "prompt", "width", "height", "bytes", "sha256",
                  "verified_at", "image_url", "thumbnail_url", "thumbnail_large_url", "likeness"]  # fmt: skip

    likeness = serializers.SerializerMethodField(
        help_text="How much its face looks like the character's photos; null until scored, or when there is "
        "nothing to compare with (not a person, no photo with a face)."
    )

    @extend_schema_field(SampleLikenessSerializer(allow_null=True))
    def get_likeness(self, sample: Sample) -> dict[str, Any] | None:
        if sample.scored_at is None or sample.likeness is None:
            return None
        return {
            "score": sample.likeness,
            "face_found": bool(sample.face_found),
            "copy_of": sample.copy_of or None,
        }

    @extend_schema_field(serializers.URLField())
    def get_image_url(self, sample: Sample) -> str | None:
        return _link(str(sample.image.name))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, sample: Sample) -> str | None:
        return _link(str(sample.thumbnail.name or ""))

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_large_url(self, sample: Sample) -> str | None:
        return _link(str(sample.thumbnail_large.name or ""))


class CheckpointSerializer(serializers.ModelSerializer):
    """A LoRA the trainer saved at `step`, verified in storage; the run's final LoRA is listed as one too."""

    run_id = serializers.UUIDField()
    pruned = serializers.SerializerMethodField(help_text="Its file was deleted by the storage cap.")
    chosen = serializers.SerializerMethodField(help_text="It is the run's LoRA.")
    download_url = serializers.SerializerMethodField(help_text="Null once pruned.")
    use_url = serializers.SerializerMethodField(help_text="POST here to make it the character's LoRA.")

    class Meta:
        model = Checkpoint
        fields = ["run_id", "step", "final", "name", "bytes", "sha256", "verified_at", "pruned", "chosen",
                  "likeness", "download_url", "use_url"]  # fmt: skip

    likeness = serializers.SerializerMethodField(
        help_text="Its samples' likeness to the character (median); null until one of them is scored."
    )

    @extend_schema_field(CheckpointLikenessSerializer(allow_null=True))
    def get_likeness(self, checkpoint: Checkpoint) -> dict[str, Any] | None:
        if checkpoint.likeness is None:
            return None
        return {
            "score": checkpoint.likeness,
            "samples": checkpoint.likeness_samples,
            "faces": checkpoint.likeness_faces,
            "copies": checkpoint.likeness_copies,
            "copying": checkpoint.likeness_copying,
        }

    def get_pruned(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.pruned_at is not None

    def get_chosen(self, checkpoint: Checkpoint) -> bool:
        run = checkpoint.run
        return bool(run.lora_name) and run.lora_step == (None if checkpoint.final else checkpoint.step)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, checkpoint: Checkpoint) -> str | None:
        return None if checkpoint.pruned_at else _link(checkpoint.file)

    @extend_schema_field(serializers.URLField())
    def get_use_url(self, checkpoint: Checkpoint) -> str:
        path = reverse("api:run-checkpoint-use", args=[checkpoint.run_id, checkpoint.step])
        request = self.context.get("request")
        return str(request.build_absolute_uri(path)) if request else settings.PUBLIC_BASE_URL + path


@extend_schema_field(
    serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(), min_length=2, max_length=2),
        help_text="[step, value] pairs in step order.",
    )
)
class LossPointsField(serializers.ListField):
    pass


class LossSeriesSerializer(serializers.Serializer):
    """The run's training loss and (when AI Toolkit logs it) validation loss, one point per logged step or
    the mean of a few consecutive steps at the last of them."""

    loss = LossPointsField()
    val_loss = LossPointsField()
    resumed_from_step = serializers.IntegerField(
        allow_null=True, help_text="The step training resumed from after a lost worker; null if it never did."
    )
