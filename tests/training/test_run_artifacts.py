"""Samples, checkpoints and the loss series reported by the worker: recorded once, verified in storage,
merged across callbacks, and what a lost worker resumes from."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.core.files.storage import default_storage

from runpod_worker.contract import JobInput, Progress
from tests.training.artifact_helpers import (
    PARAMS,
    artifact_run,
    report,
    store,
    uploaded_checkpoint,
    uploaded_sample,
)
from tests.training.conftest import make_run
from training.models import Checkpoint, LossSeries, Sample
from training.run_files import checkpoint_file, sample_file
from training.services import (
    artifact_report_record,
    training_job_input,
    training_run_artifacts_verify,
    training_run_start,
    training_run_worker_progress,
    training_run_worker_started,
)

pytestmark = pytest.mark.django_db


def record_and_verify(run: Any, delivery_id: str = "d1", **fields: Any) -> None:
    artifact_report_record(run=run, report=report(**fields), delivery_id=delivery_id)
    training_run_artifacts_verify(run_id=run.pk)


def test_a_reported_checkpoint_and_sample_are_kept_once_verified_in_storage(character: Any) -> None:
    run = artifact_run(character)
    checkpoint, sample = uploaded_checkpoint(run, 100), uploaded_sample(run, 100, 1)

    record_and_verify(run, checkpoints=[checkpoint], samples=[sample])

    kept = Checkpoint.objects.get(run=run, step=100)
    assert kept.verified_at is not None and kept.resumable
    assert (kept.bytes, kept.sha256, kept.file) == (
        checkpoint["bytes"],
        checkpoint["sha256"],
        checkpoint_file(run, 100),
    )
    image = Sample.objects.get(run=run, step=100, prompt_index=1)
    assert image.verified_at is not None and image.prompt == "[trigger] on a beach"
    assert (image.width, image.height) == (64, 48)
    assert default_storage.exists(image.thumbnail.name) and default_storage.exists(image.thumbnail_large.name)


def test_a_report_sent_again_records_nothing_twice(character: Any) -> None:
    run = artifact_run(character)
    fields = {"checkpoints": [uploaded_checkpoint(run, 100)], "samples": [uploaded_sample(run, 100, 0)]}
    record_and_verify(run, **fields)
    thumbnail = Sample.objects.get(run=run).thumbnail.name

    created = artifact_report_record(run=run, report=report(**fields), delivery_id="d1")

    assert created == 0
    assert Checkpoint.objects.filter(run=run).count() == 1 and Sample.objects.filter(run=run).count() == 1
    assert Sample.objects.get(run=run).thumbnail.name == thumbnail  # made once


def test_an_upload_that_differs_from_the_report_is_never_verified(character: Any) -> None:
    run = artifact_run(character)
    sample = uploaded_sample(run, 100, 0)
    store(sample_file(run, 100, 0), b"something else entirely")

    record_and_verify(run, samples=[sample])

    row = Sample.objects.get(run=run)
    assert row.verified_at is None and "differs" in row.problem


def test_a_checkpoint_whose_file_is_truncated_is_never_verified(character: Any) -> None:
    run = artifact_run(character)
    checkpoint = uploaded_checkpoint(run, 100)
    with default_storage.open(checkpoint_file(run, 100), "rb") as handle:
        truncated = handle.read()[:-10]
    store(checkpoint_file(run, 100), truncated)
    checkpoint.update(bytes=len(truncated), sha256=hashlib.sha256(truncated).hexdigest())

    record_and_verify(run, checkpoints=[checkpoint])

    row = Checkpoint.objects.get(run=run)
    assert row.verified_at is None and "safetensors" in row.problem


def test_steps_and_prompts_the_run_has_no_target_for_are_ignored(character: Any) -> None:
    run = artifact_run(character)
    stray = {**uploaded_sample(run, 100, 0), "step": 150}
    beyond = {**uploaded_sample(run, 100, 0), "prompt_index": 7}

    created = artifact_report_record(run=run, report=report(samples=[stray, beyond]), delivery_id="d1")

    assert created == 0 and not Sample.objects.filter(run=run).exists()


def test_the_loss_series_is_merged_across_callbacks_one_point_per_step(character: Any) -> None:
    run = artifact_run(character)
    record_and_verify(run, loss_series={"loss": [[1, 0.5], [2, 0.4]], "val_loss": [[2, 0.6]]})
    record_and_verify(run, loss_series={"loss": [[2, 0.4], [3, 0.3]], "val_loss": []})

    series = LossSeries.objects.get(run=run)
    assert series.loss == [[1, 0.5], [2, 0.4], [3, 0.3]]
    assert series.val_loss == [[2, 0.6]]


def test_a_resumed_delivery_drops_the_points_after_its_start_once_and_keeps_its_own(character: Any) -> None:
    run = artifact_run(character)
    record_and_verify(run, "lost", loss_series={"loss": [[100, 0.5], [150, 0.4], [180, 0.35]]})

    record_and_verify(run, "resumed", loss_series={"loss": [[110, 0.45]]}, resumed_from_step=100)
    record_and_verify(run, "resumed", loss_series={"loss": [[120, 0.44]]}, resumed_from_step=100)

    series = LossSeries.objects.get(run=run)
    assert series.loss == [[100, 0.5], [110, 0.45], [120, 0.44]]
    assert series.resumed_from_step == 100


def test_a_progress_callback_from_another_job_records_nothing(character: Any) -> None:
    run = artifact_run(character, worker_delivery_id="d1")
    fields = report(samples=[uploaded_sample(run, 100, 0)])

    training_run_worker_progress(
        run=run,
        job_id="job-stray",
        progress=Progress(stage="training", step=120),
        delivery_id="x",
        report=fields,
    )

    assert not Sample.objects.filter(run=run).exists()


def test_a_cancelled_run_still_keeps_the_checkpoint_its_worker_reports_on_its_way_out(character: Any) -> None:
    run = artifact_run(character, worker_delivery_id="d1", status="cancelled")
    fields = report(checkpoints=[uploaded_checkpoint(run, 100)])

    answer = training_run_worker_progress(
        run=run,
        job_id="job-1",
        progress=Progress(stage="training", step=101),
        delivery_id="d1",
        report=fields,
    )
    training_run_artifacts_verify(run_id=run.pk)

    assert answer.action == "stop"
    assert Checkpoint.objects.get(run=run, step=100).verified_at is not None


def test_a_delivery_starting_after_a_lost_worker_is_told_to_resume_from_the_newest_verified_checkpoint(
    character: Any,
) -> None:
    run = artifact_run(character, worker_delivery_id="d1")
    record_and_verify(run, checkpoints=[uploaded_checkpoint(run, 100), uploaded_checkpoint(run, 200)])

    answer = training_run_worker_started(run=run, job_id="job-1", delivery_id="").as_dict()

    resume = answer["resume"]
    assert answer["action"] == "continue" and resume["step"] == 200
    assert resume["checkpoint_sha256"] == Checkpoint.objects.get(run=run, step=200).sha256
    assert resume["optimizer_url"] and resume["optimizer_sha256"]


def test_a_run_without_checkpoints_starts_without_resume(character: Any) -> None:
    run = artifact_run(character)
    assert training_run_worker_started(run=run, job_id="job-1").as_dict() == {"action": "continue"}


def pending(character: Any) -> Any:
    return training_run_start(character=character, requested_by=character.owner, source="user", params=PARAMS)


def test_the_job_input_signs_a_put_for_every_checkpoint_optimizer_state_and_sample(character: Any) -> None:
    run = pending(character)

    document = training_job_input(run)

    spec = JobInput.from_dict(document)
    assert [target.step for target in spec.output.checkpoints] == [100, 200]
    assert {(t.step, t.prompt_index) for t in spec.output.samples} == {
        (step, index) for step in (100, 200, 300) for index in range(3)
    }
    assert all(str(run.pk) in t.upload_url or "transfer" in t.upload_url for t in spec.output.samples)
    assert spec.resume is None


def test_a_resubmitted_run_carries_its_last_checkpoint_in_its_job_input(character: Any) -> None:
    run = pending(character)
    record_and_verify(run, checkpoints=[uploaded_checkpoint(run, 100)])

    spec = JobInput.from_dict(training_job_input(run))

    assert spec.resume is not None and spec.resume.step == 100


def test_an_older_worker_without_the_new_fields_is_answered_as_before(character: Any) -> None:
    run = make_run(character, status="training", runpod_job_id="job-1")
    answer = training_run_worker_progress(
        run=run, job_id="job-1", progress=Progress(stage="training", step=5)
    )
    assert answer.as_dict() == {"action": "continue"}


def test_a_run_renders_the_default_samples_at_each_save_with_the_trigger_word(character: Any) -> None:
    run = training_run_start(
        character=character, requested_by=character.owner, source="user", params={"save_every": 300}
    )

    assert run.params["sample_every"] == 300
    assert len(run.params["sample_prompts"]) == 4
    assert all("[trigger]" in prompt for prompt in run.params["sample_prompts"])


def test_a_prompt_without_the_trigger_word_gets_it_in_front(character: Any) -> None:
    params = {"sample_prompts": ["a knight in armour", "[trigger] at the beach"], "sample_every": 0}
    run = training_run_start(character=character, requested_by=character.owner, source="user", params=params)

    assert run.params["sample_prompts"] == ["[trigger], a knight in armour", "[trigger] at the beach"]
    assert run.params["sample_every"] == 0
