"""The operator console: runs with their progress, cost and history, and actions that call services.

State fields are read-only here: a run's status only moves through the training services, so
the admin offers actions (start, cancel, retry, re-sync from RunPod) instead of an edit form.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from characters.admin import CharacterAdmin
from characters.models import Character
from studio.admin import AdminExtension, UserAdmin, admin_index_panel_register
from studio.errors import ApplicationError
from studio.models import User
from training import admin_pods  # noqa: F401  (registers the pods' admin)
from training.admin_artifacts import CheckpointInline, SampleInline
from training.admin_dashboard import training_dashboard_panel
from training.models import DeletedRunSpend, RunPodEndpointStatus, StrayJob, TrainingEvent, TrainingRun
from training.runpod import RunPodError
from training.selectors import current_lora_run_id, user_spend_this_month_annotation
from training.services import training_run_cancel, training_run_poll, training_run_retry, training_run_start

Source = TrainingEvent.Source

admin_index_panel_register(training_dashboard_panel)

STATUS_COLOURS: dict[str, str] = {
    TrainingRun.Status.PENDING: "#57606a",
    TrainingRun.Status.QUEUED: "#7d4e00",
    TrainingRun.Status.TRAINING: "#0a58ca",
    TrainingRun.Status.COMPLETED: "#1a7f37",
    TrainingRun.Status.FAILED: "#b42318",
    TrainingRun.Status.CANCELLED: "#57606a",
}


def status_badge(run: TrainingRun) -> SafeString:
    colour = STATUS_COLOURS.get(run.status, "#57606a")
    return format_html(
        '<span style="background:{};color:#fff;padding:2px 8px;border-radius:10px;font-weight:600">{}</span>',
        colour,
        run.get_status_display(),
    )


def progress_bar(run: TrainingRun) -> SafeString:
    label = f"{run.progress_step}/{run.progress_total}" if run.progress_total else "-"
    return format_html(
        '<progress max="100" value="{}" aria-label="progress">{}%</progress> <span>{} · {}%</span>',
        run.progress_percent,
        run.progress_percent,
        label,
        run.progress_percent,
    )


def report_each(
    modeladmin: admin.ModelAdmin, request: HttpRequest, items: QuerySet[Any], act: Callable[[Any], str]
) -> None:
    """Run `act` on every selected item and tell the operator how each one went."""
    for item in items:
        try:
            outcome = act(item)
        except (ApplicationError, RunPodError) as error:
            modeladmin.message_user(request, f"{item}: {error.message}", messages.ERROR)
        else:
            modeladmin.message_user(request, f"{item}: {outcome}", messages.SUCCESS)


# --- Runs ---------------------------------------------------------------------------------


class TrainingEventInline(admin.TabularInline):
    model = TrainingEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "from_status", "to_status", "source", "detail", "announced_at")
    readonly_fields = fields
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "character",
        "owner",
        "badge",
        "provider",
        "progress",
        "cost_usd",
        "gpu_type",
        "runpod_job_id",
        "created_at",
    )
    list_filter = ("status", "provider", "base_model", "created_at", "finished_at")
    list_select_related = ("character", "character__owner")
    search_fields = (
        "=id",
        "runpod_job_id",
        "character__name",
        "character__owner__username",
        "=character__id",
    )
    date_hierarchy = "created_at"
    inlines = [TrainingEventInline, CheckpointInline, SampleInline]
    actions = ["cancel_runs", "retry_runs", "resync_runs"]
    fieldsets = (
        (None, {"fields": ("id", "character", "requested_by", "badge", "progress", "base_model")}),
        (
            "Result",
            {
                "fields": (
                    "lora_name",
                    "lora_bytes",
                    "lora_sha256",
                    "lora_step",
                    "lora_chosen_at",
                    "error_code",
                    "error_message",
                    "log_tail",
                )
            },
        ),
        (
            "GPU and cost",
            {"fields": ("gpu_type", "delay_ms", "execution_ms", "estimated_cost_usd", "cost_usd")},
        ),
        (
            "RunPod",
            {
                "fields": (
                    "provider",
                    "pod",
                    "runpod_job_id",
                    "attempts",
                    "provider_payload",
                    "next_poll_at",
                    "pod_outputs_deleted_at",
                )
            },
        ),
        ("Times", {"fields": ("created_at", "submitted_at", "started_at", "finished_at")}),
        (
            "Parameters and dataset",
            {"classes": ("collapse",), "fields": ("params_pretty", "manifest_pretty")},
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: TrainingRun | None = None) -> list[str]:
        # Every field: state moves only through the training services (the actions below).
        return [str(name) for _, options in self.fieldsets or () for name in options["fields"]]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start from a character ("Start training" on the characters list)

    def has_change_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        # Nothing here is edited (no "Save"): state moves through the per-run buttons and the actions.
        return False

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                f"<path:object_id>/{operation}/",
                self.admin_site.admin_view(require_POST(self.run_operation)),
                {"operation": operation},
                name=f"training_trainingrun_{operation}",
            )
            for operation in RUN_OPERATIONS
        ]
        return own + super().get_urls()

    def run_operation(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        """One run's Cancel, Retry or Re-sync from its page: the same services as the bulk actions."""
        run = TrainingRun.objects.filter(pk=object_id).first() if _is_uuid(object_id) else None
        if run is None:
            raise Http404("No such run.")
        user: Any = request.user
        act = RUN_OPERATIONS[operation]
        report_each(self, request, TrainingRun.objects.filter(pk=run.pk), lambda each: act(each, user))
        return redirect("admin:training_trainingrun_change", run.pk)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        run = context.get("original")
        context["run_operations"] = _operations_for(run) if run is not None else []
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.display(description="run", ordering="created_at")
    def short_id(self, run: TrainingRun) -> str:
        return str(run.id)[:8]

    @admin.display(description="owner", ordering="character__owner__username")
    def owner(self, run: TrainingRun) -> str:
        return run.character.owner.username

    @admin.display(description="status", ordering="status")
    def badge(self, run: TrainingRun) -> SafeString:
        return status_badge(run)

    @admin.display(description="progress")
    def progress(self, run: TrainingRun) -> SafeString:
        return progress_bar(run)

    @admin.display(description="last RunPod payload")
    def provider_payload(self, run: TrainingRun) -> SafeString:
        return _pretty_json(run.last_provider_payload)

    @admin.display(description="parameters")
    def params_pretty(self, run: TrainingRun) -> SafeString:
        return _pretty_json(run.params)

    @admin.display(description="dataset manifest")
    def manifest_pretty(self, run: TrainingRun) -> SafeString:
        return _pretty_json(run.manifest)

    @admin.action(description="Cancel the selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        report_each(self, request, queryset, lambda run: _cancelled(run))

    @admin.action(description="Retry the selected runs (a new run from the same photos and parameters)")
    def retry_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        user: Any = request.user
        report_each(self, request, queryset, lambda run: _retried(run, user))

    @admin.action(description="Re-sync the selected runs from RunPod")
    def resync_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        report_each(self, request, queryset, lambda run: _resynced(run))


# Per-run buttons on a run's page: (operation, label, offered for this run?).
RUN_OPERATIONS: dict[str, Callable[[TrainingRun, User], str]] = {
    "cancel": lambda run, user: _cancelled(run),
    "retry": lambda run, user: _retried(run, user),
    "resync": lambda run, user: _resynced(run),
}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _operations_for(run: TrainingRun) -> list[tuple[str, str]]:
    """(URL, label) of each button the run's page offers: only what can apply to this run."""
    operations = [("cancel", "Cancel run")] if not run.is_final else []
    if run.is_final and run.status != TrainingRun.Status.COMPLETED:
        operations.append(("retry", "Retry (a new run from the same photos and parameters)"))
    if run.runpod_job_id:
        operations.append(("resync", "Re-sync from RunPod"))
    return [
        (reverse(f"admin:training_trainingrun_{name}", args=[run.pk]), label) for name, label in operations
    ]


def _cancelled(run: TrainingRun) -> str:
    training_run_cancel(run=run, source=Source.ADMIN)
    return "cancelled."


def _retried(run: TrainingRun, user: User) -> str:
    new_run = training_run_retry(run=run, requested_by=user, source=Source.ADMIN)
    return f"retried as run {new_run.id}."


def _resynced(run: TrainingRun) -> str:
    if not run.runpod_job_id:
        return f"not sent to RunPod yet ({run.get_status_display().lower()}); nothing to re-sync."
    synced = training_run_poll(run_id=run.pk, source=Source.ADMIN)
    return f"RunPod says {synced.get_status_display().lower()}."


def _pretty_json(value: object) -> SafeString:
    return format_html(
        '<pre style="white-space:pre-wrap;max-height:24em;overflow:auto">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


# --- Stray jobs -------------------------------------------------------------------------------


@admin.register(DeletedRunSpend)
class DeletedRunSpendAdmin(admin.ModelAdmin):
    """Read-only: what deleted runs had cost, which every spend figure still counts."""

    list_display = ("owner_username", "character_name", "amount_usd", "exact", "finished_at", "deleted_at")
    list_filter = ("exact", "finished_at")
    search_fields = ("owner_username", "character_name", "=run_id")
    date_hierarchy = "finished_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeletedRunSpend | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeletedRunSpend | None = None) -> bool:
        return False  # spend is history


@admin.register(RunPodEndpointStatus)
class RunPodEndpointStatusAdmin(admin.ModelAdmin):
    """Read-only: what the beat's endpoint check last found (`training.services.endpoint`); the dashboard
    shows the current endpoint's problem, this lists every endpoint the studio has used."""

    list_display = ("endpoint_id", "problem", "problem_since", "max_workers", "queued_jobs", "checked_at")
    list_filter = ("problem",)
    search_fields = ("endpoint_id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RunPodEndpointStatus | None = None) -> bool:
        return False


@admin.register(StrayJob)
class StrayJobAdmin(admin.ModelAdmin):
    """Read-only: RunPod jobs no run owns and how their cancel went (the sweep does the retrying)."""

    list_display = (
        "runpod_job_id",
        "status",
        "run",
        "reason",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "ended_at",
    )
    list_filter = ("status", "created_at")
    list_select_related = ("run", "run__character")
    search_fields = ("runpod_job_id", "=run__id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StrayJob | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StrayJob | None = None) -> bool:
        return False


# --- Characters: their runs inline, the current LoRA, and "start training" (added to their admin) ------


class TrainingRunInline(admin.TabularInline):
    model = TrainingRun
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("created_at", "badge", "progress", "cost_usd", "error_message")
    readonly_fields = fields
    ordering = ("-created_at",)
    verbose_name_plural = "Training runs"

    def has_add_permission(self, request: HttpRequest, obj: Character | None = None) -> bool:
        return False

    @admin.display(description="status")
    def badge(self, run: TrainingRun) -> SafeString:
        return status_badge(run)

    @admin.display(description="progress")
    def progress(self, run: TrainingRun) -> SafeString:
        return progress_bar(run)


@admin.display(description="current LoRA")
def current_lora(character: Character) -> SafeString | str:
    run_id = getattr(character, "current_lora_run", None)
    if run_id is None:
        return "-"
    url = reverse("admin:training_trainingrun_change", args=[run_id])
    return format_html('<a href="{}">{}</a>', url, f"run {str(run_id)[:8]}")


def _with_current_lora(queryset: QuerySet[Character]) -> QuerySet[Character]:
    # The current LoRA is derived (the latest completed run): one subquery, not a query per row.
    return queryset.annotate(current_lora_run=current_lora_run_id(OuterRef("pk")))


@admin.action(description="Start training the selected characters (balanced preset)")
def start_training(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Character]) -> None:
    user: Any = request.user
    report_each(modeladmin, request, queryset, lambda character: _started(character, user))


@admin.action(description="Start training the selected characters on a pod (balanced preset)")
def start_training_on_pod(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Character]
) -> None:
    user: Any = request.user
    report_each(
        modeladmin, request, queryset, lambda character: _started(character, user, TrainingRun.Provider.POD)
    )


CharacterAdmin.extension_register(
    AdminExtension(
        inlines=[TrainingRunInline],
        list_display=[current_lora],
        actions=[start_training, start_training_on_pod],
        annotate=_with_current_lora,
    )
)


def _started(character: Character, user: User, provider: str = TrainingRun.Provider.SERVERLESS) -> str:
    run = training_run_start(character=character, requested_by=user, provider=provider, source=Source.ADMIN)
    where = " on a pod" if provider == TrainingRun.Provider.POD else ""
    return f"training started{where} (run {run.id})."


# --- Users: spend this month (added to their admin) -------------------------------------------


@admin.display(description="GPU spend this month (USD)", ordering="spend_this_month_usd")
def spend_this_month(user: User) -> str:
    return f"{getattr(user, 'spend_this_month_usd', None) or 0:.2f}"


def _with_spend_this_month(queryset: QuerySet[User]) -> QuerySet[User]:
    return queryset.annotate(spend_this_month_usd=user_spend_this_month_annotation())


UserAdmin.extension_register(AdminExtension(list_display=[spend_this_month], annotate=_with_spend_this_month))
