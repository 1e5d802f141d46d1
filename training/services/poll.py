"""The sweep's side of the status: claiming due runs in bounded batches, and polling RunPod's `/status` of
one run's job — for an active run, its progress or end; for a completed run whose cost is pending, the
final status that carries the execution time."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from training import providers
from training.aitoolkit import AIToolkitError
from training.models import TrainingRun
from training.runpod import RunPodError, RunPodJobNotFound
from training.selectors import training_run_cost_pending, training_runs_to_poll
from training.services.ending import training_run_fail
from training.services.endpoint import runpod_endpoint_known
from training.services.pod_runs import pod_run_poll
from training.services.recovery import JOB_LOST, job_result_unusable, never_taken
from training.services.schedule import RUNPOD_RESULT_RETENTION, next_poll, past_deadline, pending_recheck
from training.services.status import training_run_apply_status
from training.services.transitions import RunId, Source
from training.time_limits import never_taken_message, pod_never_started_message

CostState = TrainingRun.CostState

logger = logging.getLogger("training.services")


def training_run_poll(*, run_id: RunId, source: str = Source.POLL) -> TrainingRun:
    """Asks RunPod for the run's job status and applies it; ends runs RunPod forgot or that ran too long."""
    run = TrainingRun.objects.get(pk=run_id)
    if not run.runpod_job_id or (run.is_final and not training_run_cost_pending(run)):
        return run
    if run.is_final:
        return _cost_poll(run, source)
    now = timezone.now()
    if past_deadline(run, now):
        if _pod_unstarted(run):
            run = _pod_read_before_deadline(run, source)
            if run.is_final or run.started_at is not None:
                return run
        message = _deadline_message(run, now)
        return training_run_fail(
            run_id=run.pk, code="timed_out", message=message, source=Source.SYSTEM, stop_job=True
        )
    if run.provider == TrainingRun.Provider.POD:
        return pod_run_poll(run=run, source=source)
    try:
        job = providers.get_provider().status(run.runpod_job_id)
    except RunPodJobNotFound:
        if not runpod_endpoint_known():
            return run  # a wrong or deleted endpoint, not a lost job: staff are told, the run waits
        lost = never_taken() if _dropped_unstarted(run, now) else JOB_LOST
        return job_result_unusable(run, lost, job=None, source=source)
    return training_run_apply_status(run_id=run.pk, job=job, source=source)


def _deadline_message(run: TrainingRun, now: datetime) -> str:
    """Why a run past its deadline is failed: its pod never started it, RunPod dropped it untaken, or it ran
    too long."""
    if _pod_unstarted(run):
        return pod_never_started_message(run.pod.name if run.pod else "")
    if _dropped_unstarted(run, now):
        return never_taken_message()
    return (
        "The run went past its time limit without finishing, so it was stopped. Retry it; if it happens "
        "again, choose fewer steps."
    )


def _pod_unstarted(run: TrainingRun) -> bool:
    return run.provider == TrainingRun.Provider.POD and run.started_at is None


def _pod_read_before_deadline(run: TrainingRun, source: str) -> TrainingRun:
    """A pod run the studio has not seen start, past its waiting limit: its job is read first, since it may
    have started since the last poll (or while the pod could not be reached); an unreachable pod changes
    nothing, and the deadline ends the run."""
    with contextlib.suppress(AIToolkitError):
        pod_run_poll(run=run, source=source)
    return TrainingRun.objects.get(pk=run.pk)


def _dropped_unstarted(run: TrainingRun, now: datetime) -> bool:
    """No worker ever reported the run, and its job's time to live has passed: RunPod deleted it queued."""
    ttl = timedelta(seconds=settings.TRAINING_JOB_TTL_SECONDS)
    return (
        run.started_at is None
        and run.worker_seen_at is None
        and now >= (run.submitted_at or run.created_at) + ttl
    )


def _cost_poll(run: TrainingRun, source: str) -> TrainingRun:
    """Reads RunPod's final status of a run that ended before RunPod said its job had (the "finished"
    callback, a cancel, the sweep's deadline), for its execution time."""
    try:
        job = providers.get_provider().status(run.runpod_job_id)
    except RunPodJobNotFound:
        if runpod_endpoint_known():
            _cost_give_up(run, "RunPod no longer knows its job")
        return run
    except RunPodError:
        return run  # the sweep asks again at next_poll_at, while RunPod still keeps the result
    return training_run_apply_status(run_id=run.pk, job=job, source=source)


def _cost_give_up(run: TrainingRun, reason: str) -> None:
    TrainingRun.objects.filter(
        pk=run.pk, status__in=TrainingRun.FINAL_STATUSES, cost_state=CostState.PENDING
    ).update(next_poll_at=None, cost_state=CostState.SETTLED)
    logger.warning("run %s: %s, but its cost stays empty: %s", run.pk, run.status, reason)


def training_runs_claim_due(
    *, now: datetime | None = None, batch_size: int | None = None
) -> list[tuple[uuid.UUID, str]]:
    """Takes a bounded batch of due runs — pending ones to send to RunPod (`submit_due_at`), active ones and
    ended ones whose cost is pending to poll (`next_poll_at`) — and pushes each due time back; a cost
    RunPod no longer keeps is given up (settled, empty).

    Rows are locked with SKIP LOCKED, so two sweeps running at once never take the same run, and the
    work is two queries whatever the number of runs.
    """
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    to_submit = Q(status=TrainingRun.Status.PENDING, submit_due_at__lte=now)
    to_poll = Q(next_poll_at__lte=now) & ~Q(status=TrainingRun.Status.PENDING)
    with transaction.atomic():
        runs = list(
            training_runs_to_poll()
            .select_for_update(skip_locked=True)
            .filter(to_submit | to_poll)
            .order_by(Coalesce("submit_due_at", "next_poll_at"))
            .only(
                "id",
                "provider",
                "status",
                "cost_state",
                "polls_since_change",
                "worker_seen_at",
                "next_poll_at",
                "submit_due_at",
                "finished_at",
                "progress_step",
                "progress_total",
                "progress_eta_seconds",
            )[:limit]
        )
        given_up = []
        for run in runs:
            if run.status == TrainingRun.Status.PENDING:
                run.submit_due_at = now + pending_recheck()
                continue
            run.next_poll_at = next_poll(run, now)
            run.polls_since_change += 1
            if run.next_poll_at is None:
                run.cost_state = CostState.SETTLED
                given_up.append(run)
        TrainingRun.objects.bulk_update(
            runs, ["next_poll_at", "submit_due_at", "polls_since_change", "cost_state"]
        )
    for run in given_up:
        logger.warning(
            "run %s: %s, but its cost stays empty: RunPod's final status was not read within "
            "the %s it keeps a result", run.pk, run.status, RUNPOD_RESULT_RETENTION,
        )  # fmt: skip
    return [(run.pk, run.status) for run in runs if run not in given_up]
