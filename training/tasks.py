"""Celery tasks for training: thin wrappers that load a run by id and call one service."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import shared_task
from django.conf import settings

from runpod_worker.contract import ContractError
from training import services
from training.aitoolkit import AIToolkitError, AIToolkitUnavailable
from training.artifacts import StorageUnavailable
from training.models import TrainingEvent, TrainingRun
from training.pod_secrets import PodTokenUnreadable
from training.runpod import RunPodError, RunPodSubmitUncertain, RunPodUnavailable
from training.runpod_rest import RunPodRestUnavailable
from training.selectors import training_runs_to_poll

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=settings.TRAINING_SUBMIT_MAX_ATTEMPTS - 1, acks_late=True)
def submit_training_run(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Sends a pending run to RunPod; transient failures retry with backoff, then fail the run."""
    run = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.PENDING).first()
    if run is None or run.runpod_job_id:
        return
    # When to try /run again is training.services.submission's decision, made once here for this try.
    retry_in = services.submit_retry_in(self.request.retries)
    try:
        services.training_run_submit(run=run, retry_in=retry_in)
    except RunPodSubmitUncertain:
        return  # a job may exist: its worker claims the run, or the sweep resubmits after the grace period
    except (RunPodUnavailable, AIToolkitUnavailable, StorageUnavailable) as exc:
        if retry_in is None:
            # No job was made; the run stays pending and the sweep sends it at its next recheck, until
            # RunPod answers or TRAINING_SUBMIT_GIVE_UP_SECONDS have passed.
            logger.warning("run %s: RunPod unreachable at submission (%s); the sweep will retry", run_id, exc)
            return
        raise self.retry(exc=exc, countdown=retry_in) from exc
    except (RunPodError, AIToolkitError, PodTokenUnreadable, ContractError) as exc:
        services.training_run_fail(
            run_id=run.pk, code="submit_rejected", message=_rejected(run, str(exc)), source="system"
        )


@shared_task(bind=True, max_retries=5, acks_late=True)
def poll_training_run(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Reads the run's job status from RunPod and applies it (also the completion work: verify, cost)."""
    # Active runs, and runs completed by the worker's "finished" callback whose cost RunPod has yet to give.
    if not training_runs_to_poll().filter(pk=run_id).exists():
        return
    try:
        services.training_run_poll(run_id=run_id, source=TrainingEvent.Source.POLL)
    except (RunPodUnavailable, AIToolkitUnavailable, StorageUnavailable) as exc:
        _retry_until_the_sweep(self, exc, f"poll of run {run_id}")


@shared_task(bind=True, max_retries=5, acks_late=True)
def verify_run_artifacts(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Verifies the run's reported checkpoints and samples in storage and announces them; once the run has
    ended, prunes its checkpoints. While storage fails it retries, then the sweep takes over."""
    try:
        services.training_run_artifacts_verify(run_id=run_id)
    except StorageUnavailable as exc:
        _retry_until_the_sweep(self, exc, f"verifying run {run_id}'s files")
        return
    score_run_likeness.delay(run_id)


@shared_task(bind=True, max_retries=5, acks_late=True)
def score_run_likeness(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Scores the run's verified samples against the character's photos and, once the run has completed,
    chooses its best checkpoint; then prunes its checkpoints. A pass stops after 50 s and queues the next;
    while storage fails it retries, then the sweep takes over."""
    try:
        services.training_run_likeness_score(run_id=run_id)
    except StorageUnavailable as exc:
        _retry_until_the_sweep(self, exc, f"scoring run {run_id}'s samples")
        return
    if services.likeness_outstanding(run_id=run_id):
        score_run_likeness.delay(run_id)
        return
    services.training_run_checkpoints_prune(run_id=run_id)


@shared_task(bind=True, max_retries=5, acks_late=True)
def delete_pod_outputs(self, run_id: str) -> None:  # type: ignore[no-untyped-def]
    """Deletes an ended pod run's job and dataset from its pod once what it made is verified in storage;
    while that is still to come, or the pod or storage fails, it retries, then the sweep takes over."""
    try:
        done = services.pod_run_outputs_delete(run_id=run_id)
    except PodTokenUnreadable as exc:  # retrying changes nothing until staff enter the token again
        logger.error("pod outputs of run %s not deleted: %s; enter the pod's token in the admin", run_id, exc)
        return
    except (AIToolkitUnavailable, StorageUnavailable) as exc:
        done, reason = False, str(exc)
    else:
        reason = "its files are still being verified"
    if not done and self.request.retries < self.max_retries:
        raise self.retry(countdown=_backoff(self.request.retries))
    if not done:
        logger.warning("pod outputs of run %s not deleted yet (%s); the sweep will try again", run_id, reason)


@shared_task
def sweep_training_runs() -> int:
    """Beat: polls a bounded batch of due active runs, resubmits pending runs nobody submitted, cancels
    again stray RunPod jobs whose cancel was lost or refused, empties again the folders of erased characters
    whose stray jobs have ended, and announces status changes whose
    announcement was lost."""
    due = services.training_runs_claim_due()
    for run_id, status in due:
        task = submit_training_run if status == TrainingRun.Status.PENDING else poll_training_run
        task.delay(str(run_id))
    strays = services.stray_jobs_claim_due()
    for job_id in strays:
        cancel_runpod_job.delay(job_id)
    services.stray_jobs_erased_folders_empty()
    announced = services.training_events_announce_overdue()
    for run_id in services.artifact_runs_overdue():
        verify_run_artifacts.delay(str(run_id))
    for run_id in services.pod_runs_outputs_overdue():
        delete_pod_outputs.delay(str(run_id))
    for run_id in services.likeness_runs_overdue():
        score_run_likeness.delay(str(run_id))
    if due or strays:
        logger.info("sweep: %d run(s) due, %d stray job(s) to cancel", len(due), len(strays))
    if announced:
        logger.warning("sweep: announced %d status change(s) whose announcement was lost", announced)
    return len(due) + len(strays)


@shared_task
def check_pods() -> list[str]:
    """Beat: marks starting pods running once they are, and stops pods idle past their idle time."""
    changes = services.pods_check()
    for change in changes:
        logger.info("pods: %s", change)
    return changes


@shared_task
def check_runpod_endpoint() -> str:
    """Beat: reads RunPod's `/health` and the endpoint's max workers; records (and, when allowed, repairs)
    an endpoint RunPod scaled to zero or no longer knows. Returns the problem found, "" for none."""
    try:
        return services.runpod_endpoint_check().problem
    except (RunPodUnavailable, RunPodRestUnavailable) as exc:
        logger.warning("RunPod endpoint check: RunPod did not answer (%s); the next check tries again", exc)
        return "unavailable"


@shared_task(bind=True, max_retries=5, acks_late=True)
def cancel_runpod_job(self, job_id: str) -> None:  # type: ignore[no-untyped-def]
    """Stops a RunPod job no run owns, so it bills no more GPU time; while RunPod cannot be reached it
    retries when the job is due again, a bounded number of times, and then the sweep takes over."""
    outcome = services.runpod_job_cancel(job_id=job_id)
    if outcome.retry_in is not None and self.request.retries < self.max_retries:
        raise self.retry(countdown=outcome.retry_in)


def _retry_until_the_sweep(task: Any, exc: Exception, what: str) -> None:
    """Retries `task` with backoff while its retries last; after the last one it logs and returns: the
    sweep finds what is left in the database and queues it again."""
    if task.request.retries >= task.max_retries:
        logger.warning("%s gave up for now: %s; the sweep will try again", what, exc)
        return
    raise task.retry(exc=exc, countdown=_backoff(task.request.retries)) from exc


def _backoff(retries: int) -> float:
    # Jittered so that runs failing together (a RunPod outage) do not come back together.
    return min(300.0, 5.0 * 2**retries) * random.uniform(0.5, 1.5)


def _rejected(run: TrainingRun, detail: str) -> str:
    if run.provider == TrainingRun.Provider.POD:
        return f"The pod refused the training job ({detail}). Staff need to check the pod's settings."
    return f"RunPod refused the training job ({detail}). Staff need to check the RunPod settings."
