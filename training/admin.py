from __future__ import annotations

from django.contrib import admin

from training.models import TrainingEvent, TrainingRun


class TrainingEventInline(admin.TabularInline):
    model = TrainingEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "from_status", "to_status", "source", "detail")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("id", "character", "status", "progress_step", "progress_total", "cost_usd", "created_at")
    list_filter = ("status", "base_model", "created_at")
    list_select_related = ("character",)
    search_fields = ("id", "runpod_job_id", "character__name", "requested_by__username")
    raw_id_fields = ("character", "requested_by")
    inlines = [TrainingEventInline]

    def get_readonly_fields(self, request, obj=None):  # type: ignore[no-untyped-def]
        # State moves only through the training services, never by hand.
        return [field.name for field in TrainingRun._meta.fields]
