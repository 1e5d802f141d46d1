"""Runs on a pod's AI Toolkit UI (`TrainingRun.provider == "pod"`): the job made and started there, read
back by the sweep (the UI has no webhooks), and ended — through the same transitions, artifacts,
verification and completion as a serverless run. `submission`, `poll` and `ending` hand a pod run here at
their entry.

1. **Submit** (`pod_job_make`): the run's dataset on the pod (the frozen photos and their captions), then
   a job named after the run (`pod_job_name`) with the run's config made UI-ready, then the job's start AND
   its GPU queue's start. The name is the same at every attempt, so a repeat after a lost answer meets the
   run's own job (409, then found by name) instead of making a second one.
2. **Poll** (`pod_run_poll`): the job read back; new samples, checkpoints and loss points stored and
   recorded (`pod_outputs`); progress applied; the end handled: `completed` downloads the LoRA, stores it
   where the worker's upload would be and completes the run (`completion`), `error` fails it with the
   trainer's last lines. A job the pod no longer has (it restarted with a fresh database) is made again;
   a job `running` whose step has not moved for TRAINING_POD_STALL_SECONDS (its trainer died unseen) is
   marked stopped and started again — both at most TRAINING_POD_MAX_RESTARTS times.
3. **Cancel** (`pod_run_cancel`): stop (SIGINT to the trainer), and mark stopped when the stop could not
   reach a trainer that is gone; the run is cancelled either way.
4. **Outputs** (`pod_run_outputs_delete`): once the run has ended and what it made is verified in
   storage, its job and dataset are deleted from the pod.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from runpod_worker.contract import (
    CONTRACT_VERSION,
    GpuInfo,
    JobOutput,
    LoraArtifact,
    Progress,
    Stage,
    Timings,
)
from training.aitoolkit import (
    COMPLETED,
    ERROR,
    QUEUED,
    STOPPED,
    AIToolkitClient,
    AIToolkitError,
    AIToolkitJob,
    AIToolkitNameTaken,
    AIToolkitNotFound,
    AIToolkitUnavailable,
    AIToolkitUncertain,
)
from training.artifacts import StorageUnavailable, lora_upload_name
from training.models import LossSeries, Pod, TrainingEvent, TrainingRun
from training.pod_config import pod_dataset_files, pod_dataset_name, pod_job_config, pod_job_name
from training.providers import pod_client
from training.runpod_rest import RunPodRestError
from training.services.completion import RunEnd, training_run_complete
from training.services.job_input import training_job_input
from training.services.pod_lifecycle import pod_start
from training.services.pod_outputs import pod_artifacts_collect, pod_outputs_unsafe, stored_file_put
from training.services.reports import progress_apply
from training.services.schedule import pod_poll
from training.services.transitions import (
    RunId,
    Status,
    run_fail,
    run_locked,
    run_transition,
    transition_allowed,
)
from training.services.verification import training_run_artifacts_verify

logger = logging.getLogger("training.services")

# `speed_string` as DiffusionTrainer's timer hook writes tqdm's rate (`DiffusionTrainer.py:339-361`).
_SPEED = re.compile(r"([0-9.]+)\s*(iter/sec|it/s|sec/iter|s/it)")
# The trainer's last lines a failed pod run keeps, as the worker sends them.
LOG_TAIL_LINES = 200


class PodNotRunning(AIToolkitUnavailable):
    """The run's pod is not running (stopped, or starting): the run waits for it."""


# ------------------------------------------------------------------------------------------- submit


def pod_choose() -> Pod | None:
    """The pod a new pod run goes to: the accepting pod with the fewest runs on it (its UI queues them)."""
    active = Count("runs", filter=Q(runs__status__in=TrainingRun.ACTIVE_STATUSES))
    return Pod.objects.filter(accepts_runs=True).annotate(active=active).order_by("active", "name").first()


def pod_job_make(*, run: TrainingRun, job_input: dict[str, Any]) -> AIToolkitJob:
    """Makes (or finds) the run's job on its pod, with its dataset, and starts it and its GPU queue.
    Raises AIToolkitUnavailable to be tried again (nothing is duplicated by a repeat), AIToolkitRejected
    or PodTokenUnreadable when the pod refuses for good."""
    pod = _pod_of(run)
    client = pod_client(pod)
    dataset = client.dataset_create(pod_dataset_name(run))
    listing = client.dataset_upload_all(dataset, pod_dataset_files(run, _stored_bytes))
    folders = client.settings()
    config = pod_job_config(
        run, job_input, training_folder=folders.training_folder, dataset_folder=listing.folder
    )
    job = _job_create(client, pod_job_name(run), config, pod.gpu_ids)
    _job_go(client, job)
    return job


def _pod(run: TrainingRun) -> Pod:
    """The run's pod as it is now (its state moves apart from the run)."""
    if run.pod_id is None:
        raise PodNotRunning("The run has no pod yet.")
    return Pod.objects.get(pk=run.pod_id)


def _pod_of(run: TrainingRun) -> Pod:
    """The run's pod, running; a stopped one is asked to start, and the run waits for it."""
    pod = _pod(run)
    if pod.state == Pod.State.STOPPED:
        try:
            pod = pod_start(pod=pod)
        except RunPodRestError as exc:
            raise PodNotRunning(f"Pod {pod.name} is stopped and RunPod could not start it: {exc}") from exc
    if pod.state != Pod.State.RUNNING:
        raise PodNotRunning(f"Pod {pod.name} is {pod.state}: the run waits for it to run.")
    return pod


def _stored_bytes(name: str) -> bytes:
    try:
        with default_storage.open(name, "rb") as handle:
            data: bytes = handle.read()
            return data
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(f"Storage could not read a photo ({type(exc).__name__}).") from exc


def _job_create(client: AIToolkitClient, name: str, config: dict[str, Any], gpu_ids: str) -> AIToolkitJob:
    try:
        return client.job_create(name=name, job_config=config, gpu_ids=gpu_ids)
    except (AIToolkitNameTaken, AIToolkitUncertain) as exc:
        # The run's own job from an earlier attempt whose answer was lost (`jobs/route.ts:111-114`).
        found = client.job_find(name)
        if found is None:
            raise AIToolkitUnavailable(f"The pod's answer to creating job {name} was lost.") from exc
        return found


def _job_go(client: AIToolkitClient, job: AIToolkitJob) -> None:
    """Starts a job not started yet, and the queue of one waiting in it (a stopped queue never runs it)."""
    if job.status == STOPPED and not job.stop:
        client.job_start(job)
    elif job.status == QUEUED:
        client.queue_start(job.gpu_ids)


# --------------------------------------------------------------------------------------------- poll


def pod_run_poll(*, run: TrainingRun, source: str) -> TrainingRun:
    """Reads the run's job on its pod and applies it: progress and files, the end, a restart or a stall;
    then sets the run's next poll. The sweep's claim leased the run for TRAINING_POD_POLL_LEASE_SECONDS,
    so a poll still downloading files is not overlapped by the next one."""
    if run.is_final or not run.runpod_job_id or run.pod_id is None:
        return run
    run = _poll(run, pod_client(_pod(run)), source)
    if not run.is_final:
        TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.ACTIVE_STATUSES).update(
            next_poll_at=timezone.now() + pod_poll()
        )
    return run


def _poll(run: TrainingRun, client: AIToolkitClient, source: str) -> TrainingRun:
    missing = run.runpod_job_id
    try:
        return _job_apply(run, client, client.job_get(missing), source)
    except AIToolkitNotFound:
        # The pod restarted with a fresh database before this poll or during it: its job reads as `null`
        # and the job's routes answer 404 (`jobs/[jobID]/files/route.ts:15-17`). Any other 404 is raised.
        if _job_still_there(client, missing):
            raise
    run = TrainingRun.objects.get(pk=run.pk)
    if run.is_final or run.runpod_job_id != missing:
        return run  # ended, or another poll has already made the job again
    return _job_remake(run, client, "the pod no longer has its job (it restarted)", source)


def _job_still_there(client: AIToolkitClient, job_id: str) -> bool:
    try:
        client.job_get(job_id)
    except AIToolkitNotFound:
        return False
    return True


def _job_apply(run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, source: str) -> TrainingRun:
    if job.is_active:
        # Progress first: a file or loss read failing below must not hide that the job moved.
        run = _progress_record(run, job, source)
        if _stalled(run, job):
            return _job_restart(run, client, job, source)
    pod_artifacts_collect(run=run, client=client, job=job)
    if job.status == COMPLETED:
        return _complete(run, client, job, source)
    if job.status == ERROR:
        return _fail_with_log(run, client, job, source)
    if job.status == STOPPED:
        if not job.stop:
            _job_go(client, job)  # made, but its start was lost
            return run
        message = "The run's job was stopped on the pod (from AI Toolkit's UI). Retry it."
        return _fail(run, "stopped", message, source)
    if job.status == QUEUED:
        client.queue_start(job.gpu_ids)  # a queue stopped by hand or by a restart would hold it for ever
    return run


def _progress_record(run: TrainingRun, job: AIToolkitJob, source: str) -> TrainingRun:
    now = timezone.now()
    with transaction.atomic():
        locked = run_locked(run.pk)
        if locked.is_final:
            return locked
        # Its step, or the stage in `info` ("Loading model", "Training", "Saving model"), changed.
        seen = locked.last_provider_payload or {}
        moved = locked.worker_seen_at is None or (job.step, job.info) != (seen.get("step"), seen.get("info"))
        progress_apply(locked, _progress(locked, job))
        locked.last_provider_payload = {k: v for k, v in job.raw.items() if k != "job_config"}
        if job.is_active and job.status != QUEUED:
            if moved:
                locked.worker_seen_at = now
            if transition_allowed(locked.status, Status.TRAINING):
                detail = {
                    "job_id": job.id,
                    "job_status": job.status,
                    "pod": locked.pod.name if locked.pod else "",
                }
                run_transition(locked, Status.TRAINING, source=source, detail=detail)
                return locked
        locked.save()
    return locked


def _progress(run: TrainingRun, job: AIToolkitJob) -> Progress:
    series = LossSeries.objects.filter(run=run).first()
    loss = series.loss[-1][1] if series is not None and series.loss else None
    total = job.steps_total
    match = _SPEED.search(job.speed_string)
    eta = None
    if match and total and float(match.group(1)) > 0:
        rate = float(match.group(1))
        per_step = 1 / rate if match.group(2) in ("iter/sec", "it/s") else rate
        eta = max(0, total - job.step) * per_step
    return Progress(stage=Stage.TRAINING, step=job.step, total_steps=total, loss=loss, eta_s=eta)


def _stalled(run: TrainingRun, job: AIToolkitJob) -> bool:
    seen = run.worker_seen_at
    limit = timedelta(seconds=settings.TRAINING_POD_STALL_SECONDS)
    return job.status == "running" and seen is not None and timezone.now() - seen > limit


def _restarts_left(run: TrainingRun) -> bool:
    # The first submission is attempt 1; each remake or restart counts one more.
    return run.attempts <= settings.TRAINING_POD_MAX_RESTARTS


def _job_restart(run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, source: str) -> TrainingRun:
    """A job left `running` by a trainer that died unseen blocks its GPU queue for ever: it is marked
    stopped (`mark_stopped/route.ts`) and, while restarts are left, started again (AI Toolkit resumes from
    its last save in the job folder); otherwise the run fails. The restart is written down first, under
    the run's lock, so a second poll of the same stall does nothing (a second `/start` would re-queue the
    restarted job)."""
    why = f"its job stopped moving at step {job.step} on the pod (its trainer died unseen)"
    if not _restarts_left(run):
        client.job_mark_stopped(job.id)
        return _fail(run, "worker_lost", _gave_up(why), source)
    noted = _noted(
        run, {"pod_job_restarted": why, "job_id": job.id}, source, stalled_since=run.worker_seen_at
    )
    if noted is None:
        return TrainingRun.objects.get(pk=run.pk)
    client.job_mark_stopped(job.id)
    client.job_start(client.job_get(job.id))
    return noted


def _job_remake(run: TrainingRun, client: AIToolkitClient, why: str, source: str) -> TrainingRun:
    """The pod forgot the run's job (a restart clears the official image's database and outputs, RunPod
    docs pods/storage/types.mdx:14): made again from the start, while restarts are left. A second poll
    that also found it missing meets the same job (by name) and notes nothing more."""
    if not _restarts_left(run):
        return _fail(run, "pod_restarted", _gave_up(why), source)
    job = pod_job_make(run=run, job_input=training_job_input(run))
    detail = {"pod_job_remade": why, "job_id": job.id}
    noted = _noted(run, detail, source, replaces=run.runpod_job_id, job_id=job.id)
    return noted or TrainingRun.objects.get(pk=run.pk)


def _gave_up(why: str) -> str:
    return (
        f"The run was stopped: {why}, more often than the studio retries "
        f"({settings.TRAINING_POD_MAX_RESTARTS} times). Check the pod, then retry the run."
    )


def _noted(
    run: TrainingRun,
    detail: dict[str, Any],
    source: str,
    *,
    job_id: str = "",
    replaces: str = "",
    stalled_since: datetime | None = None,
) -> TrainingRun | None:
    """Records a restart (`stalled_since`: the stall it ends) or remake (`replaces`: the job the pod
    forgot) of the run's job as an event that changes no status (never announced as one), counted against
    the run's restarts; None when another poll already recorded it, or the run has ended."""
    with transaction.atomic():
        locked = run_locked(run.pk)
        if locked.is_final:
            return None
        if replaces and locked.runpod_job_id != replaces:
            return None
        if stalled_since is not None and locked.worker_seen_at != stalled_since:
            return None
        locked.attempts += 1
        locked.worker_seen_at = timezone.now()
        if job_id:
            locked.runpod_job_id = job_id
        locked.save()
        TrainingEvent.objects.create(
            run=locked, from_status=locked.status, to_status=locked.status, source=source, detail=detail,
            announced_at=timezone.now(),
        )  # fmt: skip
    logger.warning("run %s: %s", run.pk, detail)
    return locked


# ------------------------------------------------------------------------------------------- ending


def _complete(run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, source: str) -> TrainingRun:
    """The job's final LoRA, downloaded whole and checked, stored where the worker's upload would be; then
    the one completion path verifies the run's own copy of it and completes the run."""
    with tempfile.TemporaryDirectory(prefix="pod-lora-") as folder:
        downloaded = client.lora_download(job, Path(folder) / "lora.safetensors")
        stored_file_put(lora_upload_name(run), downloaded.path)
    pod = _pod(run)
    output = JobOutput(
        lora=LoraArtifact(name=f"{job.name}.safetensors", bytes=downloaded.size, sha256=downloaded.sha256),
        steps=job.steps_total,
        trainer_version="ai-toolkit-ui",
        gpu=GpuInfo(name=f"pod {pod.name}", memory_gb=0.0),
        timings=Timings(download_s=0.0, train_s=0.0, upload_s=0.0),
        contract_version=CONTRACT_VERSION,
    )
    end = RunEnd(source=source, detail={"job_id": job.id, "pod": pod.name}, output=output)
    done = training_run_complete(run=run, end=end)
    if done.problem:
        return _fail(run, "lora_unverified", done.problem, source)
    return done.run


def _fail_with_log(run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, source: str) -> TrainingRun:
    try:
        lines = client.job_log(job.id).text.splitlines()[-LOG_TAIL_LINES:]
    except AIToolkitError:
        lines = []
    message = f"AI Toolkit stopped with an error on the pod: {job.info or 'no message'}. Retry the run."
    return _fail(run, "trainer_failed", message, source, log_tail=lines)


def _fail(
    run: TrainingRun, code: str, message: str, source: str, log_tail: list[str] | None = None
) -> TrainingRun:
    with transaction.atomic():
        locked = run_locked(run.pk)
        if not locked.is_final:
            run_fail(locked, code=code, message=message, source=source, log_tail=log_tail or ())
    return locked


def pod_run_cancel(*, run: TrainingRun, source: str, keep_artifacts: bool = True) -> TrainingRun:
    """Stops the run's job on its pod (outside any transaction) and cancels the run; what the job made
    until then is kept, and its outputs leave the pod afterwards (`pod_run_outputs_delete`). Without
    `keep_artifacts` (its character is being erased) the job and dataset are deleted from the pod at once."""
    outcome = "no_job"
    if run.runpod_job_id and run.pod_id is not None:
        try:
            client = pod_client(_pod(run))
            outcome = _job_halt(client, run.runpod_job_id)
            if not keep_artifacts:
                client.job_delete(run.runpod_job_id)
                client.dataset_delete(pod_dataset_name(run))
        except AIToolkitError as exc:
            # The run still ends; the outputs' deletion stops the job once the pod answers.
            logger.warning("run %s: stopping its pod job failed: %s", run.pk, exc.message)
            outcome = "unreachable"
    with transaction.atomic():
        locked = run_locked(run.pk)
        if not locked.is_final:
            run_transition(
                locked,
                Status.CANCELLED,
                source=source,
                detail={"job_id": locked.runpod_job_id, "pod": outcome},
            )
    return locked


def _job_halt(client: AIToolkitClient, job_id: str) -> str:
    """Stops a job: SIGINT to its trainer (`stop/route.ts:57-90`); a job still active after it has no live
    trainer (the stop found none, ESRCH) and is marked stopped, freeing its GPU queue."""
    try:
        job = client.job_get(job_id)
    except AIToolkitNotFound:
        return "gone"
    if not job.is_active:
        return job.status
    if job.status == QUEUED:
        # Not started: marked stopped, the queue never starts it (`processQueue.ts` takes `queued` jobs
        # only). A start just after the mark reads back `running` (`startJob.ts:405-414`) and is stopped
        # below; one just before it meets the `stop` flag the mark sets, which the trainer reads each step
        # (`DiffusionTrainer.py:163-238`).
        with contextlib.suppress(AIToolkitUncertain):  # read back below
            client.job_mark_stopped(job_id)
        if not client.job_get(job_id).is_active:
            return "marked_stopped"
    with contextlib.suppress(AIToolkitUncertain):  # read back below
        client.job_stop(job_id)
    if client.job_get(job_id).is_active:
        client.job_mark_stopped(job_id)
        return "marked_stopped"
    return "stopped"


def pod_run_outputs_delete(*, run_id: RunId) -> bool:
    """Deletes an ended pod run's job (its folder and row) and dataset from the pod, once what the job made
    is verified in storage; returns False while something is still to be verified. A job still active (a
    cancel that could not reach the pod) is stopped first."""
    run = TrainingRun.objects.filter(pk=run_id, provider=TrainingRun.Provider.POD).first()
    if run is None or not run.is_final or run.pod_outputs_deleted_at or run.pod_id is None:
        return True
    client = pod_client(_pod(run))
    if run.runpod_job_id and _job_halt(client, run.runpod_job_id) != "gone":
        pod_artifacts_collect(run=run, client=client, job=client.job_get(run.runpod_job_id))
        training_run_artifacts_verify(run_id=run.pk)
        if pod_outputs_unsafe(run):
            return False
        client.job_delete(run.runpod_job_id)
    client.dataset_delete(pod_dataset_name(run))
    TrainingRun.objects.filter(pk=run.pk, pod_outputs_deleted_at__isnull=True).update(
        pod_outputs_deleted_at=timezone.now()
    )
    return True
