"""What a pod run's job writes on the pod, brought into storage and recorded as the serverless worker's
report would be (`artifacts`, then `verification`), and deleted from the pod once kept.

The UI serves a job's files by path without the token (`ui/src/middleware.ts:6,20-22`), so nothing of a
run stays on a pod longer than it must: once the run has ended and its LoRA, checkpoints and samples are
verified in storage, its job (folder and row) and its dataset are deleted there.
Downloads and storage writes happen outside any transaction; the records are `artifacts`' upserts, so a
poll repeated after a lost task records nothing twice.
"""

from __future__ import annotations

import logging
import math
import tempfile
import uuid
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from runpod_worker.contract import (
    CheckpointArtifact,
    SampleArtifact,
    TrainingParams,
    checkpoint_steps,
    sample_steps,
)
from training.aitoolkit import (
    AIToolkitClient,
    AIToolkitFileInvalid,
    AIToolkitJob,
    AIToolkitUnavailable,
    DownloadedFile,
    safetensors_check,
)
from training.artifacts import StorageUnavailable
from training.models import Checkpoint, LossSeries, Pod, Sample, TrainingRun
from training.pod_config import checkpoint_step, sample_key
from training.run_files import checkpoint_file, sample_file
from training.services.artifacts import ArtifactReport, Point, artifact_report_record

logger = logging.getLogger("training.services")

# An ended pod run whose outputs are still on its pod this long after it ended lost its task: the sweep
# queues the deletion again.
OUTPUTS_OVERDUE = timedelta(minutes=1)
# How long one queued deletion may go on retrying (the task's five retries back off 5 s doubling, jittered
# up to 1.5 times: under 4 minutes), so the sweep queues no other meanwhile.
OUTPUTS_RETRY_WINDOW = timedelta(minutes=5)


def pod_artifacts_collect(*, run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob) -> int:
    """Stores the job's samples and checkpoints not yet recorded and its new loss points, and records them
    (verification queued after commit); returns how many rows are new. Raises AIToolkitUnavailable (the
    pod) or StorageUnavailable (storage): the caller's poll is tried again."""
    params = TrainingParams.from_dict(run.params)
    report = ArtifactReport(
        checkpoints=_new_checkpoints(run, client, job, params),
        samples=_new_samples(run, client, job, params),
        loss=_new_loss(run, client, job),
    )
    if report.empty:
        return 0
    return artifact_report_record(run=run, report=report, delivery_id="")


def _new_checkpoints(
    run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, params: TrainingParams
) -> list[CheckpointArtifact]:
    known = set(run.checkpoints.values_list("step", flat=True))
    wanted = set(checkpoint_steps(params))
    found = []
    for listed in client.job_files(job.id):
        step = checkpoint_step(run, listed.name)
        if step is None or step in known or step not in wanted:
            continue
        try:
            kept = _keep(client, listed.path, checkpoint_file(run, step), size=listed.size, lora=True)
        except AIToolkitFileInvalid:
            # AI Toolkit writes a checkpoint in place: one still being written is taken at the next poll.
            logger.info("run %s: checkpoint %s not complete yet on the pod", run.pk, listed.name)
            continue
        found.append(CheckpointArtifact(step=step, name=listed.name, bytes=kept.size, sha256=kept.sha256))
    return found


def _new_samples(
    run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob, params: TrainingParams
) -> list[SampleArtifact]:
    known = set(run.samples.values_list("step", "prompt_index"))
    steps, prompts = set(sample_steps(params)), len(params.sample_prompts)
    found = []
    for path in client.job_samples(job.id):
        # A sample is moved into `samples/` whole (toolkit/config_modules.py:1254-1275): never partial.
        name = PurePosixPath(path).name
        key = sample_key(name)
        if key is None or key in known or key[0] not in steps or key[1] >= prompts:
            continue
        kept = _keep(client, path, sample_file(run, *key))
        found.append(
            SampleArtifact(
                step=key[0], prompt_index=key[1], filename=name, bytes=kept.size, sha256=kept.sha256
            )
        )
    return found


def _new_loss(run: TrainingRun, client: AIToolkitClient, job: AIToolkitJob) -> dict[str, list[Point]]:
    series = LossSeries.objects.filter(run=run).first()
    since = int(series.loss[-1][0]) if series is not None and series.loss else None
    try:
        points = client.job_loss(job.id, since_step=since).points
    except AIToolkitUnavailable as exc:
        # The route answers 500 while loss_log.db has no tables (a trainer just started, or dead before it
        # logged): the points come at a later poll; samples and checkpoints need not wait for them.
        logger.info("run %s: the pod's loss log cannot be read yet (%s)", run.pk, exc.message)
        return {}
    loss = [[p.step, p.value] for p in points if p.value is not None and math.isfinite(p.value)]
    return {"loss": loss} if loss else {}


def _keep(
    client: AIToolkitClient, path: str, name: str, *, size: int | None = None, lora: bool = False
) -> DownloadedFile:
    """Downloads `path` from the pod and stores it under exactly `name`; a LoRA must be a whole
    safetensors file first."""
    with tempfile.TemporaryDirectory(prefix="pod-file-") as folder:
        dest = Path(folder) / PurePosixPath(name).name
        downloaded = client.file_download(path, dest, expected_size=size)
        if lora:
            safetensors_check(dest)
        stored_file_put(name, dest)
    return downloaded


def stored_file_put(name: str, path: Path) -> None:
    """Stores the file at `path` under exactly `name`, replacing what was there."""
    try:
        if default_storage.exists(name):
            default_storage.delete(name)
        with path.open("rb") as handle:
            saved = default_storage.save(name, File(handle))
    except (OSError, BotoCoreError, ClientError) as exc:
        raise StorageUnavailable(
            f"Storage could not keep a file from the pod ({type(exc).__name__})."
        ) from exc
    if saved != name:
        raise StorageUnavailable(f"Storage kept {name} under another name ({saved}).")


def pod_outputs_unsafe(run: TrainingRun) -> int:
    """The run's checkpoints and samples reported but not yet verified in storage (those whose verification
    found a problem are as safe as they will ever be)."""
    unverified = Q(verified_at__isnull=True, problem="")
    return (
        Checkpoint.objects.filter(unverified, run=run).count()
        + Sample.objects.filter(unverified, run=run).count()
    )


def pod_runs_outputs_overdue(*, now: datetime | None = None, limit: int = 100) -> list[uuid.UUID]:
    """Ended pod runs whose outputs are still on a running pod a while after they ended, claimed for one
    queued deletion: the sweep does not queue another for them until that one's retries are spent
    (OUTPUTS_RETRY_WINDOW), so an unanswering pod is not met by a new copy every sweep."""
    now = now or timezone.now()
    with transaction.atomic():
        runs = TrainingRun.objects.select_for_update(skip_locked=True, of=("self",)).filter(
            Q(pod_outputs_retry_at__isnull=True) | Q(pod_outputs_retry_at__lte=now),
            provider=TrainingRun.Provider.POD,
            status__in=TrainingRun.FINAL_STATUSES,
            pod_outputs_deleted_at__isnull=True,
            pod__state=Pod.State.RUNNING,
            finished_at__lt=now - OUTPUTS_OVERDUE,
        )
        claimed = list(runs.order_by("finished_at").values_list("pk", flat=True)[:limit])
        TrainingRun.objects.filter(pk__in=claimed).update(pod_outputs_retry_at=now + OUTPUTS_RETRY_WINDOW)
    return claimed
