"""When the sweep looks at a run again: `next_poll_at` is when RunPod's `/status` of the run's job is read
next (see docs/TRAINING.md, "Polling"), growing while nothing changes. The pending run's `/run` schedule
is `submission`'s (`submit_due_at`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

from runpod_worker.contract import Progress, Stage
from training.models import TrainingRun

Status = TrainingRun.Status

QUEUED_POLL = (timedelta(seconds=15), timedelta(minutes=5))
TRAINING_POLL = (timedelta(seconds=30), timedelta(minutes=5))
# While the worker calls back, it proves the job is alive: the poll only has to catch a silent death.
TRAINING_POLL_WITH_CALLBACKS = timedelta(minutes=10)
# Beyond RunPod's own limits, before the sweep gives up on a run that never reported back.
DEADLINE_MARGIN = timedelta(minutes=5)
# RunPod keeps a /run job's result for 30 minutes after the job ends; then /status answers 404.
RUNPOD_RESULT_RETENTION = timedelta(minutes=30)
# A run that ended before RunPod reported its job ended (the worker's "finished" callback, a cancel, the
# sweep's deadline): how soon the sweep reads RunPod's final status for its cost (the job ends seconds
# after), growing while RunPod has not ended the job.
COST_POLL = (timedelta(seconds=15), timedelta(minutes=5))
# The first interval and the cap of each status's poll backoff.
_BACKOFF = {
    Status.QUEUED.value: QUEUED_POLL,
    Status.TRAINING.value: TRAINING_POLL,
    **{status.value: COST_POLL for status in TrainingRun.FINAL_STATUSES},
}


def next_poll(run: TrainingRun, now: datetime) -> datetime | None:
    """When the sweep next takes the run; None for an ended run whose cost RunPod no longer keeps."""
    if not run.is_final:
        return now + poll_delay(run, now)
    expires = (run.finished_at or now) + RUNPOD_RESULT_RETENTION
    if now > expires:
        return None  # RunPod has deleted the result: the cost can no longer be read, and is never made up
    return min(now + poll_delay(run, now), expires)


def poll_delay(run: TrainingRun, now: datetime) -> timedelta:
    if run.provider == TrainingRun.Provider.POD and not run.is_final:
        # A lease, not the next poll: the poll sets that when it is done (`pod_runs.pod_run_poll`), and only
        # a poll that was lost leaves it for the sweep to take again.
        return timedelta(seconds=settings.TRAINING_POD_POLL_LEASE_SECONDS)
    if finishing(run, now):
        return finishing_poll()  # the result is seconds away, not minutes
    first, cap = _BACKOFF[run.status]
    if run.status == Status.TRAINING and run.worker_seen_at and now - run.worker_seen_at < lease():
        cap = TRAINING_POLL_WITH_CALLBACKS
    return min(cap, first * 2 ** min(run.polls_since_change, 10))


def poll_after_progress(progress: Progress) -> timedelta:
    """How soon RunPod's status is read after the worker reported `progress`."""
    if progress.stage == Stage.UPLOADING or (progress.total_steps and progress.step >= progress.total_steps):
        return finishing_poll()
    if progress.eta_s is not None:
        return min(TRAINING_POLL_WITH_CALLBACKS, timedelta(seconds=progress.eta_s) + finishing_poll())
    return TRAINING_POLL_WITH_CALLBACKS


def finishing(run: TrainingRun, now: datetime) -> bool:
    """The worker, heard from lately, said it was at its last step or due to finish about now."""
    if run.status != Status.TRAINING or run.worker_seen_at is None or now - run.worker_seen_at > lease():
        return False  # a silent worker gets the normal backoff, not a poll every few seconds
    if run.progress_total and run.progress_step >= run.progress_total:
        return True
    eta = run.progress_eta_seconds
    return eta is not None and now + finishing_poll() >= run.worker_seen_at + timedelta(seconds=eta)


def past_deadline(run: TrainingRun, now: datetime) -> bool:
    """The run has outlived its limits and a margin: once started, its execution timeout; before, the time
    its job may wait — RunPod's queue time to live on serverless, the pod's waiting limit on a pod (the
    UI's queue drops nothing: its runs wait one at a time per GPU, `ui/cron/actions/processQueue.ts`)."""
    if run.started_at is not None:
        limit = run.started_at + timedelta(seconds=run_execution_timeout_s(run))
    else:
        limit = (run.submitted_at or run.created_at) + timedelta(seconds=queue_timeout_s(run))
    return now > limit + DEADLINE_MARGIN


def queue_timeout_s(run: TrainingRun) -> int:
    """How long the run's job may wait to start where it was sent."""
    if run.provider == TrainingRun.Provider.POD:
        return int(settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS)
    return int(settings.TRAINING_JOB_TTL_SECONDS)


def run_execution_timeout_s(run: TrainingRun) -> int:
    """The executionTimeout of the run's job: its own, fitted at start; the longest a run may take for a run
    from before runs had one."""
    return run.execution_timeout_s or int(settings.TRAINING_EXECUTION_TIMEOUT_SECONDS)


def pod_poll() -> timedelta:
    """How soon a pod run's job is read again after a poll (the UI has no webhook)."""
    return timedelta(seconds=settings.TRAINING_POD_POLL_SECONDS)


def finishing_poll() -> timedelta:
    return timedelta(seconds=settings.TRAINING_FINISHING_POLL_SECONDS)


def lease() -> timedelta:
    return timedelta(seconds=settings.TRAINING_WORKER_LEASE_SECONDS)


def liveness() -> timedelta:
    return timedelta(seconds=settings.TRAINING_WORKER_LIVENESS_SECONDS)


def pending_recheck() -> timedelta:
    return timedelta(seconds=settings.TRAINING_PENDING_RECHECK_SECONDS)
