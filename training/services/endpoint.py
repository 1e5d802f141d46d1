"""The RunPod endpoint itself, as opposed to one run's job: whether RunPod knows it, and whether it may run
a worker at all. What is wrong is recorded on the `RunPodEndpointStatus` row of RUNPOD_ENDPOINT_ID, logged as
an error once, when it begins, and shown on the admin dashboard; the pages of runs waiting on it say so
(`training.selectors.training_run_endpoint_notice`).

- A 404 names no cause: RunPod answers it for a job it no longer knows and for a wrong or deleted endpoint
  alike (docs serverless/endpoints/send-requests.mdx:215). `runpod_endpoint_known` asks `/health`, which
  names no job, before the sweep declares a job lost: while RunPod does not know the endpoint, no run is
  failed for it (their jobs may well be running, and their workers still call back).
- After 7 days without requests RunPod sets an endpoint's max workers to 0 and leaves it there (docs
  serverless/endpoints/endpoint-configurations.mdx:80-88): every job then waits until its TTL deletes it.
  `runpod_endpoint_check` (beat, every RUNPOD_ENDPOINT_CHECK_SECONDS) reads `/health` and the endpoint's
  max workers through REST v2; with jobs queued and RUNPOD_RESTORE_MAX_WORKERS on, it raises max workers to
  RUNPOD_WORKERS_MAX itself (a PATCH of `workers.max` alone: oa2 `UpdateEndpointRequest` changes only the
  fields given).
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from training import providers
from training.models import RunPodEndpointStatus
from training.runpod import RunPodEndpointNotFound, RunPodRejected
from training.runpod_rest import RunPodRestClient, RunPodRestError, RunPodRestRejected

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


def runpod_endpoint_check() -> RunPodEndpointStatus:
    """Reads `/health` and the endpoint's max workers and records what is wrong: unknown to RunPod,
    settings unreadable, or max workers 0; raises max workers when jobs wait and RUNPOD_RESTORE_MAX_WORKERS
    allows it. Raises RunPodUnavailable or RunPodRestUnavailable when RunPod cannot be asked."""
    try:
        health = providers.get_provider().health()
    except RunPodEndpointNotFound:
        return endpoint_problem_record(problem=Problem.NOT_FOUND, message=not_found_message())
    except RunPodRejected as error:
        return endpoint_problem_record(problem=Problem.UNREADABLE, message=_unreadable_message(error.message))
    queued = _count(health.jobs.get("inQueue"))
    try:
        max_workers = _max_workers()
    except RunPodRestRejected as error:
        message = _unreadable_message(error.message)
        return endpoint_problem_record(problem=Problem.UNREADABLE, message=message, queued_jobs=queued)
    if max_workers > 0:
        return endpoint_problem_record(
            problem=Problem.NONE, message="", max_workers=max_workers, queued_jobs=queued
        )
    if queued and settings.RUNPOD_RESTORE_MAX_WORKERS:
        return _max_workers_restore(queued)
    return endpoint_problem_record(
        problem=Problem.SCALED_TO_ZERO,
        message=_scaled_to_zero_message(queued),
        max_workers=0,
        queued_jobs=queued,
    )


def _max_workers() -> int:
    """The endpoint's max workers as REST v2 shows it (oa2 `EndpointWorkers.max`)."""
    client = RunPodRestClient.from_settings()
    try:
        endpoint = client.get_endpoint(settings.RUNPOD_ENDPOINT_ID)
    finally:
        client.close()
    value = (endpoint.get("workers") or {}).get("max")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RunPodRestRejected(f"its workers.max is {value!r}, not a number")
    return value


def _max_workers_restore(queued: int) -> RunPodEndpointStatus:
    wanted = settings.RUNPOD_WORKERS_MAX
    client = RunPodRestClient.from_settings()
    try:
        client.update_endpoint(settings.RUNPOD_ENDPOINT_ID, {"workers": {"max": wanted}})
    except RunPodRestError as error:
        message = f"{_scaled_to_zero_message(queued)} Raising it failed: {error.message}"
        return endpoint_problem_record(
            problem=Problem.SCALED_TO_ZERO, message=message, max_workers=0, queued_jobs=queued
        )
    finally:
        client.close()
    logger.warning(
        "RunPod endpoint %s: RunPod had set its max workers to 0 (after 7 days without requests) while %d "
        "job(s) waited; raised it to %d (RUNPOD_RESTORE_MAX_WORKERS).",
        settings.RUNPOD_ENDPOINT_ID, queued, wanted,
    )  # fmt: skip
    return endpoint_problem_record(
        problem=Problem.NONE,
        message="",
        max_workers=wanted,
        queued_jobs=queued,
        workers_restored_at=timezone.now(),
    )


def _scaled_to_zero_message(queued: int) -> str:
    endpoint_id, wanted = settings.RUNPOD_ENDPOINT_ID, settings.RUNPOD_WORKERS_MAX
    if queued:
        waiting = (
            f"so no GPU worker can start: {queued} job(s) wait in its queue, and RunPod deletes each once "
            "its time to live passes (the run then fails, unbilled)"
        )
    else:
        waiting = "so the next run will wait in its queue until someone raises it"
    restore = (
        "The studio raises it itself once a job waits (RUNPOD_RESTORE_MAX_WORKERS is on)."
        if settings.RUNPOD_RESTORE_MAX_WORKERS
        else "Or set RUNPOD_RESTORE_MAX_WORKERS=true to let the studio raise it when jobs wait."
    )
    return (
        f"RunPod has set max workers of endpoint {endpoint_id} to 0 (it does so after 7 days without "
        f"requests, and leaves it there), {waiting}. Raise max workers to {wanted}: run `python manage.py "
        f"runpod_provision`, or set it in RunPod's console. {restore}"
    )


def _unreadable_message(detail: str) -> str:
    return (
        f"RunPod refused to show the settings of endpoint {settings.RUNPOD_ENDPOINT_ID} ({detail}), so "
        "the studio cannot tell whether RunPod scaled it to zero. Give RUNPOD_API_KEY read access to the "
        "endpoint (read/write for RUNPOD_RESTORE_MAX_WORKERS), and check RUNPOD_REST_API_BASE."
    )


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


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
