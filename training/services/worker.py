"""The GPU worker's callbacks: started (the first job to start claims the run), progress, and finished
(the holder's LoRA completes the run through `completion`). Each answer tells the worker to continue,
wait or stop, as runpod_worker/contract.py defines it."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from runpod_worker.contract import (
    CALLBACK_ACTION_CONTINUE,
    CALLBACK_ACTION_STOP,
    CALLBACK_ACTION_WAIT,
    CALLBACK_FIELD_CODE,
    CALLBACK_FIELD_RESUME,
    ErrorCode,
    JobOutput,
    Progress,
    ResumeSpec,
)
from training.artifacts import StorageUnavailable
from training.models import TrainingRun
from training.services import queue
from training.services.artifacts import ArtifactReport, artifact_report_record
from training.services.checkpoints import training_run_resume_spec
from training.services.completion import RunEnd, training_run_complete
from training.services.reports import job_claim, progress_apply
from training.services.schedule import TRAINING_POLL_WITH_CALLBACKS, lease, liveness, poll_after_progress
from training.services.stray_jobs import stray_job_record
from training.services.transitions import (
    RunId,
    Source,
    Status,
    run_locked,
    run_transition,
    transition_allowed,
)

logger = logging.getLogger("training.services")


@dataclass(frozen=True)
class WorkerAnswer:
    """The reply to a worker callback, as contract.py defines it."""

    action: str
    reason: str = ""
    retry_after_s: float | None = None
    code: str = ""
    # To "started": the checkpoint a delivery of a job that already trained resumes from.
    resume: ResumeSpec | None = None

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"action": self.action}
        if self.resume is not None:
            answer[CALLBACK_FIELD_RESUME] = asdict(self.resume)
        if self.reason:
            answer["reason"] = self.reason
        if self.code:
            answer[CALLBACK_FIELD_CODE] = self.code
        if self.retry_after_s is not None:
            answer["retry_after_s"] = self.retry_after_s
        return answer


CONTINUE = WorkerAnswer(CALLBACK_ACTION_CONTINUE)
# A contender re-asks a little after the holder's liveness window has run out, not on its very edge.
CLAIM_RETRY_MARGIN_S = 0.5


def training_run_worker_started(
    *, run: TrainingRun, job_id: str, delivery_id: str = "", claim_wait_s: float = 0.0
) -> WorkerAnswer:
    """A worker began the run's job: the first job to start claims the run (-> training); others stop.

    Within the run's job, the delivery (one handler invocation) that holds the claim keeps it while it
    calls back; another delivery is told to wait until the holder has been silent for the liveness
    window — RunPod re-running the job after losing its worker — and then takes the claim over. One that
    has waited a whole window while the holder kept calling back is a duplicate hand-out, and stops.
    """
    now = timezone.now()
    with transaction.atomic():
        run = run_locked(run.pk)
        refusal = _worker_refusal(run, job_id)
        if refusal is not None:
            return refusal
        if delivery_id:
            contention = _claim_contention(run, delivery_id, claim_wait_s, now)
            if contention is not None:
                return contention
        elif run.started_at and run.worker_seen_at and now - run.worker_seen_at < lease():
            # A worker without delivery ids: the same job handed to a second worker while the first still
            # reports (runpod-python#402).
            return _claimed_elsewhere("another worker is already running this job")
        job_claim(run, job_id)
        if delivery_id and run.worker_delivery_id != delivery_id:
            if run.worker_delivery_id:
                logger.info(
                    "run %s: delivery %s of job %s takes over from %s, silent since %s",
                    run.pk, delivery_id, job_id, run.worker_delivery_id, run.worker_seen_at,
                )  # fmt: skip
            run.worker_delivery_id = delivery_id
        run.worker_seen_at = now
        run.next_poll_at = now + TRAINING_POLL_WITH_CALLBACKS
        _training_or_save(run, job_id)
    # RunPod running the job again after losing its worker (or the first delivery asking again): it
    # continues from the newest verified checkpoint, so at most one save interval is trained twice.
    resume = training_run_resume_spec(run)
    return WorkerAnswer(CALLBACK_ACTION_CONTINUE, resume=resume) if resume is not None else CONTINUE


def training_run_worker_progress(
    *,
    run: TrainingRun,
    job_id: str,
    progress: Progress,
    delivery_id: str = "",
    report: ArtifactReport | None = None,
) -> WorkerAnswer:
    """Records the worker's progress (never backwards) and what it reports of checkpoints, samples and
    loss, and tells it whether to go on. A run that has ended still keeps what its own worker made before
    it heard "stop" (the worker reports it on its way out)."""
    answer = _progress_record(run, job_id, progress, delivery_id)
    if report is not None and not report.empty:
        _report_from_holder(run.pk, job_id, delivery_id, report)
    return answer


def _report_from_holder(run_id: RunId, job_id: str, delivery_id: str, report: ArtifactReport) -> None:
    """Records `report` when it comes from the delivery holding the run's job; another job's (a stray) or
    a superseded delivery's is dropped: its files are not the run's."""
    run = TrainingRun.objects.get(pk=run_id)
    holder = run.worker_delivery_id
    if run.runpod_job_id == job_id and (not delivery_id or not holder or holder == delivery_id):
        artifact_report_record(run=run, report=report, delivery_id=delivery_id)


def _progress_record(run: TrainingRun, job_id: str, progress: Progress, delivery_id: str) -> WorkerAnswer:
    now = timezone.now()
    with transaction.atomic():
        run = run_locked(run.pk)
        refusal = _worker_refusal(run, job_id)
        if refusal is not None:
            return refusal
        if delivery_id and run.worker_delivery_id and run.worker_delivery_id != delivery_id:
            # It went silent for longer than the liveness window and another delivery took the run over.
            return _claimed_elsewhere("the run was claimed by another worker")
        job_claim(run, job_id)
        if delivery_id:
            run.worker_delivery_id = delivery_id
        progress_apply(run, progress)
        run.worker_seen_at = now
        run.next_poll_at = now + poll_after_progress(progress)
        _training_or_save(run, job_id)
    return CONTINUE


def training_run_worker_finished(
    *, run: TrainingRun, job_id: str, delivery_id: str, output: JobOutput
) -> WorkerAnswer:
    """The delivery holding the run uploaded its LoRA: verify it in storage and complete the run.

    This does not wait for RunPod's result, which may be a duplicate delivery's `claimed_elsewhere`
    failure (runpod-python#402). Only the holder is heard; RunPod's webhook and `/status` remain the path
    when this callback is lost. The cost comes later, from RunPod's execution time (the run's cost stays
    pending until then).
    """
    # The output repeats every checkpoint and sample of the delivery: one whose progress callback was
    # lost is recorded from here.
    listed = ArtifactReport(checkpoints=output.checkpoints, samples=output.samples)
    if not listed.empty:
        _report_from_holder(run.pk, job_id, delivery_id, listed)
    with transaction.atomic():
        locked = run_locked(run.pk)
        refusal = _worker_refusal(locked, job_id) or _not_holder(locked, delivery_id)
        if refusal is not None:
            return refusal

    def guard(held: TrainingRun) -> WorkerAnswer | None:
        return _worker_refusal(held, job_id) or _not_holder(held, delivery_id)

    end = RunEnd(source=Source.WORKER, detail={"job_id": job_id}, output=output, guard=guard)
    try:
        done = training_run_complete(run=locked, end=end)
    except StorageUnavailable:
        # Another path may have completed the run meanwhile and removed the upload being copied.
        with transaction.atomic():
            refusal = _worker_refusal(run_locked(run.pk), job_id)
        if refusal is None:
            raise
        return refusal
    if done.problem:
        with transaction.atomic():
            locked = run_locked(run.pk)
            refusal = guard(locked)
            if refusal is None:
                # Not the run's end: RunPod's own result is read soon and decides (lora_unverified if it
                # agrees).
                logger.warning("run %s: delivery %s finished, but %s", locked.pk, delivery_id, done.problem)
                locked.next_poll_at = timezone.now()
                locked.save(update_fields=["next_poll_at", "updated_at"])
                queue.enqueue_on_commit(queue.POLL, locked.pk)
        return refusal or CONTINUE
    return done.refusal or CONTINUE


def _not_holder(run: TrainingRun, delivery_id: str) -> WorkerAnswer | None:
    if delivery_id and run.worker_delivery_id == delivery_id:
        return None
    return _claimed_elsewhere("another delivery of this job holds the run")


def _claimed_elsewhere(reason: str) -> WorkerAnswer:
    return WorkerAnswer(CALLBACK_ACTION_STOP, reason, code=ErrorCode.CLAIMED_ELSEWHERE)


def _worker_refusal(run: TrainingRun, job_id: str) -> WorkerAnswer | None:
    if run.is_final:
        if job_id and job_id != run.runpod_job_id:
            # A job whose /run answer was lost, starting after its run ended.
            stray_job_record(
                job_id=job_id, run_id=run.pk, reason=f"it called back after its run {run.status}"
            )
        return WorkerAnswer(CALLBACK_ACTION_STOP, f"the run is already {run.status}")
    if run.runpod_job_id and run.runpod_job_id != job_id:
        # A job from an earlier submission whose answer was lost: the run has its job, stop this one.
        stray_job_record(
            job_id=job_id, run_id=run.pk, reason="it called back after another job claimed its run"
        )
        return _claimed_elsewhere("another job is already training this run")
    return None


def _claim_contention(
    run: TrainingRun, delivery_id: str, claim_wait_s: float, now: datetime
) -> WorkerAnswer | None:
    """None when `delivery_id` may hold the run: it already does, nobody does, or the holder went silent."""
    if run.worker_delivery_id == delivery_id or not run.started_at or run.worker_seen_at is None:
        return None
    window = liveness()
    holder_quiet_for = now - run.worker_seen_at
    if holder_quiet_for >= window:
        return None  # RunPod lost the holder's worker and runs the job again: let it carry on
    if claim_wait_s >= window.total_seconds():
        # The holder called back after this delivery first asked: it is alive, and this is the same job
        # handed out twice (runpod-python#402).
        return _claimed_elsewhere("another worker is already running this job")
    retry_after = (window - holder_quiet_for).total_seconds() + CLAIM_RETRY_MARGIN_S
    return WorkerAnswer(
        CALLBACK_ACTION_WAIT, "another worker of this job called back lately", round(retry_after, 3)
    )


def _training_or_save(run: TrainingRun, job_id: str) -> None:
    """The worker's callback is the proof that its job trains: a run not yet training moves on; any other
    run just keeps what the callback said."""
    if transition_allowed(run.status, Status.TRAINING):
        run_transition(run, Status.TRAINING, source=Source.WORKER, detail={"job_id": job_id})
    else:
        run.save()
