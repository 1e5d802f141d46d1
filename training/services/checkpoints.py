"""A run's checkpoints after the training: what a lost worker resumes from, and what the storage cap
prunes once the run has ended (docs/TRAINING.md, "Samples, checkpoints, loss and resume")."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runpod_worker.contract import BaseModel, ResumeSpec
from studio.transfer import download_url
from training.models import Checkpoint, TrainingRun
from training.run_files import run_files_delete
from training.services.transitions import RunId

logger = logging.getLogger("training.services")


def training_run_resume_spec(run: TrainingRun) -> ResumeSpec | None:
    """Where a new delivery of the run's job resumes: its newest verified checkpoint, with the optimizer
    state saved with it when that verified too (AI Toolkit otherwise starts a fresh optimizer at that
    step); None when the run has none, and the worker trains from step 0."""
    if run.base_model in BaseModel.SPLIT:
        return None  # the worker saves and resumes one file per step; these models have two
    checkpoint = (
        run.checkpoints.filter(final=False, verified_at__isnull=False, pruned_at__isnull=True)
        .order_by("-step")
        .first()
    )
    if checkpoint is None:
        return None
    ttl = settings.TRAINING_RESUME_LINK_SECONDS
    optimizer = bool(checkpoint.optimizer_file)
    return ResumeSpec(
        step=checkpoint.step,
        checkpoint_url=download_url(checkpoint.file, ttl),
        checkpoint_sha256=checkpoint.sha256,
        optimizer_url=download_url(checkpoint.optimizer_file, ttl) if optimizer else None,
        optimizer_sha256=checkpoint.optimizer_sha256 if optimizer else None,
    )


def training_run_checkpoints_prune(*, run_id: RunId) -> int:
    """Once a run has ended: its optimizer states go (they only serve a resume), and for a completed run
    whose checkpoints were compared by likeness or whose owner chose one, the checkpoints beyond
    TRAINING_CHECKPOINTS_KEPT, oldest first, never its final LoRA nor the chosen one. Rows are marked first
    and files deleted after commit; returns how many checkpoints were pruned."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or not run.is_final:
            return 0
        # A completed run's checkpoints are compared by likeness first (the best may be an early one),
        # unless its owner chose one already.
        chosen = run.likeness_settled_at is not None or run.lora_choice == TrainingRun.LoraChoice.OWNER
        settled = run.status == TrainingRun.Status.COMPLETED and chosen
        pruned = _beyond_cap(run) if settled else []
        files = [name for checkpoint in pruned for name in (checkpoint.file, checkpoint.optimizer_file)]
        Checkpoint.objects.filter(pk__in=[c.pk for c in pruned]).update(pruned_at=timezone.now())
        states = run.checkpoints.filter(final=False, pruned_at__isnull=True).exclude(optimizer_file="")
        files += list(states.values_list("optimizer_file", flat=True))
        states.update(optimizer_file="", optimizer_bytes=None, optimizer_sha256="")
    failed = run_files_delete([name for name in files if name])
    if failed:
        logger.warning("run %s: %d pruned file(s) could not be deleted", run_id, len(failed))
    return len(pruned)


def _beyond_cap(run: TrainingRun) -> list[Checkpoint]:
    others = run.checkpoints.filter(final=False, pruned_at__isnull=True).order_by("-step")
    if run.lora_step is not None:
        others = others.exclude(step=run.lora_step)
    # One that never verified is no use to anyone: it goes whatever the cap.
    usable = [c for c in others if c.verified_at is not None]
    broken = [c for c in others if c.verified_at is None and c.problem]
    return usable[max(0, settings.TRAINING_CHECKPOINTS_KEPT) :] + broken
