"""Any verified checkpoint can become the character's LoRA; the storage cap prunes the rest once a run has
completed; a failed run keeps the trainer's last lines."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from runpod_worker.contract import JobOutput
from studio.errors import Conflict, NotFound
from tests.training.artifact_helpers import artifact_run, report, uploaded_checkpoint
from tests.training.conftest import lora_bytes
from training.artifacts import lora_upload_name
from training.models import Checkpoint, TrainingEvent, TrainingRun
from training.run_files import optimizer_file
from training.runpod import RunPodJob
from training.selectors import character_current_lora
from training.services import (
    RunEnd,
    artifact_report_record,
    training_run_apply_status,
    training_run_artifacts_verify,
    training_run_checkpoints_prune,
    training_run_complete,
    training_run_lora_choose,
    training_run_resume_spec,
)
from training.services.transitions import run_fail, run_locked

pytestmark = pytest.mark.django_db


def with_checkpoints(run: TrainingRun, steps: list[int]) -> None:
    checkpoints = [uploaded_checkpoint(run, step) for step in steps]
    artifact_report_record(run=run, report=report(checkpoints=checkpoints), delivery_id="d1")
    training_run_artifacts_verify(run_id=run.pk)


def completed(run: TrainingRun) -> TrainingRun:
    """Completes the run through the one completion path, with a final LoRA uploaded as the worker does."""
    data = lora_bytes()
    default_storage.save(lora_upload_name(run), ContentFile(data))
    output = JobOutput.from_dict({
        "lora": {"name": "x.safetensors", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "steps": 300, "trainer_version": "t", "gpu": {"name": "A100", "memory_gb": 80},
        "timings": {"download_s": 1, "train_s": 1, "upload_s": 1},
    })  # fmt: skip
    done = training_run_complete(run=run, end=RunEnd(source="worker", detail={}, output=output))
    assert done.completed, done.problem
    return done.run


def test_a_completed_run_lists_its_final_lora_as_a_checkpoint(character: Any) -> None:
    run = completed(artifact_run(character))

    final = Checkpoint.objects.get(run=run, final=True)
    assert (final.step, final.file, final.sha256) == (300, run.lora_name, run.lora_sha256)


def test_using_a_checkpoint_makes_it_the_characters_current_lora_and_records_an_event(character: Any) -> None:
    run = artifact_run(character)
    with_checkpoints(run, [100, 200])
    run = completed(run)
    checkpoint = Checkpoint.objects.get(run=run, step=100)

    chosen = training_run_lora_choose(run=run, step=100, source="user")

    assert character_current_lora(character) == chosen
    assert (chosen.lora_step, chosen.lora_sha256, chosen.lora_bytes) == (
        100,
        checkpoint.sha256,
        checkpoint.bytes,
    )
    assert chosen.lora_name.startswith(f"characters/{character.pk}/loras/{run.pk}-")  # a copy of its own
    with default_storage.open(chosen.lora_name, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == checkpoint.sha256
    event = TrainingEvent.objects.filter(run=run).last()
    assert event is not None and event.detail["lora_chosen"]["step"] == 100 and event.to_status == "completed"


def test_the_final_lora_can_be_chosen_back(character: Any) -> None:
    run = artifact_run(character)
    with_checkpoints(run, [100])
    run = completed(run)
    final_name = run.lora_name
    training_run_lora_choose(run=run, step=100, source="user")

    back = training_run_lora_choose(run=TrainingRun.objects.get(pk=run.pk), step=300, source="user")

    assert (back.lora_name, back.lora_step) == (final_name, None)


def test_a_checkpoint_of_a_cancelled_run_can_become_the_current_lora_over_an_older_completed_one(
    character: Any,
) -> None:
    older = completed(artifact_run(character, runpod_job_id="job-0"))
    cancelled = artifact_run(character)
    with_checkpoints(cancelled, [100])
    with transaction.atomic():
        locked = run_locked(cancelled.pk)
        locked.status = "cancelled"
        locked.finished_at = timezone.now()
        locked.save()
    assert character_current_lora(character) == older

    training_run_lora_choose(run=TrainingRun.objects.get(pk=cancelled.pk), step=100, source="api")

    assert character_current_lora(character) == cancelled


def test_a_run_still_training_cannot_choose_a_checkpoint(character: Any) -> None:
    run = artifact_run(character)
    with_checkpoints(run, [100])
    with pytest.raises(Conflict):
        training_run_lora_choose(run=run, step=100, source="user")


def test_a_step_without_a_verified_checkpoint_is_not_found(character: Any) -> None:
    run = completed(artifact_run(character))
    with pytest.raises(NotFound):
        training_run_lora_choose(run=run, step=200, source="user")


def test_the_cap_prunes_the_oldest_checkpoints_but_never_the_chosen_nor_the_final(
    character: Any, settings: Any
) -> None:
    settings.TRAINING_CHECKPOINTS_KEPT = 1
    run = artifact_run(character, params={"steps": 500, "rank": 4, "save_every": 100})
    with_checkpoints(run, [100, 200, 300, 400])
    run = completed(run)
    training_run_lora_choose(run=run, step=100, source="user")

    pruned = training_run_checkpoints_prune(run_id=run.pk)

    assert pruned == 2
    kept = {c.step: c for c in Checkpoint.objects.filter(run=run)}
    assert [s for s, c in kept.items() if c.pruned_at is None] == [100, 400, 500]
    assert not default_storage.exists(kept[200].file) and default_storage.exists(kept[400].file)
    # Optimizer states only serve a resume: gone once the run has ended.
    assert not default_storage.exists(optimizer_file(run, 400)) and kept[400].optimizer_file == ""


def test_a_failed_run_keeps_its_checkpoints_and_the_trainers_last_lines(character: Any) -> None:
    run = artifact_run(character)
    with_checkpoints(run, [100])
    tail = [f"line {n}" for n in range(250)] + ["GET https://bucket/x?X-Amz-Signature=abc123 failed"]
    job = RunPodJob(
        id="job-1",
        status="FAILED",
        error={"code": "trainer_failed", "message": "It broke.", "log_tail": tail},
    )

    training_run_apply_status(run_id=run.pk, job=job, source="poll")
    training_run_checkpoints_prune(run_id=run.pk)

    run.refresh_from_db()
    lines = run.log_tail.split("\n")
    assert run.status == "failed" and len(lines) == 200 and lines[0] == "line 51"
    assert "abc123" not in run.log_tail
    assert Checkpoint.objects.get(run=run, step=100).pruned_at is None


def test_run_fail_without_lines_keeps_the_log_tail_empty(character: Any) -> None:
    run = artifact_run(character)
    with transaction.atomic():
        run_fail(run_locked(run.pk), code="x", message="m", source="system")
    run.refresh_from_db()
    assert run.log_tail == ""


def test_a_two_expert_models_checkpoint_is_not_used_nor_resumed_from(character: Any) -> None:
    run = artifact_run(character, base_model="wan22")
    with_checkpoints(run, [100])
    TrainingRun.objects.filter(pk=run.pk).update(status="cancelled", finished_at=timezone.now())

    assert training_run_resume_spec(run) is None
    with pytest.raises(Conflict):
        training_run_lora_choose(run=TrainingRun.objects.get(pk=run.pk), step=100, source="user")
