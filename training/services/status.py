"""Applying what RunPod says about a run's job (its webhook, answered by a `/status` read, or the sweep's
poll): the run moves forward, completes (`completion`), fails, or — when RunPod's result says nothing about
the run — is left to `recovery`. A completed run's final status settles its cost."""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from runpod_worker.contract import ContractError, ErrorCode, JobOutput, parse_error
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.selectors import training_run_cost_pending
from training.services import queue
from training.services.completion import RunEnd, training_run_complete
from training.services.cost import FINAL_JOB_STATUSES, cost_settle
from training.services.ending import training_run_fail
from training.services.recovery import CLAIMED_ELSEWHERE, job_result_unusable
from training.services.reports import job_claim, job_record
from training.services.schedule import run_execution_timeout_s
from training.services.transitions import (
    RunId,
    Status,
    run_fail,
    run_locked,
    run_transition,
    transition_allowed,
)
from training.time_limits import hours, never_taken_message

logger = logging.getLogger("training.services")

# A FAILED job without an error whose execution time reached this share of the run's limit was stopped for
# time: RunPod's clock and ours need not agree to the second.
TIMEOUT_TOLERANCE = 0.99

# RunPod job status -> run status. RUNNING is documented but never returned (runpod/docs#511).
RUNPOD_STATUS_MAP = {
    "IN_QUEUE": Status.QUEUED,
    "IN_PROGRESS": Status.TRAINING,
    "RUNNING": Status.TRAINING,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "TIMED_OUT": Status.FAILED,
    "CANCELLED": Status.CANCELLED,
}


def training_run_apply_status(*, run_id: RunId, job: RunPodJob, source: str) -> TrainingRun:
    """Moves a run forward to what its RunPod job reports; COMPLETED only once the LoRA is verified."""
    run = TrainingRun.objects.select_related("character").get(pk=run_id)
    target = RUNPOD_STATUS_MAP.get(job.status)
    if target is None:
        return run
    if job.id != run.runpod_job_id:
        logger.warning("run %s: ignoring status of job %s, not the run's job", run_id, job.id)
        return run
    if run.is_final:
        return _cost_record(run, job)
    if target == Status.COMPLETED:
        return _complete(run, job, source)
    error = parse_error(job.error) if target == Status.FAILED else None
    if error is not None and error.code == ErrorCode.CLAIMED_ELSEWHERE:
        # A duplicate delivery's result (runpod-python#402) reached RunPod before the holder's, and RunPod
        # kept it: it says nothing about the run.
        logger.warning(
            "run %s: job %s ended with a duplicate delivery's result (%s)", run.pk, job.id, error.message
        )
        return job_result_unusable(run, CLAIMED_ELSEWHERE, job=job, source=source)
    with transaction.atomic():
        run = run_locked(run_id)
        if run.is_final:
            return run  # another webhook, poll or callback ended it while we were reading
        job_record(run, job)
        if error is not None:
            timed_out = _timed_out(run, job) if error.code == ErrorCode.UNKNOWN else None
            if timed_out:
                run_fail(run, code="timed_out", message=timed_out, source=source)
            else:
                run_fail(run, code=error.code, message=error.message, source=source, log_tail=error.log_tail)
        elif transition_allowed(run.status, target):
            run_transition(run, target, source=source, detail={"job_status": job.status})
        else:
            run.save()
    return run


def _timed_out(run: TrainingRun, job: RunPodJob) -> str:
    """What to tell of a job RunPod ended for time, "" when it did not. RunPod sends no `error` with it, and
    reads it TIMED_OUT — past the execution timeout, or expired before a worker took it (docs
    serverless/endpoints/job-states.mdx:20) — or, past the execution timeout, FAILED ("marked as failed",
    v1 OpenAPI api-reference/openapi.json:3415): then only its execution time at the run's limit tells."""
    limit_ms = run_execution_timeout_s(run) * 1000
    ran_out = job.execution_ms is not None and job.execution_ms >= limit_ms * TIMEOUT_TOLERANCE
    if job.status == "TIMED_OUT" and job.execution_ms is None and run.started_at is None:
        return never_taken_message()
    if job.status == "TIMED_OUT" or ran_out:
        reached = f" at step {run.progress_step} of {run.progress_total}" if run.progress_total else ""
        return (
            f"The run reached its time limit on RunPod ({hours(run_execution_timeout_s(run))}){reached}, so "
            "RunPod stopped it; the GPU time until then is billed. Retry with fewer steps."
        )
    return ""


def _complete(run: TrainingRun, job: RunPodJob, source: str) -> TrainingRun:
    try:
        output = JobOutput.from_dict(job.output)
    except ContractError:
        return training_run_fail(
            run_id=run.pk,
            code="bad_output",
            message="The worker finished but its result could not be read. Retry the run.",
            source=source,
        )
    end = RunEnd(source=source, detail={"job_id": job.id}, output=output, job=job)
    done = training_run_complete(run=run, end=end)
    if done.problem:
        return training_run_fail(run_id=run.pk, code="lora_unverified", message=done.problem, source=source)
    return done.run


def _cost_record(run: TrainingRun, job: RunPodJob) -> TrainingRun:
    """RunPod's final status of a run the "finished" callback completed: its execution time gives the cost
    (read once; a status without one leaves the cost empty)."""
    if not training_run_cost_pending(run) or job.status not in FINAL_JOB_STATUSES:
        return run
    with transaction.atomic():
        run = run_locked(run.pk)
        if not training_run_cost_pending(run):
            return run
        job_record(run, job)
        cost_settle(run)
        run.save(
            update_fields=[
                "last_provider_payload",
                "delay_ms",
                "execution_ms",
                "cost_usd",
                "startup_idle_cost_usd",
                "cost_state",
                "next_poll_at",
                "updated_at",
            ]
        )
    return run


def training_run_note_webhook(*, run: TrainingRun, job_id: str) -> bool:
    """A webhook arrived for the run: claim the job if the run had none, and queue a poll after commit.

    The body is unsigned and never trusted; the caller polls `/status` before anything changes.
    Returns False when there is nothing to poll (the run is final, or the job is not the run's).
    """
    with transaction.atomic():
        run = run_locked(run.pk)
        if run.is_final:
            if job_id and job_id == run.runpod_job_id and training_run_cost_pending(run):
                # Completed from the worker's "finished" callback: RunPod's final status has the cost.
                queue.enqueue_on_commit(queue.POLL, run.pk)
                return True
            return False
        if job_id and not run.runpod_job_id:
            # Only our submission put this run's token in a webhook URL, so the job is this run's.
            job_claim(run, job_id)
        elif job_id and job_id != run.runpod_job_id:
            return False
        run.next_poll_at = timezone.now()
        run.save(
            update_fields=[
                "runpod_job_id",
                "submitted_at",
                "submit_attempted_at",
                "submit_due_at",
                "next_poll_at",
            ]
        )
        queue.enqueue_on_commit(queue.POLL, run.pk)
    return True
