"""Completing a run: the one function every completion path calls — RunPod's status says COMPLETED
(`status`), the worker's "finished" callback (`worker`), and recovery from the stored LoRA when both
reports were lost (`recovery`). They differ only in how they learned of the end (`RunEnd`).

The run keeps its own copy of the uploaded LoRA, and the copy is what is verified, so a job uploading to
the same link afterwards changes nothing kept. Copying and reading happen outside any transaction; the
completion itself is one locked transition that records every LoRA field, settles the cost (or marks it
pending) and announces the change after commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from characters.services import reference_images_fill_captions
from runpod_worker.contract import BaseModel, JobOutput
from studio.errors import Conflict, NotFound, Unavailable
from training import pricing
from training.artifacts import (
    LoraInvalid,
    StorageUnavailable,
    StoredFile,
    lora_discard,
    lora_keep,
    lora_output_name,
    lora_tidy,
    stored_file_digest,
    stored_lora_digest,
)
from training.dataset import is_face_crop
from training.models import Checkpoint, TrainingEvent, TrainingRun
from training.runpod import RunPodJob
from training.selectors import current_lora_runs
from training.services.reports import job_record
from training.services.split_lora import split_lora_keep_read, split_lora_record, split_lora_settle
from training.services.transitions import Status, run_locked, run_transition, transition_allowed


@dataclass(frozen=True)
class RunEnd:
    """How a run was learned to have ended with a LoRA."""

    source: str
    detail: dict[str, Any]
    # The worker's report of its LoRA; None when the run is recovered from the stored file alone, which is
    # then read in full as a safetensors file (LoraInvalid when it is not a complete one).
    output: JobOutput | None = None
    # RunPod's final status of the job, when that is how the end was learned (it carries the execution time).
    job: RunPodJob | None = None
    # Under the run's lock, before it completes: an answer that the run is not this path's to complete.
    guard: Callable[[TrainingRun], Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Completion:
    run: TrainingRun
    completed: bool  # this call completed the run
    problem: str = ""  # why the stored file is not the reported LoRA, or that none was stored; nothing kept
    stored: bool = True  # False when no LoRA from the run was in storage
    refusal: Any = None  # what `RunEnd.guard` answered


def training_run_complete(*, run: TrainingRun, end: RunEnd) -> Completion:
    """Verifies the run's LoRA in storage, and completes the run with it: records the LoRA with every
    field, settles the cost (or marks it pending until RunPod's final status is read) and announces.

    A run another path completed or ended meanwhile is left as it is, and this path's copy goes. Raises
    StorageUnavailable when storage cannot be read, and, for a recovery, LoraInvalid for a damaged file.
    """
    read = stored_file_digest if end.output is not None else stored_lora_digest
    kept, stored = _lora_keep_read(run, read)  # copies and streams: outside any transaction
    problem = _lora_problem(stored, end.output)
    low = split_lora_keep_read(run, read, end.output) if not problem else None
    problem = problem or (low.problem if low else "")
    if problem:
        for name in (kept, low.kept if low else ""):
            if name:
                lora_discard(name)
        return Completion(run=run, completed=False, problem=problem, stored=stored is not None)
    assert stored is not None
    with transaction.atomic():
        locked = run_locked(run.pk)
        refusal = end.guard(locked) if end.guard is not None else None
        completed = refusal is None and transition_allowed(locked.status, Status.COMPLETED)
        if completed:
            _lora_record(locked, kept, stored, end)
            split_lora_record(locked, low)
            _final_checkpoint_record(locked, kept, stored)
            detail = {**end.detail, "lora": kept, **_captions_keep(locked, end.output)}
            run_transition(locked, Status.COMPLETED, source=end.source, detail=detail)
    _lora_settle(locked, kept, kept_by_run=completed)
    split_lora_settle(locked, low, kept_by_run=completed)
    return Completion(run=locked, completed=completed, refusal=refusal)


def _lora_record(run: TrainingRun, kept: str, stored: StoredFile, end: RunEnd) -> None:
    """The only writer of a run's LoRA fields: the verified copy, and what is known of the job."""
    if end.job is not None:
        job_record(run, end.job)
    _lora_fields_set(run, kept, stored, step=None)
    if end.output is not None:
        run.gpu_type = end.output.gpu.name
        run.progress_step = max(run.progress_step, end.output.steps)
        run.progress_total = max(run.progress_total, end.output.steps)
    else:
        # No worker report names the GPU: the endpoint's, which its cost and estimate assume.
        run.gpu_type = run.gpu_type or pricing.endpoint_gpu()
        # Recovered because RunPod's result says nothing more: no final status is left to read for a cost.
        run.cost_state = TrainingRun.CostState.SETTLED
    run.progress_eta_seconds = 0


def _lora_fields_set(run: TrainingRun, name: str, stored: StoredFile, *, step: int | None) -> None:
    run.lora_name = name
    run.lora_bytes = stored.bytes
    run.lora_sha256 = stored.sha256
    run.lora_step = step


def _final_checkpoint_record(run: TrainingRun, kept: str, stored: StoredFile) -> None:
    """The final LoRA is listed among the run's checkpoints, so it can be chosen back after another was.
    Not announced as a checkpoint: `training_run.completed` tells of it."""
    now = timezone.now()
    Checkpoint.objects.get_or_create(
        run=run,
        # The parameters were validated at start; read plainly, so nothing here can stop a completion.
        step=int(run.params.get("steps") or run.progress_total),
        defaults={
            "final": True,
            "name": f"{lora_output_name(run)}.safetensors",
            "file": kept,
            "bytes": stored.bytes,
            "sha256": stored.sha256,
            "verified_at": now,
            "announced_at": now,
        },
    )


def training_run_lora_choose(
    *,
    run: TrainingRun,
    step: int,
    source: str,
    choice: str = TrainingRun.LoraChoice.OWNER,
    why: dict[str, Any] | None = None,
) -> TrainingRun:
    """Makes the run's verified checkpoint at `step` (or its final LoRA) the run's LoRA, and so the
    character's current one (`selectors.character_current_lora`), recorded as an event with `why`.

    `choice` says who chose: its owner (the page, the API), or the studio by likeness once the run
    completed (`likeness`), which applies only while nobody chose and likeness has not settled yet:
    otherwise it changes nothing and answers the run as it is.

    A checkpoint is first copied to a name of the run's own that no upload link names, and the copy is
    verified against the checkpoint's sha256: what is kept is what was verified. Choosing the LoRA the
    character already uses changes nothing; choosing the run's own LoRA again while a newer run's is the
    character's makes it current again, without a new copy."""
    checkpoint = run.checkpoints.filter(step=step, verified_at__isnull=False, pruned_at__isnull=True).first()
    if checkpoint is None:
        raise NotFound("This run has no verified checkpoint at that step.")
    if not run.is_final:
        raise Conflict(
            "This run is still training: choose a checkpoint once it has ended.", code="run_active"
        )
    if run.base_model in BaseModel.SPLIT and not checkpoint.final:
        # Its LoRA is a pair of files, one per expert; a checkpoint is one file.
        raise Conflict("Only the final LoRA of a two-expert model can be used.", code="checkpoint_incomplete")
    already = run.lora_step == _chosen_step(checkpoint) and run.lora_sha256 == checkpoint.sha256
    if already and run.lora_name:
        # An owner keeping the final LoRA the studio has not compared yet is a choice all the same.
        unsettled = choice == TrainingRun.LoraChoice.OWNER and run.lora_choice == TrainingRun.LoraChoice.FINAL
        current = current_lora_runs(run.character).values_list("pk", flat=True).first() == run.pk
        if current and not (unsettled and run.likeness_settled_at is None):
            return run
        kept, stored = run.lora_name, StoredFile(bytes=run.lora_bytes or 0, sha256=run.lora_sha256)
    else:
        kept, stored = _checkpoint_keep(run, checkpoint)
    by_likeness = choice == TrainingRun.LoraChoice.LIKENESS
    with transaction.atomic():
        locked = run_locked(run.pk)
        if by_likeness and (locked.likeness_settled_at or locked.lora_choice != TrainingRun.LoraChoice.FINAL):
            late = True  # its owner chose meanwhile, or another pass settled it: theirs stands
            if locked.likeness_settled_at is None:
                locked.likeness_settled_at = timezone.now()
                locked.save(update_fields=["likeness_settled_at", "updated_at"])
        else:
            late = False
            previous = locked.lora_name
            _lora_fields_set(locked, kept, stored, step=_chosen_step(checkpoint))
            locked.lora_chosen_at = timezone.now()
            locked.lora_choice = choice
            if by_likeness:
                locked.likeness_settled_at = locked.lora_chosen_at
            locked.save()
            TrainingEvent.objects.create(  # not a status change: recorded, never announced as one
                run=locked, from_status=locked.status, to_status=locked.status, source=source,
                detail={"lora_chosen": {"step": step, "final": checkpoint.final, "lora": kept, "by": choice,
                                        **(why or {})}},
                announced_at=locked.lora_chosen_at,
            )  # fmt: skip
    if late:
        if kept != run.lora_name and not run.checkpoints.filter(file=kept).exists():
            lora_discard(kept)
        return locked
    if previous and previous != kept and not run.checkpoints.filter(file=previous).exists():
        lora_discard(previous)  # an earlier choice's copy; the final LoRA and checkpoints stay
    return locked


def _chosen_step(checkpoint: Checkpoint) -> int | None:
    return None if checkpoint.final else checkpoint.step


def _checkpoint_keep(run: TrainingRun, checkpoint: Checkpoint) -> tuple[str, StoredFile]:
    """The checkpoint as a LoRA of the run's own: the final LoRA's file is one already; another is copied
    and the copy verified (Conflict when it is no longer the verified file, which is then left alone;
    Unavailable when storage cannot be read): the page and the API refuse alike, nothing half-kept."""
    if checkpoint.final:
        return checkpoint.file, StoredFile(bytes=checkpoint.bytes, sha256=checkpoint.sha256)
    changed = Conflict("This checkpoint's file changed since it was verified.", code="checkpoint_changed")
    unreadable = Unavailable(
        "Storage could not be read just now, so nothing changed. Try again shortly.",
        code="storage_unavailable",
    )
    try:
        kept = lora_keep(run, source=checkpoint.file)
    except StorageUnavailable:
        raise unreadable from None
    if kept is None:
        raise Conflict("This checkpoint's file is no longer in storage.", code="checkpoint_missing")
    try:
        stored = stored_lora_digest(kept)
    except (StorageUnavailable, LoraInvalid) as exc:
        lora_discard(kept)
        raise (unreadable if isinstance(exc, StorageUnavailable) else changed) from exc
    if stored is None or (stored.bytes, stored.sha256) != (checkpoint.bytes, checkpoint.sha256):
        lora_discard(kept)
        raise changed
    return kept, stored


def _captions_keep(run: TrainingRun, output: JobOutput | None) -> dict[str, Any]:
    """The captions the worker made for the run's photos sent without one go onto those photos, for the next
    run and for their owner to read and edit; the completion event says how many, and why any are missing."""
    if output is None or not (output.captions or output.caption_error):
        return {}
    # A face crop's caption, if the worker made one, stays with the run: the photo gets its own.
    sent_bare = {
        item["sha256"] for item in run.manifest if not item.get("caption") and not is_face_crop(item)
    }
    made = {caption.sha256: caption.caption for caption in output.captions if caption.sha256 in sent_bare}
    kept = reference_images_fill_captions(character=run.character, captions=made)
    detail: dict[str, Any] = {"captions_made": len(made), "captions_kept": kept}
    if output.caption_error:
        detail["caption_error"] = output.caption_error
    return detail


NOTHING_STORED = "The worker reported a trained LoRA, but no file arrived in storage. Retry the run."


def _lora_problem(stored: StoredFile | None, output: JobOutput | None) -> str:
    if stored is None:
        return NOTHING_STORED
    if output is not None and (stored.bytes != output.lora.bytes or stored.sha256 != output.lora.sha256):
        return (
            "The LoRA in storage is not the file the worker made (its size or checksum differs), so it "
            "was not accepted. Retry the run."
        )
    return ""


def _lora_keep_read(
    run: TrainingRun, read: Callable[[str], StoredFile | None]
) -> tuple[str, StoredFile | None]:
    """The run's own copy of its uploaded LoRA ("" when nothing was uploaded) and `read` of that copy; a copy
    whose reading raises (storage failing, a damaged file) is removed, so a retry starts from a new one."""
    kept = lora_keep(run)
    if kept is None:
        return "", None
    try:
        return kept, read(kept)
    except (StorageUnavailable, LoraInvalid):
        lora_discard(kept)
        raise


def _lora_settle(run: TrainingRun, kept: str, *, kept_by_run: bool) -> None:
    """After the completing transaction: once the run keeps its copy, the upload and any copy left by a
    completion cut short go; a copy the run did not keep (another path completed it first) goes."""
    if kept_by_run:
        lora_tidy(run, kept)
    else:
        lora_discard(kept)
