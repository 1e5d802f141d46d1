"""Reading a run's reported checkpoints and samples back from storage (size, sha256; a checkpoint must
also be a complete safetensors file), making each sample's thumbnails once, and announcing each verified
one (`training_run_artifact_created`, at least once: the row is its outbox).

Storage is read outside any transaction; each verdict is one conditional update, which changes nothing
when the row was reported again with other bytes meanwhile (it is then verified anew).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from training.artifacts import LoraInvalid, StoredFile, stored_file_digest, stored_lora_digest
from training.models import Checkpoint, Sample, TrainingRun
from training.run_files import sample_thumbnails_make
from training.services.transitions import RunId
from training.signals import training_run_artifact_created

logger = logging.getLogger("training.services")

# A reported row still unverified or unannounced this long after it was written lost its task: the sweep
# queues its run's verification again.
VERIFY_OVERDUE = timedelta(minutes=1)


def training_run_artifacts_verify(*, run_id: RunId) -> int:
    """Verifies every reported, unverified checkpoint and sample of the run, then announces the verified
    ones not yet announced; returns how many it verified. Raises StorageUnavailable (the task retries)."""
    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        return 0
    verified = 0
    for checkpoint in run.checkpoints.filter(verified_at__isnull=True, problem=""):
        verified += _checkpoint_verify(checkpoint)
    for sample in run.samples.filter(verified_at__isnull=True, problem=""):
        verified += _sample_verify(run, sample)
    artifacts_announce(run_id=run.pk)
    return verified


def _mismatch(stored: StoredFile | None, bytes_: int | None, sha256: str) -> str:
    if stored is None:
        return "no file arrived in storage"
    if (stored.bytes, stored.sha256) != (bytes_, sha256):
        return "the stored file is not the one the worker made (its size or sha256 differs)"
    return ""


def _checkpoint_verify(checkpoint: Checkpoint) -> int:
    try:
        problem = _mismatch(stored_lora_digest(checkpoint.file), checkpoint.bytes, checkpoint.sha256)
    except LoraInvalid as exc:
        problem = f"the stored file is not a complete safetensors file ({exc})"
    optimizer_problem = ""
    if checkpoint.optimizer_file and not problem:
        stored = stored_file_digest(checkpoint.optimizer_file)
        optimizer_problem = _mismatch(stored, checkpoint.optimizer_bytes, checkpoint.optimizer_sha256)
    values: dict[str, object] = {"problem": problem[:300]} if problem else {"verified_at": timezone.now()}
    if optimizer_problem:
        # The checkpoint is still a LoRA to keep and use; only resuming from it is off.
        logger.warning("run %s: optimizer state at step %s: %s", checkpoint.run_id, checkpoint.step,
                       optimizer_problem)  # fmt: skip
        values.update(optimizer_file="", optimizer_bytes=None, optimizer_sha256="")
    if problem:
        logger.warning("run %s: checkpoint at step %s: %s", checkpoint.run_id, checkpoint.step, problem)
    return _verdict(Checkpoint, checkpoint, values)


def _sample_verify(run: TrainingRun, sample: Sample) -> int:
    problem = _mismatch(stored_file_digest(str(sample.image.name)), sample.bytes, sample.sha256)
    if problem:
        logger.warning("run %s: sample %s/%s: %s", run.pk, sample.step, sample.prompt_index, problem)
        return _verdict(Sample, sample, {"problem": problem[:300]})
    values: dict[str, object] = {"verified_at": timezone.now()}
    thumbnails = sample_thumbnails_make(run, sample.step, sample.prompt_index)
    if thumbnails is not None:
        values.update(
            thumbnail=thumbnails.small,
            thumbnail_large=thumbnails.large,
            width=thumbnails.width,
            height=thumbnails.height,
        )
    return _verdict(Sample, sample, values)


def _verdict(
    model: type[Checkpoint] | type[Sample], row: Checkpoint | Sample, values: dict[str, object]
) -> int:
    """Records the verdict unless the row was reported again with other bytes since it was read."""
    same = model.objects.filter(pk=row.pk, sha256=row.sha256, bytes=row.bytes, verified_at__isnull=True)
    changed = same.update(**values)
    return int(changed and "verified_at" in values)


def artifacts_announce(*, run_id: uuid.UUID) -> int:
    """Sends `training_run_artifact_created` for each verified, unannounced checkpoint and sample of the
    run, and marks each announced once every receiver ran (receivers are idempotent)."""
    announced = 0
    for model, kind in ((Checkpoint, "checkpoint"), (Sample, "sample")):
        rows = model.objects.filter(run_id=run_id, verified_at__isnull=False, announced_at__isnull=True)
        for pk in rows.values_list("pk", flat=True):
            results = training_run_artifact_created.send_robust(
                sender=TrainingRun, run_id=run_id, kind=kind, artifact_id=pk
            )
            failed = [error for _, error in results if isinstance(error, Exception)]
            for error in failed:
                logger.error("training_run_artifact_created receiver failed", exc_info=error)
            if not failed:
                announced += model.objects.filter(pk=pk, announced_at__isnull=True).update(
                    announced_at=timezone.now()
                )
    return announced


def artifact_runs_overdue(*, now: datetime | None = None, limit: int = 100) -> list[uuid.UUID]:
    """Runs with a checkpoint or sample still to verify or announce a while after it was reported (its
    task was lost, or storage or a receiver failed): the sweep queues their verification again."""
    cutoff = (now or timezone.now()) - VERIFY_OVERDUE
    due = Q(announced_at__isnull=True, created_at__lt=cutoff) & (Q(problem="") | Q(verified_at__isnull=False))
    runs = set(Checkpoint.objects.filter(due).values_list("run_id", flat=True)[:limit])
    runs |= set(Sample.objects.filter(due).values_list("run_id", flat=True)[:limit])
    return list(runs)[:limit]
