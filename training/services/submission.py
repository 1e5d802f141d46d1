"""Submitting a pending run to RunPod: at most one `/run` per attempt, the attempt written down first, and
the job id recorded (pending -> queued).

Whether and when `/run` is called again is decided here, and only here (docs/TRAINING.md, "The `/run`
schedule"); `submit_due_at` is when the sweep sends the run next:

- RunPod certainly made no job (no connection, or 429 on every one of the client's own tries): the
  submission task tries again after `submit_retry_in(retries)` — 5 s doubling to 5 min, jittered — at most
  TRAINING_SUBMIT_MAX_ATTEMPTS - 1 times; the run is due for the sweep one recheck after that retry (or
  after this call, once the task's retries are spent). None of these calls counts as an attempt.
- The outcome is unknown (a timeout or 5xx after the request left): the attempt stands, and the run is due
  again only after TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS, since the job may exist and claim the run.
- Refused for good: the run fails. After TRAINING_SUBMIT_MAX_ATTEMPTS attempts, or
  TRAINING_SUBMIT_GIVE_UP_SECONDS since the start, it fails instead of being sent again.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from runpod_worker.contract import ContractError
from training import providers
from training.aitoolkit import AIToolkitError, AIToolkitUnavailable
from training.artifacts import StorageUnavailable
from training.models import TrainingRun
from training.pod_secrets import PodTokenUnreadable
from training.providers import TrainingProvider
from training.runpod import RunPodError, RunPodJob, RunPodSubmitUncertain, RunPodUnavailable
from training.services import queue
from training.services.job_input import absolute_url, training_job_input
from training.services.pod_runs import pod_choose, pod_job_make
from training.services.schedule import QUEUED_POLL, pending_recheck, pod_poll, run_execution_timeout_s
from training.services.stray_jobs import stray_job_record
from training.services.transitions import RunId, Source, Status, run_fail, run_locked, run_transition
from training.tokens import run_token

logger = logging.getLogger("training.services")


# The submission task's retries while RunPod cannot be reached: the first delay and the cap.
SUBMIT_RETRY = (5.0, 300.0)


def submit_retry_in(retries: int) -> float | None:
    """Seconds until the submission task's next try after `retries` retries found RunPod unreachable, or None
    once its retries are spent (the sweep then sends the run at its recheck). Jittered so that runs failing
    together (a RunPod outage) do not come back together."""
    if retries >= settings.TRAINING_SUBMIT_MAX_ATTEMPTS - 1:
        return None
    first, cap = SUBMIT_RETRY
    return min(cap, first * 2**retries) * random.uniform(0.5, 1.5)


def training_run_submit(
    *, run: TrainingRun, provider: TrainingProvider | None = None, retry_in: float | None = None
) -> TrainingRun:
    """Sends a pending run to RunPod at most once per attempt and records its job id (pending -> queued).

    The attempt is written down before `/run` is called. If the call's outcome is unknown (a timeout
    or 5xx after the request left), the mark stays: the job, if it exists, claims the run when its
    worker starts; only after TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS does the sweep submit again.
    `retry_in` is when the caller tries again should RunPod be unreachable (`submit_retry_in`; None: it
    will not), so the sweep's recheck comes only after it: the two never send one run together.
    """
    marked = _submit_attempt_mark(run.pk)
    if marked is None:
        return TrainingRun.objects.get(pk=run.pk)
    if marked.provider == TrainingRun.Provider.POD:
        return _pod_submit(marked, retry_in)
    provider = provider or providers.get_provider()
    try:
        job = provider.submit(
            job_input=training_job_input(marked), webhook=_webhook_url(marked), policy=_job_policy(marked)
        )
    except RunPodSubmitUncertain:
        logger.warning("run %s: the outcome of /run is unknown; waiting for a worker to claim it", run.pk)
        raise
    except RunPodUnavailable:
        # RunPod certainly made no job (no connection opened, or 429 on every try): the call does not
        # count against the attempts that bound duplicate jobs, and the sweep tries again at the next
        # recheck, for as long as TRAINING_SUBMIT_GIVE_UP_SECONDS allows.
        # Only this attempt's mark is undone: a later attempt (whose /run may have made a job) keeps its own.
        TrainingRun.objects.filter(
            pk=run.pk,
            status=Status.PENDING,
            runpod_job_id="",
            attempts__gt=0,
            submit_attempted_at=marked.submit_attempted_at,
        ).update(
            submit_attempted_at=None,
            attempts=F("attempts") - 1,
            submit_due_at=timezone.now() + timedelta(seconds=retry_in or 0) + pending_recheck(),
        )
        raise
    except (RunPodError, ContractError):
        # Refused for good: the caller fails the run.
        TrainingRun.objects.filter(pk=run.pk, runpod_job_id="").update(submit_attempted_at=None)
        raise
    return _submission_record(run.pk, job, provider)


def _submit_attempt_mark(run_id: RunId) -> TrainingRun | None:
    """The run, marked as being submitted now; None when there is nothing to submit (yet)."""
    now = timezone.now()
    grace = timedelta(seconds=settings.TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS)
    with transaction.atomic():
        run = run_locked(run_id)
        if run.status != Status.PENDING or run.runpod_job_id:
            return None
        if run.submit_attempted_at is not None and now - run.submit_attempted_at < grace:
            return None
        no_pod = _no_pod(run)
        gave_up = no_pod or _submit_gave_up(run, now)
        if gave_up:
            run_fail(run, code="no_pod" if no_pod else "submit_failed", message=gave_up, source=Source.SYSTEM)
            return None
        run.attempts += 1
        run.submit_attempted_at = now
        # Should this process die during the call, the sweep comes back after the grace period.
        run.submit_due_at = now + grace
        run.save(update_fields=["attempts", "submit_attempted_at", "submit_due_at", "pod", "updated_at"])
    return run


def _submit_gave_up(run: TrainingRun, now: datetime) -> str:
    """Why a pending run is not sent again ("" while it may be): too many calls that may each have made a
    job, or RunPod unreachable for longer than anyone would wait for a run to start; for a pod run, its pod
    not taking it within the pod's waiting limit."""
    if run.provider == TrainingRun.Provider.POD:
        return _pod_gave_up(run, now)
    if run.attempts >= settings.TRAINING_SUBMIT_MAX_ATTEMPTS:
        return (
            f"The run could not be sent to RunPod after {run.attempts} attempts. RunPod may be down or "
            "rate-limiting; retry the run in a few minutes."
        )
    waited = now - run.created_at
    if waited >= timedelta(seconds=settings.TRAINING_SUBMIT_GIVE_UP_SECONDS):
        if run.attempts:
            # An earlier /run went unanswered: RunPod may have made a job, which a stray-job cancel stops.
            return (
                f"RunPod would not take the run for {_duration(waited)} (unreachable or rate-limiting), so "
                "it was given up. Retry the run once RunPod answers again (status.runpod.io)."
            )
        return (
            f"RunPod would not take the run for {_duration(waited)} (unreachable or rate-limiting), so it "
            "was never sent and nothing was billed. Retry the run once RunPod answers again "
            "(status.runpod.io)."
        )
    return ""


def _pod_gave_up(run: TrainingRun, now: datetime) -> str:
    """A pod run waits for its pod (stopped, being started, its UI not answering) as long as a job may
    wait on a pod: RunPod may take hours to start a stopped pod whose GPU someone else took."""
    waited = now - run.created_at
    if waited < timedelta(seconds=settings.TRAINING_POD_QUEUE_TIMEOUT_SECONDS):
        return ""
    name = f"Pod {run.pod.name}" if run.pod is not None else "Its pod"
    return (
        f"{name} could not take the run for {_duration(waited)} (stopped and RunPod could not start it, "
        "or its UI did not answer), so it was given up; nothing was charged. Retry it later; if it happens "
        "again, tell staff to look at the pod."
    )


def _no_pod(run: TrainingRun) -> str:
    """A pod run goes to the pod chosen at its first attempt, and stays there: a second pod could make a
    second job. "" once it has one."""
    if run.provider != TrainingRun.Provider.POD or run.pod_id is not None:
        return ""
    pod = pod_choose()
    if pod is None:
        return "No pod takes runs just now, so the run could not start. Retry it, or train it serverless."
    run.pod = pod
    return ""


def _pod_submit(run: TrainingRun, retry_in: float | None) -> TrainingRun:
    """The pod's side of a submission: the run's job made on its pod and started (`pod_runs`). A repeat
    duplicates nothing (the job's name is the run's), so no failure counts as an attempt; only
    TRAINING_POD_QUEUE_TIMEOUT_SECONDS ends a run its pod never took."""
    try:
        job = pod_job_make(run=run, job_input=training_job_input(run))
    except (AIToolkitUnavailable, StorageUnavailable):
        TrainingRun.objects.filter(
            pk=run.pk, status=Status.PENDING, runpod_job_id="", submit_attempted_at=run.submit_attempted_at
        ).update(
            submit_attempted_at=None,
            attempts=F("attempts") - 1,
            submit_due_at=timezone.now() + timedelta(seconds=retry_in or 0) + pending_recheck(),
        )
        raise
    except (AIToolkitError, PodTokenUnreadable, ContractError):
        TrainingRun.objects.filter(pk=run.pk, runpod_job_id="").update(submit_attempted_at=None)
        raise
    return _pod_submission_record(run.pk, job.id)


def _pod_submission_record(run_id: RunId, job_id: str) -> TrainingRun:
    with transaction.atomic():
        run = run_locked(run_id)
        if run.runpod_job_id == job_id:
            return run
        if run.status != Status.PENDING:
            # Cancelled meanwhile: the job is still the run's, so its outputs' deletion stops and removes it.
            if not run.runpod_job_id:
                run.runpod_job_id = job_id
                run.save(update_fields=["runpod_job_id", "updated_at"])
                queue.enqueue_on_commit(queue.POD_OUTPUTS_DELETE, run.pk)
            return run
        now = timezone.now()
        run.runpod_job_id = job_id
        run.submitted_at = now
        run.submit_attempted_at = None
        run.next_poll_at = now + pod_poll()
        detail = {"job_id": job_id, "pod": run.pod.name if run.pod else ""}
        run_transition(run, Status.QUEUED, source=Source.SYSTEM, detail=detail)
    return run


def _duration(delta: timedelta) -> str:
    minutes = round(delta.total_seconds() / 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} hours"


def _submission_record(run_id: RunId, job: RunPodJob, provider: TrainingProvider) -> TrainingRun:
    with transaction.atomic():
        run = run_locked(run_id)
        if run.runpod_job_id == job.id:
            return run
        if run.status != Status.PENDING or run.runpod_job_id:
            # Cancelled meanwhile, or an earlier job of this run claimed it: this job must not train.
            why = "its run was claimed by another job" if run.runpod_job_id else f"its run was {run.status}"
            stray_job_record(job_id=job.id, run_id=run.pk, reason=f"/run answered after {why}")
            return run
        now = timezone.now()
        run.runpod_job_id = job.id
        run.submitted_at = now
        run.submit_attempted_at = None
        run.next_poll_at = now + QUEUED_POLL[0]
        run_transition(run, Status.QUEUED, source=Source.SYSTEM, detail={"job_id": job.id})
    return run


def _webhook_url(run: TrainingRun) -> str:
    return absolute_url("training:runpod-webhook", run.id, run_token(run.id))


def _job_policy(run: TrainingRun) -> dict[str, int]:
    # The run's own time limit, fitted to its steps at start (training/time_limits.py), so a job that hangs
    # stops billing soon after it should have finished.
    return {
        "executionTimeout": run_execution_timeout_s(run) * 1000,
        "ttl": settings.TRAINING_JOB_TTL_SECONDS * 1000,
    }
