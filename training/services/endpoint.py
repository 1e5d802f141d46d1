"""The RunPod endpoint itself, as opposed to one run's job: whether RunPod knows it, and whether it may run
a worker at all. What is wrong is recorded on the `RunPodEndpointStatus` row of RUNPOD_ENDPOINT_ID, logged as
an error once, when it begins, and shown on the admin dashboard; the pages of runs waiting on it say so
(`training.selectors.training_run_endpoint_notice`).

- A 404 names no cause: RunPod answers it for a job it no longer knows and for a wrong or deleted endpoint
  alike (docs serverless/endpoints/send-requests.mdx:215). `runpod_endpoint_known` asks `/health`, which
  names no job, before the sweep declares a job lost: while RunPod does not know the endpoint, no run is
  failed for it (their jobs may well be running, and their workers still call back).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training import providers
from training.models import RunPodEndpointStatus
from training.runpod import RunPodEndpointNotFound

logger = logging.getLogger("training.services")

Problem = RunPodEndpointStatus.Problem


def runpod_endpoint_known() -> bool:
    """Asks RunPod's `/health` whether it knows the endpoint: False (and the problem recorded) when it answers
    404; True (and a recorded not-found cleared) when it answers. Raises RunPodUnavailable when RunPod
    cannot be asked: the caller tries again later."""
    try:
        providers.get_provider().health()
    except RunPodEndpointNotFound:
        endpoint_problem_record(problem=Problem.NOT_FOUND, message=not_found_message())
        return False
    endpoint_problem_clear(Problem.NOT_FOUND)
    return True


def not_found_message() -> str:
    endpoint_id = settings.RUNPOD_ENDPOINT_ID
    return (
        f"RunPod does not know the endpoint {endpoint_id} (GET health answers 404): RUNPOD_ENDPOINT_ID is "
        "wrong, or the endpoint was deleted or re-created under a new id. No run is failed while this lasts, "
        "since their jobs cannot be read. Set RUNPOD_ENDPOINT_ID to the endpoint's id (`python manage.py "
        "runpod_provision` prints it) and restart the web and Celery processes."
    )


def endpoint_problem_record(*, problem: str, message: str, **facts: Any) -> RunPodEndpointStatus:
    """Records the endpoint's state as last found (`problem` "" for none); logs an error once, when a problem
    begins, and a note when it ends."""
    now = timezone.now()
    RunPodEndpointStatus.objects.get_or_create(endpoint_id=settings.RUNPOD_ENDPOINT_ID)
    with transaction.atomic():
        status = RunPodEndpointStatus.objects.select_for_update().get(endpoint_id=settings.RUNPOD_ENDPOINT_ID)
        before = status.problem
        if problem != before:
            status.problem_since = now if problem else None
        status.problem, status.message, status.checked_at = problem, message, now
        for name, value in facts.items():
            setattr(status, name, value)
        status.save()
    if problem and problem != before:
        logger.error("RunPod endpoint %s: %s", status.endpoint_id, message)
    elif before and not problem:
        logger.info("RunPod endpoint %s: the problem (%s) is over", status.endpoint_id, before)
    return status


def endpoint_problem_clear(problem: str) -> None:
    """Ends a recorded problem of this kind, if there is one (a problem of another kind stays)."""
    if RunPodEndpointStatus.objects.filter(endpoint_id=settings.RUNPOD_ENDPOINT_ID, problem=problem).exists():
        endpoint_problem_record(problem=Problem.NONE, message="")
