"""The pods staff register for pod-mode runs: the UI's URL and token (write-only), its GPU queue, price,
state, the runs it has queued and what it has cost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from training.models import Pod, TrainingRun
from training.pod_secrets import pod_token_set
from training.selectors import pod_cost_usd


class PodForm(forms.ModelForm):
    ui_url = forms.URLField(
        label="UI base URL",
        max_length=300,
        assume_scheme="https",
        help_text="e.g. https://<pod id>-8675.proxy.runpod.net",
    )
    token = forms.CharField(
        label="UI token (AI_TOOLKIT_AUTH)",
        required=False,
        strip=True,
        # Never rendered back: the field is empty on every page, and left empty it keeps the stored token.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave empty to keep the current one.",
    )

    class Meta:
        model = Pod
        fields = [
            "name",
            "runpod_pod_id",
            "ui_url",
            "gpu_ids",
            "hourly_price_usd",
            "accepts_runs",
            "idle_stop_minutes",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("token") and not (self.instance and self.instance.token_encrypted):
            self.add_error("token", "A new pod needs its UI token.")
        return cleaned

    def save(self, commit: bool = True) -> Pod:
        pod: Pod = super().save(commit=False)
        if self.cleaned_data.get("token"):
            pod_token_set(pod, self.cleaned_data["token"])
        if commit:
            pod.save()
        return pod


@admin.register(Pod)
class PodAdmin(admin.ModelAdmin):
    form = PodForm
    list_display = [
        "name",
        "state",
        "accepts_runs",
        "gpu_ids",
        "hourly_price_usd",
        "queue",
        "cost",
        "runs_served",
        "cost_per_run",
    ]
    readonly_fields = [
        "state",
        "state_changed_at",
        "last_busy_at",
        "running_since",
        "uptime_seconds",
        "cost",
        "runs_served",
        "cost_per_run",
    ]

    @admin.display(description="runs queued or training")
    def queue(self, pod: Pod) -> int:
        return pod.runs.filter(status__in=TrainingRun.ACTIVE_STATUSES).count()

    @admin.display(description="cost so far (USD): running hours x price, idle hours included")
    def cost(self, pod: Pod) -> Decimal:
        return pod_cost_usd(pod)

    @admin.display(description="runs served")
    def runs_served(self, pod: Pod) -> int:
        return pod.runs.exclude(runpod_job_id="").count()

    @admin.display(description="cost shared per run served (USD)")
    def cost_per_run(self, pod: Pod) -> Decimal | None:
        served = self.runs_served(pod)
        return (pod_cost_usd(pod) / served).quantize(Decimal("0.0001")) if served else None

    def get_readonly_fields(self, request: HttpRequest, obj: Pod | None = None) -> list[str]:
        return list(self.readonly_fields) if obj is not None else []
