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

from characters.services import reference_images_fill_captions
from runpod_worker.contract import JobOutput
from training import pricing
from training.artifacts import (
    LoraInvalid,
    StorageUnavailable,
    StoredFile,
    lora_discard,
    lora_keep,
    lora_tidy,
    stored_file_digest,
    stored_lora_digest,
)
from training.models import TrainingRun
from training.runpod import RunPodJob
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
            detail = {**end.detail, "lora": kept, **_captions_keep(locked, end.output)}
            run_transition(locked, Status.COMPLETED, source=end.source, detail=detail)
    _lora_settle(locked, kept, kept_by_run=completed)
    split_lora_settle(locked, low, kept_by_run=completed)
    return Completion(run=locked, completed=completed, refusal=refusal)


def _lora_record(run: TrainingRun, kept: str, stored: StoredFile, end: RunEnd) -> None:
    """The only writer of a run's LoRA fields: the verified copy, and what is known of the job."""
    if end.job is not None:
        job_record(run, end.job)
    run.lora_name = kept
    run.lora_bytes = stored.bytes
    run.lora_sha256 = stored.sha256
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


def _captions_keep(run: TrainingRun, output: JobOutput | None) -> dict[str, Any]:
    """The captions the worker made for the run's photos sent without one go onto those photos, for the next
    run and for their owner to read and edit; the completion event says how many, and why any are missing."""
    if output is None or not (output.captions or output.caption_error):
        return {}
    sent_bare = {item["sha256"] for item in run.manifest if not item.get("caption")}
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
