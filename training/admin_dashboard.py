"""The admin index's operator summary: what is running, what failed, what it cost, RunPod's health.

Drawn on the admin index as a panel (registered by training/admin.py; studio/admin.py draws the panels).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from training import providers
from training.models import TrainingRun
from training.runpod import RunPodError
from training.selectors import runpod_endpoint_status, spend_this_month

HEALTH_CACHE_SECONDS = 30  # the admin index must not call RunPod on every page view


def training_dashboard_panel() -> SafeString:
    return SafeString(render_to_string("admin/training_dashboard.html", training_dashboard()))


def training_dashboard() -> dict[str, Any]:
    day_ago = timezone.now() - timedelta(hours=24)
    spend = spend_this_month()
    return {
        "active_runs": TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE_STATUSES)
        .select_related("character")
        .order_by("-created_at")[:10],
        "active_count": TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE_STATUSES).count(),
        "failed_recently": TrainingRun.objects.filter(
            status=TrainingRun.Status.FAILED, finished_at__gte=day_ago
        ).count(),
        "spend_this_month": spend or 0,
        "endpoint": endpoint_health(),
        # What the sweep and beat's endpoint check found wrong with the endpoint itself, and when.
        "endpoint_status": runpod_endpoint_status(),
    }


def endpoint_health() -> dict[str, Any]:
    """RunPod's `/health` for the endpoint (workers and jobs), cached briefly; never raises."""
    cached = cache.get("training:endpoint-health")
    if cached is not None:
        return dict(cached)
    try:
        health = providers.get_provider().health()
    except RunPodError as error:
        result: dict[str, Any] = {"ok": False, "error": error.message}
    else:
        result = {"ok": True, "workers": health.workers, "jobs": health.jobs}
    cache.set("training:endpoint-health", result, HEALTH_CACHE_SECONDS)
    return result
