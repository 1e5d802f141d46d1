"""Read-only admin views of what runs make while they train: checkpoints, samples and loss series (also
inlines of the run). Nothing here is edited: the worker's callbacks and the training services write them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from studio.transfer import download_url
from training.models import Checkpoint, LossSeries, Sample

LINK_SECONDS = 600


class ReadOnlyAdmin(admin.ModelAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields] + list(self.readonly_fields)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Deleting is left to Django's permissions: a run deleted in the admin takes its rows with it, which
    # a refusal here would block.


def sample_preview(sample: Sample) -> SafeString | str:
    name = sample.thumbnail.name or sample.image.name
    if not name or sample.verified_at is None:
        return "—"
    return format_html('<img src="{}" width="96" alt="" loading="lazy">', download_url(name, LINK_SECONDS))


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = (
        "run",
        "step",
        "final",
        "likeness",
        "likeness_copies",
        "bytes",
        "verified_at",
        "pruned_at",
    )
    list_filter = ("final", "verified_at", "pruned_at")
    list_select_related = ("run", "run__character")
    search_fields = ("=run__id", "run__character__name")


@admin.register(Sample)
class SampleAdmin(ReadOnlyAdmin):
    list_display = ("preview", "run", "step", "prompt_index", "likeness", "copy_of", "verified_at", "problem")
    list_filter = ("verified_at",)
    list_select_related = ("run", "run__character")
    search_fields = ("=run__id", "run__character__name")
    readonly_fields = ("preview",)

    @admin.display(description="sample")
    def preview(self, sample: Sample) -> SafeString | str:
        return sample_preview(sample)


@admin.register(LossSeries)
class LossSeriesAdmin(ReadOnlyAdmin):
    list_display = ("run", "points", "resumed_from_step", "updated_at")
    list_select_related = ("run", "run__character")

    @admin.display(description="points")
    def points(self, series: LossSeries) -> str:
        return f"{len(series.loss)} loss, {len(series.val_loss)} validation"


class CheckpointInline(admin.TabularInline):
    model = Checkpoint
    extra = 0
    can_delete = False
    fields = ("step", "final", "likeness", "likeness_faces", "likeness_copies", "bytes", "sha256",
              "optimizer_bytes", "verified_at", "problem", "pruned_at")  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SampleInline(admin.TabularInline):
    model = Sample
    extra = 0
    can_delete = False
    fields = ("preview", "step", "prompt_index", "prompt", "likeness", "face_found", "copy_of", "verified_at",
              "problem")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="sample")
    def preview(self, sample: Sample) -> SafeString | str:
        return sample_preview(sample)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
