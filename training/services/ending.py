"""Ending a run early: cancel (RunPod is asked to stop the job first) and fail (with an error the user
can act on)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from studio.errors import Conflict
from training import providers
from training.models import TrainingRun
from training.runpod import RunPodError, RunPodJobNotFound
from training.services.endpoint import runpod_endpoint_known
from training.services.pod_runs import pod_run_cancel
from training.services.schedule import liveness
from training.services.stray_jobs import stray_job_record
from training.services.transitions import RunId, Status, run_fail, run_locked, run_transition

logger = logging.getLogger("training.services")

# What the cancel of a run's own job answered, when RunPod must be asked again later (a stray job).
CANCEL_AGAIN = {
    "unreachable": "its run was cancelled while RunPod could not be reached",
    "endpoint_unknown": "its run was cancelled while RunPod did not know the endpoint",
}


def training_run_cancel(*, run: TrainingRun, source: str, keep_artifacts: bool = True) -> TrainingRun:
    """Ends the run as cancelled. A worker that is reporting hears "stop" at its next callback and ends
    itself after uploading and reporting the checkpoints and samples it made (so a cancelled run keeps
    them); RunPod is asked to stop the job only if it still runs TRAINING_CANCEL_GRACE_SECONDS later.
    Any other job, or any job when `keep_artifacts` is off (its character is being erased: nothing may be
    uploaded for it any more), is stopped through RunPod first."""
    run.refresh_from_db()
    if run.is_final:
        raise Conflict(f"This run has already {_ended(run.status)}; there is nothing to cancel.")
    if run.provider == TrainingRun.Provider.POD:
        return pod_run_cancel(run=run, source=source, keep_artifacts=keep_artifacts)
    if keep_artifacts and _worker_reporting(run):
        return _cancel_gracefully(run, source)
    detail: dict[str, Any] = {}
    if run.runpod_job_id:
        detail = {"job_id": run.runpod_job_id, "runpod": _runpod_cancel(run.runpod_job_id)}
    with transaction.atomic():
        locked = run_locked(run.pk)
        if locked.is_final:
            return locked
        if locked.runpod_job_id and locked.runpod_job_id != run.runpod_job_id:
            # Its worker claimed the run while we were talking to RunPod.
            reason = "it claimed its run while the run was being cancelled"
            stray_job_record(job_id=locked.runpod_job_id, run_id=locked.pk, reason=reason)
        elif detail.get("runpod") in CANCEL_AGAIN:
            # A worker that cannot reach us either would never hear "stop": RunPod is asked again later.
            reason = CANCEL_AGAIN[detail["runpod"]]
            stray_job_record(job_id=locked.runpod_job_id, run_id=locked.pk, reason=reason)
        run_transition(locked, Status.CANCELLED, source=source, detail=detail)
    return locked


def _worker_reporting(run: TrainingRun) -> bool:
    """The run's worker holds it with a delivery id (so it drains its uploads on "stop") and called back
    within the liveness window."""
    seen = run.worker_seen_at
    return bool(
        run.status == Status.TRAINING
        and run.runpod_job_id
        and run.worker_delivery_id
        and seen is not None
        and timezone.now() - seen < liveness()
    )


def _cancel_gracefully(run: TrainingRun, source: str) -> TrainingRun:
    grace = timedelta(seconds=settings.TRAINING_CANCEL_GRACE_SECONDS)
    with transaction.atomic():
        locked = run_locked(run.pk)
        if locked.is_final:
            return locked
        reason = "its run was cancelled: asked to stop, and cancelled if it still runs after the grace period"
        stray_job_record(job_id=locked.runpod_job_id, run_id=locked.pk, reason=reason, after=grace)
        detail = {"job_id": locked.runpod_job_id, "runpod": "stop_asked"}
        run_transition(locked, Status.CANCELLED, source=source, detail=detail)
    return locked


def _runpod_cancel(job_id: str) -> str:
    try:
        providers.get_provider().cancel(job_id)
    except RunPodJobNotFound:
        # A wrong or deleted endpoint answers 404 too (send-requests.mdx:215): the job is gone only if
        # RunPod knows the endpoint; otherwise it may still run where it was sent.
        return "gone" if _endpoint_known() else "endpoint_unknown"
    except RunPodError as exc:
        # The run still ends here: the worker's next callback is answered "stop" and it stops itself.
        logger.warning("RunPod cancel of job %s failed: %s", job_id, exc.message)
        return "unreachable"
    return "cancelled"


def _endpoint_known() -> bool:
    try:
        return runpod_endpoint_known()
    except RunPodError:
        return False  # cannot tell: cancelled again later, as when RunPod is unreachable


def _ended(status: str) -> str:
    return {"completed": "completed", "failed": "failed", "cancelled": "been cancelled"}[status]


def training_run_fail(
    *, run_id: RunId, code: str, message: str, source: str, stop_job: bool = False
) -> TrainingRun:
    """Ends an active run as failed with a message the user can act on; a final run is left as it is."""
    with transaction.atomic():
        run = run_locked(run_id)
        if run.is_final:
            return run
        run_fail(run, code=code, message=message, source=source)
    if stop_job and run.runpod_job_id and run.provider == TrainingRun.Provider.SERVERLESS:
        _runpod_cancel(run.runpod_job_id)  # a pod run's job is stopped by its outputs' deletion
    return run
