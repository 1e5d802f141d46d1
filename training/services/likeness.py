"""How much each sample looks like the character, each checkpoint's likeness, and the best checkpoint
chosen once the run has completed.

Each verified sample is scored once against the photos the run trained on
(`characters.faces.likeness`: its face against the references' mean descriptor; no face or a near copy of a
training photo is a miss), and the checkpoint at the sample's step gets the median of its samples. When the
run has completed and every sample is scored, the studio chooses once: the checkpoint with the best
likeness that is not copying its photos becomes the run's LoRA, and so the character's current one; the
final LoRA stays when scores are missing or no checkpoint does better. An owner's own choice always stands.

Storage is read and faces are found outside any transaction; each score is one conditional update.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from PIL import UnidentifiedImageError

from characters.faces.dataset import PhotoInput
from characters.faces.likeness import SampleLikeness, checkpoint_likeness, sample_likeness
from characters.selectors import character_likeness_references
from runpod_worker.contract import BaseModel
from training.models import Checkpoint, Sample, TrainingEvent, TrainingRun
from training.run_files import sample_read
from training.selectors import current_lora_runs
from training.services.completion import training_run_lora_choose
from training.services.transitions import RunId, run_locked

logger = logging.getLogger("training.services")

# A verified sample still unscored this long after it was verified, or a completed run still unsettled this
# long after it finished, lost its task: the sweep queues the run's scoring again.
LIKENESS_OVERDUE = timedelta(minutes=2)
# Nothing was compared (no photo with a face, or not a person), or its owner chose (their event says so):
# the log records no decision of the studio's.
QUIET_REASONS = frozenset({"no_references", "owner_chose"})
MISS = SampleLikeness(face_found=False, distance=None, copy_of="", likeness=0.0)


@dataclass(frozen=True)
class BestCheckpoint:
    checkpoint: Checkpoint
    why: dict[str, Any]


def training_run_likeness_score(*, run_id: RunId, budget_seconds: float = 50.0) -> int:
    """Scores the run's verified, unscored samples, updates its checkpoints' likeness and, once the run has
    completed with nothing left to score, chooses its best checkpoint (once). Stops scoring after
    `budget_seconds` (`likeness_outstanding` then says so). Returns how many it scored. Raises
    StorageUnavailable (the task retries)."""
    run = TrainingRun.objects.select_related("character").filter(pk=run_id).first()
    if run is None:
        return 0
    references = _references(run)
    unscored = run.samples.filter(verified_at__isnull=False, scored_at__isnull=True)
    if not references:
        # Nothing to compare with (not a person, or no photo of the run showed a face): scored as such.
        unscored.update(scored_at=timezone.now())
    scored = 0
    deadline = time.monotonic() + budget_seconds
    for sample in unscored if references else []:
        if time.monotonic() > deadline:
            break
        scored += _sample_score(sample, references)
    if scored:
        _checkpoints_update(run)
    completed = run.status == TrainingRun.Status.COMPLETED and run.likeness_settled_at is None
    if completed and not (references and _samples_outstanding(run)):
        training_run_best_choose(run=run, scored=bool(references))
    return scored


def likeness_outstanding(*, run_id: RunId) -> bool:
    """The run still has a verified sample to score (a pass stopped at its time budget)."""
    return Sample.objects.filter(
        run_id=uuid.UUID(str(run_id)), verified_at__isnull=False, scored_at__isnull=True
    ).exists()


def _references(run: TrainingRun) -> list[PhotoInput]:
    """The photos the run trained on that show the character's face (none for a character not a person)."""
    if not run.character.is_person:
        return []
    return character_likeness_references(run.character, sha256s={item["sha256"] for item in run.manifest})


def _sample_score(sample: Sample, references: list[PhotoInput]) -> int:
    data = sample_read(str(sample.image.name))
    try:
        result = sample_likeness(io.BytesIO(data), references)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        logger.warning("run %s: sample %s/%s cannot be scored: %s", sample.run_id, sample.step,
                       sample.prompt_index, exc)  # fmt: skip
        result = MISS
    changed = Sample.objects.filter(pk=sample.pk, sha256=sample.sha256, scored_at__isnull=True).update(
        scored_at=timezone.now(),
        face_found=result.face_found,
        likeness=result.likeness,
        copy_of=result.copy_of[:255],
    )
    return int(changed)


def _checkpoints_update(run: TrainingRun) -> None:
    """Each checkpoint's likeness from its step's scored samples (recomputed whole: idempotent)."""
    by_step: dict[int, list[SampleLikeness]] = {}
    for sample in run.samples.filter(scored_at__isnull=False):
        by_step.setdefault(sample.step, []).append(
            SampleLikeness(
                face_found=bool(sample.face_found),
                distance=None,
                copy_of=sample.copy_of,
                likeness=sample.likeness or 0.0,
            )
        )
    for checkpoint in run.checkpoints.filter(step__in=list(by_step)):
        summary = checkpoint_likeness(by_step[checkpoint.step])
        Checkpoint.objects.filter(pk=checkpoint.pk).update(
            likeness=summary.likeness,
            likeness_samples=summary.samples,
            likeness_faces=summary.faces,
            likeness_copies=summary.copies,
        )


def _samples_outstanding(run: TrainingRun) -> bool:
    """A sample reported but not yet verified, or verified but not yet scored."""
    unverified = Q(verified_at__isnull=True, problem="")
    unscored = Q(verified_at__isnull=False, scored_at__isnull=True)
    return run.samples.filter(unverified | unscored).exists()


def training_run_best_choose(*, run: TrainingRun, scored: bool) -> TrainingRun:
    """Once, after the run completed: its best checkpoint by likeness becomes its LoRA (`lora_choice`
    "likeness"), unless its owner chose already; a decision on scores is recorded as an event either way."""
    _checkpoints_update(run)  # a final LoRA recorded after its samples were scored gets their likeness
    best = best_checkpoint(run) if scored else None
    reason = _kept_because(run, best, scored=scored)
    if reason is None:
        assert best is not None
        return training_run_lora_choose(
            run=run, step=best.checkpoint.step, source=TrainingEvent.Source.SYSTEM,
            choice=TrainingRun.LoraChoice.LIKENESS, why={"likeness": best.why},
        )  # fmt: skip
    why = {**(best.why if best is not None else {}), "reason": reason}
    with transaction.atomic():
        locked = run_locked(run.pk)
        if locked.likeness_settled_at is not None:
            return locked  # another pass settled it
        locked.likeness_settled_at = timezone.now()
        locked.save(update_fields=["likeness_settled_at", "updated_at"])
        if reason not in QUIET_REASONS:
            TrainingEvent.objects.create(  # not a status change: recorded, never announced as one
                run=locked, from_status=locked.status, to_status=locked.status,
                source=TrainingEvent.Source.SYSTEM, detail={"likeness_kept": why},
                announced_at=locked.likeness_settled_at,
            )  # fmt: skip
    return locked


def _kept_because(run: TrainingRun, best: BestCheckpoint | None, *, scored: bool) -> str | None:
    """Why the run keeps the LoRA it has (a code the run page words), or None: its best checkpoint is
    chosen."""
    if run.lora_choice == TrainingRun.LoraChoice.OWNER:
        return "owner_chose"
    if not scored:
        return "no_references"
    if best is None:
        faces = run.checkpoints.filter(likeness_faces__gt=0).exists()
        return "none_alike" if faces else "no_faces"
    if best.checkpoint.final:
        return "final_best"
    if run.base_model in BaseModel.SPLIT:
        return "two_experts"  # a checkpoint is one expert's file: only the final pair is a LoRA
    if current_lora_runs(run.character).values_list("pk", flat=True).first() != run.pk:
        return "newer_run"  # a newer run's LoRA is the character's: an older run's choice does not replace it
    return None


def best_checkpoint(run: TrainingRun) -> BestCheckpoint | None:
    """The verified checkpoint whose samples look most like the character without copying its photos;
    the final LoRA on a tie or when it is best. None when no checkpoint scores above 0 (most samples of
    each showed no face, or copied a photo)."""
    kept = list(run.checkpoints.filter(verified_at__isnull=False, pruned_at__isnull=True))
    # Above 0: most of its samples showed a face that was not a copy.
    candidates = [checkpoint for checkpoint in kept if checkpoint.likeness]
    if not candidates:
        return None
    final = next((checkpoint for checkpoint in kept if checkpoint.final), None)
    fair = [checkpoint for checkpoint in candidates if not checkpoint.likeness_copying] or candidates
    best = max(fair, key=lambda checkpoint: (checkpoint.likeness or 0.0, checkpoint.final, checkpoint.step))
    if (
        final in candidates
        and not final.likeness_copying
        and (final.likeness or 0.0) >= (best.likeness or 0.0)
    ):
        best = final
    why: dict[str, Any] = {
        "step": best.step,
        "final": best.final,
        "score": best.likeness,
        "faces": best.likeness_faces,
        "samples": best.likeness_samples,
        "copying_skipped": sorted(checkpoint.step for checkpoint in kept if checkpoint.likeness_copying),
    }
    if final is not None:
        why["final_score"] = final.likeness
    return BestCheckpoint(checkpoint=best, why=why)


def likeness_runs_overdue(*, now: datetime | None = None, limit: int = 100) -> list[uuid.UUID]:
    """Runs with a verified sample left unscored, or completed and not yet settled, a while later (their task
    was lost, or storage failed): the sweep queues their scoring again."""
    cutoff = (now or timezone.now()) - LIKENESS_OVERDUE
    unscored = Sample.objects.filter(
        verified_at__lt=cutoff, scored_at__isnull=True, run__likeness_settled_at__isnull=True
    ).values_list("run_id", flat=True)
    runs = set(unscored[:limit])
    unsettled = TrainingRun.objects.filter(
        status=TrainingRun.Status.COMPLETED, likeness_settled_at__isnull=True, finished_at__lt=cutoff
    ).values_list("pk", flat=True)
    runs |= set(unsettled[:limit])
    return list(runs)[:limit]
