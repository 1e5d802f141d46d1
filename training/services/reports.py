"""What RunPod and the worker report about a run's job, copied onto a run locked by the caller."""

from __future__ import annotations

import contextlib
import logging

from django.utils import timezone

from runpod_worker.contract import ContractError, Progress
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.services.cost import FINAL_JOB_STATUSES

logger = logging.getLogger("training.services")


def job_record(run: TrainingRun, job: RunPodJob) -> None:
    """Copies what RunPod says about the job onto the locked run (progress only ever moves forward)."""
    # Webhook copies echo the job input, which holds the callback token: never keep those keys.
    run.last_provider_payload = {k: v for k, v in job.raw.items() if k not in {"input", "webhook"}}
    if job.delay_ms is not None:
        run.delay_ms = job.delay_ms
    # While the job runs, `executionTime` is a running total (runpod-python#105); only the figure of a
    # job that has ended is what RunPod bills, so only that one is kept (it prices the run).
    if job.execution_ms is not None and job.status in FINAL_JOB_STATUSES:
        run.execution_ms = job.execution_ms
    if job.status == "IN_PROGRESS" and isinstance(job.output, dict):
        # A progress document we cannot read is no reason to stop reading the status.
        with contextlib.suppress(ContractError, TypeError, ValueError):
            progress_apply(run, Progress.from_dict(job.output))


def progress_apply(run: TrainingRun, progress: Progress) -> None:
    if progress.step < run.progress_step:
        return  # a late delivery from before: progress never goes back
    run.progress_step = progress.step
    run.progress_total = progress.total_steps or run.progress_total
    if progress.loss is not None:
        run.progress_loss = progress.loss
    if progress.eta_s is not None:
        run.progress_eta_seconds = max(0, int(progress.eta_s))


def job_claim(run: TrainingRun, job_id: str) -> None:
    """A job heard of before its `/run` answer (a worker callback, a webhook) becomes the run's job."""
    if not run.runpod_job_id:
        logger.info("run %s: claimed by job %s after an unanswered submission", run.pk, job_id)
        run.runpod_job_id = job_id
        run.submitted_at = run.submitted_at or timezone.now()
        run.submit_attempted_at = None
        run.submit_due_at = None
