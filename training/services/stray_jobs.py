"""Stray RunPod jobs: jobs no run owns, written down in the transaction that decides they are stray and
cancelled until RunPod takes the cancel, or until RunPod could no longer be running them."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from studio.storage import storage_folder_delete
from studio.sweeps import lock_overdue
from training import providers
from training.models import StrayJob
from training.runpod import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_RETRY_AFTER_SECONDS,
    RunPodError,
    RunPodJobNotFound,
    RunPodUnavailable,
)
from training.services import queue
from training.services.endpoint import runpod_endpoint_known
from training.services.schedule import DEADLINE_MARGIN
from training.services.transitions import RunId

logger = logging.getLogger("training.services")

# How soon the cancel of a stray job is sent again after RunPod failed to take it, doubling per attempt.
STRAY_CANCEL_RETRY = (timedelta(seconds=15), timedelta(minutes=10))


def stray_job_record(
    *, job_id: str, run_id: RunId | None, reason: str, after: timedelta | None = None
) -> None:
    """Writes down, in the caller's transaction, that RunPod job `job_id` must be cancelled, and queues the
    cancel after commit — or, `after` a grace period, leaves it to the sweep; a job already written down is
    left as it is."""
    due = timezone.now() + (after or timedelta(0))
    _, created = StrayJob.objects.get_or_create(
        runpod_job_id=job_id, defaults={"run_id": run_id, "reason": reason[:200], "next_attempt_at": due}
    )
    if created and after is None:
        logger.info("job %s of run %s is stray (%s): cancelling it", job_id, run_id, reason)
        queue.enqueue_on_commit(queue.CANCEL_JOB, job_id)


@dataclass(frozen=True)
class StrayCancelOutcome:
    attempt: int  # 0 when nothing was sent
    retry_in: float | None = None  # seconds until the next attempt, when RunPod could not be reached


def runpod_job_cancel(*, job_id: str) -> StrayCancelOutcome:
    """Asks RunPod to stop a stray job whose cancel is due, and records it cancelled, gone (404), or due
    again after a backoff; a job RunPod can no longer be running is given up.

    The attempt is claimed first with a conditional update that takes only a due, pending row and makes
    it due again only after the client's longest call: duplicate tasks never send two cancels at once,
    and an attempt whose worker died is sent again by the sweep.
    """
    stray = StrayJob.objects.filter(runpod_job_id=job_id).first()
    if stray is None or stray.status != StrayJob.Status.PENDING:
        return StrayCancelOutcome(attempt=0)
    now = timezone.now()
    if _stray_expired(stray, now):
        _strays_give_up([stray], now)
        return StrayCancelOutcome(attempt=0)
    claimed = StrayJob.objects.filter(
        pk=stray.pk, status=StrayJob.Status.PENDING, attempts=stray.attempts, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + _stray_cancel_lease())
    if not claimed:
        return StrayCancelOutcome(attempt=0)
    attempt = stray.attempts + 1
    try:
        providers.get_provider().cancel(job_id)
    except RunPodJobNotFound:
        return _stray_not_found(stray, attempt)
    except RunPodError as exc:
        delay = _stray_retry_delay(attempt)
        _stray_retry_later(stray, attempt, delay, exc.message)
        # Only an outage is worth a retry from the task; a refusal (a wrong API key) waits for the sweep.
        return StrayCancelOutcome(
            attempt, delay.total_seconds() if isinstance(exc, RunPodUnavailable) else None
        )
    else:
        _stray_end(stray, attempt, StrayJob.Status.CANCELLED)
    return StrayCancelOutcome(attempt)


def _stray_not_found(stray: StrayJob, attempt: int) -> StrayCancelOutcome:
    """RunPod answered the cancel 404. A wrong or deleted endpoint answers 404 too (send-requests.mdx:215):
    the job is gone only if `/health` shows RunPod knows the endpoint; otherwise it may still run where it
    was sent, and the cancel is sent again later."""
    try:
        gone = runpod_endpoint_known()
        why = "RunPod does not know the endpoint"
    except RunPodError as exc:
        gone, why = False, exc.message
    if gone:
        _stray_end(stray, attempt, StrayJob.Status.GONE)
    else:
        _stray_retry_later(stray, attempt, _stray_retry_delay(attempt), why)
    return StrayCancelOutcome(attempt)


def stray_jobs_of_erased_runs(*, run_ids: list[uuid.UUID], folder: str) -> int:
    """The pending stray jobs of runs whose character is being erased (before the runs are deleted): once
    each has ended, `folder` is emptied again, as what the job uploaded meanwhile would outlive the erase."""
    pending = StrayJob.objects.filter(run_id__in=run_ids, status=StrayJob.Status.PENDING)
    return pending.update(erased_folder=folder)


def stray_jobs_erased_folders_empty(*, batch_size: int | None = None) -> int:
    """Empties the erased folders of stray jobs that have ended (cancelled, gone or given up) and forgets
    them; a folder storage could not empty stays for the next sweep. Returns how many were emptied."""
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    ended = StrayJob.objects.exclude(status=StrayJob.Status.PENDING).exclude(erased_folder="")
    emptied = 0
    for stray_id, folder in ended.values_list("id", "erased_folder")[:limit]:
        try:
            storage_folder_delete(folder)
        except Exception:
            logger.exception(
                "could not empty %s, left by an erased character's job; tried again later", folder
            )
            continue
        emptied += StrayJob.objects.filter(pk=stray_id, erased_folder=folder).update(erased_folder="")
    return emptied


def stray_jobs_claim_due(*, now: datetime | None = None, batch_size: int | None = None) -> list[str]:
    """Takes a bounded batch of stray jobs whose cancel is overdue by more than a sweep interval — its
    task was lost, or RunPod stayed unreachable through the task's retries — makes each due now and
    returns their job ids; a job RunPod can no longer be running is given up instead.

    Rows are locked with SKIP LOCKED, so two sweeps running at once never take the same job, and the
    work is at most three queries whatever the number of jobs.
    """
    now = timezone.now() if now is None else now
    limit = batch_size or settings.TRAINING_SWEEP_BATCH_SIZE
    overdue_since = now - timedelta(seconds=settings.TRAINING_SWEEP_INTERVAL_SECONDS)
    with transaction.atomic():
        pending = StrayJob.objects.filter(status=StrayJob.Status.PENDING).only(
            "id", "runpod_job_id", "run_id", "created_at", "attempts", "last_error"
        )
        strays = list(lock_overdue(pending, overdue_since=overdue_since, limit=limit))
        expired = [stray for stray in strays if _stray_expired(stray, now)]
        due = [stray for stray in strays if not _stray_expired(stray, now)]
        if due:
            StrayJob.objects.filter(pk__in=[stray.pk for stray in due]).update(next_attempt_at=now)
        _strays_give_up(expired, now)
    return [stray.runpod_job_id for stray in due]


def _stray_expired(stray: StrayJob, now: datetime) -> bool:
    """RunPod can no longer be running the job: it was made before the row, and no job outlives its
    time to live and execution timeout together."""
    lifetime = settings.TRAINING_JOB_TTL_SECONDS + settings.TRAINING_EXECUTION_TIMEOUT_SECONDS
    return now > stray.created_at + timedelta(seconds=lifetime) + DEADLINE_MARGIN


def _strays_give_up(strays: list[StrayJob], now: datetime) -> None:
    if not strays:
        return
    StrayJob.objects.filter(pk__in=[stray.pk for stray in strays], status=StrayJob.Status.PENDING).update(
        status=StrayJob.Status.GIVEN_UP, next_attempt_at=None, ended_at=now
    )
    for stray in strays:
        logger.error(
            "stray job %s of run %s: RunPod never took its cancel in %d attempt(s) (last error: %s); it can "
            "no longer be running, so the cancel is given up. Check its GPU time in the RunPod console.",
            stray.runpod_job_id, stray.run_id, stray.attempts, stray.last_error or "none",
        )  # fmt: skip


def _stray_end(stray: StrayJob, attempt: int, status: str) -> None:
    # Only the latest claim records: an attempt that outlived its lease lost the row to another.
    StrayJob.objects.filter(pk=stray.pk, status=StrayJob.Status.PENDING, attempts=attempt).update(
        status=status, next_attempt_at=None, ended_at=timezone.now(), last_error=""
    )
    logger.info("stray job %s: %s by RunPod (attempt %d)", stray.runpod_job_id, status, attempt)


def _stray_retry_later(stray: StrayJob, attempt: int, delay: timedelta, error: str) -> None:
    StrayJob.objects.filter(pk=stray.pk, status=StrayJob.Status.PENDING, attempts=attempt).update(
        next_attempt_at=timezone.now() + delay, last_error=error
    )
    logger.warning(
        "stray job %s: RunPod did not take its cancel (attempt %d: %s); trying again in %s",
        stray.runpod_job_id, attempt, error, delay,
    )  # fmt: skip


def _stray_retry_delay(attempt: int) -> timedelta:
    first, cap = STRAY_CANCEL_RETRY
    return min(cap, first * 2 ** min(attempt - 1, 10))


def _stray_cancel_lease() -> timedelta:
    """How long a claimed cancel holds its row: the client's longest call (every try timing out on its
    connect and read, and the longest wait between tries), past which the attempt is taken for dead."""
    tries = DEFAULT_MAX_ATTEMPTS
    return timedelta(seconds=tries * (2 * settings.RUNPOD_TIMEOUT_SECONDS + MAX_RETRY_AFTER_SECONDS))
