"""When RunPod's result cannot tell how a run ended (RunPod forgot the job, or kept a duplicate delivery's
result) and the worker's report was lost: wait while the run's holder still calls back, then let the LoRA
in storage decide — complete the run with it (`completion`), or fail the run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from training.artifacts import LoraInvalid
from training.models import TrainingRun
from training.runpod import RunPodJob
from training.services.completion import RunEnd, training_run_complete
from training.services.ending import training_run_fail
from training.services.reports import job_record
from training.services.schedule import liveness
from training.services.transitions import run_locked
from training.time_limits import never_taken_message

logger = logging.getLogger("training.services")


@dataclass(frozen=True)
class LostReport:
    """Why RunPod's result cannot tell how a run ended, and what the run says when storage cannot either."""

    code: str
    why: str  # for the completion event and the log
    message: str  # the failure the user reads, before what storage held and what to do
    # With no LoRA stored: keep polling until the run's deadline rather than fail (RunPod still has the
    # job, so the holder may yet report), instead of failing at once (RunPod forgot the job).
    wait_for_deadline: bool = False
    # With no LoRA stored, what follows the message (the failure is then the whole story when empty).
    nothing_stored: str = ", and no LoRA from it arrived in storage, so its outcome is lost. Retry the run."


JOB_LOST = LostReport(
    code="job_lost",
    why="RunPod no longer knows the job and the worker's report was lost",
    message="RunPod no longer knows this run's job (results are kept only 30 minutes after a job ends)",
)


def never_taken() -> LostReport:
    """RunPod forgot a job no worker ever took: its TTL passed in the queue (docs serverless/endpoints/
    send-requests.mdx:124-131), as on an endpoint scaled to zero."""
    return LostReport(
        code="timed_out",
        why="RunPod dropped the job at its time to live before any worker took it",
        message=never_taken_message(),
        nothing_stored="",
    )


CLAIMED_ELSEWHERE = LostReport(
    wait_for_deadline=True,
    code="worker_lost",
    why="RunPod kept a duplicate delivery's result and the worker's report was lost",
    message=(
        "RunPod kept only the result of a duplicate worker that never trained (the job was handed out "
        "twice), and the worker that trained this run stopped reporting"
    ),
)


def job_result_unusable(
    run: TrainingRun, lost: LostReport, *, job: RunPodJob | None, source: str
) -> TrainingRun:
    """Waits while the run's holder still calls back (its "finished" callback may yet come); once it is
    silent past the liveness window, the LoRA in storage decides: complete with it, or fail."""
    now = timezone.now()
    with transaction.atomic():
        run = run_locked(run.pk)
        if run.is_final:
            return run
        if job is not None:
            job_record(run, job)
        run.save()
    # The sweep polls on (every few seconds once the holder reported its last step or its upload), so a
    # holder gone silent is noticed within one poll interval of its liveness window running out.
    if run.worker_seen_at is not None and now - run.worker_seen_at < liveness():
        logger.info("run %s: %s, but its holder called back lately: waiting for it", run.pk, lost.why)
        return run
    return _lora_recover(run, lost, source=source)


def _lora_recover(run: TrainingRun, lost: LostReport, *, source: str) -> TrainingRun:
    """Completes a run whose worker's report was lost with its own copy of the uploaded LoRA, if that is a
    complete safetensors file; otherwise fails the run. A refused upload stays for staff to inspect."""
    detail = {"job_id": run.runpod_job_id, "recovered_from_storage": lost.why}
    try:
        done = training_run_complete(run=run, end=RunEnd(source=source, detail=detail))
    except LoraInvalid as exc:
        message = (
            f"{lost.message}, and the LoRA file in storage is incomplete or damaged ({exc}), so it was not "
            "accepted; it is kept for staff to inspect. Retry the run."
        )
        return training_run_fail(run_id=run.pk, code=lost.code, message=message, source=source)
    if not done.stored:
        if lost.wait_for_deadline:
            # The holder may only look silent (our own outage answered its callbacks 503): with no LoRA to
            # go by, the run keeps polling, and its deadline ends it if the holder never reports again.
            logger.info("run %s: %s and no LoRA is stored yet; waiting for the holder", run.pk, lost.why)
            return run
        message = f"{lost.message}{lost.nothing_stored}"
        return training_run_fail(run_id=run.pk, code=lost.code, message=message, source=source)
    if done.completed:
        logger.warning("run %s: %s; completed it from the LoRA in storage", run.pk, lost.why)
    return done.run
